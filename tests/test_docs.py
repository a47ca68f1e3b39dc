"""The documentation the code cites exists: every ``docs/<page>.md#<anchor>`` in the source, tests,
benchmarks, scripts and docs names a page of docs/ and an anchor on it (``<a id="...">``), and no
file cites the design notes the repository does not ship."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CITATION = re.compile(r"docs/([\w-]+\.md)#([\w.-]+)")
SOURCES = ("python", "csrc", "kernels", "tests", "bench", "scripts", "docs")
SUFFIXES = {".py", ".h", ".cpp", ".cu", ".cuh", ".md", ".sh", ".toml"}


def _files():
    yield ROOT / "README.md"
    for d in SOURCES:
        for p in sorted((ROOT / d).rglob("*")):
            if p.suffix in SUFFIXES and p.is_file() and "__pycache__" not in p.parts:
                yield p


def _anchors(page: pathlib.Path) -> set:
    return set(re.findall(r'<a id="([\w.-]+)"></a>', page.read_text(encoding="utf-8")))


def test_every_cited_anchor_exists():
    if not (ROOT / "docs").is_dir():
        pytest.skip("docs/ is not in this checkout")
    pages, missing, n = {}, [], 0
    for f in _files():
        for page, anchor in CITATION.findall(f.read_text(encoding="utf-8", errors="replace")):
            anchor = anchor.rstrip(".")
            n += 1
            path = ROOT / "docs" / page
            if page not in pages:
                pages[page] = _anchors(path) if path.exists() else None
            if pages[page] is None or anchor not in pages[page]:
                missing.append(f"{f.relative_to(ROOT)}: docs/{page}#{anchor}")
    assert n > 100, n  # the code cites its docs
    assert not missing, "\n".join(missing)


def test_no_file_cites_the_unshipped_design_notes():
    spec = re.compile(r"\b(METHODS|API|KERNELS|DESIGN|ECOSYSTEM)\.md\b")
    hits = [f"{f.relative_to(ROOT)}:{i + 1}" for f in _files() if f.name != "test_docs.py"
            for i, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines()) if spec.search(line)]
    assert not hits, hits
