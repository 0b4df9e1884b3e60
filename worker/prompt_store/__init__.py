"""The prompt cache's disk tier: prompts' KV caches kept on disk as hash-chained blocks, so a long
prefix (an agent's 10-60k-token context) survives its worker's eviction, crash or restart.

Only the engine-facing `disk_tier` and the snapshot/rebuild in `kv_blocks` touch MLX; the files,
their format and the writer thread are plain Python (MLX calls off the engine's thread abort on Metal).
"""
