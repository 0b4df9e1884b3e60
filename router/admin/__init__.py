"""The operator's API: `/admin/*` (the fleet, models, the catalog and profiles, keys, usage, the
machine) and `/metrics`."""

from mlx_fleet.router.admin import catalog, fleet, keys, metrics, models, system, usage

ROUTES = [*metrics.ROUTES, *fleet.ROUTES, *catalog.ROUTES, *models.ROUTES, *keys.ROUTES, *usage.ROUTES,
          *system.ROUTES]
