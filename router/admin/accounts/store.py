"""The accounts' store (keys, users, organisations) in a thread, its refusals as this API's errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from mlx_fleet.router.admin.common import in_db
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.router_state import RouterState
from mlx_fleet.state import accounts, keys

T = TypeVar("T")

# most specific first: each is a KeyProblem or an AccountProblem, the rest of which are 400s
_REFUSALS: list[tuple[type[Exception], int, str]] = [
    (keys.UnknownKey, 404, "key_not_found"), (accounts.UnknownUser, 404, "user_not_found"),
    (accounts.UnknownOrg, 404, "org_not_found"), (accounts.OrgNotEmpty, 409, "org_not_empty"),
    (accounts.NameTaken, 409, "already_exists"), (keys.KeyProblem, 400, "invalid_value"),
    (accounts.AccountProblem, 400, "invalid_value")]


async def in_store(router: RouterState, fn: Callable[..., T], *args: Any) -> T:
    """`in_db`, with the store's refusals as this API's errors."""
    try:
        return await in_db(router, fn, *args)
    except (keys.KeyProblem, accounts.AccountProblem) as e:
        status, code = next((s, c) for kind, s, c in _REFUSALS if isinstance(e, kind))
        raise ApiError(status, str(e), code=code) from None
