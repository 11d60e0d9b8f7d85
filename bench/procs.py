"""Child processes (started, awaited healthy, stopped SIGTERM then SIGKILL) and their CPU.

Every process started here is remembered until it is stopped; `kill_leftovers` (also
registered with atexit) SIGKILLs whatever is still alive, so a crash of the benchmark
itself leaves nothing running.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_ALIVE: dict[int, asyncio.subprocess.Process] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Child:
    """A Python module run as its own process, output to a log file.

    `python -m` imports from the working directory first, so `cwd` picks the checkout
    whose code runs (this one by default)."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        log_path: Path,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, health_url: str, timeout: float = 60.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *self.args,
            cwd=self.cwd,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
        )
        _ALIVE[self.proc.pid] = self.proc
        await self._wait_healthy(health_url, timeout)

    async def _wait_healthy(self, url: str, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not healthy after {timeout} s:\n{self.tail()}")
                await asyncio.sleep(0.1)

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds."""
        proc = self.proc
        if proc is None:
            return None
        try:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), timeout)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
        finally:
            _ALIVE.pop(proc.pid, None)
            if self._log is not None:
                self._log.close()
                self._log = None
        return proc.returncode

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def kill_leftovers() -> None:
    """SIGKILL every child still alive (last resort: normal paths call `Child.stop`)."""
    for pid in list(_ALIVE):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _ALIVE.pop(pid, None)


atexit.register(kill_leftovers)


# --- CPU -------------------------------------------------------------------------------


class Usage(NamedTuple):
    """CPU seconds of a process so far, and the seconds its threads were runnable but
    waiting for a CPU (the scheduler's run-queue time, from /proc/<pid>/task/*/schedstat)."""

    user: float
    system: float
    waiting: float


def usage(pid: int) -> Usage:
    """A process's `Usage` so far; zeros once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return Usage(0.0, 0.0, 0.0)
    # The command name (field 2) may contain spaces; the fields after it are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    waiting_ns = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, IndexError, ValueError):
                waiting_ns += int((task / "schedstat").read_text().split()[1])
    return Usage(int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS, waiting_ns / 1e9)


def tree_usage(pid: int) -> Usage:
    """`Usage` of a process and of all its descendants (e.g. `serve` with PROCESSES=N)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                parent = int(stat[stat.rindex(")") + 2 :].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    used = [usage(p) for p in tree]
    return Usage(*(sum(column) for column in zip(*used, strict=True)))


def pids_named(name: str) -> list[int]:
    """Processes whose command name is `name` (e.g. every PostgreSQL backend)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
    return found


def machine_ticks() -> tuple[int, int, int]:
    """(busy, system, total) jiffies over all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    system = values[2] + values[5] + values[6]  # system + irq + softirq
    return sum(values) - idle, system, sum(values)


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    at: float
    processes: dict[str, Usage]
    postgres: dict[int, Usage]
    machine: tuple[int, int, int]


POSTGRES_DB = "postgres: this database's backends"
POSTGRES_OTHER = "postgres: other processes"
OTHER = "rest of the machine"
MACHINE = "machine (all cores)"
PidsOf = Callable[[], Awaitable[set[int]]]


class CpuMeter:
    """CPU of named processes and of PostgreSQL between two snapshots.

    PostgreSQL's CPU is split between the backends serving the benchmark's database
    (`database_pids`) and every other PostgreSQL process (background writers,
    autovacuum launcher, and backends of whoever else uses the server). Whatever the
    machine spent beyond all that is reported too: load that is not ours.
    """

    def __init__(
        self,
        processes: dict[str, int],
        database_pids: PidsOf | None = None,
        *,
        with_children: frozenset[str] = frozenset(),
    ) -> None:
        self.processes = processes
        self.database_pids = database_pids
        # Processes counted together with their descendants (`serve` with PROCESSES=N).
        self.with_children = with_children
        self._ours: set[int] = set()

    async def snapshot(self) -> CpuSnapshot:
        if self.database_pids is not None:
            self._ours |= await self.database_pids()
        return CpuSnapshot(
            at=time.monotonic(),
            processes={
                name: tree_usage(pid) if name in self.with_children else usage(pid)
                for name, pid in self.processes.items()
            },
            postgres={pid: usage(pid) for pid in pids_named("postgres")},
            machine=machine_ticks(),
        )

    def percent(self, start: CpuSnapshot, end: CpuSnapshot) -> dict[str, dict[str, float]]:
        """Per process, % of one core over the interval: `total` CPU, of it `sys`, and
        `wait`, the time its threads were ready to run but had no CPU. For the machine,
        % of all cores."""
        wall = end.at - start.at
        if wall <= 0:
            return {}

        def share(used: Usage) -> dict[str, float]:
            return {
                "total": round(100 * (used.user + used.system) / wall, 1),
                "sys": round(100 * used.system / wall, 1),
                "wait": round(100 * used.waiting / wall, 1),
            }

        def delta(now: Usage, before: Usage | None) -> Usage:
            # Processes that started during the interval count from zero.
            before = before or Usage(0.0, 0.0, 0.0)
            return Usage(*(a - b for a, b in zip(now, before, strict=True)))

        def total(usages: list[Usage]) -> Usage:
            return Usage(*(sum(column) for column in zip(*usages, strict=True)))

        out: dict[str, dict[str, float]] = {}
        named = [delta(u, start.processes.get(n)) for n, u in end.processes.items()]
        for name, used in zip(end.processes, named, strict=True):
            out[name] = share(used)
        pg = {pid: delta(u, start.postgres.get(pid)) for pid, u in end.postgres.items()}
        ours = total([Usage(0, 0, 0), *(u for pid, u in pg.items() if pid in self._ours)])
        others = total([Usage(0, 0, 0), *(u for pid, u in pg.items() if pid not in self._ours)])
        if self.database_pids is not None:
            out[POSTGRES_DB] = share(ours)
        out[POSTGRES_OTHER] = share(others)
        accounted = total([*named, ours, others])
        busy, sys_ticks, ticks = (e - s for e, s in zip(end.machine, start.machine, strict=True))
        # Machine jiffies are summed over all cores: as CPU seconds over the interval.
        cores = os.cpu_count() or 1
        busy_s = busy / ticks * cores * wall if ticks else 0.0
        sys_s = sys_ticks / ticks * cores * wall if ticks else 0.0
        rest = Usage(
            max(0.0, busy_s - sys_s - accounted.user), max(0.0, sys_s - accounted.system), 0.0
        )
        out[OTHER] = {k: v for k, v in share(rest).items() if k != "wait"}
        out[MACHINE] = {
            "total": round(100 * busy / ticks, 1) if ticks else 0.0,
            "sys": round(100 * sys_ticks / ticks, 1) if ticks else 0.0,
        }
        return out
