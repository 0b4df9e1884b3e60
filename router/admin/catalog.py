"""`/admin/models/registry|rescan|tiers`, `PUT /admin/models/{id}/enabled|tier`, `/admin/profiles`.

The supervisor answers each call; a call that changes which models exist or are enabled also
refreshes the router's catalog view before it returns, so the next request sees the change.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
from litestar import Request, Response, delete, get, post, put
from litestar.params import FromPath, JSONBody

from mlx_fleet.catalog.entry import Activation, ModelEntry, Profile, ProfileList, RegistryListing, ScanResult, TierModels
from mlx_fleet.protocol import (
    ActivateProfile,
    DeleteProfile,
    GetCatalog,
    GetProfiles,
    Rescan,
    SaveProfile,
    SetModel,
)
from mlx_fleet.router.admin.common import LOAD_CALL_TIMEOUT
from mlx_fleet.router.fleet.calls import ask
from mlx_fleet.router.http.decoding import decode_request
from mlx_fleet.router.http.encoding import as_json
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.http.openapi import body_dto, error_responses
from mlx_fleet.router.router_state import FromApp, RouterState

_ERRORS = error_responses(404)


class _Enabled(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool


class _Tier(msgspec.Struct, forbid_unknown_fields=True):
    tier: str


class NewProfile(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    models: list[str]


@get("/admin/models/registry", responses=_ERRORS)
async def registry(router: FromApp[RouterState]) -> Response[RegistryListing]:
    return as_json(await ask(router.fleet, GetCatalog(), RegistryListing))


@post("/admin/models/rescan", status_code=200, responses=_ERRORS)
async def rescan(router: FromApp[RouterState]) -> Response[ScanResult]:
    result = await ask(router.fleet, Rescan(), ScanResult, LOAD_CALL_TIMEOUT)
    await router.catalog.refresh(router.fleet)
    return as_json(result)


@put("/admin/models/{target:path}", responses=_ERRORS)
async def set_model(router: FromApp[RouterState], request: Request, target: FromPath[Path]) -> Response[ModelEntry]:
    """`PUT /admin/models/{model_id}/enabled` or `.../tier`; the id may hold a `/` (`org/name`)."""
    model, _, setting = str(target).strip("/").rpartition("/")
    raw = await request.body()
    if setting == "enabled" and model:
        call = SetModel(model, enabled=decode_request(raw, _Enabled).enabled)
    elif setting == "tier" and model:
        call = SetModel(model, tier=decode_request(raw, _Tier).tier)
    else:
        raise ApiError(404, f"No such admin route: PUT /admin/models/{str(target).strip('/')}", code="not_found")
    entry = await ask(router.fleet, call, ModelEntry, LOAD_CALL_TIMEOUT)
    await router.catalog.refresh(router.fleet)
    return as_json(entry)


@get("/admin/models/tiers/{tier:str}", responses=_ERRORS)
async def tier_models(router: FromApp[RouterState], tier: FromPath[str]) -> Response[TierModels]:
    registry = await ask(router.fleet, GetCatalog(tier), RegistryListing)
    return as_json(TierModels(tier=tier, models=registry.models))


@get("/admin/profiles", responses=_ERRORS)
async def list_profiles(router: FromApp[RouterState]) -> Response[ProfileList]:
    return as_json(await ask(router.fleet, GetProfiles(), ProfileList))


@get("/admin/profiles/{name:str}", responses=_ERRORS)
async def get_profile(router: FromApp[RouterState], name: FromPath[str]) -> Response[Profile]:
    for profile in (await ask(router.fleet, GetProfiles(), ProfileList)).profiles:
        if profile.name == name:
            return as_json(profile)
    raise ApiError(404, f"There is no profile {name!r}.", code="profile_not_found")


@post("/admin/profiles", status_code=201, dto=body_dto(NewProfile), return_dto=None, responses=_ERRORS)
async def save_profile(router: FromApp[RouterState], data: JSONBody[NewProfile]) -> Response[Profile]:
    return as_json(await ask(router.fleet, SaveProfile(data.name, tuple(data.models)), Profile), 201)


@delete("/admin/profiles/{name:str}", status_code=200, responses=_ERRORS)
async def delete_profile(router: FromApp[RouterState], name: FromPath[str]) -> Response[Profile]:
    return as_json(await ask(router.fleet, DeleteProfile(name), Profile))


@post("/admin/profiles/{name:str}/activate", status_code=200, responses=_ERRORS)
async def activate_profile(router: FromApp[RouterState], name: FromPath[str]) -> Response[Activation]:
    return as_json(await ask(router.fleet, ActivateProfile(name), Activation, LOAD_CALL_TIMEOUT))


ROUTES = [registry, rescan, set_model, tier_models, list_profiles, get_profile, save_profile, delete_profile,
          activate_profile]
