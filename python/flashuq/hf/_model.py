"""What the transformers adapters read from a model: the output head's parameters and the positions
``generate`` gives left-padded rows."""

from __future__ import annotations

from torch import Tensor


def _head_params(model):
    head = model.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise ValueError("model: needs an output projection (get_output_embeddings()) with a weight")
    cfg = getattr(model, "config", None)
    softcap = getattr(cfg, "final_logit_softcapping", None)
    scale = getattr(cfg, "logit_scale", None)
    return head.weight, getattr(head, "bias", None), scale, softcap


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions that skip left padding (as ``generate`` computes them): ``cumsum(mask) − 1``, 0 on pads."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.clamp(min=0)
