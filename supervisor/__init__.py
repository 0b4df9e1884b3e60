"""The supervisor: the fleet's one long-lived process (`python -m mlx_fleet.supervisor`).

`fleet.py` is the composition root; `context.py` what every part shares; `lifecycle/` a model's
worker from start to end; `memory/` the budget, the policy and the housekeeping tick; `control/`
what comes in through the sockets and who answers it."""
