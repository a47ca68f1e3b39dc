"""Validation and layout helpers shared by the ops."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from .._checks import check_bool, check_int, check_real  # noqa: F401 - the ops' validators (one set for the package)

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def as_tensor(x, name: str) -> torch.Tensor:
    """A torch tensor from a tensor or a numpy array (numpy inputs live on the CPU)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def check_logits(logits, name: str = "logits") -> torch.Tensor:
    logits = as_tensor(logits, name)
    if logits.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16, bfloat16 or float64, got {logits.dtype}")
    if logits.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension [..., V], got a 0-d tensor")
    if logits.shape[-1] == 0:
        raise ValueError(f"{name} has an empty vocabulary (last dimension is 0)")
    if logits.device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"{name} must be on the CPU or a CUDA device, got {logits.device}")
    if logits.shape[-1] > 1 and logits.stride(-1) != 1:
        raise ValueError(
            f"{name} must have stride 1 along the vocabulary (last) axis, got stride {logits.stride(-1)}; "
            "call .contiguous() first")
    return logits


def check_positive_float(value, name: str) -> float:
    """A finite real number > 0 (a temperature, a scale)."""
    return check_real(value, name, 0.0, lo_open=True)


def is_tracing() -> bool:
    """True under torch.compile / export tracing, where tensor values cannot be inspected."""
    return torch.compiler.is_compiling()


def plain_cpu_call(x: torch.Tensor) -> bool:
    """A CPU call that nothing observes: no autograd graph to record, no torch.compile, tracing,
    torch-function or dispatch mode, a plain tensor. Such a call may run an op's implementation
    directly: the registered op's dispatch costs ~25-40 µs per call (a fifth of a [1, 128256] decode
    step's kernel time; a quarter of a one-question graph call). Every other call goes through the
    registered op."""
    return (type(x) is torch.Tensor and x.device.type == "cpu"
            and not (x.requires_grad and torch.is_grad_enabled())
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing()
            and not torch._C._is_torch_function_mode_enabled()
            and _get_current_dispatch_mode() is None)


def capturing_cuda_graph(t: torch.Tensor) -> bool:
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


def values_readable(t: torch.Tensor) -> bool:
    """Whether the values of ``t`` may be inspected for validation: not while torch.compile traces, not
    during CUDA-graph capture (a host sync would break it), not on the meta device."""
    return not is_tracing() and not capturing_cuda_graph(t) and t.device.type != "meta"


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype of the ops: float64 for float64 inputs, float32 for the others."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def row_layout(x: torch.Tensor, trailing: int = 1):
    """Describe the rows of ``x [..., V]`` (or, with ``trailing=2``, the ``[M, V]`` blocks of
    ``x [..., M, V]``) with at most two leading dimensions.

    Returns ``(n1, s0, s1)`` so that row ``r`` starts at element offset
    ``(r // n1) * s0 + (r % n1) * s1`` of ``x``'s data pointer, or None when the leading
    dimensions cannot be coalesced into two (the caller then copies).
    """
    dims = [(n, s) for n, s in zip(x.shape[:-trailing], x.stride()[:-trailing]) if n != 1]
    merged: list[list[int]] = []
    for n, s in dims:
        if merged and merged[-1][1] == n * s:
            merged[-1] = [merged[-1][0] * n, s]
        else:
            merged.append([n, s])
    if not merged:
        return 1, 0, 0
    if len(merged) == 1:
        return merged[0][0], 0, merged[0][1]
    if len(merged) == 2:
        return merged[1][0], merged[0][1], merged[1][1]
    return None


def device_guard(t: torch.Tensor):
    """Make t's CUDA device current for a launch (Triton and the CUDA module launch on the current
    device); a no-op for CPU tensors."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()
