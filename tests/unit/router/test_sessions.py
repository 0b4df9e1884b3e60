"""Dashboard sessions and the cross-site checks, in process (no supervisor behind the app)."""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

from litestar.testing import TestClient

from mlx_fleet.config import FleetConfig, ModelConfig, ServerConfig
from mlx_fleet.protocol import Failure
from mlx_fleet.runtime import Endpoints
from mlx_fleet.router.app import create_app
from mlx_fleet.router.auth.keyring import KeyRing
from mlx_fleet.router.auth.sessions import Sessions
from mlx_fleet.router.router_state import RouterState

ADMIN_KEY = "sk-admin-0123456789"


class AppClient(TestClient):
    """No supervisor behind the app, marked gone at once: a call that gets past the guard is a 503."""

    def __enter__(self) -> AppClient:
        super().__enter__()
        RouterState.of(self.app).fleet.fail_all(Failure("supervisor_unavailable", "no supervisor in this test", 503))
        return self


def app_client(**server) -> AppClient:
    config = FleetConfig(server=ServerConfig(state_dir=tempfile.mkdtemp(), **server),
                         models=[ModelConfig(id="m", path="/x", type="text")])
    return AppClient(create_app(config, Endpoints(Path(tempfile.mkdtemp())), time.time()),
                     base_url="http://127.0.0.1:8000")


def test_a_session_is_refused_when_forged_expired_or_signed_out() -> None:
    now = [1000.0]
    sessions = Sessions(KeyRing([ADMIN_KEY]), ttl=60, clock=lambda: now[0])
    value, session = sessions.issue()
    assert sessions.read(value).csrf == session.csrf
    expires, nonce, signature = value.split(".")
    assert sessions.read(f"{int(expires) + 3600}.{nonce}.{signature}") is None  # a longer life, same signature
    assert sessions.read(f"{expires}.{nonce}.{signature[:-2]}AA") is None
    assert Sessions(KeyRing([ADMIN_KEY])).read(value) is None  # another router's secret (a restart)
    assert sessions.read("garbage") is None and sessions.read(None) is None
    assert sessions.read(f"{expires}.{nonce}.é{signature}") is None  # any text a client sends
    now[0] += 61
    assert sessions.read(value) is None
    now[0] -= 61
    other, other_session = sessions.issue()
    sessions.revoke(session)
    assert sessions.read(value) is None and sessions.read(other) is not None
    assert other_session.csrf != session.csrf


def test_the_page_is_served_with_a_strict_policy_and_its_files_exist() -> None:
    with app_client(admin_key=ADMIN_KEY) as client:
        for path in ("/", "/dashboard"):
            r = client.get(path)
            assert r.status_code == 200 and "<title>mlx-fleet</title>" in r.text
            assert "script-src 'self'" in r.headers["content-security-policy"]
        page = client.get("/").text
        wanted = set(re.findall(r'/dashboard/static/([\w.-]+)', page))
        for name in sorted(wanted):  # and every module those import
            r = client.get(f"/dashboard/static/{name}")
            assert r.status_code == 200 and r.content, name
            wanted |= set(re.findall(r'from "\./([\w.-]+)"', r.text))
        assert {"app.js", "dashboard.css", "fleet.js", "traffic.js", "usage.js", "logs.js", "keys.js"} <= wanted
        assert all(client.get(f"/dashboard/static/{name}").status_code == 200 for name in wanted)
        assert client.get("/dashboard/static/..%2Fapp.py").status_code == 404
        assert client.get("/dashboard/session").json() == {"auth_required": True, "signed_in": False,
                                                           "csrf": None, "expires_at": None}


def test_an_open_loopback_server_needs_no_sign_in_but_refuses_other_origins() -> None:
    with app_client() as client:
        assert client.get("/dashboard/session").json()["signed_in"] is True
        assert client.get("/admin/models/status").status_code == 503  # open, as the admin API is
        r = client.post("/admin/models/unload/m", headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin_refused"
        r = client.post("/admin/models/unload/m", headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403
        assert client.post("/admin/models/unload/m").status_code == 503  # curl, the CLI: as before
        assert client.post("/admin/models/unload/m", headers={"Origin": "http://127.0.0.1:8000"}).status_code == 503


def test_a_bearer_key_is_checked_as_before_whatever_the_cookie() -> None:
    with app_client(admin_key=ADMIN_KEY) as client:
        csrf = client.post("/dashboard/session", json={"key": ADMIN_KEY}).json()["csrf"]
        r = client.post("/admin/models/unload/m", headers={"X-CSRF-Token": csrf, "Authorization": "Bearer wrong-1234"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert client.post("/admin/models/unload/m", headers={"X-CSRF-Token": csrf}).status_code == 503
        assert client.post("/dashboard/session", content=b"not json").status_code == 400
        r = client.post("/admin/models/unload/m", headers={"X-CSRF-Token": "é".encode("latin-1")})
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_token_invalid"
