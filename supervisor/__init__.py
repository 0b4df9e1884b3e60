"""The supervisor: the fleet's one long-lived process (`python -m mlx_fleet.supervisor`).

Its packages are layers, each importing only those below it (held by the import-linter contract
in pyproject.toml, which forbids loops between packages):

- `fleet.py`, the composition root, builds the context and the parts in order, runs, shuts down;
- `control/`: what comes in through the sockets and who answers it (dispatch, the admin RPC, the
  catalog's calls, diagnostics) and the housekeeping tick;
- `lifecycle/`: the actions that change the fleet: loading, stopping, the warm spares;
- `workers/`: what the supervisor knows of its workers and how it reaches them: the states and
  their one table of moves, each model's slot, the slot table, the processes, the sockets, and
  the `FleetContext` that every part above shares;
- `memory/`: the figures (budget, estimates, measurements) and the policy, pure functions.
"""
