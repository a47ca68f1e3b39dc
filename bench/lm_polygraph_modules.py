"""LM-Polygraph's own code for the benchmarks, without importing the library.

``lm_polygraph/__init__.py`` and its subpackages' ``__init__`` import the whole library (models,
datasets, API clients) and its declared stack, which a ``pip install --no-deps lm-polygraph==0.7.0``
leaves out. :func:`import_modules` enters ``lm_polygraph``, ``lm_polygraph.utils`` and the wanted
subpackage as bare packages whose search path is the installed folder, then runs exactly the named
module files (and what they import). flashuq itself never imports LM-Polygraph; only bench/ does.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import sys


def import_modules(subpackage: str, names) -> tuple[str, dict] | None:
    """``(version, {name: module})`` for ``lm_polygraph.<subpackage>.<name>`` of each name, or None
    when LM-Polygraph is not installed."""
    spec = importlib.util.find_spec("lm_polygraph")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = list(spec.submodule_search_locations)[0]
    for name, sub in (("lm_polygraph", ""), ("lm_polygraph.utils", "utils"), (f"lm_polygraph.{subpackage}", subpackage)):
        if name not in sys.modules:
            bare = importlib.machinery.ModuleSpec(name, None, is_package=True)
            bare.submodule_search_locations = [os.path.join(root, sub)]
            sys.modules[name] = importlib.util.module_from_spec(bare)
    modules = {n: importlib.import_module(f"lm_polygraph.{subpackage}.{n}") for n in names}
    return importlib.metadata.version("lm-polygraph"), modules
