"""Who gets in: keys on every route but /health, admin separation, Host checks, limits."""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import time
from pathlib import Path

import httpx
import openai
import pytest
from litestar.testing import TestClient

from fleet_server import FleetServer, strict_client, write_config
from mlx_fleet.state import keys
from mlx_fleet.config import FleetConfig, ModelConfig, ServerConfig
from mlx_fleet.runtime import Endpoints
from mlx_fleet.units import ByteSize
from mlx_fleet.router.app import ROUTES, create_app

API_KEY, ADMIN_KEY = "sk-user-0123456789", "sk-admin-0123456789"
# The dashboard's page, files and sign-in are public; what the page reads is the admin API, guarded.
PUBLIC = {"/health", "/", "/dashboard", "/dashboard/static/m", "/dashboard/session"}
ANTHROPIC = {"/v1/messages", "/v1/messages/count_tokens"}  # errors in Anthropic's shape there


def keyed_app(**server) -> TestClient:
    config = FleetConfig(server=ServerConfig(api_keys=[API_KEY], admin_key=ADMIN_KEY, state_dir=tempfile.mkdtemp(),
                                             **server),
                         models=[ModelConfig(id="m", path="/x", type="text")])
    # No supervisor behind it (nothing listens at the frontend): a request that gets past the
    # guard fails later, with 503.
    return TestClient(create_app(config, Endpoints(Path(tempfile.mkdtemp())), time.time()),
                      base_url="http://127.0.0.1:8000")


def every_route() -> list[tuple[str, str]]:
    app = create_app(FleetConfig(server=ServerConfig(state_dir="/nonexistent"),
                                 models=[ModelConfig(id="m", path="/x", type="text")]), Endpoints(Path("/x")), 0.0)
    routes = []
    for route in app.routes:
        for method in route.methods - {"OPTIONS", "HEAD"}:
            routes.append((method, re.sub(r"\{[a-z_]+:[a-z]+\}", "m", route.path)))
    return sorted(routes)


def test_route_table_is_what_we_think() -> None:
    paths = {p for _, p in every_route()}
    assert {"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages", "/v1/messages/count_tokens",
            "/v1/models", "/health", "/admin/models/status",
            "/admin/models/load/m", "/admin/models/unload/m", "/admin/health", "/admin/models/registry",
            "/admin/models/rescan", "/admin/models/m", "/admin/models/tiers/m", "/admin/profiles",
            "/admin/profiles/m", "/admin/profiles/m/activate"} <= paths
    assert len(ROUTES) == len({h.fn for h in ROUTES})


@pytest.mark.parametrize("method,path", every_route())
def test_every_non_public_route_refuses_a_request_without_a_key(method: str, path: str) -> None:
    with keyed_app() as client:
        r = client.request(method, path, json={})
        if path in PUBLIC:
            assert r.status_code != 401
            return
        assert r.status_code == 401, (method, path, r.status_code)
        error = r.json()["error"]
        kind = "authentication_error" if path in ANTHROPIC else "invalid_request_error"
        assert error["type"] == kind and "API key" in error["message"]
        for wrong in ({"Authorization": "Bearer wrong-key-value"}, {"x-api-key": "wrong-key-value"}):
            r = client.request(method, path, json={}, headers=wrong)
            assert r.status_code == 401
            body = r.json()
            if path in ANTHROPIC:
                assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
            else:
                assert body["error"]["code"] == "invalid_api_key"
            assert "wrong-key-value" not in r.text  # masked


def test_admin_and_user_keys_are_separate() -> None:
    with keyed_app() as client:
        user = {"Authorization": f"Bearer {API_KEY}"}
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        r = client.get("/admin/models/status", headers=user)
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_permissions"
        assert client.get("/admin/models/status", headers=admin).status_code == 503  # past the guard
        assert client.get("/v1/models", headers=admin).status_code == 401
        assert client.get("/v1/models", headers=user).status_code == 200
        assert client.get("/v1/models", headers={"Authorization": f"Basic {API_KEY}"}).status_code == 401
        assert client.get("/v1/models", headers={"x-api-key": API_KEY}).status_code == 200  # Anthropic's header
        assert client.get("/admin/models/status", headers={"x-api-key": API_KEY}).status_code == 403


def test_dns_rebinding_host_is_refused_on_loopback() -> None:
    with keyed_app(allowed_hosts=["fleet.local"]) as client:
        user = {"Authorization": f"Bearer {API_KEY}"}
        r = client.get("/v1/models", headers={**user, "Host": "evil.example.com"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "host_not_allowed"
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "fleet.local:8000"):
            assert client.get("/v1/models", headers={**user, "Host": host}).status_code == 200, host


def test_no_cors_headers_unless_configured() -> None:
    with keyed_app() as client:
        r = client.get("/v1/models", headers={"Origin": "http://evil.example.com",
                                              "Authorization": f"Bearer {API_KEY}"})
        assert not any(h.lower().startswith("access-control") for h in r.headers)
    with keyed_app(cors_origins=["http://app.example.com"]) as client:
        r = client.get("/v1/models", headers={"Origin": "http://app.example.com",
                                              "Authorization": f"Bearer {API_KEY}"})
        assert r.headers.get("access-control-allow-origin") == "http://app.example.com"


def test_oversized_body_is_413_in_the_envelope() -> None:
    with keyed_app(max_body_size=ByteSize("1KiB")) as client:
        r = client.post("/v1/chat/completions", content=b"x" * 4096,
                        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_keys_work_through_the_real_stack_and_never_reach_the_logs(tmp_path: Path, tiny_lm: Path) -> None:
    config = write_config(tmp_path / "fleet.toml", {"tiny": tiny_lm},
                          f'[server]\napi_keys = ["{API_KEY}"]\nadmin_key = "{ADMIN_KEY}"\n')
    server = FleetServer(config, tmp_path / "state").wait_ready()
    try:
        with pytest.raises(openai.AuthenticationError):
            strict_client(server.base_url, api_key="nope").models.list()
        client = strict_client(server.base_url, api_key=API_KEY)
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert r.usage.completion_tokens == 2
        r = httpx.get(f"{server.base_url}/admin/models/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 200
    finally:
        server.stop()
    log = server.log()
    assert API_KEY not in log and ADMIN_KEY not in log and "nope" not in log


def test_public_bind_without_keys_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "fleet.toml"
    config.write_text('[server]\nhost = "0.0.0.0"\n[[models]]\nid = "a"\npath = "/x"\n')
    r = subprocess.run([sys.executable, "-m", "mlx_fleet.cli", "serve", "--config", str(config)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "api_keys" in r.stderr


def test_a_public_server_with_only_database_keys_lets_no_one_in_without_one(tmp_path: Path) -> None:
    conn = keys.open_db(tmp_path)
    made = keys.create_key(conn, "only")
    config = FleetConfig(server=ServerConfig(host="0.0.0.0", state_dir=str(tmp_path)),
                         models=[ModelConfig(id="m", path="/x", type="text")])
    with TestClient(create_app(config, Endpoints(Path(tempfile.mkdtemp())), time.time())) as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {made.key}"}).status_code != 401
        r = client.get("/admin/models/status", headers={"Authorization": f"Bearer {made.key}"})
        assert r.status_code == 403  # no admin key: the admin API is closed, not open
        assert client.get("/admin/models/status").status_code == 401  # nor through a dashboard session
        assert client.get("/dashboard/session").json()["auth_required"] is True
        assert client.post("/dashboard/session", json={"key": made.key}).status_code == 401
        keys.revoke_key(conn, made.id)
        assert client.get("/v1/models").status_code == 401  # the last key gone: still closed


def test_a_public_bind_starts_with_a_key_made_by_the_cli(tmp_path: Path, tiny_lm: Path) -> None:
    import subprocess
    import sys

    state = tmp_path / "state"
    made = subprocess.run([sys.executable, "-m", "mlx_fleet.cli", "keys", "--state-dir", str(state), "--json",
                           "create", "first"], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    config = write_config(tmp_path / "fleet.toml", {"tiny": tiny_lm}, '[server]\nhost = "0.0.0.0"\n')
    server = FleetServer(config, state).wait_ready()
    try:
        with pytest.raises(openai.AuthenticationError):
            strict_client(server.base_url, api_key="nope").models.list()
        client = strict_client(server.base_url, api_key=json.loads(made.stdout)["key"])
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert r.usage.completion_tokens == 2
    finally:
        server.stop()


def test_admission_limit_is_429_before_any_stream(tmp_path: Path, tiny_lm: Path) -> None:
    """Chat, Responses and Anthropic Messages requests share the model's admission limit."""
    config = write_config(tmp_path / "fleet.toml", {"tiny": tiny_lm}, "[server]\nmax_requests_per_model = 2\n")
    server = FleetServer(config, tmp_path / "state").wait_ready()
    hi = [{"role": "user", "content": "hi"}]
    requests = [("/v1/chat/completions", {"messages": hi, "max_tokens": 200}),
                ("/v1/responses", {"input": "hi", "max_output_tokens": 200}),
                ("/v1/messages", {"messages": hi, "max_tokens": 200})] * 2

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            async def one(path: str, body: dict) -> httpx.Response:
                async with client.stream("POST", path, json={"model": "tiny", "stream": True, **body}) as r:
                    await r.aread()
                    return r
            return await asyncio.gather(*(one(path, body) for path, body in requests))
    try:
        responses = asyncio.run(burst())
        codes = sorted(r.status_code for r in responses)
        assert codes.count(200) >= 2 and set(codes) <= {200, 429}, codes
        refused = [r for r in responses if r.status_code == 429]
        assert refused, codes
        for r in refused:
            assert r.headers["content-type"].startswith("application/json") and int(r.headers["retry-after"]) >= 1
            if r.request.url.path == "/v1/messages":
                assert r.json()["type"] == "error" and r.json()["error"]["type"] == "rate_limit_error"
            else:
                assert r.json()["error"]["code"] == "rate_limit_exceeded"
        with pytest.raises(openai.RateLimitError):
            raise openai.RateLimitError("check the SDK maps it", response=refused[0], body=refused[0].json())
        assert strict_client(server.base_url).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2).usage.completion_tokens == 2
    finally:
        server.stop()
