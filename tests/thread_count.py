"""Running a block at a given torch thread count (the CPU kernels take theirs from torch), for the
tests that check results do not depend on it."""

import contextlib

import torch


@contextlib.contextmanager
def torch_threads(n):
    """Run the block with ``torch.set_num_threads(n)``, then restore the previous count."""
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(n)
        yield
    finally:
        torch.set_num_threads(old)
