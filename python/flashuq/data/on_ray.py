"""Running :func:`flashuq.data.score` on Ray Data: a local Ray or a cluster, one scoring actor per
worker, the parts written by Ray in input order."""

from __future__ import annotations

import json
import os
from typing import Optional, Tuple

from .generate import Answerer
from .scorer import Scorer
from .store import _part_names


def ray_resources(workers: int, cpus_per_worker: Optional[int] = None, cores: Optional[int] = None) -> Tuple[int, int]:
    """``(CPUs per actor, logical CPUs of a local Ray)``: the actors share the cores, and the local
    Ray declares one logical CPU more than the actors take, so that Ray Data's own tasks (moving
    blocks, writing Parquet) always find one. An actor pool that takes every logical CPU leaves
    them none, and the dataset waits forever."""
    cores = cores or os.cpu_count() or 1
    per = cpus_per_worker or max(1, cores // workers)
    return per, workers * per + 1


def _score_on_ray(model, todo, out, run_id, *, tokens, dtype, batch_size, workers, ray_address,
                  cpus_per_worker, progress, generate=None):
    import pyarrow as pa
    import ray
    import ray.data

    per, logical = ray_resources(workers, cpus_per_worker)
    started = not ray.is_initialized()
    if started:
        init_ray(ray_address, num_cpus=logical)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # parts come out in input order
        ctx.enable_progress_bars = progress
        table = pa.Table.from_pylist([{"row": r["row"], "input_ids": r["input_ids"],
                                       "response_start": r["response_start"],
                                       "columns": json.dumps(r["columns"])} for r in todo]) if todo else None
        if table is None:
            return
        ds = ray.data.from_arrow(table).repartition(max(1, -(-len(todo) // batch_size)))
        # A killed actor is restarted and its batch retried: Ray Data's actor pools default to
        # unlimited restarts and task retries (Ray 2.60; tests/data kills one mid-run)
        kwargs = {"model": str(model), "dtype": dtype, "tokens": tokens, "threads": per}
        if generate is not None:
            kwargs["options"] = generate
        ds = ds.map_batches(Scorer if generate is None else Answerer, fn_constructor_kwargs=kwargs,
                            batch_size=batch_size, batch_format="pyarrow", concurrency=workers, num_cpus=per)
        ds.write_parquet(str(out), filename_provider=_part_names(run_id))
    finally:
        if started and ray_address is None:
            ray.shutdown()


def init_ray(address: Optional[str] = None, *, num_cpus: Optional[int] = None, **kwargs):
    """``ray.init`` as flashuq needs it: a local Ray with ``num_cpus`` logical CPUs (address None) or
    the cluster at ``address``. Ray puts the driver's working directory on its workers' ``sys.path``;
    it is started from an empty directory, so that no folder of the caller's working directory (a
    checkout's top-level ``kernels/``, say) can shadow an installed package in the workers."""
    import tempfile

    import ray

    here = os.getcwd()
    empty = tempfile.mkdtemp(prefix="flashuq-ray-")
    os.chdir(empty)
    try:
        if address is None:
            return ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, **kwargs)
        return ray.init(address=address, log_to_driver=False, **kwargs)
    finally:
        os.chdir(here)
