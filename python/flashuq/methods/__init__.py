"""Named uncertainty estimators (docs/methods.md#methods). Every one returns an uncertainty: higher = less
trustworthy. ``REGISTRY`` maps each name to its function, the inputs it needs and its paper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from ..ops.token_stats import token_stats
from .attention import (RAUQ_ALPHA, UqacTerms, attention_score, rauq, rauq_layers, uqac, uqac_terms,
                        uqac_top5_logprobs)
from .maqa import (TopKAtPositions, maqa_entropy, maqa_greedy_entropy, maqa_margin, maqa_max_prob,
                   topk_stats_at_positions)
from .graph import degree, eccentricity, eigv, kernel_language_entropy, num_sem_sets
from .hidden import eigenscore, feature_gaps, linear_probe, mean_hidden_over_span, pa_ccs_metrics, project_scores
from .ccp import ccp, ccp_nli_labels, ccp_token_logprobs, combine_nli
from .boostedprob import boostedprob, boostedprob_token_scores
from .claim import (attention_score_claim, boostedprob_claim, ccp_claim, focus_claim, frequency_scoring_claim,
                    max_token_entropy_claim, maximum_claim_probability, perplexity_claim, pmi_claim,
                    self_certainty_claim, token_sar_claim)
from .attention_weighted import csl, focus
from .consistency import cocoa_msp, cocoa_mte, cocoa_ppl, semantic_density
from .blackbox import (maqa_response_consistency, uqlm_consistency_and_confidence, uqlm_cosine_sim, uqlm_entailment,
                       uqlm_exact_match, uqlm_noncontradiction, uqlm_semantic_density, weighted_ensemble)
from .gaap import GaapResult, gaap_perturbations
from .inv_entropy import (InvEntropyMeasures, inv_entropy, inv_entropy_measures, inv_entropy_similarity,
                          nli_similarity)
from .samples import (greedy_bidirectional_clusters, label_prob, lexical_similarity, luq,
                      monte_carlo_normalized_sequence_entropy, monte_carlo_sequence_entropy, nli_argmax_is_entail,
                      sar, semantic_entropy, semantic_sets_confidence, sentence_sar, similarity, symmetrize,
                      uqlm_semantic_negentropy, vr, vro)
from .scores import SCORES, sequence_scores
from .token import (arithmetic_mean_prob, chow_avg, chow_quantile, chow_sum, cpmi, geometric_mean_prob, gnll,
                    fisher_rao, max_token_entropy, mean_kurtosis, mean_token_entropy, msp, perplexity, pmi,
                    renyi_neg, self_certainty,
                    sentence_level_avg_entropy, sentence_level_avg_nll, sentence_level_max_entropy,
                    sentence_level_max_nll, token_sar)


@dataclass(frozen=True)
class Method:
    """A registered uncertainty method: the function, the inputs it takes besides ``mask`` (``"stats"``:
    a :class:`~flashuq.TokenStats`; others are named after the argument), and its source."""

    fn: Callable
    inputs: Tuple[str, ...]  #: what the function takes besides ``mask``
    paper: str               #: the paper or reference implementation it follows


_STATS = ("stats",)
REGISTRY: Dict[str, Method] = {
    "msp": Method(msp, _STATS, "LM-Polygraph MaximumSequenceProbability (Fadeeva et al. 2023)"),
    "gnll": Method(gnll, _STATS, "Aichberger, Schweighofer, Hochreiter, arXiv 2412.15176"),
    "perplexity": Method(perplexity, _STATS, "LM-Polygraph Perplexity (Fomicheva et al. 2020)"),
    "mean_token_entropy": Method(mean_token_entropy, _STATS, "LM-Polygraph MeanTokenEntropy (Fomicheva et al. 2020)"),
    "max_token_entropy": Method(max_token_entropy, _STATS, "docs/methods.md#sequence-scores"),
    "geometric_mean_prob": Method(geometric_mean_prob, _STATS, "Park et al., arXiv 2501.17187"),
    "arithmetic_mean_prob": Method(arithmetic_mean_prob, _STATS, "Park et al., arXiv 2501.17187"),
    "mean_kurtosis": Method(mean_kurtosis, _STATS, "Park et al., arXiv 2501.17187"),
    "chow_sum": Method(chow_sum, _STATS, "Gupta et al., ICLR 2024, arXiv 2404.10136"),
    "chow_avg": Method(chow_avg, _STATS, "Gupta et al., ICLR 2024, arXiv 2404.10136"),
    "chow_quantile": Method(chow_quantile, _STATS, "Gupta et al., ICLR 2024, arXiv 2404.10136"),
    "self_certainty": Method(self_certainty, _STATS, "Kang et al. 2025; LM-Polygraph SelfCertainty"),
    "renyi_neg": Method(renyi_neg, _STATS, "Darrin et al., RAINPROOF, arXiv 2212.09171; LM-Polygraph RenyiNeg"),
    "fisher_rao": Method(fisher_rao, _STATS, "Darrin et al., RAINPROOF, arXiv 2212.09171; LM-Polygraph FisherRao"),
    "token_sar": Method(token_sar, ("stats", "relevance"), "Duan et al., SAR (ACL 2024); LM-Polygraph TokenSAR"),
    "pmi": Method(pmi, ("stats", "lm_logprobs"), "LM-Polygraph PointwiseMutualInformation (Takayama & Arase 2019)"),
    "cpmi": Method(cpmi, ("stats", "lm_logprobs"), "van der Poel et al. 2022; LM-Polygraph CPMI"),
    **{name: Method(fn, ("stats", "seg_ids"), "Huang et al., Look Before You Leap, arXiv 2307.10236")
       for name, fn in (("sentence_level_max_nll", sentence_level_max_nll),
                        ("sentence_level_avg_nll", sentence_level_avg_nll),
                        ("sentence_level_max_entropy", sentence_level_max_entropy),
                        ("sentence_level_avg_entropy", sentence_level_avg_entropy))},
    **{name: Method(fn, ("logits", "pos"), "Yang, Yoo, Lee (MAQA), NAACL Findings 2025, arXiv 2408.06816")
       for name, fn in (("maqa_max_prob", maqa_max_prob), ("maqa_margin", maqa_margin),
                        ("maqa_entropy", maqa_entropy), ("maqa_greedy_entropy", maqa_greedy_entropy))},
    "ccp": Method(ccp, ("alt_logprobs", "nli_forward", "nli_backward"),
                  "Fadeeva et al., ACL Findings 2024; LM-Polygraph ClaimConditionedProbability"),
    "boostedprob": Method(boostedprob, ("logits", "tokens"),
                          "Dang, Le, Niehues, EMNLP 2025, arXiv 2502.11115; LM-Polygraph BoostedProbSequence"),
    # ---- claim-level (docs/methods.md#claim-level): one uncertainty per claim [C]
    "maximum_claim_probability": Method(maximum_claim_probability, ("stats", "claims"),
                                        "LM-Polygraph MaximumClaimProbability"),
    "perplexity_claim": Method(perplexity_claim, ("stats", "claims"), "LM-Polygraph PerplexityClaim"),
    "max_token_entropy_claim": Method(max_token_entropy_claim, ("stats", "claims"),
                                      "LM-Polygraph MaxTokenEntropyClaim"),
    "self_certainty_claim": Method(self_certainty_claim, ("stats", "claims"),
                                   "Kang et al. 2025; LM-Polygraph SelfCertaintyClaim"),
    "pmi_claim": Method(pmi_claim, ("stats", "lm_logprobs", "claims"),
                        "LM-Polygraph PointwiseMutualInformationClaim"),
    "token_sar_claim": Method(token_sar_claim, ("stats", "relevance", "claims"),
                              "Duan et al., SAR (ACL 2024); LM-Polygraph TokenSARClaim"),
    "ccp_claim": Method(ccp_claim, ("alt_logprobs", "nli_forward", "nli_backward", "claims"),
                        "Fadeeva et al., ACL Findings 2024; LM-Polygraph ClaimConditionedProbabilityClaim"),
    "boostedprob_claim": Method(boostedprob_claim, ("logits", "tokens", "claims"),
                                "Dang, Le, Niehues, EMNLP 2025; LM-Polygraph BoostedProbClaim"),
    "focus_claim": Method(focus_claim, ("logits", "tokens", "attn", "keyword_mask", "idf", "claims"),
                          "Zhang et al., EMNLP 2023, arXiv 2311.13230; LM-Polygraph FocusClaim"),
    "attention_score_claim": Method(attention_score_claim, ("attn", "response_start", "claims"),
                                    "Sriramanan et al., LLM-Check, NeurIPS 2024; LM-Polygraph AttentionScoreClaim"),
    "frequency_scoring_claim": Method(frequency_scoring_claim, ("nli_to_samples",),
                                      "Mohri & Hashimoto, ICML 2024, arXiv 2402.10978; "
                                      "LM-Polygraph FrequencyScoringClaim"),
    # ---- sample- and similarity-graph methods (docs/methods.md#sample-methods), batched over Q questions
    "monte_carlo_sequence_entropy": Method(monte_carlo_sequence_entropy, ("sample_logprobs",),
                                           "LM-Polygraph MonteCarloSequenceEntropy (Kuhn et al. 2023)"),
    "monte_carlo_normalized_sequence_entropy": Method(
        monte_carlo_normalized_sequence_entropy, ("sample_logprobs", "sample_lengths"),
        "LM-Polygraph MonteCarloNormalizedSequenceEntropy (Malinin & Gales 2021)"),
    "semantic_entropy": Method(semantic_entropy, ("sample_logprobs", "class_ids"),
                               "Kuhn, Gal, Farquhar, ICLR 2023, arXiv 2302.09664; LM-Polygraph SemanticEntropy"),
    "sentence_sar": Method(sentence_sar, ("sample_logprobs", "similarity"),
                           "Duan et al., SAR (ACL 2024, arXiv 2307.01379); LM-Polygraph SentenceSAR"),
    "sar": Method(sar, ("token_sar_values", "similarity"), "Duan et al., SAR (ACL 2024, arXiv 2307.01379)"),
    "degree": Method(degree, ("W",), "Lin, Trivedi, Sun, arXiv 2305.19187; LM-Polygraph DegMat"),
    "eigv": Method(eigv, ("W",), "Lin, Trivedi, Sun, arXiv 2305.19187; LM-Polygraph EigValLaplacian"),
    "eccentricity": Method(eccentricity, ("W",), "Lin, Trivedi, Sun, arXiv 2305.19187; LM-Polygraph Eccentricity"),
    "num_sem_sets": Method(num_sem_sets, ("entail", "contra"),
                           "Lin, Trivedi, Sun, arXiv 2305.19187; LM-Polygraph NumSemSets"),
    "kernel_language_entropy": Method(kernel_language_entropy, ("entail", "contra"),
                                      "Nikitin et al., NeurIPS 2024, arXiv 2405.20003; LM-Polygraph KLE"),
    "luq": Method(luq, ("entail_logits", "contra_logits"), "Zhang et al., LUQ, arXiv 2403.20279; LM-Polygraph LUQ"),
    "lexical_similarity": Method(lexical_similarity, ("pair_scores",),
                                 "Fomicheva et al. 2020; LM-Polygraph LexicalSimilarity"),
    "label_prob": Method(label_prob, ("class_ids",), "LM-Polygraph LabelProb"),
    "semantic_sets_confidence": Method(semantic_sets_confidence, ("class_ids",),
                                       "uqlm semantic_sets_confidence (negated)"),
    "vr": Method(vr, ("similarity",), "Huang et al., Look Before You Leap, arXiv 2307.10236"),
    "vro": Method(vro, ("similarity",), "Huang et al., Look Before You Leap, arXiv 2307.10236"),
    "inv_entropy": Method(inv_entropy, ("sx", "sy"),
                          "Song, Ji, Shi, Lai, Al Kontar, Inv-Entropy, NeurIPS 2025, arXiv 2506.09684"),
    # ---- confidence x consistency (docs/methods.md#consistency-methods)
    **{name: Method(fn, ("stats", "greedy_similarity"), f"Vashurin et al. 2025 (CoCoA); LM-Polygraph {cls}")
       for name, fn, cls in (("cocoa_msp", cocoa_msp, "CocoaMSP"), ("cocoa_ppl", cocoa_ppl, "CocoaPPL"),
                             ("cocoa_mte", cocoa_mte, "CocoaMTE"))},
    "semantic_density": Method(semantic_density, ("stats", "sample_logprobs", "sample_lengths", "contra", "neutral"),
                               "Qiu & Miikkulainen, NeurIPS 2024; LM-Polygraph SemanticDensity"),
    # ---- black-box consistency (docs/methods.md#blackbox-consistency)
    "uqlm_noncontradiction": Method(uqlm_noncontradiction, ("contra_forward", "contra_backward"),
                                    "uqlm noncontradiction (negated)"),
    "uqlm_entailment": Method(uqlm_entailment, ("entail_forward", "entail_backward"), "uqlm entailment (negated)"),
    "uqlm_exact_match": Method(uqlm_exact_match, ("original_ids", "sample_ids"), "uqlm exact_match (negated)"),
    "uqlm_cosine_sim": Method(uqlm_cosine_sim, ("original_embedding", "sample_embeddings"),
                              "uqlm cosine_sim (negated)"),
    "uqlm_consistency_and_confidence": Method(uqlm_consistency_and_confidence,
                                              ("original_embedding", "sample_embeddings", "original_prob"),
                                              "uqlm consistency_and_confidence (negated)"),
    "uqlm_semantic_density": Method(uqlm_semantic_density, ("contra", "neutral", "sample_probs"),
                                    "uqlm semantic_density (negated)"),
    "maqa_response_consistency": Method(maqa_response_consistency, ("overlap", "n_answers"),
                                        "Yang, Yoo, Lee (MAQA), NAACL Findings 2025, arXiv 2408.06816"),
    "csl": Method(csl, ("attn_rows", "logprobs"), "Lin, Trivedi, Sun, EMNLP 2024 (CSL); LM-Polygraph CSL"),
    "focus": Method(focus, ("logits", "tokens", "attn", "keyword_mask", "idf"),
                    "Zhang et al., EMNLP 2023, arXiv 2311.13230; LM-Polygraph Focus"),
    # ---- hidden-state methods (docs/methods.md#hidden-state-methods)
    "feature_gaps": Method(feature_gaps, ("hidden", "mu", "direction", "layer", "weight", "bias"),
                           "Bakman et al., Uncertainty as Feature Gaps, ICLR 2026, arXiv 2510.02671"),
    "eigenscore": Method(eigenscore, ("embeddings",),
                         "Chen et al., INSIDE, ICLR 2024, arXiv 2402.03744; LM-Polygraph EigenScore"),
    # ---- attention methods (docs/methods.md#attention-methods)
    "attention_score": Method(attention_score, ("attn", "response_start"),
                              "Sriramanan et al., LLM-Check, NeurIPS 2024; LM-Polygraph AttentionScore"),
    "rauq": Method(rauq, ("attn", "logprobs", "response_start"),
                   "Vazhentsev et al., RAUQ, arXiv 2505.20045; LM-Polygraph RAUQ"),
    "uqac": Method(uqac, ("attn", "ans_src", "is_stop", "h_last", "token_logprobs"),
                   "Li, Qiang, Moukheiber, Zhang, UQAC, arXiv 2503.19168"),
}

#: methods that need nothing but the token statistics (what from_logits computes)
STATS_ONLY = tuple(n for n, m in REGISTRY.items() if m.inputs == _STATS)
#: the ones among them that need ``token_stats(..., renyi=True)``
_TEMPERED = ("renyi_neg", "fisher_rao")


def from_logits(logits, tokens=None, mask=None, *, methods: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
    """Every (or the named) token-statistics method for ``logits [B, T, V]``, from one pass over the logits.

    ``tokens [B, T]`` are the generated tokens (None: the argmax, i.e. greedy decoding).
    """
    names = STATS_ONLY if methods is None else tuple(methods)
    for n in names:
        if n not in STATS_ONLY:
            raise ValueError(f"methods: {n!r} is not a token-statistics method; choose from {STATS_ONLY}")
    stats = token_stats(logits, tokens, renyi=any(n in _TEMPERED for n in names))
    if len(names) > 2:  # the stacked reductions of sequence_scores, bitwise the same numbers
        scores = sequence_scores(stats, mask)
        return {n: scores[n] for n in names}
    return {n: REGISTRY[n].fn(stats, mask) for n in names}


__all__ = ["REGISTRY", "SCORES", "STATS_ONLY", "Method", "TopKAtPositions", "from_logits", "sequence_scores",
           "topk_stats_at_positions", "InvEntropyMeasures", "inv_entropy_measures", "inv_entropy_similarity",
           "nli_similarity", "greedy_bidirectional_clusters", "nli_argmax_is_entail", "similarity", "symmetrize",
           "uqlm_semantic_negentropy", "weighted_ensemble", "RAUQ_ALPHA", "rauq_layers", "uqac_top5_logprobs",
           "uqac_terms", "UqacTerms", "ccp_token_logprobs", "ccp_nli_labels", "combine_nli", "mean_hidden_over_span",
           "project_scores", "linear_probe", "pa_ccs_metrics", "boostedprob_token_scores", "GaapResult",
           "gaap_perturbations",
           *REGISTRY]
