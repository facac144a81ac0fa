"""Fault injection: a write that fails halfway, and a model folder whose saving fails, lose nothing (issue 13).

The faults are monkeypatched into the writers that `sparseseg.io` and `sparseseg.method.modelfolder`
use: each writes part of its file, as a full disk would let it, and then raises. What was
there before must be there after, byte for byte, with no temporary file (a dot-file beside
the target) or half-written model folder left behind.
"""

import errno
import os
import shutil

import numpy as np
import pytest
import tifffile
import torch

from sparseseg import io
from sparseseg.errors import InputError
from sparseseg.method import modelfolder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NO_SPACE = "No space left on device"
#: What a failed write may raise: the OSError itself, or sparseseg's one-line error that quotes it.
FAILED = (OSError, InputError)


def _half_then_fail(path, *args, **kwargs):
    """A writer on a full disk (as `_write_tiff(path, ...)` is called): some bytes reach ``path``, then OSError
    ENOSPC."""
    with open(path, "wb") as f:
        f.write(b"II*\x00" + b"\x00" * 100)
    raise OSError(errno.ENOSPC, NO_SPACE)


@pytest.fixture
def full_disk(monkeypatch):
    """Every TIFF and NIfTI written through `sparseseg.io` fails halfway with "No space left on device"."""
    monkeypatch.setattr(io.tiff, "_write_tiff", _half_then_fail)  # where write_volume and TiffSink look it up
    monkeypatch.setattr(io.nifti, "_write_nifti", _half_then_fail)


def _hidden(folder):
    return [p for p in folder.rglob(".*")]


def _models(folder):
    """Every folder under ``folder`` (itself included) that looks like a model: it holds a config.json."""
    return sorted(p.parent for p in folder.rglob(modelfolder.CONFIG))


# --- a volume write that fails halfway --------------------------------------------------------


@pytest.mark.parametrize("name", ["seg.tif", "seg.nii.gz"])
def test_failed_write_keeps_the_previous_file_and_leaves_no_temporary(name, tmp_path, full_disk, listing):
    out = tmp_path / name
    out.write_bytes(b"the previous result")
    before = listing(tmp_path)
    with pytest.raises(FAILED, match=NO_SPACE):
        io.write_volume(out, np.ones((4, 5, 6), np.uint8), overwrite=True)
    assert listing(tmp_path) == before
    assert not _hidden(tmp_path)


def test_failed_write_of_a_new_file_leaves_nothing(tmp_path, full_disk):
    with pytest.raises(FAILED, match=NO_SPACE):
        io.write_volume(tmp_path / "seg.tif", np.ones((4, 5, 6), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_failed_png_write_keeps_the_previous_file(tmp_path, monkeypatch, listing):
    from PIL import Image

    monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **k: _half_then_fail(fp))
    out = tmp_path / "seg.png"
    out.write_bytes(b"the previous picture")
    before = listing(tmp_path)
    with pytest.raises(FAILED, match=NO_SPACE):
        io.write_png(out, np.zeros((8, 8, 3), np.uint8), overwrite=True)
    assert listing(tmp_path) == before


def _check_failed_command(result):
    """Not a success, and said in words: no traceback; the reason reaches the user."""
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output
    assert NO_SPACE in result.stderr, result.stderr
    assert result.stdout == "", result.stdout  # --json: no summary of a run that wrote nothing


def test_cli_predict_on_a_full_disk_keeps_the_previous_output(trained, tmp_path, run, full_disk, listing):
    out = tmp_path / "seg.tif"
    shutil.copy(trained.seg, out)  # a real earlier output
    before = listing(tmp_path)
    result = run("predict", trained.model, trained.volume, "-o", out, "--overwrite", "--json")
    _check_failed_command(result)
    assert listing(tmp_path) == before  # byte-identical, no temporary file
    np.testing.assert_array_equal(tifffile.imread(out), tifffile.imread(trained.seg))


def test_cli_densify_on_a_full_disk_keeps_the_previous_output(files, run, train_args, full_disk, listing):
    out = files.folder / "seg.tif"
    tifffile.imwrite(out, np.zeros(files.shape, np.uint8))
    before = listing(files.folder)
    result = run(
        "densify",
        files.volume,
        "--slices",
        files.sparse,
        "-o",
        out,
        *train_args,
        "--iterations",
        "1",
        "--overwrite",
        "--json",
    )
    _check_failed_command(result)
    assert listing(files.folder) == before


# --- a model folder whose saving fails -------------------------------------------------------


def _torch_save_fails(monkeypatch, target=None):
    """torch.save (as `sparseseg.method.modelfolder.save_model` calls it) writes part of the weights, then fails."""
    monkeypatch.setattr(torch, "save", lambda obj, f, *args, **kwargs: _half_then_fail(f))


def _config_write_fails(monkeypatch, target=None):
    """The weights are saved; writing config.json fails halfway."""

    def write_json(path, obj, overwrite=False):
        _half_then_fail(path)

    monkeypatch.setattr(modelfolder.io, "write_json", write_json)


def _rename_into_place_fails(monkeypatch, target):
    """Everything is written; the last step, renaming the finished folder onto ``target``, fails (once)."""
    real = os.replace
    failed = []

    def replace(src, dst):
        if (
            os.path.abspath(dst) == os.path.abspath(target)
            and not failed
            and os.path.isdir(src)
            and os.path.isfile(os.path.join(src, modelfolder.WEIGHTS))
            and os.path.abspath(src) != os.path.abspath(target)
        ):
            failed.append(src)
            raise OSError(errno.ENOSPC, NO_SPACE)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


FAULTS = [
    pytest.param(_torch_save_fails, id="torch-save"),
    pytest.param(_config_write_fails, id="config-json"),
    pytest.param(_rename_into_place_fails, id="rename-into-place"),
]


@pytest.mark.parametrize("fault", FAULTS)
def test_failed_save_keeps_an_existing_model_folder(fault, trained, tmp_path, monkeypatch, listing):
    folder = tmp_path / "model"
    shutil.copytree(trained.model, folder)
    before = listing(tmp_path)
    model = modelfolder.load_model(folder)
    fault(monkeypatch, folder)
    with pytest.raises(FAILED, match=NO_SPACE):
        modelfolder.save_model(folder, model, overwrite=True)
    monkeypatch.undo()
    assert listing(tmp_path) == before  # the old model, byte-identical, and no temporary folder
    assert _models(tmp_path) == [folder]
    assert modelfolder.load_model(folder).classes.tolist() == trained.classes


@pytest.mark.parametrize("fault", FAULTS)
def test_failed_save_to_a_new_folder_leaves_no_folder(fault, trained, tmp_path, monkeypatch):
    model = modelfolder.load_model(trained.model)
    fault(monkeypatch, tmp_path / "new")
    with pytest.raises(FAILED, match=NO_SPACE):
        modelfolder.save_model(tmp_path / "new", model)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []  # no "new", no hidden temporary folder


def test_failed_save_into_an_empty_folder_keeps_it_empty(trained, tmp_path, monkeypatch):
    (tmp_path / "new").mkdir()
    model = modelfolder.load_model(trained.model)
    _torch_save_fails(monkeypatch)
    with pytest.raises(FAILED, match=NO_SPACE):
        modelfolder.save_model(tmp_path / "new", model)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["new"] and not any((tmp_path / "new").iterdir())


def test_cli_densify_save_model_fails_keeps_the_old_model(trained, tmp_path, run, train_args, monkeypatch, listing):
    folder = tmp_path / "model"
    shutil.copytree(trained.model, folder)
    before = listing(folder)
    _torch_save_fails(monkeypatch)
    result = run(
        "densify",
        trained.volume,
        "--slices",
        trained.sparse,
        "-o",
        tmp_path / "seg.tif",
        "--save-model",
        folder,
        *train_args,
        "--iterations",
        "1",
        "--overwrite",
        "--json",
    )
    monkeypatch.undo()
    _check_failed_command(result)
    assert listing(folder) == before
    assert _models(tmp_path) == [folder]
    assert not _hidden(tmp_path)
    assert modelfolder.load_model(folder).classes.tolist() == trained.classes


def test_cli_train_fails_to_save_leaves_no_model(files, tmp_path, run, train_args, monkeypatch):
    _torch_save_fails(monkeypatch)
    result = run(
        "train",
        "--pair",
        f"{files.volume}:{files.sparse}",
        "-o",
        tmp_path / "fresh",
        *train_args,
        "--iterations",
        "1",
        "--json",
    )
    monkeypatch.undo()
    _check_failed_command(result)
    assert not (tmp_path / "fresh").exists()
    assert _models(tmp_path) == [] and not _hidden(tmp_path)
