"""JSONL files of the pipeline: one loader for inputs and outputs, the synced append, resuming, a progress bar."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_jsonl(path: str | Path, *, missing_ok: bool = False) -> list[Any]:
    """Every record of a JSONL file, one JSON value a non-blank line (``[]`` for a missing file if ``missing_ok``)."""
    p = Path(path)
    if missing_ok and not p.exists():
        return []
    return [json.loads(line) for line in p.read_text("utf-8").splitlines() if line.strip()]


def read_json_records(path: str | Path) -> list[Any]:
    """The records of a ``.jsonl`` file (one a line), or of a ``.json`` file (a list of records, or one record)."""
    p = Path(path)
    if p.suffix == ".jsonl":
        return read_jsonl(p)
    data = json.loads(p.read_text("utf-8"))
    return data if isinstance(data, list) else [data]


def append_line(path: Path, line: str) -> None:
    """Append one line and sync it to disk (a record is either whole in the file or absent)."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


class _NoBar:
    """A progress bar that shows nothing."""

    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kw: Any) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, enabled: bool) -> Any:
    """A ``tqdm`` bar over ``total`` samples, or one that shows nothing."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="annotate", unit="sample")


def read_done_ids(path: str | Path) -> set[str]:
    """Ids already written to a JSONL output; a torn last line (a crash mid-write) is cut off the file.

    A corrupt line followed by good ones is not a torn write: it raises :class:`ValueError` rather than
    discarding data.
    """
    p = Path(path)
    if not p.exists():
        return set()
    data = p.read_bytes()
    ids: set[str] = set()
    pos = keep = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        line = data[pos : nl if nl >= 0 else len(data)]
        if line.strip():
            try:
                ids.add(str(json.loads(line)["id"]))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                if nl >= 0 and data[nl + 1 :].strip():
                    raise ValueError(f"{p}: corrupt record at byte {pos} followed by more records") from e
                break
            if nl < 0:  # complete JSON but no newline: keep it, terminate it
                with p.open("ab") as fh:
                    fh.write(b"\n")
                return ids
        if nl < 0:
            break
        pos = keep = nl + 1
    if keep < len(data):
        with p.open("r+b") as fh:
            fh.truncate(keep)
    return ids


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a JSONL output."""
    return read_jsonl(path, missing_ok=True)
