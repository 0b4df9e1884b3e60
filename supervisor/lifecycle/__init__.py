"""The actions that change the fleet: loading a model (room, spawn or a spare, failures and
backoff, crashes), stopping and draining workers, and the pool of warm spares."""
