"""WhatsApp Cloud API errors sorted by what to do about them: one table for the sender
(an error answering a send) and for status webhooks (a `failed` status after Meta
accepted a message). Codes from Meta's error-code reference
(developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes)
and SPEC §5.
"""

from __future__ import annotations

from enum import Enum


class Action(Enum):
    # A rate limit: the number's throughput, the pair limit to one user, the app's call
    # rate. Sent again after a slow backoff.
    RETRY_SLOWLY = "rate_limit"
    # Meta could not handle it this time (and says so): sent again.
    RETRY = "transient"
    # The account (locked, restricted, payment) or our own credentials (expired token,
    # missing permission): nothing can be sent until someone fixes it. Every message is
    # kept, sending pauses, an operator is alerted, and sending resumes by itself once a
    # probe of the number succeeds.
    PAUSE = "pause"
    # 131047: the 24 h window was closed: the message's template is sent instead.
    TEMPLATE = "template"
    # This message cannot be delivered (not on WhatsApp, a template paused or rejected,
    # a parameter Meta refuses): it fails, with the code.
    FAIL = "fail"
    # The request may have been carried out (a gateway timed out after it left): never
    # sent again blindly — a status webhook settles it, else the ambiguity window.
    AMBIGUOUS = "ambiguous"


WINDOW_CLOSED = 131047
THROUGHPUT = 130429
PAIR_LIMIT = 131056
# Errors of the number or the app's call rate rather than of one recipient.
NUMBER_RATE_LIMITS = frozenset({4, 80007, THROUGHPUT, 131048})
RATE_LIMITS = NUMBER_RATE_LIMITS | {PAIR_LIMIT}
TRANSIENT = frozenset({1, 2, 131000, 131016, 131057})
ACCOUNT = frozenset({368, 131031, 131042, 130497, 131037, 133010})
# 0 AuthException, 3 capability, 10 permission denied, 190 access token expired or
# invalid, 131005 access denied, 200–299 permission errors.
AUTH = frozenset({0, 3, 10, 190, 131005, *range(200, 300)})
# Gateways that answer after the request reached Meta: it may have been sent.
AMBIGUOUS_HTTP = frozenset({502, 504})


def classify(code: int | None, http_status: int | None = None) -> Action:
    """What to do after error `code`, answered with HTTP `http_status` if known."""
    if http_status in AMBIGUOUS_HTTP:
        return Action.AMBIGUOUS
    if code == WINDOW_CLOSED:
        return Action.TEMPLATE
    if code in RATE_LIMITS:
        return Action.RETRY_SLOWLY
    if code in TRANSIENT or (http_status is not None and 500 <= http_status <= 599):
        return Action.RETRY
    if code in ACCOUNT or code in AUTH:
        return Action.PAUSE
    return Action.FAIL


# For SQL: the codes after which a message Meta accepted, then reported failed, is queued
# again (it was not delivered, so sending it again cannot double it).
SENT_AGAIN_AFTER_FAILED_STATUS = sorted(RATE_LIMITS | TRANSIENT | ACCOUNT | AUTH)
