"""Running `python -m bot serve` as a real process: started, killed, restarted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiohttp

from tests.harness import ALWAYS_OPEN, APP_SECRET, PHONE_ID, TOKEN, VERIFY_TOKEN

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_env(database_url: str, api_url: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHATSAPP_", "DATABASE_"))}
    env.update(
        DATABASE_URL=database_url,
        PORT=str(port),
        HOST="127.0.0.1",
        WHATSAPP_API_URL=api_url,
        WHATSAPP_PHONE_ID=PHONE_ID,
        WHATSAPP_TOKEN=TOKEN,
        WHATSAPP_APP_SECRET=APP_SECRET,
        WHATSAPP_VERIFY_TOKEN=VERIFY_TOKEN,
        SEND_RATE_PER_SECOND="2000",
        RECIPIENT_BURST="100",
        RECIPIENT_INTERVAL_SECONDS="0.05",
        LOG_LEVEL="WARNING",
        BUSINESS_HOURS=ALWAYS_OPEN,
    )
    env.update(extra)
    return env


class ServerProcess:
    def __init__(
        self, env: dict[str, str], log_path: Path, *, command: Sequence[str] = ("bot", "serve")
    ) -> None:
        """`python -m bot serve`, or another `python -m` command (tests/serve_with_test_flows
        serves with the test-only flows registered)."""
        self.command = command
        self.env = env
        self.port = int(env["PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    async def start(self, timeout: float = 60.0) -> None:
        self.spawn()
        await self.wait_healthy(timeout)

    def spawn(self) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *self.command],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a container is
        )

    async def wait_healthy(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}: {self.logs()}")
                try:
                    async with session.get(f"{self.url}/healthz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if loop.time() > deadline:
                    raise TimeoutError(f"server not healthy after {timeout}s: {self.logs()}")
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL to every process of the server (as when its container is killed): no
        cleanup, no atexit, connections dropped mid-transaction."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._close_log()

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            self._close_log()
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def sandbox_env(**changes: str) -> dict[str, str]:
    """The environment of a `python -m bot sandbox` run: WhatsApp settings of this shell
    left out (the sandbox sets its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHATSAPP_")}
    env.update({"LOG_FORMAT": "text", "PYTHONUNBUFFERED": "1"}, **changes)
    return env


@dataclass(frozen=True)
class RunningSandbox:
    url: str  # http://127.0.0.1:PORT
    printed: str  # what it printed up to "Press Ctrl-C"


@contextlib.asynccontextmanager
async def sandbox_command(
    env: dict[str, str], *, startup_timeout: float
) -> AsyncIterator[RunningSandbox]:
    """`python -m bot sandbox` as a real process, until the block ends; then stopped with
    SIGINT, which must end it cleanly (exit 0, "stopped" printed, no traceback)."""
    port = free_port()
    with tempfile.TemporaryFile() as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "bot", "sandbox", "--port", str(port)),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        assert process.stdout is not None

        def log() -> str:
            stderr.seek(0)
            return stderr.read().decode(errors="replace")[-3000:]

        try:
            printed: list[str] = []
            async with asyncio.timeout(startup_timeout):
                while not printed or "Press Ctrl-C" not in printed[-1]:
                    line = await process.stdout.readline()
                    if not line:
                        raise AssertionError(f"sandbox exited: {printed} {log()}")
                    printed.append(line.decode())
            yield RunningSandbox(f"http://127.0.0.1:{port}", "".join(printed))
            process.send_signal(signal.SIGINT)
            async with asyncio.timeout(15):
                rest = await process.stdout.read()
                code = await process.wait()
            assert code == 0, log()
            assert "stopped" in rest.decode()
            assert "Traceback" not in log(), log()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
