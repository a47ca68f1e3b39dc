"""Triton GPU kernels of flashuq (shipped inside the wheel as ``flashuq.kernels``).

Importing this package needs triton; ``import flashuq`` does not import it.
"""
