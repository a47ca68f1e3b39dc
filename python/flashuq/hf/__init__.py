"""transformers integration: record token statistics inside ``generate``, score (prompt, response)
pairs teacher-forced without materialising logits.

``transformers`` is imported lazily (it is not a dependency of flashuq). docs/architecture.md#transformers has the
patterns; docs/methods.md#orientation the orientation of every score (uncertainties: higher = less trustworthy).

- :class:`UncertaintyRecorder` — a ``LogitsProcessor`` that runs ``fuq.token_stats`` on each step's
  scores on their device (no host synchronisation, nothing of size V kept beyond the current
  step) and returns the scores unchanged; or, with :meth:`UncertaintyRecorder.attach`, forward
  hooks that read the raw ``lm_head`` logits before any processor.
- :func:`generate` — the greedy answer (and optional samples) with per-token statistics, the
  response mask, every sequence score that applies, and the samples' log-probabilities.
- :func:`score` — teacher-forced statistics of given responses from the final hidden states and the
  head weight through ``fuq.token_stats_linear``.
- :class:`AttentionCapture` — memory-lean attention capture (docs/architecture.md#attention-capture): a custom attention
  implementation (``"fuq_capture_sdpa"``) that computes the real output with SDPA and records only what
  the attention methods need (diagonals ``a_ii`` for RAUQ / AttentionScore, the UQAC response rows,
  or UQAC's streaming lowest-entropy reduction), so ``output_attentions``' ``[L, H, N, N]`` maps are
  never built. :func:`attention_diagonals`, :func:`last_row_attention` (CSL) and :func:`uqac_inputs` are
  one-call helpers;
  :func:`uqac_variants` runs UQAC's substituted variants and :func:`uqac_score` the whole UQAC;
  ``generate(..., capture_attention=True)`` records the diagonals during generation.
- :func:`hidden_states` — the hidden states of the layers asked for (hooks on those layers only),
  reduced to each row's last real token or a mean over a span: EigenScore's and Feature Gaps' inputs.

One module per concern: ``recorder.py`` (the recorder, the response mask), ``generation.py``
(``generate``, ``score``), ``hidden.py`` (hidden states), ``attention.py`` (the capture), ``uqac.py``
(UQAC's constants and stop tokens), ``uqac_inputs.py`` (UQAC's per-sequence inputs), ``uqac_variants.py``
(UQAC's substituted variants and the end-to-end ``uqac_score``) and ``_model.py``
(what they read from a model). Everything is importable from ``flashuq.hf``.
"""

from .attention import ATTN_IMPLEMENTATION, AttentionCapture, attention_diagonals, last_row_attention
from .generation import Generation, Scored, generate, score
from .hidden import hidden_states
from .recorder import UncertaintyRecorder, response_mask
from ._model import position_ids_from_mask
from .uqac import UQAC_CALIBRATION, UQAC_INSTR_TOKEN, UQAC_STOP_WORDS, uqac_is_stop  # noqa: F401
from .uqac_inputs import UQACInputs, uqac_inputs
from .uqac_variants import UqacVariants, uqac_candidates, uqac_score, uqac_variants

__all__ = ["UncertaintyRecorder", "Generation", "Scored", "generate", "score", "hidden_states", "response_mask",
           "position_ids_from_mask", "AttentionCapture", "attention_diagonals", "uqac_inputs", "UQACInputs",
           "uqac_is_stop", "UQAC_STOP_WORDS", "UQAC_CALIBRATION", "ATTN_IMPLEMENTATION", "uqac_variants",
           "UqacVariants", "uqac_candidates", "uqac_score", "last_row_attention"]
