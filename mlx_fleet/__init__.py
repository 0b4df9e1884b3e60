"""mlx-fleet: many MLX models behind one OpenAI-compatible endpoint."""
