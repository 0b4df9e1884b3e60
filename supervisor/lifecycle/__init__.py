"""A model's worker from start to end: its states, its slot, the slot table, loading, stopping,
the warm spares, and the processes themselves."""
