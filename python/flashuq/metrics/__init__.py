"""Evaluation metrics for uncertainty estimators (docs/methods.md#evaluation-metrics; docs/architecture.md#public-api "Evaluation").

Conventions: ``uncertainty`` higher = less trustworthy; ``quality`` higher = better; ``correct`` is
binary (1/True = correct). Inputs may be numpy arrays, lists or torch tensors; everything is
computed in float64 numpy, vectorised and O(N log N). Scalar metrics return Python floats, curves
return numpy arrays.

``nan_policy`` (where a metric takes one): ``"raise"`` (default, except ``prr(baseline="polygraph")``),
``"omit"`` (drop items with a NaN uncertainty or label) or ``"polygraph"`` (LM-Polygraph's
``_delete_nans``: a NaN/−inf uncertainty becomes −1e7, the most confident; +inf becomes +1e7;
items with a NaN quality are dropped).

===============================  =========================================================================
``prr``                          prediction-rejection ratio (exact or LM-Polygraph baseline), raw area
``rejection_curve``              the curve behind PRR (estimator, oracle, random)
``roc_auc``                      P(incorrect more uncertain than correct), ties half
``pr_auc``                       average precision (scikit-learn's), incorrect (default) or correct positive
``ece``                          expected calibration error of ``−uncertainty`` (LM-Polygraph binning)
``reliability_bins``             the per-bin confidence / accuracy / count behind ``ece``
``spearman``                     Spearman's rho of uncertainty with −quality
``kendall_tau``                  Kendall's tau-b of uncertainty with −quality
``tsu``                          temperature sensitivity of uncertainty, percent
``misleading_rate``              (MR_T→F, MR_F→T)
``risk_coverage_auc``            LM-Polygraph's rcc-auc (lower is better)
``reversed_pairs_proportion``    LM-Polygraph's rpp, in O(N log N) (lower is better)
``ap_ratio_prr``                 Inv-Entropy's "PRR": an average-precision ratio (quote it as AP)
``isotonic_brier``               Brier score after an in-sample isotonic fit (Inv-Entropy)
``bootstrap``                    percentile bootstrap interval of any of them
``abstention_threshold``         a threshold with a guaranteed error rate among kept answers (Learn then Test)
===============================  =========================================================================
"""

from .abstention import AbstentionThreshold, abstention_threshold
from .bootstrap import BootstrapResult, bootstrap
from .classification import ReliabilityBins, ap_ratio_prr, ece, isotonic_brier, pr_auc, reliability_bins, roc_auc
from .correlation import kendall_tau, reversed_pairs_proportion, spearman
from .protocols import MisleadingRate, misleading_rate, tsu
from .rejection import RejectionCurve, prr, rejection_curve, risk_coverage_auc

__all__ = ["prr", "rejection_curve", "RejectionCurve", "roc_auc", "pr_auc", "ece", "reliability_bins",
           "ReliabilityBins", "spearman", "kendall_tau",
           "tsu", "misleading_rate", "risk_coverage_auc", "reversed_pairs_proportion", "ap_ratio_prr", "isotonic_brier", "MisleadingRate", "bootstrap", "BootstrapResult",
           "abstention_threshold", "AbstentionThreshold"]
