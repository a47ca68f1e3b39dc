"""Two builds of flashuq's CPU kernels side by side, in one process: before and after a change.

    python bench/ab.py 0397f1e                      # that commit against the working tree
    python bench/ab.py 0397f1e HEAD --ops eigv,eccentricity --Q 2000 --threads 2 --rounds 40
    python bench/ab.py --so A/_C.so --so B/_C.so    # two extension modules built elsewhere

Why: a shared virtual machine's speed drifts by up to 2x within minutes, more for arithmetic than
for memory traffic, so two benchmark runs minutes apart compare the machine as much as the kernel.
Here both builds' ``flashuq._C`` are loaded into one process (each wheel's extension is
self-contained, so two load side by side), checked against each other on the same inputs, then
called in turn, round after round (the order alternating), and the medians compared.

A revision is built once into ``~/.cache/flashuq/ab/<commit>`` (``git archive``, then ``pip
install --no-deps --no-build-isolation --target``, CUDA off; the working tree, ``WORKTREE``, is
rebuilt every time from its tracked files); the build needs the development environment's
compilers and build backend. Ops are raw binding calls on bench/graph.py's inputs (Q questions of K
samples, float64): eigv, eccentricity (with the per-sample norms), kernel_language_entropy,
eigenvalues (``sym_eig`` without vectors) and inv_entropy (one draw); ensemble_stats runs on
bench/token_stats.py's ensemble shape instead (4 members × 64 positions × 128,256 fp32 logits; its
builds may differ by rounding, so compare it with ``--rtol``), and token_stats on its target shape
(256 × 128,256 logits: fp32, bf16, and fp32 with the top 5; every field; builds that have
``_C._token_stats_ptrs``). Both builds need the same binding
signatures.

Exits 1 when a pair of results differs by more than ``--rtol``/``--atol`` (0 and 0 by default:
bitwise, as the lane kernels promise across builds), 0 otherwise. Writes
bench/results/ab-cpu-<UTC stamp>.json: both sides, the machine, every run, the medians and
B's speedup over A.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from graph import KLE_T, THRESHOLD, make_data  # noqa: E402
from token_stats import machine_info  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "flashuq", "ab")
OPS = ("eigv", "eccentricity", "kernel_language_entropy", "eigenvalues", "inv_entropy", "ensemble_stats",
       "token_stats", "token_stats_bf16", "token_stats_top5")
TOKEN_STATS_SHAPE = (256, 128256)  # bench/token_stats.py's target shape
ENSEMBLE_SHAPE = (4, 64, 128256)   # its ensemble shape
OP_EIG, OP_LAPLACIAN, OP_NLI_HEAT = 0, 1, 3  # flashuq.ops.graph's op codes


def _git(*args) -> str:
    return subprocess.run(["git", "-C", REPO, *args], check=True, capture_output=True, text=True).stdout


def _find_so(target: str) -> str:
    pkg = os.path.join(target, "flashuq")
    names = [f for f in os.listdir(pkg) if f.startswith("_C.") and f.endswith(".so")] if os.path.isdir(pkg) else []
    if not names:
        raise SystemExit(f"no flashuq/_C*.so under {target}")
    return os.path.join(pkg, names[0])


def build(rev: str) -> tuple[str, str]:
    """(path of the revision's _C, its description): a commit is built once and cached; the
    working tree is built into a fresh directory every time (removed when the process exits)."""
    work = tempfile.mkdtemp(prefix="flashuq-ab-src-")  # the sources, removed after the build
    src = os.path.join(work, "src")
    if rev == "WORKTREE":
        desc = "working tree at " + _git("rev-parse", "--short", "HEAD").strip()
        if _git("status", "--porcelain", "--untracked-files=no").strip():
            desc += " + uncommitted changes"
        for f in filter(None, _git("ls-files", "-z").split("\0")):
            if os.path.isfile(os.path.join(REPO, f)):
                os.makedirs(os.path.dirname(os.path.join(src, f)), exist_ok=True)
                shutil.copy2(os.path.join(REPO, f), os.path.join(src, f))
        out = tempfile.mkdtemp(prefix="flashuq-ab-worktree-")
        atexit.register(shutil.rmtree, out, True)
    else:
        sha = _git("rev-parse", "--verify", f"{rev}^{{commit}}").strip()
        desc = f"{rev} ({sha[:12]})"
        out = os.path.join(CACHE, sha)
        if os.path.isdir(out):
            shutil.rmtree(work)
            return _find_so(out), desc
        os.makedirs(src)
        archive = subprocess.run(["git", "-C", REPO, "archive", sha], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
    print(f"building {desc} ...", flush=True)
    env = dict(os.environ, FLASHUQ_CUDA="OFF")
    staging = out + ".tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                        "--target", staging, src], check=True, env=env)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(staging, out)  # a cached build is complete or absent
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _find_so(out), desc


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load(path: str, tag: str):
    """The extension module at ``path``, loaded under its own name (two builds side by side)."""
    name = "_C"  # the module's init function is PyInit__C: the loader needs that name
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    mod.ab_tag = tag
    return mod


def calls(C, d: dict, threads: int) -> dict:
    """{op: (a call of C on the inputs, its outputs)}: outputs allocated once, filled by each call."""
    E, Cm = torch.from_numpy(d["E"]), torch.from_numpy(d["C"])
    sx, sy = torch.from_numpy(d["sx"]), torch.from_numpy(d["sy"])
    Q, K = E.shape[:2]
    counts = torch.full((Q,), K, dtype=torch.int32)

    def f64(*shape):
        return torch.full(shape, float("nan"), dtype=torch.float64)

    out = {}
    o = [f64(Q)]
    out["eigv"] = (lambda o=o: C.graph(OP_LAPLACIAN, E, counts, THRESHOLD, KLE_T, o[0], None, None, threads), o)
    o = [f64(Q), f64(Q), f64(Q, K)]
    out["eccentricity"] = (lambda o=o: C.graph(OP_LAPLACIAN, E, counts, THRESHOLD, KLE_T, *o, threads), o)
    o = [f64(Q)]
    out["kernel_language_entropy"] = (
        lambda o=o: C.graph(OP_NLI_HEAT, E, counts, THRESHOLD, KLE_T, o[0], None, None, threads, C=Cm), o)
    o = [f64(Q, K)]
    out["eigenvalues"] = (lambda o=o: C.graph(OP_EIG, E, counts, THRESHOLD, KLE_T, o[0], None, None, threads), o)
    o = [f64(5, Q), f64(Q, K), f64(Q, K)]
    out["inv_entropy"] = (lambda o=o: C.inv_entropy(sx, sy, None, K, False, False, *o, threads), o)
    if "ens" in d:  # [M, P, V] contiguous: position p at p * V, member m at m * P * V
        x = d["ens"]
        M, P, V = x.shape
        lw = torch.full((M,), -float(np.log(M)), dtype=torch.float64)
        o = [torch.full((P,), float("nan")) for _ in range(5)]
        out["ensemble_stats"] = (lambda o=o: C.ensemble_stats(x, P, M, V, P, 0, V, P * V, lw, 0, 1.0, *o, threads), o)
    for op, x, k in d.get("ts", ()):
        from flashuq.ops.token_stats import _DTYPE_CODE, _alloc  # the output layout of the op
        o = list(_alloc(x, k, False))
        ptr = [t.data_ptr() if t.numel() else 0 for t in o]
        rows, V = x.shape
        tok = d["ts_tokens"]
        out[op] = (lambda o=o, x=x, k=k, ptr=ptr: C._token_stats_ptrs(
            _DTYPE_CODE[x.dtype], x.data_ptr(), rows, V, 1, V, 0, tok.data_ptr(), 1.0, k, *ptr[:11], threads,
            *ptr[11:]), o)
    return out


def token_stats_logits(seed: int = 0) -> torch.Tensor:
    """bench/token_stats.py's logits: N(0, 3²), [256, 128256] fp32."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*TOKEN_STATS_SHAPE, generator=g) * 3


def ensemble_logits(seed: int = 0) -> torch.Tensor:
    """Four members that disagree by about half a logit, [4, 64, 128256] fp32."""
    g = torch.Generator().manual_seed(seed)
    M, P, V = ENSEMBLE_SHAPE
    base = 3.0 * torch.randn(1, P, V, generator=g)
    return (base + 0.5 * torch.randn(M, P, V, generator=g)).contiguous()


def compare(outs_a, outs_b, rtol: float, atol: float) -> dict:
    """Bitwise equality and the largest difference of two builds' outputs (NaN where both are NaN)."""
    same, worst, ok = True, 0.0, True
    for a, b in zip(outs_a, outs_b):
        a, b = a.numpy(), b.numpy()
        bits = np.int64 if a.itemsize == 8 else np.int32
        same = same and np.array_equal(a.view(bits), b.view(bits))
        equal = (a == b) | (np.isnan(a) & np.isnan(b))  # infinities of one sign are equal too
        with np.errstate(invalid="ignore"):
            diff = np.where(equal, 0.0, np.abs(a - b))
        diff = np.where(np.isnan(diff), np.inf, diff)  # NaN on one side only
        worst = max(worst, float(diff.max(initial=0.0)))
        ok = ok and bool((equal | (diff <= atol + rtol * np.abs(np.where(np.isfinite(b), b, 0.0)))).all())
    return {"bitwise_equal": bool(same), "max_abs_diff": worst, "within_tolerance": ok}


def run(C_a, C_b, ops, Q: int, K: int, threads: int, rounds: int, rtol: float, atol: float, seed: int = 0):
    d = make_data(Q, K, seed)
    if "ensemble_stats" in ops:
        d["ens"] = ensemble_logits(seed)
    if any(op.startswith("token_stats") for op in ops):
        x = token_stats_logits(seed)
        d["ts_tokens"] = torch.randint(0, x.shape[1], (x.shape[0],), generator=torch.Generator().manual_seed(seed))
        d["ts"] = [(op, xx, k) for op, xx, k in (("token_stats", x, 0), ("token_stats_bf16", x.bfloat16(), 0),
                                                  ("token_stats_top5", x, 5)) if op in ops]
    ca, cb = calls(C_a, d, threads), calls(C_b, d, threads)
    results = []
    for op in ops:
        (fa, oa), (fb, ob) = ca[op], cb[op]
        fa()
        fb()
        check = compare(oa, ob, rtol, atol)
        runs = {"a": [], "b": []}
        for r in range(rounds):
            for side, f in ((("a", fa), ("b", fb)) if r % 2 == 0 else (("b", fb), ("a", fa))):
                t0 = time.perf_counter()
                f()
                runs[side].append((time.perf_counter() - t0) * 1e3)
        ma, mb = statistics.median(runs["a"]), statistics.median(runs["b"])
        results.append({"op": op, "a_ms": ma, "b_ms": mb, "speedup_b_over_a": ma / mb, **check,
                        "runs_ms": runs})
        print(f"{op}: A {ma:.3f} ms, B {mb:.3f} ms, B {ma / mb:.3f}x A "
              f"({'bitwise equal' if check['bitwise_equal'] else 'max |diff| %.3g' % check['max_abs_diff']})",
              flush=True)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("revs", nargs="*", help="A [B]: git revisions (B defaults to WORKTREE, the working tree)")
    ap.add_argument("--so", action="append", default=[], help="an extension module to use instead of a revision "
                    "(twice: A, then B)")
    ap.add_argument("--ops", default=",".join(OPS), help=f"comma-separated, of {', '.join(OPS)}")
    ap.add_argument("--Q", type=int, default=2000)
    ap.add_argument("--K", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=40, help="timed calls of each build per op")
    ap.add_argument("--rtol", type=float, default=0.0)
    ap.add_argument("--atol", type=float, default=0.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    ops = [o for o in args.ops.split(",") if o]
    bad = [o for o in ops if o not in OPS]
    if bad or not ops:
        ap.error(f"--ops: unknown {bad}; choose from {', '.join(OPS)}")
    for name, v, lo in (("--Q", args.Q, 1), ("--K", args.K, 8), ("--threads", args.threads, 1),
                        ("--rounds", args.rounds, 1)):
        if v < lo:
            ap.error(f"{name} must be >= {lo}, got {v}")
    if args.so:
        if len(args.so) != 2 or args.revs:
            ap.error("--so takes exactly two modules (A, then B) and no revisions")
        sides = [(p, f"module {p}") for p in args.so]
    else:
        if not 1 <= len(args.revs) <= 2:
            ap.error("give one or two revisions (A, then B; B defaults to WORKTREE)")
        sides = [build(r) for r in (args.revs + ["WORKTREE"])[:2]]
    torch.set_num_threads(args.threads)
    mods = [load(p, tag) for (p, tag) in sides]
    print(f"A: {sides[0][1]}\nB: {sides[1][1]}\nQ = {args.Q}, K = {args.K}, {args.threads} threads, "
          f"{args.rounds} rounds (medians)", flush=True)
    results = run(mods[0], mods[1], ops, args.Q, args.K, args.threads, args.rounds, args.rtol, args.atol)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    out = args.out or os.path.join(REPO, "bench", "results", f"ab-cpu-{stamp}.json")
    machine = machine_info(torch.device("cpu"))
    machine["isa_a"], machine["isa_b"] = mods[0].isa(), mods[1].isa()
    doc = {"benchmark": "ab", "a": {"source": sides[0][1], "module": sides[0][0]},
           "b": {"source": sides[1][1], "module": sides[1][0]}, "shape": {"Q": args.Q, "K": args.K},
           "token_stats_shape": list(TOKEN_STATS_SHAPE), "ensemble_shape": list(ENSEMBLE_SHAPE),
           "rounds": args.rounds, "tolerance": {"rtol": args.rtol, "atol": args.atol}, "machine": machine,
           "sha256_a": _sha256(sides[0][0]), "sha256_b": _sha256(sides[1][0]), "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {out}")
    differ = [r["op"] for r in results if not r["within_tolerance"]]
    for op in differ:
        print(f"results differ: {op} (max |diff| {next(r for r in results if r['op'] == op)['max_abs_diff']:.3g},"
              f" rtol={args.rtol}, atol={args.atol})", file=sys.stderr)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
