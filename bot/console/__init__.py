"""The staff console under /staff/: server-rendered pages (Jinja2, autoescaped) behind a
login, for the people who take over conversations from the bot.

`setup_console` wires it into the service's app: templates, static files, the session and
CSRF guard, security headers, login and logout, the admin pages, and the queue and
conversation pages (`bot.console.views`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from bot.console import admin, auth, login

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


async def _page_context(request: web.Request) -> dict[str, Any]:
    """What every template may use: the logged-in member (or None) and the CSRF token
    its forms send back."""
    return {"staff": request.get(auth.STAFF), "csrf_token": auth.csrf_token(request)}


async def _to_queue(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect("/staff/")


def setup_console(app: web.Application) -> None:
    # The guard first: the templates' context is read (in aiohttp_jinja2's middleware,
    # inside it) once the guard has found who is logged in.
    app.middlewares.append(auth.console_guard)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        context_processors=[aiohttp_jinja2.request_processor, _page_context],
    )
    app.on_startup.append(auth.load_keys)
    app.on_response_prepare.append(auth.security_headers)
    app.router.add_static("/staff/static/", STATIC, name="staff_static")
    app.router.add_get("/staff", _to_queue)
    app.router.add_get(auth.LOGIN_PATH, login.login_page)
    app.router.add_post(auth.LOGIN_PATH, login.login)
    app.router.add_post("/staff/logout", login.logout)
    admin.add_routes(app)
    from bot.console import views

    views.add_routes(app)
