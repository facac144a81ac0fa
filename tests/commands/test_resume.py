"""Tests for predict --resume: an interrupted predict into Zarr keeps the blocks written whole, and a run with --resume
writes only the others, to the result an uninterrupted run gives."""

import json
import logging
import os
import shutil
import signal

import numpy as np
import pytest
import zarr

from sparseseg import io
from sparseseg.cli import app as cli
from sparseseg.cli import models
from sparseseg.commands import workflows
from sparseseg.errors import InputError, Interrupted
from sparseseg.io import ome_zarr, partial
from sparseseg.method import streaming

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TARGETS = ["seg.zarr", "seg.ome.zarr", "image.ome.zarr/labels/seg"]


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks and chunks of 8 x 16 x 16 voxels: the 12 x 24 x 24 volume is cut into 8 blocks."""

    def chunks(shape):
        return (1,) * (len(shape) - 3) + tuple(min(n, c) for n, c in zip(shape[-3:], (8, 16, 16)))

    monkeypatch.setattr(streaming, "BLOCK_BUDGET", 1.0)
    monkeypatch.setattr("sparseseg.commands.outputs.output_chunks", lambda model, shape: chunks(shape))
    monkeypatch.setattr(ome_zarr, "_default_chunks", chunks)  # the image that labels are written into


@pytest.fixture
def counted(monkeypatch):
    """``counted.calls``: how many blocks the network was run on since the fixture was made."""
    real = streaming.block_probabilities

    def count(*args, **kwargs):
        count.calls += 1
        return real(*args, **kwargs)

    count.calls = 0
    monkeypatch.setattr(streaming, "block_probabilities", count)
    return count


def _stop_after(blocks):
    """A progress callback that presses Ctrl-C once ``blocks`` blocks are written."""

    def progress(done, total):
        progress.calls += 1
        if progress.calls == blocks:
            raise KeyboardInterrupt

    progress.calls = 0
    return progress


def _volume(trained, tmp_path, target):
    """The volume to predict for ``target``: the TIFF, or (for labels into an image) the volume as an OME-Zarr image."""
    if not target.startswith("image"):
        return trained.volume
    return io.write_volume(tmp_path / "image.ome.zarr", trained.image)


def _predict(trained, tmp_path, target, volume, progress=None, resume=False):
    outputs = workflows.Outputs(probabilities=tmp_path / "prob.zarr")
    options = workflows.PredictOptions(outputs=outputs, device="cpu", resume=resume)
    return workflows.predict(trained.model, [volume], tmp_path / target, options, progress)


def _labels(path):
    node = zarr.open(str(path), mode="r")
    return node["0"][...] if isinstance(node, zarr.Group) else node[...]


@pytest.fixture
def reference(trained, tmp_path_factory, small_blocks):
    """Labels and probabilities of an uninterrupted run, in the same blocks."""
    folder = tmp_path_factory.mktemp("reference")
    _predict(trained, folder, "seg.zarr", trained.volume)
    return _labels(folder / "seg.zarr"), _labels(folder / "prob.zarr")


@pytest.mark.parametrize("target", TARGETS)
def test_interrupted_predict_is_resumed_to_the_uninterrupted_result(trained, tmp_path, target, reference, counted):
    volume = _volume(trained, tmp_path, target)
    with pytest.raises(Interrupted) as caught:
        _predict(trained, tmp_path, target, volume, progress=_stop_after(3))
    assert (caught.value.done, caught.value.total) == (3, 8) and len(caught.value.folders) == 2
    final = tmp_path / target
    assert not final.exists() and not (tmp_path / "prob.zarr").exists()  # nothing looks finished
    for folder in caught.value.folders:
        assert os.path.basename(folder).endswith(".partial")
        assert len(os.listdir(os.path.join(folder, partial.DONE_DIR))) == 3
    counted.calls = 0
    _predict(trained, tmp_path, target, volume, resume=True)
    assert counted.calls == 8 - 3  # the blocks kept were not predicted again
    np.testing.assert_array_equal(_labels(final), reference[0])
    np.testing.assert_array_equal(_labels(tmp_path / "prob.zarr"), reference[1])
    left = [p for p in final.parent.rglob("*") if ".partial" in p.name or p.name.startswith(".sparseseg")]
    assert left == [] and not list(tmp_path.glob(".*"))  # no partial folder, no marker, no key in the outputs


def test_a_block_written_but_not_marked_is_written_again(trained, tmp_path, reference, counted, monkeypatch):
    real = partial.PartialSink.mark

    def mark(self, zyx):  # Ctrl-C after the third block's data, before its markers
        if mark.calls == 4:
            raise KeyboardInterrupt
        mark.calls += 1
        real(self, zyx)

    mark.calls = 0
    monkeypatch.setattr(partial.PartialSink, "mark", mark)
    with pytest.raises(Interrupted) as caught:
        _predict(trained, tmp_path, "seg.zarr", trained.volume)
    assert caught.value.done == 2  # the labels and probabilities of two blocks marked, the third written unmarked
    monkeypatch.setattr(partial.PartialSink, "mark", real)
    counted.calls = 0
    _predict(trained, tmp_path, "seg.zarr", trained.volume, resume=True)
    assert counted.calls == 6
    np.testing.assert_array_equal(_labels(tmp_path / "seg.zarr"), reference[0])


def test_another_model_does_not_take_up_the_output(trained, tmp_path, small_blocks, listing):
    with pytest.raises(Interrupted):
        _predict(trained, tmp_path, "seg.zarr", trained.volume, progress=_stop_after(1))
    other = tmp_path / "other_model"
    shutil.copytree(trained.model, other)
    meta = json.loads((other / "config.json").read_text())
    meta["class_offsets"] = [0.0, 0.5, 0.0]
    (other / "config.json").write_text(json.dumps(meta))
    before = listing(tmp_path)
    with pytest.raises(InputError, match="model") as caught:
        workflows.predict(
            other, [trained.volume], tmp_path / "seg.zarr", workflows.PredictOptions(device="cpu", resume=True)
        )
    assert caught.value.param == "resume"
    assert listing(tmp_path) == before  # the partial output is left as it was


def test_an_interrupt_before_the_first_block_keeps_nothing(trained, tmp_path, small_blocks, monkeypatch, listing):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(streaming, "block_probabilities", interrupted)
    before = listing(tmp_path)
    with pytest.raises(KeyboardInterrupt) as caught:
        _predict(trained, tmp_path, "seg.zarr", trained.volume)
    assert not isinstance(caught.value, Interrupted)
    assert listing(tmp_path) == before


def test_cli_says_how_to_resume_and_resume_finishes(trained, tmp_path, reference, monkeypatch, run, one_json):
    real = models.BlockProgress.__call__

    def call(self, done, total):
        real(self, done, total)
        raise KeyboardInterrupt

    monkeypatch.setattr(models.BlockProgress, "__call__", call)
    args = ["predict", trained.model, trained.volume, "-o", tmp_path / "seg.zarr", "--device", "cpu"]
    result = run(*args)
    assert result.exit_code == 130, result.output
    line = result.stderr.strip().splitlines()[-1]  # after the progress bar: one line
    assert line.startswith("interrupted: 1 of 8 blocks") and "--resume" in line and ".seg.zarr." in line, line
    assert "Traceback" not in result.output
    monkeypatch.setattr(models.BlockProgress, "__call__", real)
    summary = one_json(run(*args, "--resume", "--json"))
    assert summary["output"] == [str(tmp_path / "seg.zarr")]
    np.testing.assert_array_equal(_labels(tmp_path / "seg.zarr"), reference[0])


def test_sigterm_is_taken_as_ctrl_c_while_predicting():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), cli.sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_run_without_resume_says_that_a_kept_output_is_there(trained, tmp_path, small_blocks, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("sparseseg"), "handlers", [caplog.handler])  # the CLI's may stand there
    with pytest.raises(Interrupted) as caught:
        _predict(trained, tmp_path, "seg.zarr", trained.volume, progress=_stop_after(1))
    _predict(trained, tmp_path, "seg.zarr", trained.volume)
    assert "--resume would go on" in caplog.text
    assert all(os.path.isdir(f) for f in caught.value.folders)  # left as it was


def test_a_zarr_output_is_chunked_in_whole_steps_of_the_model_windows(trained, tmp_path):
    from sparseseg.method.core import output_chunks
    from sparseseg.method.modelfolder import load_model

    workflows.predict(trained.model, [trained.volume], tmp_path / "seg.zarr", workflows.PredictOptions(device="cpu"))
    chunks = zarr.open_array(str(tmp_path / "seg.zarr"), mode="r").chunks
    assert chunks == output_chunks(load_model(trained.model), trained.shape[-3:])
