"""`/admin/orgs`: the organisations users belong to (one with users left cannot be deleted)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Response, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody

from mlx_fleet.router.admin.accounts.store import in_store
from mlx_fleet.router.http.encoding import as_json
from mlx_fleet.router.http.openapi import body_dto, error_responses
from mlx_fleet.router.router_state import FromApp, RouterState
from mlx_fleet.state import accounts

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class OrgBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A new organisation, or an organisation's new name."""

    name: Name


class OrgList(msgspec.Struct, kw_only=True):
    data: list[accounts.Org]


class Deleted(msgspec.Struct, kw_only=True):
    id: str
    deleted: bool = True


@get("/admin/orgs", responses=error_responses())
async def list_orgs(router: FromApp[RouterState]) -> Response[OrgList]:
    return as_json(OrgList(data=await in_store(router, accounts.list_orgs)))


@post("/admin/orgs", status_code=201, dto=body_dto(OrgBody), return_dto=None, responses=error_responses(409))
async def create_org(router: FromApp[RouterState], data: JSONBody[OrgBody]) -> Response[accounts.Org]:
    return as_json(await in_store(router, accounts.create_org, data.name), 201)


@get("/admin/orgs/lookup", responses=error_responses(404))
async def find_org(router: FromApp[RouterState], name: FromQuery[str]) -> Response[accounts.Org]:
    return as_json(await in_store(router, accounts.find_org, name))


@get("/admin/orgs/{org_id:str}", responses=error_responses(404))
async def get_org(router: FromApp[RouterState], org_id: FromPath[str]) -> Response[accounts.Org]:
    return as_json(await in_store(router, accounts.get_org, org_id))


@patch("/admin/orgs/{org_id:str}", dto=body_dto(OrgBody), return_dto=None, responses=error_responses(404, 409))
async def rename_org(router: FromApp[RouterState], org_id: FromPath[str],
                     data: JSONBody[OrgBody]) -> Response[accounts.Org]:
    return as_json(await in_store(router, accounts.rename_org, org_id, data.name))


@delete("/admin/orgs/{org_id:str}", status_code=200, responses=error_responses(404, 409))
async def delete_org(router: FromApp[RouterState], org_id: FromPath[str]) -> Response[Deleted]:
    await in_store(router, accounts.delete_org, org_id)
    return as_json(Deleted(id=org_id))


ROUTES = [list_orgs, create_org, find_org, get_org, rename_org, delete_org]
