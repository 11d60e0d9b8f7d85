"""The alerts' WhatsApp templates as Meta's template-creation API takes them
(`POST /{WABA-ID}/message_templates`), built from `messages_es/alerts.toml`, and Meta's
rules for creating one, checked before anything is submitted.

`python -m bot templates export` prints `definitions()`; the fake Cloud API learns from
`param_counts()` which templates exist and how many parameters each expects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from flows.alerts import MESSAGE_KEYS
from flows.catalog import Catalog
from flows.handover import FOLLOW_UP, HANDED_BACK

# Every template the bot may send: the alerts', a transfer request's expiry (its
# sender is told days later, outside the 24 h window), and, once the window has closed,
# a staff member's follow-up and the word that a person finished with a conversation.
TEMPLATE_KEYS = (*MESSAGE_KEYS, "transfer.expired", FOLLOW_UP, HANDED_BACK)

LANGUAGE = "es"
CATEGORY = "UTILITY"
CATEGORIES = frozenset({"UTILITY", "MARKETING", "AUTHENTICATION"})

# Meta's limits on a template (WhatsApp Business Management API, message templates).
NAME_MAX = 512
BODY_MAX = 1024
FOOTER_MAX = 60
BUTTON_TEXT_MAX = 25
URL_MAX = 2000
URL_BUTTONS_MAX = 1  # Meta allows 2; the sender fills only the button at index 0

_NAME = re.compile(r"[a-z0-9_]+")
# A language code as Meta writes them: `es`, `es_AR`, `pt_BR`, `fil`.
_LANGUAGE = re.compile(r"[a-z]{2,3}(_[A-Z]{2})?")
_PARAM = re.compile(r"\{\{([^{}]*)\}\}")
_ENDS_WITH_PARAM = re.compile(r"\{\{[^{}]*\}\}\Z")
_ADJACENT = re.compile(r"\}\}\s*\{\{")
_VARIABLE = "{{1}}"


def definitions(catalog: Catalog, panel_url: str) -> list[dict[str, Any]]:
    """The alerts' templates (the 11 event types' in ALERT_TYPES order, then an upgrade's
    paid and expired variants), as Meta's creation JSON."""
    panel = panel_url.rstrip("/")
    footer = _raw_text(catalog, "alerts.template_footer")
    return [_definition(catalog, key, panel, footer) for key in TEMPLATE_KEYS]


def param_counts(catalog: Catalog) -> dict[str, tuple[int, int]]:
    """Template name → (body parameters, URL button parameters), as Meta will expect
    them once the templates are approved."""
    counts: dict[str, tuple[int, int]] = {}
    for definition in definitions(catalog, "https://panel.invalid"):
        body = button = 0
        for component in definition["components"]:
            if component["type"] == "BODY":
                body = len(set(_PARAM.findall(component["text"])))
            elif component["type"] == "BUTTONS":
                button = sum(len(_PARAM.findall(b["url"])) for b in component["buttons"])
        counts[definition["name"]] = (body, button)
    return counts


def _definition(catalog: Catalog, base: str, panel: str, footer: str) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "BODY", "text": _raw_text(catalog, f"{base}.template_body")}
    examples = catalog.raw(f"{base}.examples")
    if examples:
        body["example"] = {"body_text": [[str(e) for e in examples]]}
    components: list[dict[str, Any]] = [body]
    if footer:
        components.append({"type": "FOOTER", "text": footer})
    if catalog.has(f"{base}.button.url"):
        url = f"{panel}/{_raw_text(catalog, f'{base}.button.url').lstrip('/')}"
        button: dict[str, Any] = {
            "type": "URL",
            "text": _raw_text(catalog, f"{base}.button.text"),
            "url": url,
        }
        if _VARIABLE in url and catalog.has(f"{base}.button.example"):
            example = _raw_text(catalog, f"{base}.button.example")
            button["example"] = [url.replace(_VARIABLE, example)]
        components.append({"type": "BUTTONS", "buttons": [button]})
    return {
        "name": _raw_text(catalog, f"{base}.template"),
        "language": LANGUAGE,
        "category": CATEGORY,
        "components": components,
    }


def _raw_text(catalog: Catalog, key: str) -> str:
    # Raw: through str.format a `{{1}}` would come out as `{1}`.
    value = catalog.raw(key)
    if not isinstance(value, str):
        raise TypeError(f"message {key!r} is not text")
    return value


def problems(definition: Mapping[str, Any]) -> list[str]:
    """Every rule of Meta's for creating a template that `definition` breaks, in words;
    empty when Meta should accept it for review."""
    found: list[str] = []
    name = definition.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= NAME_MAX:
        found.append(f"name must be 1 to {NAME_MAX} characters")
    elif not _NAME.fullmatch(name):
        found.append(f"name {name!r} may hold only lowercase letters, digits and underscores")
    language = definition.get("language")
    if not isinstance(language, str) or not _LANGUAGE.fullmatch(language):
        found.append(f"language {language!r} is not a language code (es, es_AR…)")
    category = definition.get("category")
    if category not in CATEGORIES:
        found.append(f"category {category!r} is not one of {', '.join(sorted(CATEGORIES))}")
    components = definition.get("components")
    if not isinstance(components, list) or not all(isinstance(c, dict) for c in components):
        return [*found, "components must be a list of objects"]
    kinds = [c.get("type") for c in components]
    for kind in sorted(set(map(str, kinds))):
        if kind not in ("BODY", "FOOTER", "BUTTONS"):
            found.append(f"component {kind} is not one these templates use")
        elif kinds.count(kind) > 1:
            found.append(f"{kinds.count(kind)} {kind} components (at most one)")
    if "BODY" not in kinds:
        found.append("no BODY component")
    for component in components:
        if component.get("type") == "BODY":
            found += _body_problems(component)
        elif component.get("type") == "FOOTER":
            found += _footer_problems(component)
        elif component.get("type") == "BUTTONS":
            found += _buttons_problems(component)
    return found


def _body_problems(body: Mapping[str, Any]) -> list[str]:
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        return ["body is empty"]
    found: list[str] = []
    if len(text) > BODY_MAX:
        found.append(f"body has {len(text)} characters (at most {BODY_MAX})")
    names = _PARAM.findall(text)
    numbers = sorted({int(n) for n in names if n.isdigit()})
    for bad in sorted({n for n in names if not n.isdigit()}):
        found.append(f"body parameter {{{{{bad}}}}} is not a number")
    if numbers != list(range(1, len(numbers) + 1)):
        found.append(f"body parameters {numbers} are not {{{{1}}}}… in sequence")
    if any(brace in _PARAM.sub("", text) for brace in "{}"):
        found.append("body has a brace outside a {{n}} parameter")
    stripped = text.strip()
    if _PARAM.match(stripped):
        found.append("body starts with a parameter")
    if _ENDS_WITH_PARAM.search(stripped):
        found.append("body ends with a parameter")
    if _ADJACENT.search(text):
        found.append("body has two parameters side by side")
    example = body.get("example")
    rows = example.get("body_text") if isinstance(example, dict) else None
    if not numbers:
        if example is not None:
            found.append("body has an example but no parameters")
        return found
    if (
        not isinstance(rows, list)
        or len(rows) != 1
        or not isinstance(rows[0], list)
        or not all(isinstance(v, str) and v.strip() for v in rows[0])
    ):
        found.append("body needs example.body_text: one list of sample values")
    elif len(rows[0]) != len(numbers):
        found.append(f"body has {len(numbers)} parameters but {len(rows[0])} examples")
    return found


def _footer_problems(footer: Mapping[str, Any]) -> list[str]:
    text = footer.get("text")
    if not isinstance(text, str) or not text.strip():
        return ["footer is empty"]
    found: list[str] = []
    if len(text) > FOOTER_MAX:
        found.append(f"footer has {len(text)} characters (at most {FOOTER_MAX})")
    if "{{" in text:
        found.append("footer has a parameter (a footer may have none)")
    return found


def _buttons_problems(component: Mapping[str, Any]) -> list[str]:
    buttons = component.get("buttons")
    if not isinstance(buttons, list) or not buttons:
        return ["BUTTONS has no buttons"]
    found: list[str] = []
    if len(buttons) > URL_BUTTONS_MAX:
        found.append(f"{len(buttons)} buttons (at most {URL_BUTTONS_MAX} URL button)")
    for button in buttons:
        if not isinstance(button, dict) or button.get("type") != "URL":
            found.append("only URL buttons are used here")
            continue
        found += _url_button_problems(button)
    return found


def _url_button_problems(button: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    text = button.get("text")
    if not isinstance(text, str) or not text.strip():
        found.append("button text is empty")
    elif len(text) > BUTTON_TEXT_MAX:
        found.append(f"button text has {len(text)} characters (at most {BUTTON_TEXT_MAX})")
    url = button.get("url")
    if not isinstance(url, str) or not url.startswith("https://") or len(url) <= len("https://"):
        return [*found, f"button url {url!r} is not an https URL"]
    if len(url) > URL_MAX:
        found.append(f"button url has {len(url)} characters (at most {URL_MAX})")
    variables = _PARAM.findall(url)
    example = button.get("example")
    if len(variables) > 1:
        found.append("button url has more than one variable")
    elif variables and not url.endswith(_VARIABLE):
        found.append("button url's variable must be {{1}}, at its very end")
    if not variables:
        if example is not None:
            found.append("button has an example but its url no variable")
        return found
    prefix = url[: url.rfind("{{")]
    if (
        not isinstance(example, list)
        or len(example) != 1
        or not isinstance(example[0], str)
        or not example[0].startswith(prefix)
        or len(example[0]) == len(prefix)
        or "{" in example[0]
    ):
        found.append("button url has a variable: example must be one full sample URL")
    return found
