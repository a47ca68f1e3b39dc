"""LM-Polygraph 0.7.0's estimator modules for the tests that compare against its own code. The package is
installed without its dependencies (requirements/no-deps.in) and its ``__init__`` imports the whole library
(models, datasets, API clients), so its packages are entered as bare modules whose search path is
the installed folder; then only the estimator file asked for (and the helpers it imports) runs."""

import importlib
import importlib.machinery
import importlib.util
import os
import sys


def lm_polygraph_estimator(module: str):
    """``lm_polygraph.estimators.<module>``, imported without the rest of LM-Polygraph."""
    _bare_packages()
    return importlib.import_module("lm_polygraph.estimators." + module)


def lm_polygraph_stat_calculator(module: str):
    """``lm_polygraph.stat_calculators.<module>``, imported the same way (its own imports must resolve)."""
    _bare_packages()
    return importlib.import_module("lm_polygraph.stat_calculators." + module)


def _bare_packages():
    spec = importlib.util.find_spec("lm_polygraph")
    root = list(spec.submodule_search_locations)[0]
    for name, sub in (("lm_polygraph", ""), ("lm_polygraph.utils", "utils"), ("lm_polygraph.estimators", "estimators"),
                      ("lm_polygraph.stat_calculators", "stat_calculators")):
        if name not in sys.modules:
            bare = importlib.machinery.ModuleSpec(name, None, is_package=True)
            bare.submodule_search_locations = [os.path.join(root, sub)]
            sys.modules[name] = importlib.util.module_from_spec(bare)
