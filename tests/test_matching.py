"""Free text to a menu option (flows/matching.py), on the real keyword lists of the catalog."""

from __future__ import annotations

import time

import pytest

from flows.catalog import default_catalog
from flows.matching import Matcher, Option, Outcome, fold

CATALOG = default_catalog()
MAIN_OPTIONS = ("upgrade", "transfer", "cancel", "account", "alerts", "faq", "human")


def menu_option(key: str) -> Option:
    """A main-menu option as the menu offers it: its title and its keywords."""
    return Option(
        key,
        (
            CATALOG.text(f"menu.options.{key}.title"),
            *CATALOG.words(f"menu.options.{key}.keywords"),
        ),
    )


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher(CATALOG.words("words.negations"))


@pytest.fixture(scope="module")
def main_menu() -> list[Option]:
    return [menu_option(k) for k in MAIN_OPTIONS]


# -- folding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Menú", "menu"),
        ("¡MENÚ!", "menu"),
        ("¿Preguntás frecuéntes?", "preguntas frecuentes"),
        ("Ñandú", "nandu"),
        ("opción   2.", "opcion 2"),
        ("hola 👋 buen día 😀", "hola buen dia"),
        ("dar-de_baja", "dar de baja"),
        ("   ", ""),
        ("👍🙏", ""),
    ],
)
def test_fold_drops_case_accents_punctuation_and_emoji(text: str, folded: str) -> None:
    assert fold(text) == folded


# -- the real main menu ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("preguntas frecuentes", "faq"),
        ("PREGUNTAS FRECUENTES!!", "faq"),
        ("¿Preguntas frecuéntes? 🙏", "faq"),
        # Typos customers make.
        ("preguntas frecuntes", "faq"),
        ("alrtas", "alerts"),
        ("notificasiones", "alerts"),
        # The phrase inside a longer sentence.
        ("quiero ver las preguntas frecuentes por favor", "faq"),
        ("hola, quisiera subir de plan mi hosting", "upgrade"),
        ("necesito dar de baja el servicio", "cancel"),
        ("quiero hablar con una persona", "human"),
    ],
)
def test_typed_text_picks_the_main_menu_option(
    matcher: Matcher, main_menu: list[Option], text: str, key: str
) -> None:
    match = matcher.match(text, main_menu)
    assert match.outcome is Outcome.MATCHED
    assert match.key == key


@pytest.mark.parametrize(
    ("text", "position"),
    [("2", 2), ("opción 2", 2), ("Opcion 2", 2), ("2.", 2), (" 2 ", 2), ("6", 6), ("1️⃣", 1)],
)
def test_a_number_picks_the_option_at_that_position(
    matcher: Matcher, main_menu: list[Option], text: str, position: int
) -> None:
    match = matcher.match(text, main_menu)
    assert match.outcome is Outcome.NUMBER
    assert match.key == MAIN_OPTIONS[position - 1]


@pytest.mark.parametrize("text", ["0", "8", "opción 8", "99"])
def test_a_number_outside_the_list_is_no_choice(
    matcher: Matcher, main_menu: list[Option], text: str
) -> None:
    match = matcher.match(text, main_menu)
    assert match.outcome is Outcome.NONE
    assert not match.ok


def test_only_the_numbered_options_can_be_chosen_by_number(matcher: Matcher) -> None:
    shown = [menu_option("faq"), menu_option("human")]
    hidden = Option("faq:backups", CATALOG.words("faq.backups.keywords"))
    options = [*shown, hidden]

    assert matcher.match("2", options, numbered=2).key == "human"
    assert matcher.match("3", options, numbered=2).outcome is Outcome.NONE
    assert matcher.match("3", options).key == "faq:backups"
    # Not numbered, but still understood by its words.
    assert matcher.match("copia de seguridad", options, numbered=2).key == "faq:backups"


@pytest.mark.parametrize("text", ["asdkjh qwe", "xqzv", "jajaja", "el perro come", "ok"])
def test_gibberish_matches_nothing(matcher: Matcher, main_menu: list[Option], text: str) -> None:
    match = matcher.match(text, main_menu)
    assert match.outcome is Outcome.NONE
    assert match.key is None


def test_text_naming_two_options_is_ambiguous(matcher: Matcher, main_menu: list[Option]) -> None:
    match = matcher.match("quiero alertas y preguntas frecuentes", main_menu)
    assert match.outcome is Outcome.AMBIGUOUS
    assert match.key is None


def test_text_equally_close_to_two_options_is_ambiguous(matcher: Matcher) -> None:
    # One letter away from each: no margin between them.
    options = [Option("basic", ("plan basico",)), Option("basica", ("plan basica",))]
    assert matcher.match("plan basic", options).outcome is Outcome.AMBIGUOUS
    assert matcher.match("plan basico", options).key == "basic"


def test_the_margin_lets_a_clearly_better_option_win(matcher: Matcher) -> None:
    options = [Option("alerts", ("alertas",)), Option("faq", ("preguntas frecuentes",))]
    assert matcher.match("alertas", options).key == "alerts"


# -- negations -------------------------------------------------------------------------


def test_a_negated_keyword_is_not_a_request(matcher: Matcher) -> None:
    exit_option = [Option("exit", CATALOG.words("words.exit")), menu_option("faq")]
    assert matcher.match("salir", exit_option).key == "exit"
    negated = matcher.match("no quiero salir", exit_option)
    assert negated.outcome is Outcome.NEGATED
    assert negated.key is None


def test_contains_ignores_negated_global_words(matcher: Matcher) -> None:
    exit_words = CATALOG.words("words.exit")
    assert matcher.contains("salir", exit_words)
    assert matcher.contains("Salir!", exit_words)
    assert not matcher.contains("no quiero salir", exit_words)
    assert not matcher.contains("nunca dije salir", exit_words)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        # The negated phrase holds a shorter keyword of the same list beyond the
        # negation's reach ("una persona", "menu"): it must not count on its own.
        ("no quiero hablar con una persona", "words.human"),
        ("no quiero volver al menu", "words.menu"),
    ],
)
def test_a_negated_phrase_does_not_count_through_a_shorter_keyword(
    matcher: Matcher, text: str, words: str
) -> None:
    assert not matcher.contains(text, CATALOG.words(words))
    affirmative = text.removeprefix("no ")
    assert matcher.contains(affirmative, CATALOG.words(words))


def test_a_negated_cancellation_is_not_a_cancellation(
    matcher: Matcher, main_menu: list[Option]
) -> None:
    assert matcher.match("quiero dar de baja", main_menu).key == "cancel"
    match = matcher.match("no quiero dar de baja", main_menu)
    assert match.key is None
    assert match.outcome is Outcome.NEGATED


# -- short keywords and words inside words ---------------------------------------------


def test_short_keywords_must_match_exactly(matcher: Matcher) -> None:
    faq = [menu_option("faq"), menu_option("human")]
    assert matcher.match("faq", faq).key == "faq"
    # One letter more is four fifths alike, enough for a fuzzy match; not for "faq".
    assert matcher.match("faqs", faq).outcome is Outcome.NONE
    yes_no = [Option("yes", ("si",)), Option("no_", ("no",))]
    assert matcher.match("Sí", yes_no).key == "yes"
    assert matcher.match("se", yes_no).outcome is Outcome.NONE


@pytest.mark.parametrize("text", ["trabajar", "quiero trabajar con ustedes", "trabajo"])
def test_baja_does_not_match_inside_another_word(
    matcher: Matcher, main_menu: list[Option], text: str
) -> None:
    assert "baja" in CATALOG.words("menu.options.cancel.keywords")
    assert matcher.match(text, main_menu).key != "cancel"


def test_baja_alone_is_a_cancellation(matcher: Matcher, main_menu: list[Option]) -> None:
    assert matcher.match("baja", main_menu).key == "cancel"


# -- hostile input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "x" * 4000,
        ("lorem ipsum dolor sit amet " * 160)[:4000],
        "😀" * 4000,
        "👍🙏🎉",
        "",
        "   ",
        "¿¡...!?",
    ],
)
def test_long_or_emoji_only_text_is_no_choice_and_is_quick(
    matcher: Matcher, main_menu: list[Option], text: str
) -> None:
    started = time.perf_counter()
    match = matcher.match(text, main_menu)
    contained = matcher.contains(text, CATALOG.words("words.human"))
    elapsed = time.perf_counter() - started
    assert match.outcome is Outcome.NONE
    assert not contained
    # A webhook turn must not stall on one message (generous bound for slow CI).
    assert elapsed < 0.5


def test_no_options_is_no_choice(matcher: Matcher) -> None:
    assert matcher.match("preguntas frecuentes", []).outcome is Outcome.NONE
    assert matcher.match("1", []).outcome is Outcome.NONE
