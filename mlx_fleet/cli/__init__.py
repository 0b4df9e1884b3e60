"""`mlx-fleet`'s command line: the top layer, the only one that may import the router and the
supervisor (`serve` starts them both)."""

from mlx_fleet.cli.main import main

__all__ = ["main"]
