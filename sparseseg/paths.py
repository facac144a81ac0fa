"""What a command reads and what it writes, checked before any work: an input is never an output.

Paths are compared after resolving symbolic links, and with `os.path.samefile` where both
exist (hard links). An output may not be an input, another output, or lie inside an output
folder; an input may not lie inside an output folder either. `--overwrite` replaces an
earlier output, never an input: these clashes are refused whatever it says.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from sparseseg.errors import InputError

PathLike = str | os.PathLike


def same(a: PathLike, b: PathLike) -> bool:
    """True where ``a`` and ``b`` name one file or folder (symbolic and hard links included)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def inside(path: PathLike, folder: PathLike) -> bool:
    """True where ``path`` lies somewhere inside ``folder`` (not ``folder`` itself)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return folder in path.parents


def check_distinct(inputs: Iterable[PathLike | None], outputs: Iterable[PathLike | None],
                   folders: Iterable[PathLike | None] = ()) -> None:
    """Raise `InputError` if an output clashes with an input or with another output.

    Parameters
    ----------
    inputs : paths read by the command (None entries are ignored).
    outputs : files the command writes.
    folders : folders the command writes (a model folder, a report folder).
    """
    inputs = [Path(p) for p in inputs if p is not None]
    folders = [Path(p) for p in folders if p is not None]
    written = [Path(p) for p in outputs if p is not None] + folders
    for out in written:
        for source in inputs:
            if same(out, source) or (out in folders and inside(source, out)):
                raise InputError(f"{out}: is also an input ({source}); an input is never overwritten, give another output path")
    for i, out in enumerate(written):
        for other in written[i + 1:]:
            if same(out, other):
                raise InputError(f"{out}: given for two outputs ({other}); output paths must differ")
        for folder in folders:
            if out != folder and inside(out, folder):
                raise InputError(f"{out}: lies inside the output folder {folder}; write it elsewhere")
