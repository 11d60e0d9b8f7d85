"""Debian's Chromium, driven by Playwright, for the browser tests (Playwright's own browser
download does not work on our machines; scripts/ensure-chromium installs Debian's)."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_chromium(what: str) -> None:
    """Skip the calling test module, saying why, when the browser is not installed."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} not found: install Debian's chromium package "
            f"(scripts/ensure-chromium) to run {what}",
            allow_module_level=True,
        )
