"""The dashboard: its page and files (shipped inside the package, no build step, no CDN), and
signing in and out.

The page only reads the admin API (and calls load/unload when asked): nothing here sits on the
path of a `/v1` request. Its files are read from the package once and served from memory.
"""

from __future__ import annotations

import functools
import importlib.resources

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import Cookie
from litestar.params import FromPath

from mlx_fleet.router.auth.sessions import COOKIE, Session, Sessions, refuse_other_origins
from mlx_fleet.router.http.decoding import decode_request
from mlx_fleet.router.http.encoding import as_json
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.router_state import FromApp, RouterState

MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
PUBLIC = {"public": True}


class SignIn(msgspec.Struct):
    key: str


class SessionInfo(msgspec.Struct):
    auth_required: bool
    signed_in: bool
    csrf: str | None = None
    expires_at: float | None = None


@functools.cache
def files() -> dict[str, tuple[bytes, str]]:
    """Every file of the page by name, with its media type, read once."""
    folder = importlib.resources.files("mlx_fleet.router.dashboard") / "static"
    out = {}
    for entry in folder.iterdir():
        suffix = entry.name[entry.name.rfind("."):]
        if entry.is_file() and suffix in MEDIA_TYPES:
            out[entry.name] = (entry.read_bytes(), MEDIA_TYPES[suffix])
    return out


def _file(name: str) -> Response:
    found = files().get(name)
    if found is None:
        raise ApiError(404, f"No dashboard file named '{name}'.", code="not_found")
    body, media_type = found
    return Response(body, media_type=media_type, headers=HEADERS)


@get(["/", "/dashboard"], opt=PUBLIC, include_in_schema=False)
async def page() -> Response:
    return _file("index.html")


@get("/dashboard/static/{name:str}", opt=PUBLIC, include_in_schema=False)
async def static_file(name: FromPath[str]) -> Response:
    return _file(name)


def _info(sessions: Sessions, session: Session | None) -> Response:
    if not sessions.required:
        body = SessionInfo(auth_required=False, signed_in=True)
    elif session is None:
        body = SessionInfo(auth_required=True, signed_in=False)
    else:
        body = SessionInfo(auth_required=True, signed_in=True, csrf=session.csrf, expires_at=session.expires)
    return as_json(body, headers={"Cache-Control": "no-store"})


@get("/dashboard/session", opt=PUBLIC, include_in_schema=False)
async def session_info(request: Request, router: FromApp[RouterState]) -> Response:
    sessions = router.sessions
    return _info(sessions, sessions.read(request.cookies.get(COOKIE)))


@post("/dashboard/session", opt=PUBLIC, status_code=200, include_in_schema=False)
async def sign_in(request: Request, router: FromApp[RouterState]) -> Response:
    """The admin key for a session cookie: HttpOnly (no script reads it), SameSite=Strict (no other
    site's request carries it), signed and expiring."""
    refuse_other_origins(request)
    sessions = router.sessions
    if not sessions.required:
        return _info(sessions, None)
    key = decode_request(await request.body(), SignIn).key
    if not sessions.ring.holds(key):
        raise ApiError(401, "Incorrect admin key.", code="invalid_api_key")
    value, session = sessions.issue()
    response = _info(sessions, session)
    response.cookies.append(Cookie(key=COOKIE, value=value, max_age=int(sessions.ttl), path="/", httponly=True,
                                   samesite="strict", secure=request.url.scheme == "https"))
    return response


@delete("/dashboard/session", opt=PUBLIC, status_code=200, include_in_schema=False)
async def sign_out(request: Request, router: FromApp[RouterState]) -> Response:
    refuse_other_origins(request)
    sessions = router.sessions
    session = sessions.read(request.cookies.get(COOKIE))
    if session is not None:
        sessions.revoke(session)
    response = _info(sessions, None)
    response.delete_cookie(COOKIE, path="/")
    return response


ROUTES = [page, static_file, session_info, sign_in, sign_out]
