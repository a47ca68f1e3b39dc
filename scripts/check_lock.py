"""Compare the distributions installed in this interpreter's environment with a lock file
(default requirements/dev.lock).

Exits 1 and lists the differences when a package is missing, at another version, or installed
without being in the lock (flashuq itself, the project under test, is the one exception). Run by
scripts/setup.sh after every install, so nothing but the lock decides what runs:
    python scripts/check_lock.py [requirements/min.lock]
    python scripts/check_lock.py --not-locked [LOCK]   # only list what the lock does not name (for pip uninstall)
"""

from __future__ import annotations

import importlib.metadata as md
import pathlib
import re
import sys

LOCK = pathlib.Path(__file__).resolve().parent.parent / "requirements" / "dev.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
NOT_LOCKED = {"flashuq"}  # the project itself, built from this checkout


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: pathlib.Path = LOCK) -> dict:
    pins = {}
    for line in path.read_text().splitlines():
        m = PIN.match(line)
        if m:
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def installed() -> dict:
    found = {}
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if name:  # a half-removed package leaves a nameless dist-info
            found.setdefault(canonical(name), []).append(dist.version)
    return found


def differences(pins: dict, have: dict) -> list:
    out = []
    for name, version in sorted(pins.items()):
        if name not in have:
            out.append(f"missing: {name}=={version}")
        elif have[name] != [version]:
            out.append(f"version: {name} is {', '.join(have[name])}, the lock says {version}")
    for name in not_locked(pins, have):
        out.append(f"not in the lock: {name}=={', '.join(have[name])}")
    return out


def not_locked(pins: dict, have: dict) -> list:
    return sorted(set(have) - set(pins) - NOT_LOCKED)


def main(argv=None) -> int:
    argv = list(argv if argv is not None else sys.argv[1:])
    list_only = "--not-locked" in argv
    argv = [a for a in argv if a != "--not-locked"]
    lock = pathlib.Path(argv[0]) if argv else LOCK
    pins = read_lock(lock)
    if list_only:
        print("\n".join(not_locked(pins, installed())))
        return 0
    diff = differences(pins, installed())
    if diff:
        print(f"check_lock: the environment of {sys.prefix} differs from {lock.name}:", file=sys.stderr)
        for d in diff:
            print("  " + d, file=sys.stderr)
        print("  (recreate the venv, or refresh the lock on purpose: bash scripts/lock.sh)", file=sys.stderr)
        return 1
    print(f"check_lock: {len(pins)} packages installed exactly as {lock.name} says")
    return 0


if __name__ == "__main__":
    sys.exit(main())
