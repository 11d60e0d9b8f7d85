"""Free text to one of the options on screen.

Customers type instead of tapping: "preguntas frecuntes", "quiero subir mi plan", "2".
Each option has keyword phrases (from `messages_es`); the text is folded (lower case,
no accents, no punctuation or emoji) and every keyword is compared, with rapidfuzz, to
every run of words of about its length in the text. That tolerates typos without
letting "baja" match inside "trabajar". A match needs a score over the cut-off and a
clear margin over the runner-up, and a keyword preceded by a negation ("no quiero
salir") does not count.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

from rapidfuzz import fuzz

CUTOFF = 85.0
MARGIN = 8.0
# A long message is not a menu choice; only its first words are compared.
MAX_WORDS = 40
# How many words before a keyword a negation still applies to.
NEGATION_REACH = 3
# Keywords this short are compared exactly, never fuzzily.
EXACT_UP_TO = 4

_NON_WORD = re.compile(r"[^0-9a-z]+")
_NUMBER_CHOICE = re.compile(r"^(?:(?:opcion|numero|nro|n|la|el)\s+)?(\d{1,2})$")


def fold(text: str) -> str:
    """Lower case, accents and punctuation removed, spaces collapsed: 'Menú!' → 'menu'."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NON_WORD.sub(" ", stripped).strip()


@lru_cache(maxsize=4096)
def _keyword_words(keyword: str) -> tuple[str, ...]:
    """A keyword folded and split, once: the same few hundred keywords come every time."""
    return tuple(fold(keyword).split())


@dataclass(frozen=True, slots=True)
class Option:
    """Something the customer can choose; `key` is what the flow acts on."""

    key: str
    keywords: tuple[str, ...]


class Outcome(Enum):
    MATCHED = "matched"
    NUMBER = "number"
    AMBIGUOUS = "ambiguous"
    NEGATED = "negated"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Match:
    outcome: Outcome
    key: str | None = None
    score: float = 0.0

    @property
    def ok(self) -> bool:
        return self.key is not None


@dataclass(frozen=True, slots=True)
class _Hit:
    score: float
    negated: bool
    words: int = 0  # how many words the keyword has: a longer phrase says more
    start: int = 0  # where in the text it was found, and how many words it took
    size: int = 0

    def overlaps(self, other: _Hit) -> bool:
        return self.start < other.start + other.size and other.start < self.start + self.size


class Matcher:
    """Matches text against options, given the language's negation words."""

    def __init__(
        self, negations: Iterable[str], *, cutoff: float = CUTOFF, margin: float = MARGIN
    ) -> None:
        self.negations = frozenset(fold(n) for n in negations)
        self.cutoff = cutoff
        self.margin = margin

    def match(self, text: str, options: Sequence[Option], *, numbered: int | None = None) -> Match:
        """The option the text means. The first `numbered` options (all by default) can
        also be chosen by their number, as shown to the customer."""
        folded = fold(text)
        if not folded:
            return Match(Outcome.NONE)
        count = len(options) if numbered is None else numbered
        number = _NUMBER_CHOICE.match(folded)
        if number:
            index = int(number.group(1)) - 1
            if 0 <= index < count:
                return Match(Outcome.NUMBER, options[index].key, 100.0)
            return Match(Outcome.NONE)
        words = folded.split()[:MAX_WORDS]
        found: list[tuple[_Hit, str]] = []
        negated_best = top_score = 0.0
        for option in options:
            hits = self._hits(words, option.keywords)
            negated_best = max([negated_best, *(h.score for h in hits if h.negated)])
            kept = [] if self._refused(hits) else [h for h in hits if not h.negated]
            top_score = max([top_score, *(h.score for h in kept)])
            passing = [h for h in kept if h.score >= self.cutoff]
            if passing:
                # The option's most specific phrase in the text: the longest, then best.
                found.append((max(passing, key=lambda h: (h.words, h.score)), option.key))
        if not found:
            if negated_best >= self.cutoff:
                return Match(Outcome.NEGATED, score=negated_best)
            return Match(Outcome.NONE, score=top_score)
        # Where two options were found in the same words, the longer phrase is what the
        # sentence means: "cancelar un dominio" is about a domain, not about cancelling a
        # service; "a nombre de otra persona" is a transfer, not a request for a person.
        # Options found in different words (two requests), or by phrases as long, compete:
        # the clearer wins by the margin, or neither (ambiguous).
        found.sort(key=lambda f: (f[0].words, f[0].score), reverse=True)
        best, key = found[0]
        rivals = [
            hit.score for hit, _ in found[1:] if hit.words == best.words or not hit.overlaps(best)
        ]
        if rivals and best.score - max(rivals) < self.margin:
            return Match(Outcome.AMBIGUOUS, score=best.score)
        return Match(Outcome.MATCHED, key, best.score)

    def contains(self, text: str, keywords: Iterable[str]) -> bool:
        """Whether one of the keywords is in the text, not negated (for global words)."""
        hits = self._hits(fold(text).split()[:MAX_WORDS], keywords)
        if self._refused(hits):
            return False
        return any(h.score >= self.cutoff for h in hits)

    def _hits(self, words: list[str], keywords: Iterable[str]) -> list[_Hit]:
        return [self._score(words, _keyword_words(keyword)) for keyword in keywords]

    def _refused(self, hits: list[_Hit]) -> bool:
        """A keyword said with a negation refuses the whole option, including the shorter
        keywords inside the negated phrase: "no quiero hablar con una persona" also holds
        "una persona", whose own window is out of the negation's reach."""
        return any(h.negated and h.score >= self.cutoff for h in hits)

    def _score(self, words: list[str], keyword: Sequence[str]) -> _Hit:
        if not keyword or not words:
            return _Hit(0.0, False)
        phrase = " ".join(keyword)
        best = _Hit(0.0, False, len(keyword))
        n = len(keyword)
        for size in {max(1, n - 1), n, n + 1}:
            for start in range(0, max(1, len(words) - size + 1)):
                window = " ".join(words[start : start + size])
                # Short keywords must match exactly: one letter more or less turns
                # "si" or "baja" into another word ("bajar de plan" is no cancellation).
                if len(phrase) <= EXACT_UP_TO:
                    score = 100.0 if window == phrase else 0.0
                else:
                    score = fuzz.ratio(window, phrase)
                if score > best.score or (score == best.score and best.negated):
                    negated = self._negated(words, start)
                    best = _Hit(score, negated, len(keyword), start, size)
        return best

    def _negated(self, words: list[str], start: int) -> bool:
        before = words[max(0, start - NEGATION_REACH) : start]
        return any(w in self.negations for w in before)
