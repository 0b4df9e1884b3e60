"""`/admin/usage*`: what the usage table says, as rows, totals, percentiles, a series, or CSV.

Each route first waits for the usage writer to write what is queued, so a request that has just
finished is in the answer.
"""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Response, get
from litestar.params import FromQuery, QueryParameter

from mlx_fleet.router.admin.common import in_db
from mlx_fleet.router.http.encoding import as_json
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.http.openapi import error_responses
from mlx_fleet.router.router_state import FromApp, RouterState
from mlx_fleet.state import usage_queries as q

Since = Annotated[str | None, QueryParameter(description="unix seconds, or a duration back from now: 90m, 1h, 7d",
                                             pattern=r"^(\d+(\.\d+)?|(\d+(\.\d+)?(ms|s|m|h|d))+)$")]
_ERRORS = error_responses()


def _time(text: str | None, name: str) -> float | None:
    try:
        return q.parse_time(text)
    except ValueError as e:
        raise ApiError(400, f"Invalid '{name}': {e}.", param=name, code="invalid_value") from None


@get("/admin/usage", responses=_ERRORS)
async def usage_rows(router: FromApp[RouterState], model: FromQuery[str | None] = None,
                     key: FromQuery[str | None] = None, since: Since = None, until: Since = None,
                     limit: Annotated[int, QueryParameter(ge=1, le=10000)] = 100,
                     offset: Annotated[int, QueryParameter(ge=0, le=2**53)] = 0) -> Response[q.UsageRows]:
    await router.usage.written()
    found = await in_db(router, q.rows, model, key, _time(since, "since"), _time(until, "until"), limit, offset)
    return as_json(q.UsageRows(data=found))


@get("/admin/usage/aggregate", responses=_ERRORS)
async def usage_aggregate(router: FromApp[RouterState], by: FromQuery[q.GroupBy] = "model",
                          since: Since = None) -> Response[q.Aggregate]:
    await router.usage.written()
    start = _time(since, "since")
    return as_json(q.Aggregate(by=by, since=start, data=await in_db(router, q.aggregate, by, start)))


@get("/admin/usage/latency", responses=_ERRORS)
async def usage_latency(router: FromApp[RouterState], model: FromQuery[str | None] = None,
                        since: Since = None) -> Response[q.Latency]:
    await router.usage.written()
    return as_json(await in_db(router, q.latency, model, _time(since, "since")))


@get("/admin/usage/series", responses=_ERRORS)
async def usage_series(router: FromApp[RouterState], bucket: FromQuery[q.Bucket] = "1h",
                       since: Since = None) -> Response[q.Series]:
    await router.usage.written()
    start = _time(since, "since")
    return as_json(q.Series(bucket=bucket, since=start, data=await in_db(router, q.series, bucket, start)))


@get("/admin/usage/export", media_type="text/csv", responses=_ERRORS)
async def usage_export(router: FromApp[RouterState], format: FromQuery[Literal["csv"]] = "csv",
                       model: FromQuery[str | None] = None, key: FromQuery[str | None] = None, since: Since = None,
                       until: Since = None) -> Response[str]:
    await router.usage.written()
    text = await in_db(router, q.export_csv, model, key, _time(since, "since"), _time(until, "until"))
    return Response(text, media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="mlx-fleet-usage.csv"'})


ROUTES = [usage_rows, usage_aggregate, usage_latency, usage_series, usage_export]
