"""Outputs that an interrupted run can leave half done and a later run finish: Zarr-family partial folders.

A chunked output (Zarr, OME-Zarr, OME-Zarr labels) is written into a hidden partial folder
beside its place (``.NAME.xxxx.partial``) and renamed onto it when it is finished. Given a
fingerprint of the run (`PartialSink`'s ``key``: what was computed from what), the folder
holds ``.sparseseg-resume.json`` (the fingerprint, and the block plan once blocks are
written) and, for every block written whole, an empty marker ``.sparseseg-done/BLOCK``, made
after the block's data. A block without its marker is written again; a folder is taken up
again (``resume``) only by a run of the same fingerprint. Both files go before the rename,
so a finished output holds neither.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from sparseseg.errors import InputError
from sparseseg.io.atomic import _atomic, _remove, _temp_dir
from sparseseg.io.base import FileSink
from sparseseg.io.blocks import block_name

#: The fingerprint of the run that writes a partial folder, and its block plan.
RESUME_FILE = ".sparseseg-resume.json"
#: The folder of the markers of the blocks written whole.
DONE_DIR = ".sparseseg-done"


@dataclass(frozen=True)
class Resumable:
    """How a Zarr-family output is kept when a run is interrupted: ``key``, a JSON-able fingerprint of what is computed
    from what; ``resume``: take up the output an interrupted run of the same ``key`` left."""

    key: dict
    resume: bool = False


def _read_key(folder: Path) -> dict | None:
    try:
        key = json.loads((folder / RESUME_FILE).read_text())
    except (OSError, ValueError):
        return None
    return key if isinstance(key, dict) else None


def partials(final: Path) -> list[Path]:
    """The partial folders beside ``final`` that a run of a fingerprint left (newest first)."""
    if not final.parent.is_dir():
        return []
    found = [
        p
        for p in final.parent.iterdir()
        if p.name.startswith(f".{final.name}.")
        and p.name.endswith(".partial")
        and p.is_dir()
        and (p / RESUME_FILE).is_file()
    ]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def _differ(key: dict, left: dict) -> list[str]:
    return [name for name in key if name != "layout" and left.get(name) != key[name]]


def find_partial(final: Path, key: dict, path) -> Path:
    """The partial folder beside ``final`` that a run of fingerprint ``key`` left, the one with most blocks done.

    An `InputError` of parameter ``resume`` says that there is none, or what differs in those there are.
    """
    found = partials(final)
    matching = [p for p in found if not _differ(key, _read_key(p) or {})]
    if matching:
        return max(matching, key=lambda p: len(_marked(p)))
    if not found:
        raise InputError(
            "nothing to resume: no interrupted run left an unfinished output for it", param="resume", value=path
        )
    why = ", ".join(_differ(key, _read_key(found[0]) or {}))
    raise InputError(
        f"{found[0]} was left by a run with other inputs ({why} differ), so it is not taken up; run without "
        "--resume, or delete that folder",
        param="resume",
        value=path,
    )


def _marked(folder: Path) -> set[str]:
    done = folder / DONE_DIR
    return {p.name for p in done.iterdir()} if done.is_dir() else set()


class PartialSink(FileSink):
    """A sink written into a hidden partial folder (``tmp``) that an interrupted run may keep and a later one take up.

    Without a ``key`` it is written and finished or removed as any sink. With one (see the
    module's docstring) it records the key, marks each block written whole (`mark`), and on
    `keep` stays on disk for a run with ``resume`` to take up (`begin` says which blocks are done).
    """

    shared = True  # several worker processes may write disjoint chunk-aligned blocks of it (it pickles)
    key: dict | None = None
    resumed = False
    layout: dict | None = None

    def _partial(self, final: Path, path, key: dict | None, resume: bool) -> bool:
        """Set ``tmp``: a new partial folder, or with ``resume`` the one left for ``key``; True where it is new."""
        self.key = None if key is None else dict(key)
        if resume:
            if self.key is None:
                raise ValueError("resume needs the key of the run")
            self.tmp = find_partial(final, self.key, path)
            self.resumed = True
            self.key = _read_key(self.tmp)  # as recorded: what the run that began it noted too
            self.layout = self.key.pop("layout", None)
            return False
        if self.key is not None and any(not _differ(self.key, _read_key(p) or {}) for p in partials(final)):
            logging.getLogger("sparseseg").warning(
                "%s: an interrupted run of the same inputs left an unfinished output "
                "beside it; --resume would go on from it (it is left as it is)",
                path,
            )
        self.tmp = _temp_dir(final, path)
        return True

    def _record(self) -> None:
        """Write the key (and the layout, once known) into the partial folder."""
        if self.key is not None:
            record = dict(self.key, layout=self.layout) if self.layout is not None else self.key
            _atomic(self.tmp / RESUME_FILE, lambda tmp: tmp.write_text(json.dumps(record, indent=1) + "\n"))

    @property
    def resumable(self) -> bool:
        """Whether this unfinished sink can be kept for a later run to take up."""
        return self.key is not None and not self.done

    def check_layout(self, layout: dict) -> bool:
        """Whether blocks of ``layout`` (the block plan, as JSON) fit what a resumed folder holds."""
        return self.layout is None or self.layout == json.loads(json.dumps(layout))

    def begin(self, layout: dict) -> set[str]:
        """Record the block plan before the first block; the names of the blocks already written whole
        (`block_name`)."""
        if self.key is None:
            return set()
        if self.layout is None:
            self.layout = json.loads(json.dumps(layout))
            self._record()
        return self.marked()

    def mark(self, zyx) -> None:
        """Say that block ``zyx`` is written whole (after its data: a block without its marker is written again)."""
        if self.key is not None:
            (self.tmp / DONE_DIR).mkdir(exist_ok=True)
            (self.tmp / DONE_DIR / block_name(zyx)).touch()

    def marked(self) -> set[str]:
        return _marked(self.tmp) if self.key is not None else set()

    def keep(self) -> Path:
        """Leave the partial folder on disk, unfinished, for a run with ``resume``; returns it."""
        self.done = True
        self._handle = None
        return self.tmp

    def release(self) -> None:
        """Let go of the sink before its first block: a new partial folder is removed, a resumed one left as it was."""
        if self.resumed and not self.done:
            self.keep()
        else:
            self.abort()

    def _unrecord(self) -> None:
        """Remove the key and the markers: what a finished output must not hold."""
        _remove(self.tmp / DONE_DIR)
        (self.tmp / RESUME_FILE).unlink(missing_ok=True)
