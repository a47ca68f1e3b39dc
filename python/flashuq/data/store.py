"""The output directory of :func:`flashuq.data.score`: Parquet parts written whole or not at all, the
rows already there (resume), the errors file, reading everything back in input order."""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Dict, List

ERRORS_SUFFIX = ".errors.jsonl"
#: the output's own columns (the input's columns of the same names are renamed ``input_<name>``)
OWN_COLUMNS = ("row", "response_tokens", "response_ids", "token_logprob", "token_entropy")


def _out_dir(out) -> pathlib.Path:
    out = pathlib.Path(os.path.abspath(out))  # Ray's workers run elsewhere
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {str(out)!r} is a file; the output is a directory of Parquet files")
    return out


def _errors_path(out: pathlib.Path) -> pathlib.Path:
    name = out.name[:-len(".parquet")] if out.name.endswith(".parquet") else out.name
    return out.with_name(name + ERRORS_SUFFIX)


def done_rows(out) -> set:
    """The ``row`` values already written to ``out`` (a file that cannot be read, e.g. cut short by
    a killed run, is removed: its rows are scored again)."""
    import pyarrow.parquet as pq

    out = pathlib.Path(out)
    done: set = set()
    if not out.is_dir():
        return done
    for f in sorted(out.glob("*.parquet")):
        try:
            done.update(pq.read_table(f, columns=["row"]).column("row").to_pylist())
        except Exception as ex:  # noqa: BLE001 - any unreadable part is redone
            print(f"flashuq score: removing unreadable {f.name} ({type(ex).__name__}); its rows are redone",
                  file=sys.stderr)
            f.unlink()
    return done


def read_scores(out):
    """Every part of an output directory as one ``pyarrow.Table``, sorted by ``row`` (input order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(pathlib.Path(out).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet files in {str(out)!r}")
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
    return table.sort_by("row")


def _table(rows: List[dict]):
    """``pyarrow.Table.from_pylist`` over the union of the rows' keys (it takes the first row's only)."""
    import pyarrow as pa

    keys: Dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r))
    return pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows])


def _write_part(out: pathlib.Path, table, name: str) -> None:
    import pyarrow.parquet as pq

    tmp = out / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, out / name)  # a part is there whole or not at all


def _part_names(run_id: str):
    """Parquet part names of one run: ``part-<run>-<task>-<block>.parquet``."""
    from ray.data.datasource import FilenameProvider

    class PartNames(FilenameProvider):
        def get_filename_for_block(self, block, write_uuid, task_index, block_index):
            return f"part-{run_id}-{task_index:06d}-{block_index:06d}.parquet"

        def get_filename_for_row(self, row, write_uuid, task_index, block_index, row_index):
            return f"part-{run_id}-{task_index:06d}-{block_index:06d}-{row_index:06d}.parquet"

    return PartNames()
