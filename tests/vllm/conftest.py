"""The vLLM tests' fixture: the offline SmolLM2-135M-Instruct checkpoint directory that
flashuq.models writes (vLLM loads it), converted once per session. Helpers: tests/vllm_cases.py."""

import os

import pytest

# vLLM's CPU backend takes most of the machine's memory for its KV cache unless told otherwise
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    from flashuq.models import load_smollm2

    d = tmp_path_factory.mktemp("smollm2")
    load_smollm2(cache=d)
    return str(d)
