"""The one thing pyproject.toml cannot say: the top-level folders `router/`, `supervisor/` and
`worker/` install as `mlx_fleet.router`, `mlx_fleet.supervisor` and `mlx_fleet.worker`, with
every subpackage found, so the project claims one import name and the folders stay where the
design puts them (an editable install maps them the same way)."""

from setuptools import find_namespace_packages, setup

ROOTS = {
    "mlx_fleet": "mlx_fleet",
    "mlx_fleet.router": "router",
    "mlx_fleet.supervisor": "supervisor",
    "mlx_fleet.worker": "worker",
}


def packages() -> list[str]:
    """Namespace discovery, as pyproject's own `packages.find` does by default, so that a data
    folder (the dashboard's `static/`) is a package of the distribution too."""
    found = []
    for name, folder in ROOTS.items():
        nested = [f"{name}.{sub}" for sub in find_namespace_packages(folder, exclude=["*__pycache__*"])
                  if f"{name}.{sub}" not in ROOTS]
        found += [name, *nested]
    return found


setup(packages=packages(), package_dir=ROOTS)
