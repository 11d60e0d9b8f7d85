"""py-spy sampling of a running process, summarised into its top functions.

`py-spy record --nonblocking -f raw` samples without pausing the target and keeps the
samples of threads it sees as active. A thread that is runnable but has no CPU counts as
active: on a loaded machine a process preempted right after its socket `write` woke a
PostgreSQL backend shows up in `write`, and one woken by epoll but not yet running in
`select`. Read those leaves against the process's run-queue wait (`bench.procs.Usage`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Frames every sample passes through (interpreter start-up, the event loop itself): they
# say nothing about where the time goes, so they are left out of the inclusive ranking.
_FRAMEWORK_FILES = (
    "<frozen runpy>",
    "asyncio/base_events.py",
    "asyncio/runners.py",
    "asyncio/events.py",
    "threading.py",
    "aiohttp/web.py",
)
_ENTRY_FUNCTIONS = ("<module>", "main", "_serve", "serve", "_run_worker")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")


def py_spy_path() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _function(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    return f"{match['func']} ({match['file']})" if match else frame.strip()


def _is_framework(function: str) -> bool:
    if function.startswith("process "):  # the root frame py-spy adds with --subprocesses
        return True
    name, _, where = function.partition(" (")
    return name in _ENTRY_FUNCTIONS or where.rstrip(")") in _FRAMEWORK_FILES


def _package(function: str) -> str:
    match = re.search(r"\(([^)]*)\)$", function)
    path = match.group(1) if match else function
    parts = path.split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    return parts[0].removesuffix(".py") if len(parts) > 1 else f"stdlib:{parts[0]}"


@dataclass(frozen=True, slots=True)
class ProfileSummary:
    samples: int
    top_self: list[tuple[str, float]]
    top_inclusive: list[tuple[str, float]]
    self_by_package: list[tuple[str, float]]

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "top_self_percent": self.top_self,
            "top_inclusive_percent": self.top_inclusive,
            "self_by_package_percent": self.self_by_package,
        }


def summarise(raw: str, top: int = 15) -> ProfileSummary:
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        functions = [_function(f) for f in stack.split(";")]
        total += count
        self_counts[functions[-1]] += count
        for function in set(functions):
            if not _is_framework(function):
                inclusive[function] += count
    by_package: Counter[str] = Counter()
    for function, count in self_counts.items():
        by_package[_package(function)] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in counter.most_common(top)]

    return ProfileSummary(
        samples=total,
        top_self=share(self_counts),
        top_inclusive=share(inclusive),
        self_by_package=share(by_package),
    )


class PySpy:
    """`py-spy record` on `pid` from `start()` until `stop()`."""

    def __init__(self, pid: int, out_path: Path, rate: int = 100) -> None:
        self.pid = pid
        self.out_path = out_path
        self.rate = rate
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> bool:
        exe = py_spy_path()
        if exe is None:
            return False
        self._proc = await asyncio.create_subprocess_exec(
            exe,
            "record",
            "--pid",
            str(self.pid),
            "--rate",
            str(self.rate),
            "--nonblocking",
            "--subprocesses",
            "--format",
            "raw",
            "--output",
            str(self.out_path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return True

    async def stop(self) -> ProfileSummary | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        try:
            return summarise(self.out_path.read_text())
        except OSError:
            return None


@asynccontextmanager
async def profiling(
    targets: dict[str, int], out_dir: Path, label: str
) -> AsyncIterator[dict[str, ProfileSummary | None]]:
    """py-spy on each named process for the duration of the block; the summaries are
    in the yielded dict once the block has exited (empty when py-spy is missing)."""
    spies: dict[str, PySpy] = {}
    summaries: dict[str, ProfileSummary | None] = {}
    try:
        for name, pid in targets.items():
            slug = name.split()[0].lower()
            spy = PySpy(pid, out_dir / f"py-spy-{label}-{slug}.txt")
            if await spy.start():
                spies[name] = spy
        if spies:
            await asyncio.sleep(0.5)  # let py-spy attach
        yield summaries
    finally:
        for name, spy in spies.items():
            summaries[name] = await spy.stop()
