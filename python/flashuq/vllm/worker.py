"""The worker extension through which results leave vLLM's worker processes.

vLLM runs the model (and so the logits processors) in worker processes; ``LLM.collective_rpc`` /
``AsyncLLM.collective_rpc`` call a method *by name* on every worker, which works with the default
multiprocess engine, with ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` and with ``AsyncLLM``. flashuq passes
``worker_extension_cls="flashuq.vllm.worker.FlashUQWorkerExtension"``; vLLM mixes the class into its
worker class, so its methods run in the worker next to the processors of that process.

Under tensor parallelism every rank of the last pipeline stage runs the sampler, and so the
processor, on the same (gathered) logits: the ranks record the same statistics, and
:func:`flashuq.vllm.fetch` takes rank 0's.
"""

from __future__ import annotations


def _recorders():
    from . import processor

    return [p.recorder for p in list(processor.PROCESSORS)]


class FlashUQWorkerExtension:
    """Methods vLLM adds to its worker class (names prefixed to stay clear of the worker's own)."""

    def flashuq_fetch(self, keys, free=True):
        """``{key: [record dicts]}`` of this worker's processors for ``keys``; freed unless ``free=False``."""
        out = {}
        for rec in _recorders():
            for key, records in rec.fetch(list(keys), free=free).items():
                out.setdefault(key, []).extend(records)
        return out

    def flashuq_status(self):
        """What this worker's processors hold: processors, steps recorded, unfetched keys, dropped keys."""
        recs = _recorders()
        return {"processors": len(recs), "steps": sum(r.steps for r in recs), "seconds": sum(r.seconds for r in recs),
                "copied_rows": sum(r.copied_rows for r in recs),
                "keys": sum(len(r.records) for r in recs), "dropped_keys": sum(r.dropped_keys for r in recs)}
