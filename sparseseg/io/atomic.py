"""Outputs that appear whole or not at all: temporary files and folders beside the target, renamed into place.

Also the check that the disk has room for a memory-mapped file before it is made.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from sparseseg.errors import InputError
from sparseseg.io.locations import SUFFIXES


def _file_mode(path) -> None:
    """Give a file made by mkstemp (0600) or a folder made by mkdtemp (0700) the mode a plain open() or mkdir() would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


def _atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place."""
    name = path.name
    suffix = next((s for s in SUFFIXES + (".png", ".json", ".pt", ".csv", ".zip") if name.lower().endswith(s)), "")
    tmp = _temp_file(path, suffix)
    with _undone_on_failure(lambda: tmp.unlink(missing_ok=True), path):
        write(tmp)
        _file_mode(tmp)
        os.replace(tmp, path)


@contextlib.contextmanager
def _undone_on_failure(undo, path=None):
    """Where the body fails, call ``undo()`` (remove what it left) before the error goes on.

    With ``path``, an OSError (a full disk, a read-only folder) goes on as a one-line
    `InputError`: ``path`` cannot be written, nothing was written there (an earlier file is kept).
    """
    try:
        yield
    except BaseException as exc:
        undo()
        if path is not None and isinstance(exc, OSError):
            raise InputError(f"{path}: cannot write ({exc.strerror or exc}); nothing was written there") from exc
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _into_place(tmp: Path, final: Path) -> None:
    """Rename a finished temporary file or folder onto ``final``; an earlier ``final`` is put aside first and
    removed only once the new one is in place (it is put back if that fails)."""
    if not (final.exists() or final.is_symlink()):
        os.replace(tmp, final)
        return
    old = final.parent / f".{final.name}.old-{secrets.token_hex(4)}"
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    _remove(old)


def _room(path: Path, nbytes: int) -> None:
    """Refuse before writing a memory-mapped file that the disk cannot hold (a full disk would kill the process)."""
    try:
        stat = os.statvfs(path.parent)
    except (OSError, AttributeError):
        return
    free = stat.f_bavail * stat.f_frsize
    if nbytes > free:
        raise InputError(f"{path}: cannot write (needs {nbytes / 1e9:.1f} GB, {free / 1e9:.1f} GB free on that disk)")


def _temp_file(final: Path, suffix: str) -> Path:
    """A new empty temporary file beside ``final`` (a dot-file, ending in ``suffix``), to be renamed onto it."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)
    except OSError as exc:
        raise InputError(f"{final}: cannot write ({exc.strerror or exc})") from exc
    os.close(fd)
    return Path(tmp)


def _temp_dir(final: Path, path) -> Path:
    """A new empty temporary folder beside ``final`` (``path`` names the output in the error), to be renamed onto it."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    _file_mode(tmp)
    return tmp
