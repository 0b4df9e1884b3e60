"""The engines: one loaded model served on the worker's thread, by the library that fits its type.

`base` is what the serve loop asks of every engine (`Engine`) and the helpers they share (a
config's values, the vocabulary size, the context length); `text` (mlx-lm), `vision` (mlx-vlm)
and `embed` (mlx-embeddings) are the engines; `load_engine` picks and loads one for a model.
"""
