"""What the supervisor knows of its workers and how it reaches them: the states and the one table
of legal moves, each model's `WorkerSlot`, the `SlotTable`, a worker's process and its launch, the
two sockets, and the `FleetContext` that holds them for every part above."""
