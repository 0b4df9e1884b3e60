"""Keys, usage, metrics and system routes through the real stack: HTTP → router → supervisor → MLX."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleet_server import ROOT, FleetServer, strict_client
from mlx_fleet.state.usage_queries import percentile
from tiny_models import build_tiny_bert

ADMIN, ALL = "sk-admin-ops-0123456789", "sk-all-ops-0123456789"


def write_ops_config(root: Path, tiny_lm: Path, bert: Path) -> Path:
    config = root / "fleet.toml"
    config.write_text(f'[server]\nadmin_key = "{ADMIN}"\napi_keys = ["{ALL}"]\n'
                      f'[[models]]\nid = "tiny"\npath = "{tiny_lm}"\ntype = "text"\n'
                      f'[[models]]\nid = "bert"\npath = "{bert}"\n')
    return config


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory, tiny_lm: Path) -> Iterator[FleetServer]:
    root = tmp_path_factory.mktemp("ops")
    server = FleetServer(write_ops_config(root, tiny_lm, build_tiny_bert(root / "bert")), root / "state").wait_ready()
    server.state_dir = root / "state"
    yield server
    server.stop()


def admin_get(server: FleetServer, path: str, **params) -> httpx.Response:
    return httpx.get(f"{server.base_url}{path}", params=params, headers={"Authorization": f"Bearer {ADMIN}"},
                     timeout=60)


def new_key(server: FleetServer, name: str, scopes: list[str] | None = None) -> dict:
    body = {"name": name, **({"scopes": scopes} if scopes is not None else {})}
    r = httpx.post(f"{server.base_url}/admin/keys", json=body, headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 201, r.text
    return r.json()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlx_fleet.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def chat(client: openai.OpenAI, **kwargs):
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}],
                                          max_tokens=kwargs.pop("max_tokens", 6), **kwargs)


def test_a_key_reaches_only_its_scopes(ops: FleetServer) -> None:
    key = new_key(ops, "embedder", ["embeddings"])
    assert key["scopes"] == ["embeddings"] and key["key"].startswith("mf-")
    client = strict_client(ops.base_url, api_key=key["key"])
    assert len(client.embeddings.create(model="bert", input="hello", encoding_format="float").data) == 1
    with pytest.raises(openai.PermissionDeniedError) as refused:
        chat(client)
    error = refused.value.body
    assert error["code"] == "missing_scope" and "'chat'" in error["message"]
    for path, scope in (("/v1/responses", "responses"), ("/v1/messages", "messages")):
        r = httpx.post(f"{ops.base_url}{path}", json={"model": "tiny", "input": "hi"}, headers={"x-api-key": key["key"]})
        assert r.status_code == 403 and f"'{scope}'" in r.text, (path, r.text)
    listed = admin_get(ops, "/admin/keys", q="embedder").json()["data"]
    assert [k["id"] for k in listed] == [key["id"]] and "key" not in listed[0]
    assert listed[0]["requests"] == 4 and listed[0]["last_used_at"] >= listed[0]["created_at"]


def test_a_key_revoked_by_the_cli_is_refused_at_the_next_request(ops: FleetServer) -> None:
    made = cli("keys", "--state-dir", str(ops.state_dir), "--json", "create", "cli-key", "--scope", "chat")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    client = strict_client(ops.base_url, api_key=key["key"])
    assert chat(client).usage.completion_tokens == 6
    gone = cli("keys", "--state-dir", str(ops.state_dir), "revoke", key["id"])
    assert gone.returncode == 0, gone.stderr
    with pytest.raises(openai.AuthenticationError):
        chat(client)
    # and one revoked through the API
    other = new_key(ops, "api-key")
    r = httpx.delete(f"{ops.base_url}/admin/keys/{other['id']}", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200 and r.json() == {"id": other["id"], "revoked": True}
    with pytest.raises(openai.AuthenticationError):
        chat(strict_client(ops.base_url, api_key=other["key"]))
    r = httpx.delete(f"{ops.base_url}/admin/keys/{other['id']}", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "key_not_found"


def admin_send(server: FleetServer, method: str, path: str, body: dict | None = None) -> httpx.Response:
    return httpx.request(method, f"{server.base_url}{path}", json=body, headers={"Authorization": f"Bearer {ADMIN}"},
                         timeout=60)


def test_a_users_key_counts_for_the_user_and_the_org_and_dies_with_the_user(ops: FleetServer) -> None:
    org = admin_send(ops, "POST", "/admin/orgs", {"name": "ops-org"}).json()
    user = admin_send(ops, "POST", "/admin/users", {"name": "Grace", "email": "grace@ops.test",
                                                     "org_id": org["id"]}).json()
    made = cli("keys", "--state-dir", str(ops.state_dir), "--json", "create", "grace-key", "--user", user["id"])
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert chat(strict_client(ops.base_url, api_key=key["key"])).usage.completion_tokens == 6
    for by, group in (("user", user["id"]), ("org", org["id"])):
        totals = admin_get(ops, "/admin/usage/aggregate", by=by).json()["data"]
        assert [t["requests"] for t in totals if t["group"] == group] == [1], (by, totals)
    r = admin_send(ops, "DELETE", f"/admin/orgs/{org['id']}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "org_not_empty"
    r = admin_send(ops, "DELETE", f"/admin/users/{user['id']}")
    assert r.status_code == 200 and r.json()["revoked_keys"] == 1
    with pytest.raises(openai.AuthenticationError):
        chat(strict_client(ops.base_url, api_key=key["key"]))
    assert admin_send(ops, "DELETE", f"/admin/orgs/{org['id']}").status_code == 200


def test_a_streamed_request_is_recorded_with_its_time_to_first_token(ops: FleetServer) -> None:
    key = new_key(ops, "streamer", ["chat"])
    chunks = list(chat(strict_client(ops.base_url, api_key=key["key"]), stream=True,
                       stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    rows = admin_get(ops, "/admin/usage", key=key["id"]).json()["data"]
    assert len(rows) == 1
    row = rows[0]
    assert (row["model"], row["endpoint"], row["status"], row["stream"]) == ("tiny", "chat", 200, True)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert row["ttft_ms"] is not None and 0 < row["ttft_ms"] <= row["latency_ms"]


def test_latency_percentiles_and_csv_match_the_rows(ops: FleetServer) -> None:
    client = strict_client(ops.base_url, api_key=ALL)
    for n in (2, 4, 8, 3, 5):
        chat(client, max_tokens=n)
    rows = admin_get(ops, "/admin/usage", model="tiny", limit=1000).json()["data"]
    ok = [r for r in rows if r["status"] < 400]
    latency = admin_get(ops, "/admin/usage/latency", model="tiny").json()
    assert latency["requests"] == len(ok) >= 5
    for p in ("p50", "p95", "p99"):
        assert latency["latency_ms"][p] == percentile(sorted(r["latency_ms"] for r in ok), int(p[1:]))
        assert latency["ttft_ms"][p] == percentile(sorted(r["ttft_ms"] for r in ok if r["ttft_ms"] is not None),
                                                   int(p[1:]))
    assert latency["decode_tokens_per_second"] > 0
    exported = admin_get(ops, "/admin/usage/export", format="csv", model="tiny")
    assert exported.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(parsed) == len(rows)
    assert [float(r["latency_ms"]) for r in parsed] == [r["latency_ms"] for r in rows]
    assert {r["model"] for r in parsed} == {"tiny"}


def test_aggregate_series_and_the_usage_command(ops: FleetServer) -> None:
    client = strict_client(ops.base_url, api_key=ALL)
    chat(client)
    client.embeddings.create(model="bert", input=["a", "b"], encoding_format="float")
    by_endpoint = {t["group"]: t for t in admin_get(ops, "/admin/usage/aggregate", by="endpoint").json()["data"]}
    rows = admin_get(ops, "/admin/usage", limit=10000).json()["data"]
    for endpoint in ("chat", "embeddings"):
        mine = [r for r in rows if r["endpoint"] == endpoint]
        assert by_endpoint[endpoint]["requests"] == len(mine)
        assert by_endpoint[endpoint]["completion_tokens"] == sum(r["completion_tokens"] for r in mine)
    series = admin_get(ops, "/admin/usage/series", bucket="1m", since="1h").json()
    assert sum(p["requests"] for p in series["data"]) == len(rows)
    table = cli("usage", "--url", ops.base_url, "--admin-key", ADMIN, "--by", "model")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:3] == ["MODEL", "REQUESTS", "ERRORS"]
    assert any(line.split()[0] == "tiny" for line in table.stdout.splitlines()[1:])


def scrape(server: FleetServer) -> dict[tuple[str, tuple], float]:
    r = admin_get(server, "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def test_metrics_parse_and_count_a_requests_tokens(ops: FleetServer) -> None:
    before = scrape(ops)
    done = chat(strict_client(ops.base_url, api_key=ALL), max_tokens=7)
    after = scrape(ops)
    label = (("model", "tiny"),)
    assert after[("mlx_fleet_completion_tokens_total", label)] - before.get(
        ("mlx_fleet_completion_tokens_total", label), 0) == done.usage.completion_tokens == 7
    assert after[("mlx_fleet_prompt_tokens_total", label)] - before.get(
        ("mlx_fleet_prompt_tokens_total", label), 0) == done.usage.prompt_tokens
    ok = ("mlx_fleet_requests_total", (("endpoint", "chat"), ("model", "tiny"), ("status", "200")))
    assert after[ok] - before.get(ok, 0) == 1
    assert after[("mlx_fleet_supervisor_up", ())] == 1
    assert after[("mlx_fleet_worker_memory_bytes", label)] > 0
    assert httpx.get(f"{ops.base_url}/metrics").status_code == 401
    assert httpx.get(f"{ops.base_url}/metrics", headers={"Authorization": f"Bearer {ALL}"}).status_code == 403


def test_system_routes(ops: FleetServer) -> None:
    chat(strict_client(ops.base_url, api_key=ALL), max_tokens=5)
    summary = admin_get(ops, "/admin/system/summary").json()
    assert summary["supervisor"] == "ok" and summary["workers"] >= 1
    assert 0 < summary["memory_available"] <= summary["memory_total"] and summary["disk_free"] > 0
    assert summary["memory_used_by_fleet"] > 0 and summary["uptime_seconds"] > 0
    caps = admin_get(ops, "/admin/system/capabilities").json()
    assert caps["versions"]["mlx"] and caps["versions"]["mlx-lm"] and caps["mlx_device"]["type"] in ("cpu", "gpu")
    throughput = admin_get(ops, "/admin/system/throughput").json()
    assert throughput["requests_1m"] >= 1 and throughput["tokens_per_second_1m"] > 0
    assert throughput["tokens_per_second_15m"] <= throughput["tokens_per_second_1m"]
    # the router itself never imports MLX: the facts came from a short-lived process
    assert httpx.get(f"{ops.base_url}/admin/system/capabilities").status_code == 401


def test_keys_and_usage_survive_a_restart(tmp_path: Path, tiny_lm: Path) -> None:
    config = write_ops_config(tmp_path, tiny_lm, tiny_lm)
    server = FleetServer(config, tmp_path / "state").wait_ready()
    try:
        key = new_key(server, "durable", ["chat"])
        chat(strict_client(server.base_url, api_key=key["key"]))
    finally:
        assert server.stop() == 0
    again = FleetServer(config, tmp_path / "state").wait_ready()
    try:
        assert chat(strict_client(again.base_url, api_key=key["key"])).usage.completion_tokens == 6
        rows = admin_get(again, "/admin/usage", key=key["id"]).json()["data"]
        assert [r["status"] for r in rows] == [200, 200]
        listed = admin_get(again, "/admin/keys", q="durable").json()["data"]
        assert listed[0]["requests"] == 2
    finally:
        again.stop()


def test_readiness_and_a_test_request(ops: FleetServer) -> None:
    auth = {"Authorization": f"Bearer {ADMIN}"}
    httpx.post(f"{ops.base_url}/admin/models/unload/tiny", params={"force": "true"}, headers=auth, timeout=60)
    r = admin_get(ops, "/admin/models/tiny/readiness")
    assert r.status_code == 503 and r.json() == {"model": "tiny", "ready": False, "state": "stopped"}
    r = httpx.post(f"{ops.base_url}/admin/models/tiny/test", params={"max_tokens": 5}, headers=auth, timeout=60)
    assert r.status_code == 200, r.text
    test = r.json()
    assert (test["model"], test["type"], test["completion_tokens"]) == ("tiny", "text", 5)
    assert isinstance(test["output"], str) and test["latency_ms"] > 0
    r = admin_get(ops, "/admin/models/readiness/tiny")  # the form for ids that hold '/'
    assert r.status_code == 200 and r.json()["ready"] is True
    r = httpx.post(f"{ops.base_url}/admin/models/test/bert", headers=auth, timeout=60)
    assert r.status_code == 200 and r.json()["dimensions"] > 0 and r.json()["output"] is None
    assert admin_get(ops, "/admin/models/nope/readiness").status_code == 404
