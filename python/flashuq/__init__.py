"""flashuq: fused, exact uncertainty quantification for language models.

``import flashuq as fuq``; ``fuq.token_stats(logits, tokens)`` gives every per-token statistic
from one read of the logits. The top-level namespace holds the ops (torch ops, CPU and CUDA):

- per token: ``token_stats``, ``token_stats_linear``, ``ensemble_stats``;
- over sequences: ``masked_reduce``, ``masked_quantile``, ``segment_reduce``, ``sequence_scores``, and
  ``max_then_mean``, ``max_window_mean``, ``thresholded_mean`` (AlignScore's and ValUES' aggregations);
- over claims: ``Claims``, ``claims_from_lists``, ``claim_reduce``;
- over sampled answers: ``similarity``, ``sym_eig``, ``laplacian_spectrum``, ``heat_kernel_entropy``;
- attention (UQAC): ``uqac_reduce_attention``, ``uqac_chain_batched``, ``uqac_backtrack``,
  ``uqac_similarity_filter``, ``uqac_marginal``.

The uncertainty methods live in :mod:`flashuq.methods` (``fuq.methods.msp(stats, mask)``, ...), the
evaluation metrics in :mod:`flashuq.metrics`, the transformers adapter in :mod:`flashuq.hf`, the vLLM
one in :mod:`flashuq.vllm`, datasets in :mod:`flashuq.data`. See README.md and each docstring.
"""

from . import _ext, methods, metrics, models, reference, report
from .ops.ensemble_stats import EnsembleStats, ensemble_stats
from .ops.graph import LaplacianSpectrum, SymEig, heat_kernel_entropy, laplacian_spectrum, sym_eig
from .ops.masked_quantile import masked_quantile
from .ops.masked_reduce import masked_reduce
from .ops.segment_reduce import segment_reduce
from .ops.claim_reduce import Claims, claim_reduce, claims_from_lists
from .ops.aggregations import max_then_mean, max_window_mean, thresholded_mean
from .ops.token_stats import TokenStats, token_stats
from .ops.token_stats_linear import token_stats_linear
from .ops.uqac import (UqacChains, uqac_backtrack, uqac_chain_batched, uqac_marginal, uqac_reduce_attention,
                       uqac_similarity_filter)
from .methods.samples import similarity
from .methods.scores import sequence_scores

__version__ = "0.1.0"

__all__ = ["TokenStats", "token_stats", "token_stats_linear", "EnsembleStats", "ensemble_stats", "masked_reduce",
           "masked_quantile", "segment_reduce", "Claims", "claim_reduce", "claims_from_lists", "max_then_mean",
           "max_window_mean", "thresholded_mean", "sequence_scores", "similarity", "sym_eig", "SymEig",
           "laplacian_spectrum", "LaplacianSpectrum", "heat_kernel_entropy", "uqac_reduce_attention", "uqac_backtrack",
           "uqac_chain_batched", "UqacChains", "uqac_similarity_filter", "uqac_marginal", "methods", "metrics", "models", "reference", "report", "hf", "vllm",
           "__version__"]


def __getattr__(name):
    # flashuq.hf imports transformers, flashuq.vllm vLLM: loaded on first use, so `import flashuq` stays light
    if name in ("hf", "vllm"):
        import importlib

        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module 'flashuq' has no attribute {name!r}")
