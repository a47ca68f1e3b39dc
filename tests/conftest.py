"""Test configuration.

Triton kernels are tested on every machine: on a CUDA device when there is one, otherwise through
the Triton interpreter on CPU tensors. TRITON_INTERPRET must be set before triton is imported
(KERNELS.md §7.3), so it is decided here, before anything imports flashuq or triton.
"""

import os

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
