"""Dashboard sessions: the admin key exchanged once for a signed, expiring cookie, and the checks
that keep another web site from using that cookie (or an open loopback admin API) through the
operator's browser.

A session is stateless: `expires.nonce.signature`, signed with HMAC-SHA256 under a secret made
when the router starts (so a restart signs everyone out, and no secret is ever written to disk).
The page proves it is the page with a CSRF token derived from the same nonce, which it can only
read from the sign-in answer or `GET /dashboard/session` (same-origin reads); the cookie itself is
HttpOnly and SameSite=Strict. State-changing calls that rely on the cookie, or on an admin API left
open on loopback, must also come from this server's own origin (Origin / Sec-Fetch-Site).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from litestar.connection import ASGIConnection

from mlx_fleet.router.auth.keyring import KeyRing
from mlx_fleet.router.http.errors import ApiError

COOKIE = "mlx_fleet_session"
CSRF_HEADER = "x-csrf-token"
SESSION_TTL = 12 * 3600.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _same(given: str, expected: str) -> bool:
    """Constant-time, and safe for any text a client sends (compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(given.encode(), expected.encode())


class Session:
    __slots__ = ("nonce", "expires", "csrf")

    def __init__(self, nonce: str, expires: float, csrf: str) -> None:
        self.nonce, self.expires, self.csrf = nonce, expires, csrf


class Sessions:
    """Issues and checks sessions for holders of an admin key (`ring`: the keys the admin API takes)."""

    def __init__(self, ring: KeyRing, ttl: float = SESSION_TTL, clock: Callable[[], float] = time.time,
                 open_without_keys: bool = True) -> None:
        self.ring, self.ttl, self.clock = ring, ttl, clock
        self.open_without_keys = open_without_keys  # False off loopback: no key there means no way in
        self._secret = secrets.token_bytes(32)
        self._revoked: dict[str, float] = {}  # nonce -> expiry, for sign-outs before the cookie expires

    @property
    def required(self) -> bool:
        """Whether the admin API needs a key at all: with none configured on loopback it is open, and
        so is the page; beyond loopback it always does (with no admin key, no one can sign in)."""
        return bool(self.ring) or not self.open_without_keys

    def _sign(self, message: str) -> str:
        return _b64(hmac.new(self._secret, message.encode(), hashlib.sha256).digest())

    def _session(self, nonce: str, expires: float) -> Session:
        return Session(nonce, expires, self._sign(f"csrf:{nonce}"))

    def issue(self) -> tuple[str, Session]:
        """A new session: the cookie's value, and the session (its CSRF token and expiry)."""
        nonce, expires = secrets.token_hex(16), int(self.clock() + self.ttl)
        payload = f"{expires}.{nonce}"
        return f"{payload}.{self._sign(payload)}", self._session(nonce, expires)

    def read(self, value: str | None) -> Session | None:
        """The session a cookie value carries, or None if it is absent, forged, expired or signed out."""
        if not value or value.count(".") != 2:
            return None
        payload, _, signature = value.rpartition(".")
        if not _same(signature, self._sign(payload)):
            return None
        expires_text, _, nonce = payload.partition(".")
        expires = float(expires_text)
        if expires <= self.clock() or nonce in self._revoked:
            return None
        return self._session(nonce, expires)

    def revoke(self, session: Session) -> None:
        now = self.clock()
        self._revoked = {n: e for n, e in self._revoked.items() if e > now}
        self._revoked[session.nonce] = session.expires

    def admit(self, connection: ASGIConnection) -> bool:
        """An admin call that presents no key: True when the admin API is open or the call has
        a valid session (and, to change anything, its CSRF token, from this origin); False when it
        has no session (the caller answers as to a missing key); ApiError for a forged request."""
        unsafe = connection.method not in SAFE_METHODS
        if unsafe:
            refuse_other_origins(connection)
        if not self.required:
            return True
        session = self.read(connection.cookies.get(COOKIE))
        if session is None:
            return False
        if unsafe and not _same(connection.headers.get(CSRF_HEADER, ""), session.csrf):
            raise ApiError(403, "This call changes the fleet and needs the dashboard's CSRF token "
                                f"(header {CSRF_HEADER}).", code="csrf_token_invalid")
        return True


def refuse_other_origins(connection: ASGIConnection) -> None:
    """A browser names the page that made a request (Origin, Sec-Fetch-Site); refuse another site's."""
    headers = connection.headers
    host = headers.get("host", "")
    origin = headers.get("origin")
    if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
        raise ApiError(403, f"Requests from another origin ({origin}) may not change this server.",
                       code="cross_origin_refused")
    if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        raise ApiError(403, "Requests from another site may not change this server.", code="cross_origin_refused")
