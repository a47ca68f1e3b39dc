"""A dispatch mode that records every op it sees, for the tests that a call goes (or not) through a
registered op (ops/_common.py, plain_cpu_call)."""

from torch.utils._python_dispatch import TorchDispatchMode


class SeenOps(TorchDispatchMode):
    """Inside ``with SeenOps() as seen``, ``seen.ops`` lists the name of every op dispatched."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))
