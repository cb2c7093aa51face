"""The object-agnostic prompt pair and its tokenisation (AnomalyCLIP: one "normal" and one
"abnormal" prompt for every object, optionally with learnable context tokens)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edge_runtime.errors import ConfigError


def tokenize_prompts(tokenizer: Any, prompts: Sequence[str], n_ctx: int, max_positions: int):
    """Token ids [2, L] (padded with EOS) and each prompt's EOS position once `n_ctx` context
    tokens are inserted after BOS. Raises ConfigError when a prompt does not fit the text
    tower or a word is unknown to a closed-vocabulary tokenizer."""
    import torch

    if len(prompts) != 2:
        raise ConfigError(f"model.prompts must hold exactly 2 prompts (normal, abnormal), got {len(prompts)}")
    enc = tokenizer(list(prompts), padding=True, return_tensors="pt")
    ids = enc["input_ids"].to(torch.int64)
    eos = tokenizer.eos_token_id
    unk = tokenizer.unk_token_id
    if unk is not None and unk != eos and bool((ids == unk).any()):
        bad = [p for p, row in zip(prompts, ids) if bool((row == unk).any())][0]
        raise ConfigError(f"model.prompts: '{bad}' has words the tokenizer does not know")
    has_eos = (ids == eos).any(dim=1)
    if not bool(has_eos.all()):
        raise ConfigError("model.prompts: the tokenizer did not end a prompt with its EOS token")
    eos_pos = (ids == eos).to(torch.int64).argmax(dim=1) + n_ctx
    length = ids.shape[1] + n_ctx
    if length > max_positions:
        raise ConfigError(
            f"model.prompts + model.n_ctx need {length} text positions, the CLIP text tower has {max_positions}"
        )
    return ids, eos_pos
