"""Users and organisations through the whole app in-process, on a fake fleet: who holds a key, usage
by user and by organisation, the refusals (unknown ids, an organisation with users, bad bodies, a
key that is not the admin key), and a deleted user's keys refused at once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from fake_fleet_client import FakeFleetClient, answer
from mlx_fleet.config import FleetConfig, ModelConfig, ServerConfig
from mlx_fleet.router.app import create_app
from mlx_fleet.runtime import Endpoints

API_KEY, ADMIN_KEY = "sk-user-0123456789", "sk-admin-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
MODELS = [ModelConfig(id="m", path="/x", type="text")]
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    fake = FakeFleetClient(MODELS)
    fake.start()
    fake.script = answer
    root = tmp_path_factory.mktemp("accounts")
    config = FleetConfig(server=ServerConfig(api_keys=[API_KEY], admin_key=ADMIN_KEY, state_dir=str(root / "state")),
                         models=MODELS)
    app = create_app(config, Endpoints(root), time.time(), client=fake)
    with TestClient(app, base_url="http://127.0.0.1:8000") as test_client:
        yield test_client


def made(client: TestClient, path: str, **body: object) -> dict:
    r = client.post(path, json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()


def error(r, status: int) -> dict:
    assert r.status_code == status, r.text
    return r.json()["error"]


def chat(client: TestClient, token: str):
    return client.post("/v1/chat/completions", json={"model": "m", "messages": HI},
                       headers={"Authorization": f"Bearer {token}"})


def test_a_keys_user_and_org_are_counted_in_usage_and_a_deleted_user_is_refused(client: TestClient) -> None:
    org = made(client, "/admin/orgs", name="acme")
    user = made(client, "/admin/users", name="Ada", email="ada@acme.test", org_id=org["id"])
    key = made(client, "/admin/keys", name="ada-laptop", user_id=user["id"])
    assert (key["user_id"], key["org_id"]) == (user["id"], org["id"])
    assert chat(client, key["key"]).status_code == 200
    for by, group in (("user", user["id"]), ("org", org["id"])):
        totals = client.get("/admin/usage/aggregate", params={"by": by}, headers=ADMIN).json()
        assert totals["by"] == by
        assert next(t for t in totals["data"] if t["group"] == group)["requests"] == 1
    row = client.get("/admin/usage", params={"key": key["id"]}, headers=ADMIN).json()["data"][0]
    assert (row["user_id"], row["org_id"]) == (user["id"], org["id"])
    assert error(client.delete(f"/admin/orgs/{org['id']}", headers=ADMIN), 409)["code"] == "org_not_empty"
    r = client.delete(f"/admin/users/{user['id']}", headers=ADMIN)
    assert r.status_code == 200 and r.json() == {"id": user["id"], "deleted": True, "revoked_keys": 1}
    assert error(chat(client, key["key"]), 401)["code"] == "invalid_api_key"
    assert client.delete(f"/admin/orgs/{org['id']}", headers=ADMIN).json() == {"id": org["id"], "deleted": True}
    assert error(client.get(f"/admin/orgs/{org['id']}", headers=ADMIN), 404)["code"] == "org_not_found"


def test_orgs_are_listed_found_by_name_and_renamed(client: TestClient) -> None:
    org = made(client, "/admin/orgs", name="globex")
    assert org["id"].startswith("org_") and org["created_at"] > 0
    assert org in client.get("/admin/orgs", headers=ADMIN).json()["data"]
    assert client.get("/admin/orgs/lookup", params={"name": "globex"}, headers=ADMIN).json() == org
    assert error(client.get("/admin/orgs/lookup", params={"name": "nobody"}, headers=ADMIN), 404)["code"] == \
        "org_not_found"
    renamed = client.patch(f"/admin/orgs/{org['id']}", json={"name": "globex-2"}, headers=ADMIN)
    assert renamed.status_code == 200 and renamed.json()["name"] == "globex-2"
    assert error(client.post("/admin/orgs", json={"name": "globex-2"}, headers=ADMIN), 409)["code"] == "already_exists"


def test_users_are_filtered_by_org_found_and_changed(client: TestClient) -> None:
    org = made(client, "/admin/orgs", name="initech")
    peter = made(client, "/admin/users", name="Peter", email="peter@initech.test", org_id=org["id"])
    loner = made(client, "/admin/users", name="Milton")
    assert loner["org_id"] is None and loner["email"] is None
    listed = client.get("/admin/users", params={"org_id": org["id"]}, headers=ADMIN).json()["data"]
    assert listed == [peter]
    assert client.get("/admin/users/lookup", params={"email": "peter@initech.test"}, headers=ADMIN).json() == peter
    assert client.get("/admin/users/lookup", params={"name": "Milton"}, headers=ADMIN).json() == loner
    assert error(client.get("/admin/users/lookup", params={"name": "Bob"}, headers=ADMIN), 404)["code"] == \
        "user_not_found"
    assert error(client.get("/admin/users/lookup", headers=ADMIN), 400)["code"] == "invalid_value"
    moved = client.patch(f"/admin/users/{loner['id']}", json={"org_id": org["id"]}, headers=ADMIN).json()
    assert (moved["org_id"], moved["name"]) == (org["id"], "Milton")
    cleared = client.patch(f"/admin/users/{loner['id']}", json={"org_id": None, "name": "M."}, headers=ADMIN).json()
    assert (cleared["org_id"], cleared["name"]) == (None, "M.")


def test_keys_are_filtered_by_user_org_and_name_and_sorted(client: TestClient) -> None:
    org = made(client, "/admin/orgs", name="hooli")
    gavin = made(client, "/admin/users", name="Gavin", org_id=org["id"])
    b = made(client, "/admin/keys", name="hooli-b", user_id=gavin["id"])
    a = made(client, "/admin/keys", name="hooli-a", user_id=gavin["id"])
    made(client, "/admin/keys", name="hooli-nobody")

    def ids(**params: str) -> list[str]:
        r = client.get("/admin/keys", params=params, headers=ADMIN)
        assert r.status_code == 200, r.text
        return [k["id"] for k in r.json()["data"]]

    assert ids(user_id=gavin["id"]) == [b["id"], a["id"]]
    assert ids(org_id=org["id"], sort="name") == [a["id"], b["id"]]
    assert ids(org_id=org["id"], sort="-created_at") == [a["id"], b["id"]]
    assert ids(org_id=org["id"], q="-b") == [b["id"]]
    assert len(ids(q="hooli")) == 3
    assert "cannot sort by 'bogus'" in error(client.get("/admin/keys", params={"sort": "bogus"}, headers=ADMIN),
                                             400)["message"]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), [
    ("post", "/admin/keys", {"name": "k", "user_id": "user_nope"}, 404, "user_not_found"),
    ("post", "/admin/users", {"name": "u", "org_id": "org_nope"}, 404, "org_not_found"),
    ("patch", "/admin/users/user_nope", {"name": "x"}, 404, "user_not_found"),
    ("delete", "/admin/users/user_nope", None, 404, "user_not_found"),
    ("patch", "/admin/orgs/org_nope", {"name": "x"}, 404, "org_not_found"),
    ("delete", "/admin/orgs/org_nope", None, 404, "org_not_found"),
    ("post", "/admin/orgs", {"name": ""}, 400, None),
    ("post", "/admin/orgs", {"name": "x", "extra": 1}, 400, None),
    ("post", "/admin/users", {"name": "u", "email": "not-an-email"}, 400, None),
    ("patch", "/admin/users/user_nope", {"org_id": 5}, 400, None),
])
def test_unknown_ids_and_bad_bodies_are_refused_in_the_envelope(client: TestClient, method: str, path: str,
                                                                 body: dict | None, status: int,
                                                                 code: str | None) -> None:
    r = client.request(method.upper(), path, json=body, headers=ADMIN)
    got = error(r, status)
    assert got["message"] and (code is None or got["code"] == code)


@pytest.mark.parametrize("path", ["/admin/orgs", "/admin/users"])
def test_only_the_admin_key_reaches_the_accounts(client: TestClient, path: str) -> None:
    assert error(client.get(path, headers={"Authorization": f"Bearer {API_KEY}"}), 403)["code"] == \
        "insufficient_permissions"
    assert error(client.post(path, json={"name": "x"}), 401)
    assert error(client.get(path, headers={"Authorization": "Bearer sk-wrong-0123456789"}), 401)["code"] == \
        "invalid_api_key"


def test_the_accounts_routes_are_documented(client: TestClient) -> None:
    schema = client.get("/openapi.json", headers=ADMIN).json()
    paths = schema["paths"]
    assert {"/admin/orgs", "/admin/orgs/lookup", "/admin/orgs/{org_id}", "/admin/users", "/admin/users/lookup",
            "/admin/users/{user_id}"} <= paths.keys()
    assert "409" in paths["/admin/orgs/{org_id}"]["delete"]["responses"]
    assert {"name", "email", "org_id"} <= schema["components"]["schemas"]["ChangeUser"]["properties"].keys()
    assert {"user_id", "org_id"} <= {p["name"] for p in paths["/admin/keys"]["get"]["parameters"]}
