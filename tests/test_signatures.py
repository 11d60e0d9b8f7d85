"""Webhook and billing-event signatures (bot/signatures.py, SPEC §5 and §4): HMAC-SHA256 of
the raw body bytes, sent as `sha256=<hex>`."""

from __future__ import annotations

import json

import pytest

from bot.signatures import SignatureCheck, check, sign

# RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
RFC4231_KEY = "Jefe"
RFC4231_DATA = b"what do ya want for nothing?"
RFC4231_SHA256 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"

SECRET = "app-secret"
BODY = b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[]}]}'


def test_sign_is_hmac_sha256_as_the_rfc_vector() -> None:
    assert sign(RFC4231_DATA, RFC4231_KEY) == f"sha256={RFC4231_SHA256}"


def test_the_rfc_vector_checks_valid() -> None:
    assert check(RFC4231_DATA, RFC4231_KEY, f"sha256={RFC4231_SHA256}") is SignatureCheck.VALID


@pytest.mark.parametrize("header", [None, ""])
def test_missing_header(header: str | None) -> None:
    assert check(BODY, SECRET, header) is SignatureCheck.MISSING


def test_signature_of_another_secret_is_invalid() -> None:
    assert check(BODY, SECRET, sign(BODY, "another-secret")) is SignatureCheck.INVALID


def test_one_changed_byte_is_invalid() -> None:
    header = sign(BODY, SECRET)
    tampered = BODY.replace(b'"id":"1"', b'"id":"2"')
    assert check(tampered, SECRET, header) is SignatureCheck.INVALID


def test_reserialised_json_is_not_the_signed_body() -> None:
    # Meta signs the bytes it sent; parsing and dumping the JSON changes them.
    header = sign(BODY, SECRET)
    reserialised = json.dumps(json.loads(BODY)).encode()
    assert reserialised != BODY
    assert check(reserialised, SECRET, header) is SignatureCheck.INVALID
    assert check(BODY, SECRET, header) is SignatureCheck.VALID


def test_non_ascii_body_is_signed_as_bytes() -> None:
    body = '{"text":"¿Menú? 👍"}'.encode()
    assert check(body, SECRET, sign(body, SECRET)) is SignatureCheck.VALID
    assert check(body.decode().encode("utf-16"), SECRET, sign(body, SECRET)) is (
        SignatureCheck.INVALID
    )


@pytest.mark.parametrize(
    "header",
    [
        RFC4231_SHA256,  # without the "sha256=" prefix
        f"sha1={RFC4231_SHA256}",
        f"sha256={RFC4231_SHA256[:-1]}",
        "sha256=",
        "sha256=zz",
        f"sha256={RFC4231_SHA256}ñ",  # non-ASCII can never be a hex digest
        "sha256=🙂",
    ],
)
def test_malformed_headers_are_invalid(header: str) -> None:
    assert check(RFC4231_DATA, RFC4231_KEY, header) is SignatureCheck.INVALID


def test_surrounding_whitespace_in_the_header_is_tolerated() -> None:
    assert check(RFC4231_DATA, RFC4231_KEY, f" sha256={RFC4231_SHA256}\r\n") is (
        SignatureCheck.VALID
    )
