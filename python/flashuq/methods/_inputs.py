"""Input handling shared by the sample-, graph- and attention-based methods: tensors of a given rank
and kind on one device, shapes, the compute dtype, and validated masks. Malformed inputs raise
``TypeError`` (wrong type or dtype) or ``ValueError`` (wrong shape or device), naming the argument."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor


def input_tensor(x, name: str, ndim: Optional[int], kind: str, like: Optional[Tensor] = None) -> Tensor:
    """``x`` as a tensor of ``ndim`` dims (None: any); ``kind`` is "float", "int" or "bool"; same device
    as ``like``."""
    if not isinstance(x, (Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    x = torch.as_tensor(x)
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    real = not x.dtype.is_complex and x.dtype != torch.bool
    ok = {"float": x.dtype.is_floating_point, "int": real and not x.dtype.is_floating_point,
          "real": real, "bool": x.dtype == torch.bool}[kind]
    if not ok:
        what = {"float": "floating", "int": "integer", "real": "real (integer or floating)", "bool": "bool"}[kind]
        raise TypeError(f"{name} must be a {what} tensor, got {x.dtype}")
    if like is not None and x.device != like.device:
        raise ValueError(f"{name} is on {x.device} but the other inputs are on {like.device}")
    return x


def check_shape(x: Tensor, name: str, shape) -> None:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")


def compute_dtype(*xs) -> torch.dtype:
    """fp64 if any floating input is fp64, else fp32."""
    return torch.float64 if any(x is not None and x.dtype == torch.float64 for x in xs) else torch.float32


def bool_mask(mask, name: str, shape, like: Tensor, other: str = "the other inputs") -> Tensor:
    """A validated bool mask of ``shape`` on ``like``'s device (None: all True)."""
    if mask is None:
        return torch.ones(*shape, dtype=torch.bool, device=like.device)
    if not isinstance(mask, (Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(mask).__name__}")
    m = torch.as_tensor(mask)
    if m.dtype.is_floating_point or m.dtype.is_complex:
        raise TypeError(f"{name} must be a bool (or integer) tensor, got {m.dtype}")
    check_shape(m, name, tuple(shape))
    if m.device != like.device:
        raise ValueError(f"{name} is on {m.device} but {other} are on {like.device}")
    return m != 0


def sample_mask_of(sample_mask, Q: int, K: int, like: Tensor) -> Tensor:
    return bool_mask(sample_mask, "sample_mask", (Q, K), like)


__all__ = ["input_tensor", "check_shape", "compute_dtype", "bool_mask", "sample_mask_of"]
