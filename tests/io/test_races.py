"""Writes that hold under races and real faults, and inputs that change under a run (issue 42).

- The no-overwrite rule is checked by the final rename itself: an output that another run put in place meanwhile is
  never replaced, whatever the format.
- A failure in any output of a run leaves none of that run's outputs: the segmentation is removed again when the
  preview or the model folder cannot be written.
- On a real full disk (a small tmpfs, which needs root; skipped otherwise) every command exits 2 with one line, and an
  existing HDF5 file is never touched.
- An input that vanishes while it is read is exit 2, never a quiet exit 0.
"""

import contextlib
import os
import shutil
import subprocess
import uuid

import numpy as np
import pytest
import tifffile

from sparseseg import io
from sparseseg.errors import InputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the final rename keeps what another run made meanwhile -------------------------------------------------------


@pytest.mark.parametrize("name", ["seg.tif", "seg.nii.gz", "seg.zarr", "seg.h5:/seg"])
def test_an_output_made_meanwhile_is_never_replaced(tmp_path, name):
    data = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8)
    path = tmp_path / name
    sink = io.create_sink(path, data.shape, data.dtype)  # checked: nothing there yet
    sink.write((slice(0, 4), slice(0, 8), slice(0, 8)), data)
    other = io.create_sink(path, data.shape, data.dtype)  # another run, started at the same time, finishes first
    other.write((slice(0, 4), slice(0, 8), slice(0, 8)), np.ones_like(data))
    other.finish()
    theirs = {name: content for name, content in _content(tmp_path).items() if not name.startswith(".")}
    with pytest.raises(InputError, match="exists already"):
        sink.finish()
    assert _content(tmp_path) == theirs  # the other run's output as it wrote it, no temporary file left


def test_a_symlink_made_meanwhile_is_never_replaced(tmp_path):
    data = np.zeros((4, 8, 8), dtype=np.uint8)
    path = tmp_path / "seg.tif"
    sink = io.create_sink(path, data.shape, data.dtype)
    path.symlink_to(tmp_path / "nowhere.tif")
    with pytest.raises(InputError, match="exists already"):
        sink.finish()
    assert path.is_symlink() and os.readlink(path) == str(tmp_path / "nowhere.tif")


def test_with_overwrite_the_newer_run_wins(tmp_path):
    data = np.full((4, 8, 8), 7, dtype=np.uint8)
    path = tmp_path / "seg.tif"
    sink = io.create_sink(path, data.shape, data.dtype, overwrite=True)
    sink.write((slice(0, 4), slice(0, 8), slice(0, 8)), data)
    io.write_volume(path, np.ones_like(data))
    sink.finish()
    assert np.array_equal(tifffile.imread(path), data)


def _content(folder):
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


# --- outputs that appear together or not at all ------------------------------------------------------------------


def test_a_failed_preview_leaves_no_segmentation(trained, tmp_path, run, bad_input, monkeypatch):
    def full(*args, **kwargs):
        raise InputError(f"'{tmp_path / 'p.png'}': cannot write (No space left on device)")

    monkeypatch.setattr(io, "write_png", full)
    result = run(
        "predict",
        trained.model,
        trained.volume,
        "-o",
        tmp_path / "seg.tif",
        "--probabilities",
        tmp_path / "p.tif",
        "--preview",
        tmp_path / "p.png",
    )
    bad_input(result, "p.png")
    assert sorted(os.listdir(tmp_path)) == []


def test_a_failed_model_folder_leaves_no_segmentation(files, run, train_args, bad_input, monkeypatch):
    from sparseseg.commands import densify

    def full(folder, *args, **kwargs):
        raise InputError(f"'{folder}': cannot write the model (No space left on device); nothing was changed there")

    monkeypatch.setattr(densify, "save_model", full)
    before = _content(files.folder)
    result = run(
        "densify",
        files.volume,
        "--slices",
        files.sparse,
        "-o",
        files.folder / "seg.tif",
        "--preview",
        files.folder / "seg.png",
        "--save-model",
        files.folder / "model",
        *train_args,
    )
    bad_input(result, "model", "No space left")
    assert _content(files.folder) == before


# --- a real full disk: a small tmpfs (root only) ----------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs at ``tmp_path / 'disk'``, unmounted after the test; skipped where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", f"sparseseg-{uuid.uuid4().hex[:8]}", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def _fill(mount):
    """Fill the disk but for a few kB."""
    with contextlib.suppress(OSError), open(mount / "filler", "wb") as f:
        while True:
            f.write(bytes(64 * 1024))
    with contextlib.suppress(OSError):
        os.truncate(mount / "filler", os.path.getsize(mount / "filler") - 16 * 1024)


@pytest.mark.parametrize("out", ["seg.tif", "seg.zarr", "seg.ome.zarr", "d.h5:/seg"])
def test_predict_on_a_full_disk_is_one_line_and_keeps_what_was_there(trained, small_disk, out, run, bad_input):
    if out.startswith("d.h5"):
        import h5py

        with h5py.File(small_disk / "d.h5", "w") as f:
            f["raw"] = np.arange(100, dtype=np.uint8)
    _fill(small_disk)
    before = _content(small_disk)
    result = run(
        "predict", trained.model, trained.volume, "-o", small_disk / out, "--probabilities", small_disk / "prob.tif"
    )
    bad_input(result, "cannot write")
    assert _content(small_disk) == before  # an existing .h5 byte for byte, no temporary file


def test_save_model_on_a_full_disk_leaves_no_segmentation(files, small_disk, run, train_args, bad_input):
    _fill(small_disk)
    before = _content(small_disk)
    result = run(
        "densify",
        files.volume,
        "--slices",
        files.sparse,
        "-o",
        files.folder / "seg.tif",
        "--save-model",
        small_disk / "m",
        *train_args,
    )
    bad_input(result, "m")
    assert _content(small_disk) == before and not (files.folder / "seg.tif").exists()


# --- an input that vanishes while it is read ----------------------------------------------------------------------


def test_a_zarr_input_deleted_mid_run_is_refused(tmp_path):
    pytest.importorskip("zarr")
    volume = tmp_path / "volume.zarr"
    io.write_volume(volume, np.ones((4, 8, 8), np.float32))
    source = io.open_source([volume])
    source.read((slice(0, 2), slice(0, 8), slice(0, 8)))
    shutil.rmtree(volume)  # a read now would give the store's fill value, zeros, as if they were data
    with pytest.raises(InputError, match="changed or vanished"):
        source.read((slice(2, 4), slice(0, 8), slice(0, 8)))


def test_predict_on_an_input_that_vanishes_is_exit_2(trained, tmp_path, run, bad_input, monkeypatch):
    pytest.importorskip("zarr")
    from sparseseg.io.base import FileSource

    volume = tmp_path / "volume.zarr"
    io.write_volume(volume, tifffile.imread(trained.volume))
    read_raw = FileSource.read_raw

    def vanishing(self, zyx):
        shutil.rmtree(volume, ignore_errors=True)  # gone as the first block is read
        return read_raw(self, zyx)

    monkeypatch.setattr(FileSource, "read_raw", vanishing)
    result = run("predict", trained.model, volume, "-o", tmp_path / "seg.zarr")
    bad_input(result, "volume.zarr", "vanished")
    assert sorted(os.listdir(tmp_path)) == []


def test_a_source_whose_file_changes_is_refused(tmp_path):
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, np.zeros((6, 8, 8), np.float32))
    source = io.open_source([path])
    source.read((slice(0, 2), slice(0, 8), slice(0, 8)))
    tifffile.imwrite(path, np.ones((6, 8, 9), np.float32))
    with pytest.raises(InputError, match="changed or vanished"):
        source.read((slice(2, 4), slice(0, 8), slice(0, 8)))


def test_a_failed_run_takes_back_only_what_it_wrote(tmp_path):
    """When a later output fails, the outputs this run put in place go, and what another run put at one of this run's
    paths meanwhile stays."""
    ours, theirs = tmp_path / "seg.tif", tmp_path / "prob.tif"
    data = np.zeros((4, 8, 8), np.uint8)
    with pytest.raises(InputError, match="preview"), io.outputs_together([ours, theirs, tmp_path / "p.png"]):
        io.write_volume(ours, data)
        tifffile.imwrite(theirs, np.ones((4, 8, 8), np.uint8), photometric="minisblack")  # another run, meanwhile
        raise InputError(f"'{tmp_path / 'p.png'}': cannot write the preview (No space left on device)")
    assert not ours.exists()
    assert np.array_equal(tifffile.imread(theirs), np.ones((4, 8, 8), np.uint8))
