"""The catalog (flows/catalog.py) and the real `messages_es/`: every key the code asks for
exists and renders with what the code passes, and what the customer sees fits WhatsApp's
limits (SPEC §5) and speaks to them as "usted", like the help pages.

The keys are found by reading the code (flows/*.py, bot/*.py): string arguments of `.t(`,
`.say(`, `catalog.text(`, `catalog.words(`, `_text(deps, …)`, `_is_global(…, words)` and
`Choice(…)`; f-strings are expanded over the values the code gives their variables.
"""

from __future__ import annotations

import ast
import itertools
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flows import cancel, transfer, upgrade
from flows.account import SERVICE_STATUSES
from flows.alerts import ALERT_TYPES, catalog_key
from flows.catalog import Catalog, default_catalog, placeholders
from flows.matching import fold
from flows.menu import FAQ_TOPICS, MENU_OPTIONS

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.glob("flows/*.py"), *ROOT.glob("bot/*.py")])
CATALOG = default_catalog()

# What the f-strings' and variables' values can be, from the code that sets them.
KNOWN_VALUES: dict[str, tuple[str, ...]] = {
    "topic": FAQ_TOPICS,  # menu._faq_choice(topic), render_faq_answer (checked in FAQ_TOPICS)
    "menu_option": MENU_OPTIONS,  # menu._menu_option(menu_option, …)
    "status": SERVICE_STATUSES,  # Account._services (checked in SERVICE_STATUSES)
    "base": tuple(catalog_key(t) for t in ALERT_TYPES),  # flows/alerts, templates, menu
    "button": upgrade.BUTTONS,  # flows/upgrade._button
    "action": cancel.BUTTONS,  # flows/cancel._button
    "cycle": upgrade.CYCLE_ORDER,  # flows/upgrade: a period's name and "per"
    "reason": (*upgrade.REFUSALS, "other"),  # flows/upgrade._refused
    "side": transfer.SIDES,  # flows/transfer._tell
    "why": (*transfer.REFUSALS, "other"),  # flows/transfer._tell
    "pending": transfer.PENDING_OUTCOMES,  # flows/transfer._tell
}
# Meta's template texts, with numbered parameters ({{1}}): not sentences the bot formats;
# bot.templates.problems checks them against Meta's rules.
TEMPLATE_TEXT = (".template_body", ".button.url")

# WhatsApp limits (SPEC §5).
TEXT_MAX = 4096
BUTTON_TITLE_MAX = 20
ROW_TITLE_MAX = 24
ROW_DESCRIPTION_MAX = 72
LIST_BUTTON_MAX = 20
SECTION_TITLE_MAX = 24
MAX_ROWS = 10

# Informal ("tú"/"vos") forms; the help pages and the bot say "usted". Folded (no accents).
INFORMAL = frozenset(
    {
        "tu",
        "tus",
        "te",
        "ti",
        "contigo",
        "vos",
        "tenes",
        "queres",
        "podes",
        "sabes",
        "tienes",
        "quieres",
        "puedes",
        "necesitas",
        "elegi",
        "escribi",
        "fijate",
        "mira",
    }
)


@dataclass(frozen=True)
class Use:
    """One place the code asks the catalog for a key."""

    key: str
    role: str  # "sentence", "words", "title" or "description"
    params: frozenset[str] | None  # keyword arguments passed; None when **kwargs
    where: str


# -- reading the code ------------------------------------------------------------------


def _literal_strings(node: ast.expr) -> list[str] | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        body, orelse = _literal_strings(node.body), _literal_strings(node.orelse)
        if body is not None and orelse is not None:
            return body + orelse
    return None


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.uses: list[Use] = []
        self.unresolved: list[str] = []
        self.button_keys: set[str] = set()
        self._scopes: list[ast.FunctionDef | ast.AsyncFunctionDef] = []

    # Scopes, to resolve a variable from its function.
    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scopes.append(node)
        self.generic_visit(node)
        self._scopes.pop()

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._scopes.append(node)
        self.generic_visit(node)
        self._scopes.pop()

    def _where(self, node: ast.AST) -> str:
        return f"{self.path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"

    def _is_parameter(self, name: str) -> bool:
        if not self._scopes:
            return False
        args = self._scopes[-1].args
        every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
        return any(a.arg == name for a in every)

    def _local_values(self, name: str) -> list[str] | None:
        """Values a variable gets in its function: `x = "a" if c else "b"`, or a
        `for x, y in (("a", …), ("b", …))` over literals."""
        if not self._scopes:
            return None
        values: list[str] = []
        for node in ast.walk(self._scopes[-1]):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets
            ):
                found = _literal_strings(node.value)
                if found is None:
                    return None
                values += found
            if isinstance(node, ast.For | ast.AsyncFor) and isinstance(node.iter, ast.Tuple):
                position = _target_position(node.target, name)
                if position is None:
                    continue
                for element in node.iter.elts:
                    item = element.elts[position] if isinstance(element, ast.Tuple) else element
                    found = _literal_strings(item)
                    if found is None:
                        return None
                    values += found
        return values or None

    def _keys(self, node: ast.expr) -> list[str] | None:
        """The keys an argument can be; None when it is passed through (a parameter of
        the wrapper, or an attribute such as `choice.title`, checked where it is set)."""
        literal = _literal_strings(node)
        if literal is not None:
            return literal
        if isinstance(node, ast.JoinedStr):
            return self._expand(node)
        if isinstance(node, ast.Name):
            if self._is_parameter(node.id):
                return None
            local = self._local_values(node.id)
            if local is not None:
                return local
            if node.id in KNOWN_VALUES:
                return list(KNOWN_VALUES[node.id])
        if isinstance(node, ast.Attribute):
            return None
        self.unresolved.append(f"{self._where(node)}: {ast.unparse(node)}")
        return []

    def _expand(self, node: ast.JoinedStr) -> list[str]:
        parts: list[list[str]] = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append([str(value.value)])
            elif isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Name):
                name = value.value.id
                options = self._local_values(name) or list(KNOWN_VALUES.get(name, ()))
                if not options:
                    self.unresolved.append(f"{self._where(node)}: {{{name}}} in f-string")
                    return []
                parts.append(options)
            else:
                self.unresolved.append(f"{self._where(node)}: {ast.unparse(node)}")
                return []
        return ["".join(p) for p in itertools.product(*parts)]

    def _add(self, node: ast.expr, role: str, call: ast.Call | None = None) -> None:
        keys = self._keys(node)
        if keys is None:
            return
        params: frozenset[str] | None = frozenset()
        if call is not None:
            if any(k.arg is None for k in call.keywords):
                params = None
            else:
                params = frozenset(k.arg for k in call.keywords if k.arg is not None)
        for key in keys:
            self.uses.append(Use(key, role, params, self._where(node)))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        method = func.attr if isinstance(func, ast.Attribute) else None
        name = func.id if isinstance(func, ast.Name) else None
        receiver = _last_name(func.value) if isinstance(func, ast.Attribute) else None
        if node.args:
            if method in ("t", "say") or (method == "text" and receiver == "catalog"):
                self._add(node.args[0], "sentence", node)
            elif method == "words" and receiver == "catalog":
                self._add(node.args[0], "words")
            elif name == "_text" and len(node.args) >= 2:
                self._add(node.args[1], "sentence", node)
            elif name == "_is_global" and len(node.args) >= 3:
                self._add(node.args[2], "words")
        if name == "Choice":
            roles = {2: "title", 3: "words", 4: "description"}
            for i, arg in enumerate(node.args):
                if i in roles:
                    self._add(arg, roles[i])
            by_name = {"title": "title", "keywords": "words", "description": "description"}
            for kw in node.keywords:
                if kw.arg in by_name:
                    self._add(kw.value, by_name[kw.arg])
        for kw in node.keywords:
            if kw.arg == "button" and isinstance(kw.value, ast.Call):
                inner = kw.value
                if inner.args and isinstance(inner.func, ast.Attribute):
                    found = _literal_strings(inner.args[0])
                    self.button_keys.update(found or ())
        self.generic_visit(node)


def _target_position(target: ast.expr, name: str) -> int | None:
    if isinstance(target, ast.Name):
        return 0 if target.id == name else None
    if isinstance(target, ast.Tuple):
        for i, element in enumerate(target.elts):
            if isinstance(element, ast.Name) and element.id == name:
                return i
    return None


def _last_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


@dataclass(frozen=True)
class Scan:
    uses: list[Use]
    unresolved: list[str]
    button_keys: set[str]


def scan() -> Scan:
    uses: list[Use] = []
    unresolved: list[str] = []
    buttons: set[str] = set()
    for path in SOURCES:
        scanner = _Scanner(path)
        scanner.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        uses += scanner.uses
        unresolved += scanner.unresolved
        buttons |= scanner.button_keys
    return Scan(uses, unresolved, buttons)


SCAN = scan()
USES = SCAN.uses


def uses_of(role: str) -> list[Use]:
    return [u for u in USES if u.role == role]


def _raw_entries() -> dict[str, object]:
    """The messages as written in the TOML files, read here independently of Catalog."""
    entries: dict[str, object] = {}

    def flatten(data: dict[str, object], prefix: str) -> None:
        for key, value in data.items():
            if isinstance(value, dict):
                flatten(value, f"{prefix}.{key}")
            else:
                entries[f"{prefix}.{key}"] = value

    for path in sorted((ROOT / "messages_es").glob("*.toml")):
        with path.open("rb") as f:
            flatten(tomllib.load(f), path.stem)
    return entries


RAW = _raw_entries()


def _is_words(key: str) -> bool:
    return isinstance(RAW.get(key), list)


def _placeholders(key: str) -> set[str]:
    template = RAW[key]
    assert isinstance(template, str), key
    return placeholders(template)


def sentences() -> Iterator[tuple[str, str]]:
    """Every sentence of the catalog, with sample values in its placeholders."""
    for key, value in sorted(RAW.items()):
        if isinstance(value, str) and not key.endswith(TEMPLATE_TEXT):
            yield key, CATALOG.text(key, **{p: "X" for p in _placeholders(key)})


# -- the scan itself works -------------------------------------------------------------


def test_the_scan_finds_the_keys_used_in_each_way() -> None:
    found = {u.key for u in USES}
    # One key of each way of asking, so a broken scan cannot pass silently.
    for key in (
        "common.session_expired",  # _text(deps, "…") in flows/conversation.py
        "words.exit",  # the global words, through _is_global
        "words.negations",  # catalog.words in bot/dispatcher.py
        "common.error",  # catalog.text in bot/dispatcher.py
        "menu.goodbye",  # self.say
        "alerts.now_off",  # one branch of a conditional
        "alerts.turn_on_keywords",  # f"{key}_keywords" with key from a conditional
        "menu.options.cancel.keywords",  # _menu_option's f-string
        "faq.phone.answer",  # f-string over FAQ_TOPICS
        "cancel.buttons.go_on",  # f-string over flows.cancel.BUTTONS
        "menu.options.human.description",  # Choice(...) positional
        "faq.backups.description",  # Choice(description=...)
    ):
        assert key in found, key


def test_every_key_argument_can_be_resolved() -> None:
    # A key built in a way the scan cannot follow would go unchecked: extend KNOWN_VALUES.
    assert SCAN.unresolved == []


# -- keys the code uses ----------------------------------------------------------------


def test_every_key_used_by_the_code_exists() -> None:
    missing = sorted({f"{u.key} ({u.where})" for u in USES if not CATALOG.has(u.key)})
    assert missing == []


def test_sentences_are_sentences_and_keywords_are_lists() -> None:
    wrong = []
    for use in USES:
        if not CATALOG.has(use.key):
            continue
        if (use.role == "words") != _is_words(use.key):
            wrong.append(f"{use.key} used as {use.role} at {use.where}")
    assert wrong == []


def test_every_sentence_gets_the_placeholders_it_needs() -> None:
    problems = []
    for use in uses_of("sentence"):
        if use.params is None or not CATALOG.has(use.key) or _is_words(use.key):
            continue
        needed = _placeholders(use.key)
        if not needed <= use.params:
            problems.append(f"{use.key} at {use.where} needs {sorted(needed - use.params)}")
    assert problems == []


@pytest.mark.parametrize("role", ["title", "description"])
def test_choice_titles_and_descriptions_have_no_placeholders(role: str) -> None:
    # The runtime renders them with no parameters.
    with_params = sorted({u.key for u in uses_of(role) if _placeholders(u.key)})
    assert with_params == []


def test_the_numbered_row_title_takes_a_number_and_a_title() -> None:
    assert _placeholders("common.numbered") == {"number", "title"}


# -- every message ---------------------------------------------------------------------


def test_no_sentence_is_empty_or_too_long() -> None:
    for key, text in sentences():
        assert text.strip(), key
        assert len(text) <= TEXT_MAX, key
        assert "{" not in text and "}" not in text, key


def test_no_keyword_list_is_empty_and_every_keyword_can_be_typed() -> None:
    for key, value in RAW.items():
        if isinstance(value, list):
            words = CATALOG.words(key)
            assert words, key
            # An emoji-only or punctuation-only keyword folds to nothing: it never matches.
            assert all(fold(w) for w in words), key


def test_catalog_rejects_missing_placeholders() -> None:
    with pytest.raises(KeyError):
        CATALOG.text("identity.unknown")


def test_catalog_rejects_a_key_defined_twice(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('[b]\nc = "uno"\n', encoding="utf-8")
    (tmp_path / "a.b.toml").write_text('c = "dos"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="twice"):
        Catalog.load(tmp_path)


def test_sentences_and_word_lists_are_not_interchangeable() -> None:
    with pytest.raises(TypeError):
        CATALOG.words("menu.goodbye")
    with pytest.raises(TypeError):
        CATALOG.text("words.exit")


def test_the_catalog_holds_every_message_of_the_files() -> None:
    assert set(CATALOG.keys()) == set(RAW)


# -- what fits on WhatsApp -------------------------------------------------------------


def test_every_choice_title_fits_a_reply_button() -> None:
    # Up to three visible choices are sent as reply buttons.
    for key in sorted({u.key for u in uses_of("title")}):
        title = CATALOG.text(key)
        assert 0 < len(title) <= BUTTON_TITLE_MAX, (key, title)


def test_every_choice_title_fits_a_numbered_list_row() -> None:
    # More than three become rows titled "<n>. <title>", n up to the 10 rows WhatsApp allows.
    for key in sorted({u.key for u in uses_of("title")}):
        row = CATALOG.text("common.numbered", number=MAX_ROWS, title=CATALOG.text(key))
        assert len(row) <= ROW_TITLE_MAX, (key, row)


def test_every_choice_description_fits_a_list_row() -> None:
    for key in sorted({u.key for u in uses_of("description")}):
        assert 0 < len(CATALOG.text(key)) <= ROW_DESCRIPTION_MAX, key


def test_list_buttons_and_section_titles_fit() -> None:
    list_buttons = SCAN.button_keys | {"common.list_button"}
    assert {"menu.button", "faq.button"} <= list_buttons
    for key in list_buttons:
        assert 0 < len(CATALOG.text(key)) <= LIST_BUTTON_MAX, key
    assert 0 < len(CATALOG.text("common.list_section")) <= SECTION_TITLE_MAX


# -- how it speaks ---------------------------------------------------------------------


def test_customer_text_says_usted() -> None:
    informal = {}
    for key, text in sentences():
        found = INFORMAL & set(fold(text).split())
        if found:
            informal[key] = sorted(found)
    assert informal == {}


def test_the_informal_check_would_catch_voseo_and_tuteo() -> None:
    for sentence in ("¿Querés ver tu factura?", "Si tenés dudas, escribí menu", "Puedes pagar"):
        assert INFORMAL & set(fold(sentence).split()), sentence


# -- the help pages' rules -------------------------------------------------------------


def test_unknown_numbers_are_pointed_to_the_panel_and_told_nothing_else() -> None:
    # SPEC §3: a polite answer pointing to the panel's details page, nothing about accounts.
    assert _placeholders("identity.unknown") == {"panel_url"}
    assert _placeholders("identity.several") == set()


def test_the_transfer_message_is_the_help_pages_one() -> None:
    # SPEC §3: both holders send this message byte for byte; the FAQ must show it exactly.
    pattern = re.compile(
        r"^Hola ! soy <[^>]+> , mi correo de cliente es <[^>]+> y deseo que el servicio "
        r"<[^>]+> que activo y al dia pase a nombre del cliente <[^>]+> con correo <[^>]+>\.\.$",
        re.MULTILINE,
    )
    assert pattern.search(CATALOG.text("faq.transfer.answer"))


def test_the_upgrade_example_is_the_help_pages_one() -> None:
    # Paid 100 $ a year, moves to a 150 $ plan mid-year: pays 50 $ (SPEC §3, help page).
    numbers = set(re.findall(r"\d+", CATALOG.text("faq.upgrade_price.answer")))
    assert {"100", "150", "50"} <= numbers


def test_backups_are_kept_ten_years() -> None:
    for key in ("faq.backups.answer", "faq.cancellation.answer"):
        assert "10" in re.findall(r"\d+", CATALOG.text(key)), key
