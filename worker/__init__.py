"""The worker: one process per model, the only part of the fleet that imports MLX.

`__main__` starts it and `serve_loop` runs it (spare wait, load, the loop); `engines` serve the
model, `generation` is what the generating engines do around it, `gguf` turns a GGUF file into a
model mlx-lm loads. `capabilities` is its own short-lived process (MLX's facts for the router).
"""
