"""What the fleet keeps on disk, shared by every process: the SQLite state file (`db`), API keys,
usage queries, and each model's worker log."""
