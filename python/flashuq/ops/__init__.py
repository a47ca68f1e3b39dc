"""The op layer: one module per op (validation, dispatch CPU/CUDA, torch.library registration).

The public functions are re-exported at the top level (``flashuq.token_stats``); the modules here
keep their own names so ``flashuq.ops.token_stats`` is the module, not the function.
"""
