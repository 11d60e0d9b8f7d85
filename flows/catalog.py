"""Every customer-facing sentence lives in `messages_es/*.toml`, keyed, with named
placeholders (`{name}`). Code asks for a key; a missing key or placeholder fails loudly
in tests instead of showing a customer half a sentence.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Mapping
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

# Installed with the code (package data), not looked up from the working directory.
MESSAGES = resources.files("messages_es")


class Catalog:
    def __init__(self, entries: Mapping[str, Any]) -> None:
        self._entries = dict(entries)

    @classmethod
    def load(cls, directory: Traversable = MESSAGES) -> Catalog:
        entries: dict[str, Any] = {}
        files = [f for f in directory.iterdir() if f.name.endswith(".toml")]
        for path in sorted(files, key=lambda f: f.name):
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            for key, value in _flatten(data, path.name.removesuffix(".toml")):
                if key in entries:
                    raise ValueError(f"message key {key!r} defined twice ({path.name})")
                entries[key] = value
        return cls(entries)

    def keys(self) -> list[str]:
        return sorted(self._entries)

    def text(self, key: str, **params: object) -> str:
        """The sentence under `key` with its placeholders filled."""
        template = self._entries[key]
        if not isinstance(template, str):
            raise TypeError(f"message {key!r} is not a sentence")
        needed = placeholders(template)
        missing = needed - params.keys()
        if missing:
            raise KeyError(f"message {key!r} needs {sorted(missing)}")
        return template.format(**params) if needed else template

    def words(self, key: str) -> tuple[str, ...]:
        """A list of words or phrases (keywords for matching, not sentences)."""
        value = self._entries[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"message {key!r} is not a list of words")
        return tuple(value)

    def has(self, key: str) -> bool:
        return key in self._entries

    def raw(self, key: str) -> Any:
        """The value under `key` as written, nothing filled (e.g. a template's `{{1}}`)."""
        return self._entries[key]


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _flatten(data: Mapping[str, Any], prefix: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        full = f"{prefix}.{key}"
        if isinstance(value, Mapping):
            out.extend(_flatten(value, full))
        else:
            out.append((full, value))
    return out


@cache
def default_catalog() -> Catalog:
    return Catalog.load()
