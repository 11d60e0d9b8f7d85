"""Running `python -m bot serve` as a real process: started, killed, restarted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO

import aiohttp

from tests.harness import APP_SECRET, PHONE_ID, TOKEN, VERIFY_TOKEN

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
    )
    env.update(extra)
    return env


class ServerProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
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
            [sys.executable, "-m", "bot", "serve"],
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
