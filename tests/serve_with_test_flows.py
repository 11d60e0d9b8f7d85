"""`python -m tests.serve_with_test_flows`: `python -m bot serve` with the test-only flows
(tests/flows_for_tests.py) registered. Run it with WORKER_PROCESSES=0: the process that
runs the turns must be the one that imported them.

With `PAUSE_AFTER_BILLING=PATH`, the first billing write that returns (an upgrade placed,
a cancellation requested) records its answer in PATH and then never returns: a test kills
the process in that gap, after the billing system acted and before the outcome was
recorded. Once PATH exists, writes go through.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import tests.flows_for_tests  # noqa: F401  (registers the test-only flows)
from bot import app as app_module
from bot.__main__ import main


class _PauseAfterWrite:
    def __init__(self, real: Any, marker: Path) -> None:
        self.real = real
        self.marker = marker

    async def place_upgrade(self, *args: Any, **kwargs: Any) -> Any:
        placed = await self.real.place_upgrade(*args, **kwargs)
        await self._pause({"request_id": kwargs["request_id"], "invoice_id": placed.invoice.id})
        return placed

    async def request_cancellation(self, *args: Any, **kwargs: Any) -> Any:
        request = await self.real.request_cancellation(*args, **kwargs)
        await self._pause({"request_id": kwargs["request_id"], "id": request.id})
        return request

    async def _pause(self, answer: dict[str, Any]) -> None:
        if not self.marker.exists():
            self.marker.write_text(json.dumps(answer), encoding="utf-8")
            await asyncio.Event().wait()  # killed here

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


if __name__ == "__main__":
    marker = os.environ.get("PAUSE_AFTER_BILLING")
    if marker:
        make_billing = app_module.make_billing
        app_module.make_billing = lambda s, p: _PauseAfterWrite(make_billing(s, p), Path(marker))
    sys.exit(main(["serve"]))
