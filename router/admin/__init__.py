"""The operator's API: `/admin/*` (the fleet, models, the catalog and profiles, keys, users and
organisations, usage, the machine) and `/metrics`."""

from mlx_fleet.router.admin import accounts, catalog, fleet, metrics, models, system, usage

ROUTES = [*metrics.ROUTES, *fleet.ROUTES, *catalog.ROUTES, *models.ROUTES, *accounts.ROUTES, *usage.ROUTES,
          *system.ROUTES]
