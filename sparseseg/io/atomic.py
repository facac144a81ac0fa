"""Outputs that appear whole or not at all: temporary files and folders beside the target, renamed into place.

Also the check that the disk has room for a memory-mapped file before it is made.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from sparseseg.errors import InputError
from sparseseg.io.locations import SUFFIXES, locate


def _file_mode(path) -> None:
    """Give a file made by mkstemp (0600) or a folder made by mkdtemp (0700) the mode a plain open() or mkdir()
    would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


def _atomic(path: Path, write, overwrite: bool = True) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place (`_place`)."""
    name = path.name
    suffix = next((s for s in SUFFIXES + (".png", ".json", ".pt", ".csv", ".zip") if name.lower().endswith(s)), "")
    tmp = _temp_file(path, suffix)
    with _undone_on_failure(lambda: tmp.unlink(missing_ok=True), path):
        write(tmp)
        _file_mode(tmp)
        _place(tmp, path, overwrite)


#: The outputs this run put in place, as (device, inode), while an `outputs_together` block runs; None outside one.
_WRITTEN: contextvars.ContextVar[set | None] = contextvars.ContextVar("sparseseg_written", default=None)


def record_written(final: Path) -> None:
    """Note that this run put ``final`` in place (for `outputs_together`, which takes back only what this run wrote)."""
    written = _WRITTEN.get()
    if written is not None:
        with contextlib.suppress(OSError):
            info = os.lstat(final)
            written.add((info.st_dev, info.st_ino))


def _written_here(target: Path) -> bool:
    try:
        info = os.lstat(target)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) in (_WRITTEN.get() or ())


def _place(tmp: Path, final: Path, overwrite: bool) -> None:
    """Rename a finished temporary file or folder onto ``final``.

    With ``overwrite`` an earlier ``final`` is replaced (`_into_place`). Without it, nothing that is at ``final`` now
    is ever replaced: a file, a folder or a dangling symbolic link that another run made since the start. The rename
    itself checks it (a hard link, which fails where the name is taken; a folder renamed only onto no name), so a run
    started at the same time cannot slip in between a check and the rename.
    """
    if overwrite:
        _into_place(tmp, final)
        record_written(final)
        return
    taken = InputError(
        f"'{final}': exists already, made while this run worked (use --overwrite to replace it); "
        "nothing was written there"
    )
    if final.exists() or final.is_symlink():
        raise taken
    if tmp.is_dir():
        try:
            os.rename(tmp, final)  # fails onto a file, a link or a non-empty folder made since the check above
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise taken from None
            raise
        record_written(final)
        return
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise taken from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        os.replace(tmp, final)  # a file system without hard links: checked just above
    else:
        tmp.unlink()
    record_written(final)


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


def _output_target(path) -> Path:
    """The file or folder that an output path names (an HDF5 output: its file; a Zarr array: its folder)."""
    loc = locate(Path(path))
    if loc.container and loc.zarr:
        return loc.file.joinpath(*loc.parts)
    return loc.file if loc.container else Path(path)


@contextlib.contextmanager
def outputs_together(paths):
    """Outputs that appear together or not at all: where the body fails (a full disk under the preview, a model folder
    that cannot be written), the outputs among ``paths`` that were not there before it, and that this run put in place
    (`record_written`), are removed again. What another run put at one of those paths meanwhile is kept.

    An output that replaced an earlier one (overwrite), or a dataset added to an existing HDF5 file, cannot be taken
    back: the error says which were kept.
    """
    paths = [p for p in paths if p is not None]
    fresh = [p for p in paths if not _taken(_output_target(p))]
    token = _WRITTEN.set(set())
    try:
        yield
    except BaseException as exc:
        for path in fresh:
            if _written_here(_output_target(path)):
                _remove(_output_target(path))
        kept = [str(p) for p in paths if p not in fresh and _taken(_output_target(p))]
        if isinstance(exc, InputError) and kept:
            raise InputError(f"{exc}; kept as it was before this run or replaced by it: {', '.join(kept)}") from None
        raise
    finally:
        _WRITTEN.reset(token)


def _taken(target: Path) -> bool:
    """Whether something is at ``target`` (a dangling link too); an empty folder counts as nothing."""
    if target.is_dir() and not target.is_symlink():
        return any(target.iterdir())
    return target.exists() or target.is_symlink()
