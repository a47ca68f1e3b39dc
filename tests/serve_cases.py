"""The ``flashuq serve`` that tests/vllm/test_serve.py and tests/bench/test_serve_bench.py query: one
real server per session (the ``flashuq_server`` fixture of conftest.py), started with an API key
and a policy on a free loopback port."""

import os
import socket
import subprocess
import sys
import time

from flashuq.policy import Policy

KEY = "test-key-123"
MAX_MODEL_LEN = 256
#: the policy's msp threshold: the chat answer to the France question (msp about 2.8) is kept, the
#: 12-token completion of "The capital of France is" (about 14) is not
THRESHOLD = 6.0


def policy(model="smollm2", method="msp") -> Policy:
    return Policy(method=method, threshold=THRESHOLD, risk=0.2, delta=0.1, bound="binomial", model=model,
                  generation={"engine": "hf", "max_new_tokens": 24, "samples": 0, "temperature": 1.0, "seed": 0,
                              "chat": True},
                  calibration={"data": "test", "n": 100, "kept": 50, "errors": 5, "coverage": 0.5, "risk_hat": 0.1,
                               "p_value": 0.01, "accuracy": 0.5})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flashuq_bin() -> str:
    """The installed console script (never ``python -m`` from the repository root)."""
    return os.path.join(os.path.dirname(sys.executable), "flashuq")


def start(smollm2_dir, tmp):
    """Start ``flashuq serve smollm2`` and wait until it answers; returns ``(process, base url, log path)``."""
    import httpx

    cache = tmp / "cache"
    cache.mkdir()
    (cache / "smollm2-135m-instruct").symlink_to(smollm2_dir)  # the session's converted checkpoint
    path = policy().save(tmp / "policy.json")
    port = free_port()
    log_path = tmp / "server.log"
    env = {**os.environ, "FLASHUQ_CACHE": str(cache)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([flashuq_bin(), "serve", "smollm2", "--port", str(port), "--api-key", KEY,
                                 "--policy", str(path), "--enforce-eager", "--max-model-len", str(MAX_MODEL_LEN),
                                 "--max-num-seqs", "16", "--seed", "0"],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while True:
        if proc.poll() is not None:
            raise RuntimeError("flashuq serve exited:\n" + log_path.read_text()[-4000:])
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return proc, base, log_path
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError("flashuq serve did not start in 10 minutes:\n" + log_path.read_text()[-4000:])
        time.sleep(1)


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
