"""The model catalog: every model the fleet can serve, configured or found on disk.

`discover` finds models, `inspect` reads their facts from their files, `tiers` groups them,
`store` keeps the user's overrides and profiles across restarts, `catalog` puts it together (`Catalog`).
"""
