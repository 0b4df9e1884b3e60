"""`/admin/users`: the people keys belong to, each in an organisation or none; deleting a user
revokes their keys at once."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Response, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody

from mlx_fleet.router.admin.accounts.orgs import Deleted, Name
from mlx_fleet.router.admin.accounts.store import in_store
from mlx_fleet.router.http.encoding import as_json
from mlx_fleet.router.http.openapi import body_dto, error_responses
from mlx_fleet.router.router_state import FromApp, RouterState
from mlx_fleet.state import accounts, keys

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]


class CreateUser(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    email: Email | None = None
    org_id: str | None = None


class ChangeUser(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The fields to change; an `email` or `org_id` of null clears it."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    email: Email | None | msgspec.UnsetType = msgspec.UNSET
    org_id: str | None | msgspec.UnsetType = msgspec.UNSET


class UserList(msgspec.Struct, kw_only=True):
    data: list[accounts.User]


class DeletedUser(Deleted, kw_only=True):
    revoked_keys: int


@get("/admin/users", responses=error_responses())
async def list_users(router: FromApp[RouterState], org_id: FromQuery[str | None] = None) -> Response[UserList]:
    return as_json(UserList(data=await in_store(router, accounts.list_users, org_id)))


@post("/admin/users", status_code=201, dto=body_dto(CreateUser), return_dto=None,
      responses=error_responses(404, 409))
async def create_user(router: FromApp[RouterState], data: JSONBody[CreateUser]) -> Response[accounts.User]:
    return as_json(await in_store(router, accounts.create_user, data.name, data.email, data.org_id), 201)


@get("/admin/users/lookup", responses=error_responses(404))
async def find_user(router: FromApp[RouterState], email: FromQuery[str | None] = None,
                    name: FromQuery[str | None] = None) -> Response[accounts.User]:
    return as_json(await in_store(router, accounts.find_user, email, name))


@get("/admin/users/{user_id:str}", responses=error_responses(404))
async def get_user(router: FromApp[RouterState], user_id: FromPath[str]) -> Response[accounts.User]:
    return as_json(await in_store(router, accounts.get_user, user_id))


@patch("/admin/users/{user_id:str}", dto=body_dto(ChangeUser), return_dto=None,
       responses=error_responses(404, 409))
async def change_user(router: FromApp[RouterState], user_id: FromPath[str],
                      data: JSONBody[ChangeUser]) -> Response[accounts.User]:
    changes = {f: v for f in data.__struct_fields__ if (v := getattr(data, f)) is not msgspec.UNSET}
    return as_json(await in_store(router, accounts.change_user, user_id, changes))


@delete("/admin/users/{user_id:str}", status_code=200, responses=error_responses(404))
async def delete_user(router: FromApp[RouterState], user_id: FromPath[str]) -> Response[DeletedUser]:
    revoked = await in_store(router, keys.delete_user, user_id)
    return as_json(DeletedUser(id=user_id, revoked_keys=revoked))


ROUTES = [list_users, create_user, find_user, get_user, change_user, delete_user]
