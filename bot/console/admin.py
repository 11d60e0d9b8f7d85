"""Admin pages: the team (add a member, disable or enable, change a role) and the canned
replies. Admins only; an agent gets 403.

A change redirects back (303) with a fixed message named in the query string, never the
input itself; bad input shows the form again with what was wrong (400)."""

from __future__ import annotations

import asyncio
import re
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp_jinja2
from aiohttp import web

from bot.console.auth import hash_password, password_problem, require_admin, username_problem
from bot.webhook import POOL, SETTINGS
from store import staff
from store.staff import ROLES

STAFF_PAGE = "/staff/admin/staff"
CANNED_PAGE = "/staff/admin/canned"
# The same rule as canned_replies' CHECK (migration 018): typed as /code in the reply box.
CANNED_CODE = re.compile(r"[a-z0-9_-]{1,32}")
CANNED_BODY_MAX = 4096

_DONE = {
    "added": "Miembro agregado.",
    "disabled": "Cuenta desactivada; sus sesiones se cerraron.",
    "enabled": "Cuenta activada.",
    "role": "Rol cambiado.",
    "password": "Contraseña cambiada; la cuenta quedó desbloqueada y sus sesiones se cerraron.",
    "saved": "Respuesta guardada.",
    "deleted": "Respuesta borrada.",
}
_ROLE_NAMES = {"agent": "Agente", "admin": "Administrador"}


def _change(change: staff.Change) -> str:
    """A recorded change in words."""
    role = _ROLE_NAMES.get(str(change.detail.get("role", "")), "")
    match change.action:
        case "staff_added":
            return f"agregó a {change.subject} ({role})"
        case "staff_disabled":
            return f"desactivó a {change.subject}"
        case "staff_enabled":
            return f"activó a {change.subject}"
        case "role_changed":
            return f"cambió el rol de {change.subject} a {role}"
        case "password_set":
            return f"puso una contraseña nueva a {change.subject}"
        case "canned_saved":
            return f"guardó /{change.subject}"
        case "canned_deleted":
            return f"borró /{change.subject}"
    return f"{change.action} {change.subject}"


def _done(request: web.Request) -> str:
    return _DONE.get(request.query.get("done", ""), "")


async def _staff_page(
    request: web.Request, *, error: str = "", form: dict[str, str] | None = None, status: int = 200
) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        members = await staff.list_staff(conn)
        history = await staff.changes(conn, staff.TEAM_CHANGES)
    context: dict[str, Any] = {
        "members": members,
        "history": history,
        "change": _change,
        "tz": ZoneInfo(request.app[SETTINGS].display_timezone),
        "roles": ROLES,
        "role_names": _ROLE_NAMES,
        "error": error,
        "done": "" if error else _done(request),
        "form": form or {"username": "", "role": "agent"},
    }
    return aiohttp_jinja2.render_template("admin_staff.html", request, context, status=status)


async def staff_page(request: web.Request) -> web.Response:
    require_admin(request)
    return await _staff_page(request)


async def add_member(request: web.Request) -> web.Response:
    me = require_admin(request)
    form = await request.post()
    username = str(form.get("username", "")).strip()
    role = str(form.get("role", ""))
    password = str(form.get("password", ""))
    shown = {"username": username, "role": role if role in ROLES else "agent"}
    problem = (
        username_problem(username)
        or (None if role in ROLES else "Rol desconocido.")
        or password_problem(password)
    )
    if problem:
        return await _staff_page(request, error=problem, form=shown, status=400)
    password_hash = await asyncio.to_thread(hash_password, password)
    async with request.app[POOL].acquire() as conn:
        try:
            async with conn.transaction():
                await staff.add_staff(conn, username, role, password_hash)
                await staff.record_change(conn, me.id, "staff_added", username, role=role)
        except staff.UsernameTaken:
            return await _staff_page(
                request, error="Ya existe un miembro con ese usuario.", form=shown, status=400
            )
    raise web.HTTPSeeOther(f"{STAFF_PAGE}?done=added")


async def set_active(request: web.Request) -> web.Response:
    me = require_admin(request)
    username = request.match_info["username"]
    active = (await request.post()).get("active") == "1"
    if not active and username.lower() == me.username.lower():
        return await _staff_page(request, error="No puede desactivar su propia cuenta.", status=400)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        found = await staff.set_active(conn, username, active)
        if found:
            action = "staff_enabled" if active else "staff_disabled"
            await staff.record_change(conn, me.id, action, username)
    if not found:
        return await _staff_page(request, error="No existe ese miembro.", status=404)
    raise web.HTTPSeeOther(f"{STAFF_PAGE}?done={'enabled' if active else 'disabled'}")


async def set_role(request: web.Request) -> web.Response:
    me = require_admin(request)
    username = request.match_info["username"]
    role = str((await request.post()).get("role", ""))
    if role not in ROLES:
        return await _staff_page(request, error="Rol desconocido.", status=400)
    if role != "admin" and username.lower() == me.username.lower():
        # Else the last admin could leave the team with nobody to manage it.
        return await _staff_page(
            request, error="No puede quitarse a sí mismo el rol de administrador.", status=400
        )
    async with request.app[POOL].acquire() as conn, conn.transaction():
        found = await staff.set_role(conn, username, role)
        if found:
            await staff.record_change(conn, me.id, "role_changed", username, role=role)
    if not found:
        return await _staff_page(request, error="No existe ese miembro.", status=404)
    raise web.HTTPSeeOther(f"{STAFF_PAGE}?done=role")


async def set_password(request: web.Request) -> web.Response:
    """A member's new password (forgotten, or to lock someone out): it unlocks them and
    ends their sessions. An admin changing their own logs themselves out too."""
    me = require_admin(request)
    username = request.match_info["username"]
    password = str((await request.post()).get("password", ""))
    problem = password_problem(password)
    if problem:
        return await _staff_page(request, error=problem, status=400)
    password_hash = await asyncio.to_thread(hash_password, password)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        found = await staff.set_password(conn, username, password_hash)
        if found:
            await staff.record_change(conn, me.id, "password_set", username)
    if not found:
        return await _staff_page(request, error="No existe ese miembro.", status=404)
    raise web.HTTPSeeOther(f"{STAFF_PAGE}?done=password")


async def _canned_page(
    request: web.Request, *, error: str = "", form: dict[str, str] | None = None, status: int = 200
) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        replies = await staff.canned_replies(conn)
        history = await staff.changes(conn, staff.CANNED_CHANGES)
    if form is None:
        editing = request.query.get("edit", "")
        current = next((r for r in replies if r.code == editing), None)
        form = {"code": current.code, "body": current.body} if current else {"code": "", "body": ""}
    context: dict[str, Any] = {
        "replies": replies,
        "history": history,
        "change": _change,
        "tz": ZoneInfo(request.app[SETTINGS].display_timezone),
        "error": error,
        "done": "" if error else _done(request),
        "form": form,
        "body_max": CANNED_BODY_MAX,
    }
    return aiohttp_jinja2.render_template("admin_canned.html", request, context, status=status)


async def canned_page(request: web.Request) -> web.Response:
    require_admin(request)
    return await _canned_page(request)


async def save_canned(request: web.Request) -> web.Response:
    me = require_admin(request)
    form = await request.post()
    code = str(form.get("code", "")).strip().lower()
    # Browsers send a textarea's line breaks as CRLF; the customer sees LF.
    body = str(form.get("body", "")).replace("\r\n", "\n").strip()
    shown = {"code": code, "body": body}
    if not CANNED_CODE.fullmatch(code):
        problem = "El código debe tener de 1 a 32 letras minúsculas, números, '_' o '-'."
        return await _canned_page(request, error=problem, form=shown, status=400)
    if not 1 <= len(body) <= CANNED_BODY_MAX:
        problem = f"El texto debe tener entre 1 y {CANNED_BODY_MAX} caracteres."
        return await _canned_page(request, error=problem, form=shown, status=400)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        await staff.save_canned_reply(conn, code, body, me.id)
        await staff.record_change(conn, me.id, "canned_saved", code)
    raise web.HTTPSeeOther(f"{CANNED_PAGE}?done=saved")


async def delete_canned(request: web.Request) -> web.Response:
    me = require_admin(request)
    code = request.match_info["code"]
    async with request.app[POOL].acquire() as conn, conn.transaction():
        found = await staff.delete_canned_reply(conn, code)
        if found:
            await staff.record_change(conn, me.id, "canned_deleted", code)
    if not found:
        return await _canned_page(request, error="No existe esa respuesta.", status=404)
    raise web.HTTPSeeOther(f"{CANNED_PAGE}?done=deleted")


def add_routes(app: web.Application) -> None:
    app.router.add_get(STAFF_PAGE, staff_page)
    app.router.add_post(STAFF_PAGE, add_member)
    app.router.add_post(STAFF_PAGE + "/{username}/active", set_active)
    app.router.add_post(STAFF_PAGE + "/{username}/role", set_role)
    app.router.add_post(STAFF_PAGE + "/{username}/password", set_password)
    app.router.add_get(CANNED_PAGE, canned_page)
    app.router.add_post(CANNED_PAGE, save_canned)
    app.router.add_post(CANNED_PAGE + "/{code}/delete", delete_canned)
