"""The ceiling: a bare aiohttp server that answers 200 to every webhook POST.

It reads the body (as the real handler must) and answers the same small JSON, but
verifies nothing and stores nothing: whatever the real service loses against it is the
cost of the service's own work.

    python -m bench.bare_server --port 8099
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from aiohttp import web


async def receive(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"status": "ok"})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_app() -> web.Application:
    app = web.Application(client_max_size=3 * 1024 * 1024)
    app.router.add_post("/webhook", receive)
    app.router.add_get("/healthz", healthz)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args(argv)
    web.run_app(build_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
