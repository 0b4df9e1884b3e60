"""Who may call what: Bearer keys on every route but an explicit public list, and a Host check.

The guard runs on every route handler; a handler is public only if it says so (`opt={"public":
True}`), so a route added later is protected by default (vLLM's prefix-based guard was bypassed
by new routes more than once). Keys are compared in constant time: both sides are hashed, and
every configured key is compared, whatever the first comparison gave (`auth.keyring`).

Keys created through the admin API or `mlx-fleet keys` (the state database) carry scopes; a route
names the scope it needs (`opt={"scope": "chat"}`). The config's `server.api_keys` reach every scope.
"""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from mlx_fleet.config import ServerConfig, is_loopback
from mlx_fleet.router.auth.keyring import KeyRing, key_digest
from mlx_fleet.router.auth.sessions import Sessions
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.http.usage import USAGE_SCOPE_KEY
from mlx_fleet.state.keys import Holder, KeyIndex, token_hash

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def _mask(key: str) -> str:
    return f"{key[:3]}***{key[-2:]}" if len(key) > 8 else "***"


def _presented_key(connection: ASGIConnection) -> str | None:
    """A Bearer token, or Anthropic's `x-api-key` header (its SDK and Claude Code send either)."""
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return connection.headers.get("x-api-key", "").strip() or None


class Guard:
    """`/admin/*` takes the admin key (or, with no admin key set, an API key), or a dashboard session
    made with it; `/metrics` also its own key; the OpenAPI schema and its pages the admin key or an
    API key; everything else an API key from the config or a live key from the state database."""

    def __init__(self, server: ServerConfig, keys: KeyIndex | None = None) -> None:
        self.api = KeyRing(server.api_keys)
        self.admin = KeyRing([server.admin_key]) if server.admin_key else self.api
        self.metrics = KeyRing([server.metrics_key]) if server.metrics_key else None
        self.keys = keys
        # With no key at all a loopback server is open; one bound beyond refuses every request
        # until a key exists (it may start with only the admin key or database keys, which can be
        # revoked while it runs).
        self.open_without_keys = is_loopback(server.host)
        self.sessions = Sessions(self.admin, open_without_keys=self.open_without_keys)
        # usage rows name a config key by a prefix of its hash, never by the key
        self.config_key_ids = {key_digest(k): f"config-{key_digest(k).hex()[:8]}" for k in server.api_keys if k}

    async def __call__(self, connection: ASGIConnection, handler: BaseRouteHandler) -> None:
        # async on purpose: Litestar runs a sync guard in a thread pool, a hop on every request
        if handler.opt.get("public"):
            return
        if connection.url.path.startswith("/admin"):
            if _presented_key(connection) is None and self.sessions.admit(connection):
                return
            self._check_admin(connection, [self.admin])
        elif handler.opt.get("metrics"):
            self._check_admin(connection, [self.admin, self.metrics] if self.metrics else [self.admin])
        elif handler.opt.get("schema"):
            self._check_schema(connection)
        else:
            self._check_api(connection, handler.opt.get("scope"))

    def _check_admin(self, connection: ASGIConnection, rings: list[KeyRing]) -> None:
        if not any(rings) and self.open_without_keys:
            return
        token = _required_key(connection)
        if any(ring.holds(token) for ring in rings):
            return
        if self.api.holds(token) or (self.keys is not None and self.keys.holder(token) is not None):
            raise ApiError(403, "This key cannot use admin endpoints.", code="insufficient_permissions")
        raise ApiError(401, f"Incorrect API key provided: {_mask(token)}.", code="invalid_api_key")

    def _check_schema(self, connection: ASGIConnection) -> None:
        """The OpenAPI schema documents the admin routes too: the admin key reads it, as an API key does."""
        token = _presented_key(connection)
        if token is None or not self.admin.holds(token):
            self._check_api(connection, None)

    def _database_keys(self) -> dict[str, Holder]:
        return self.keys.live() if self.keys is not None else {}

    def _check_api(self, connection: ASGIConnection, scope: str | None) -> None:
        holders = None  # the database's keys, read (one pragma) only where a decision needs them
        if not self.api and self.open_without_keys:
            holders = self._database_keys()
            if not holders:
                return
        token = _required_key(connection)
        record = connection.scope.get(USAGE_SCOPE_KEY)  # type: ignore[call-overload]
        if self.api.holds(token):
            if record is not None:
                record.key_id = self.config_key_ids.get(key_digest(token))
            return
        holder = (self._database_keys() if holders is None else holders).get(token_hash(token))
        if holder is None:
            raise ApiError(401, f"Incorrect API key provided: {_mask(token)}.", code="invalid_api_key")
        if record is not None:
            # a refused request counts against its key (and its holder) too
            record.key_id, record.user_id, record.org_id = holder.id, holder.user_id, holder.org_id
        if scope is not None and scope not in holder.scopes:
            raise ApiError(403, f"This API key does not have the '{scope}' scope that "
                                f"{connection.url.path} needs. Missing scopes: {scope}.", code="missing_scope")


def _required_key(connection: ASGIConnection) -> str:
    token = _presented_key(connection)
    if token is None:
        raise ApiError(401, "You didn't provide an API key. You need to provide your API key in an "
                            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or in "
                            "an x-api-key header.")
    return token


class HostCheck:
    """On a loopback-bound server, refuse requests whose Host is not a loopback name.

    A web page can make a browser send requests to 127.0.0.1 through a DNS name it controls (DNS
    rebinding); such requests carry that name in Host, which is how they are told apart.
    """

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = _host_name(scope)
            if host not in self.allowed:
                response = ApiError(403, f"Host '{host}' is not allowed; this server answers loopback names "
                                         "only (server.allowed_hosts adds names).",
                                    code="host_not_allowed").response()
                await response.to_asgi_response(app=None, request=None)(scope, receive, send)  # type: ignore[arg-type]
                return
        await self.app(scope, receive, send)


def _host_name(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host = value.decode("latin-1").strip().lower()
            if host.startswith("["):
                return host[: host.find("]") + 1]
            return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return ""


def host_check_factory(server: ServerConfig):
    """The middleware when the server is bound to loopback; None when it is not."""
    if not is_loopback(server.host):
        return None
    allowed = LOOPBACK_NAMES | {h.lower() for h in server.allowed_hosts}

    def middleware(app: ASGIApp) -> ASGIApp:
        return HostCheck(app, allowed)

    return middleware
