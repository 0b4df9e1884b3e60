"""`/admin/keys`: create, list and revoke API keys (the token is shown once, at creation); a key
may belong to a user, and the list keeps a user's or an organisation's keys.

The database work runs in a thread on a connection of its own, so the event loop never waits on
the disk, and so the key index (the router's own connection) sees the change on its next check.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Response, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody

from mlx_fleet.router.admin.accounts.store import in_store
from mlx_fleet.router.http.encoding import as_json
from mlx_fleet.router.http.openapi import body_dto, error_responses
from mlx_fleet.router.router_state import FromApp, RouterState
from mlx_fleet.state import keys


class CreateKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    scopes: list[keys.Scope] | None = None
    user_id: str | None = None


class KeyList(msgspec.Struct, kw_only=True):
    data: list[keys.ApiKey]


class Revoked(msgspec.Struct, kw_only=True):
    id: str
    revoked: bool = True


@post("/admin/keys", status_code=201, dto=body_dto(CreateKey), return_dto=None,
      responses=error_responses(404))
async def create_key(router: FromApp[RouterState], data: JSONBody[CreateKey]) -> Response[keys.CreatedKey]:
    created = await in_store(router, keys.create_key, data.name, data.scopes, data.user_id)
    return as_json(created, 201)


@get("/admin/keys", responses=error_responses())
async def list_keys(router: FromApp[RouterState], q: FromQuery[str] = "", sort: FromQuery[str] = "created_at",
                    user_id: FromQuery[str | None] = None, org_id: FromQuery[str | None] = None) -> Response[KeyList]:
    await router.usage.written()  # the keys' request counters are written with the usage rows
    found = await in_store(router, keys.list_keys, q, sort, user_id, org_id)
    return as_json(KeyList(data=found))


@delete("/admin/keys/{key_id:str}", status_code=200, responses=error_responses(404))
async def revoke_key(router: FromApp[RouterState], key_id: FromPath[str]) -> Response[Revoked]:
    await in_store(router, keys.revoke_key, key_id)
    return as_json(Revoked(id=key_id))


ROUTES = [create_key, list_keys, revoke_key]
