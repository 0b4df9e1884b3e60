"""Who holds access: `/admin/keys`, and the users and organisations keys belong to."""

from mlx_fleet.router.admin.accounts import keys, orgs, users

ROUTES = [*orgs.ROUTES, *users.ROUTES, *keys.ROUTES]
