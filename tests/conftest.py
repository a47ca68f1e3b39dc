"""Test configuration.

- The repository root never stays on sys.path. Its top-level ``kernels/`` folder (flashuq's Triton
  kernels, shipped as ``flashuq.kernels``) would shadow Hugging Face's ``kernels`` package, which
  transformers imports; ``python -m pytest`` from the root puts the root there, so it is removed
  before any test module imports anything (docs/environment.md).
- ``FLASHUQ_TEST_WHEEL=1`` (set by scripts/test.sh): the suite must test the installed wheel; a
  flashuq imported from the source tree or an editable install stops the run.
- ``FLASHUQ_CI=1`` (set by .ci/run): a test may skip only because it needs a GPU; any other skip
  (a missing browser, model package or dependency) fails the run, so that nothing passes CI by
  not running.
- Triton kernels are tested on every machine: on a CUDA device when there is one, otherwise through
  the Triton interpreter on CPU tensors. TRITON_INTERPRET must be set before triton is imported,
  so it is decided here, before anything imports flashuq or triton.
"""

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _is_root(entry: str) -> bool:
    try:
        return pathlib.Path(entry or os.getcwd()).resolve() == ROOT
    except OSError:
        return False


sys.path[:] = [p for p in sys.path if not _is_root(p)]

import pytest  # noqa: E402
import torch  # noqa: E402

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

# vLLM's CPU backend otherwise sizes its KV cache to most of the machine's memory (tests/vllm)
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """The offline SmolLM2-135M-Instruct checkpoint directory that flashuq.models writes (what vLLM
    loads), converted once per session."""
    from flashuq.models import smollm2_checkpoint

    return str(smollm2_checkpoint(tmp_path_factory.mktemp("smollm2")))


@pytest.fixture(scope="session")
def flashuq_server(smollm2_dir, tmp_path_factory):
    """One real ``flashuq serve smollm2`` per session, with an API key and a policy (tests/serve_cases.py):
    ``{"base": url, "key": api key, "log": path}``."""
    pytest.importorskip("vllm")
    import serve_cases

    proc, base, log = serve_cases.start(smollm2_dir, tmp_path_factory.mktemp("serve"))
    yield {"base": base, "key": serve_cases.KEY, "log": log}
    serve_cases.stop(proc)


def _installed_from_wheel() -> str:
    """Why the imported flashuq is not an installed wheel ('' when it is)."""
    import importlib.metadata as md
    import json

    import flashuq

    where = pathlib.Path(flashuq.__file__).resolve()
    if ROOT in where.parents:
        return f"flashuq was imported from the checkout ({where})"
    direct = md.distribution("flashuq").read_text("direct_url.json")
    if direct and json.loads(direct).get("dir_info", {}).get("editable"):
        return "flashuq is an editable install"
    return ""


def pytest_configure(config):
    if os.environ.get("FLASHUQ_TEST_WHEEL") == "1":
        why = _installed_from_wheel()
        if why:
            raise pytest.UsageError(f"FLASHUQ_TEST_WHEEL=1: {why}; install the wheel (bash scripts/test.sh)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("FLASHUQ_CI") == "1" and report.skipped and item.get_closest_marker("gpu") is None:
        if not hasattr(report, "wasxfail"):
            reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
            report.outcome = "failed"
            report.longrepr = f"FLASHUQ_CI=1: only tests that need a GPU may skip in CI; this one skipped: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    # a module-level importorskip skips a whole file at collection: in CI that fails too
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("FLASHUQ_CI") == "1" and report.skipped:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"FLASHUQ_CI=1: {collector.nodeid} was skipped at collection: {reason}"
