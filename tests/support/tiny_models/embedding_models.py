"""A tiny random-weight BERT, the embedding fixture ``mlx_embeddings.load`` accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten

from tiny_models.files import write_json
from tiny_models.tokenizer_files import build_wordpiece_tokenizer


def build_tiny_bert(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a random-weight BERT directory that ``mlx_embeddings.load`` accepts.

    Parameter names are ``mlx_embeddings.models.bert.Model``'s, which match HF
    ``BertModel``'s, so the loader needs no renaming. Hidden size 64, 2 layers,
    4 heads; the model's ``text_embeds`` output is mean-pooled and L2-normalised.
    """
    # Imported here: ``import mlx_embeddings`` pulls in mlx_vlm (~2.5 s).
    from mlx_embeddings.models import bert

    info = build_wordpiece_tokenizer(out_dir)
    config: dict[str, Any] = {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "vocab_size": info.vocab_size,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "pad_token_id": info.pad_token_id,
    }
    mx.random.seed(seed)
    model = bert.Model(bert.ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    write_json(out_dir / "config.json", config)
    return out_dir
