"""`/admin/keys`: create, list and revoke API keys (the token is shown once, at creation).

The database work runs in a thread on a connection of its own, so the event loop never waits on
the disk, and so the key index (the router's own connection) sees the change on its next check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Response, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody

from mlx_fleet.router.admin.common import in_db
from mlx_fleet.router.http.encoding import as_json
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.http.openapi import body_dto, error_responses
from mlx_fleet.router.router_state import FromApp, RouterState
from mlx_fleet.state import keys

T = TypeVar("T")


class CreateKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    scopes: list[keys.Scope] | None = None


class KeyList(msgspec.Struct, kw_only=True):
    data: list[keys.ApiKey]


class Revoked(msgspec.Struct, kw_only=True):
    id: str
    revoked: bool = True


async def _in_db(router: RouterState, fn: Callable[..., T], *args: Any) -> T:
    """`in_db`, with the key store's refusals as this API's errors."""
    try:
        return await in_db(router, fn, *args)
    except keys.UnknownKey as e:
        raise ApiError(404, str(e), code="key_not_found") from None
    except keys.KeyProblem as e:
        raise ApiError(400, str(e), code="invalid_value") from None


@post("/admin/keys", status_code=201, dto=body_dto(CreateKey), return_dto=None,
      responses=error_responses())
async def create_key(router: FromApp[RouterState], data: JSONBody[CreateKey]) -> Response[keys.CreatedKey]:
    created = await _in_db(router, keys.create_key, data.name, data.scopes)
    return as_json(created, 201)


@get("/admin/keys", responses=error_responses())
async def list_keys(router: FromApp[RouterState], q: FromQuery[str] = "",
                    sort: FromQuery[str] = "created_at") -> Response[KeyList]:
    await router.usage.written()  # the keys' request counters are written with the usage rows
    found = await _in_db(router, keys.list_keys, q, sort)
    return as_json(KeyList(data=found))


@delete("/admin/keys/{key_id:str}", status_code=200, responses=error_responses(404))
async def revoke_key(router: FromApp[RouterState], key_id: FromPath[str]) -> Response[Revoked]:
    await _in_db(router, keys.revoke_key, key_id)
    return as_json(Revoked(id=key_id))


ROUTES = [create_key, list_keys, revoke_key]
