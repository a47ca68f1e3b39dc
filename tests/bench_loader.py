"""Load a bench/ script of the source checkout as a module, for tests/bench (skipped where the
checkout has no bench/, e.g. a wheel's tests)."""

import importlib.util
import pathlib
import sys

import pytest

BENCH_DIR = pathlib.Path(__file__).resolve().parents[1] / "bench"


def load_bench(name: str):
    path = BENCH_DIR / f"{name}.py"
    if not path.exists():
        pytest.skip("bench/ is not in this checkout")
    spec = importlib.util.spec_from_file_location(f"flashuq_bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # as an import does: dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod
