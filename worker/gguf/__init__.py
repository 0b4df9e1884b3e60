"""A llama GGUF file as an mlx-lm model directory: `convert` writes it (and caches it), from
what `read` reads, `tensors` renames and `tokenizer` rebuilds."""
