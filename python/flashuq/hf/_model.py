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


def batch_and_mask(input_ids: Tensor, attention_mask, axis: str = "N"):
    """``(input_ids, attention_mask)`` of a ``[B, N]`` batch, the mask all ones when None; a wrong rank or a
    mask of another shape raises ``ValueError`` naming the argument (``axis`` names the length in it)."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, {axis}], got shape {tuple(input_ids.shape)}")
    am = input_ids.new_ones(input_ids.shape) if attention_mask is None else attention_mask
    if am.shape != input_ids.shape:
        raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}")
    return input_ids, am
