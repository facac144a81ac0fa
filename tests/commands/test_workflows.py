"""Tests for the train, predict, suggest, preview and sweep commands, model folders, warm starts and Ctrl-C.

Every training here is tiny (a few steps of a 4-channel-wide U-Net on a 12x24x24 volume). Torch
runs on one thread while these tests run: on a busy 2-core machine two threads that wait for each
other make a step 100x slower.
"""

import json
import math
import os
import pickle
import shutil
import signal

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from sparseseg import __version__, io
from sparseseg.cli import models
from sparseseg.commands import synthetic, workflows
from sparseseg.config import Config
from sparseseg.method import annotation as L
from sparseseg.method import core, fitting, modelfolder
from sparseseg.method.training import TrainLog
from sparseseg.method.uncertainty import plane_uncertainty, rank_planes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stop_at(step):
    """A progress callback that presses Ctrl-C after ``step`` training steps; ``.calls`` counts its calls."""

    def progress(iteration, loss, elapsed):
        progress.calls += 1
        if iteration >= step:
            raise KeyboardInterrupt

    progress.calls = 0
    return progress


# --- model folders -------------------------------------------------------------------------


def test_densify_save_model_json(trained, one_json):
    summary = one_json(trained.result)
    assert summary["output"] == [str(p) for p in (trained.seg, trained.prob, trained.model)]
    assert summary["classes"] == trained.classes and summary["iterations"] == 3
    assert "training on cpu" in trained.result.stderr  # the log goes to stderr, not stdout
    seg = io.read_labels(trained.seg).data
    assert seg.shape == trained.shape and seg.dtype == np.uint8
    assert set(np.unique(seg)) <= set(trained.classes)


def test_model_folder_holds_config_and_weights(trained, strict_json):
    files = sorted(p.name for p in trained.model.iterdir())
    assert files in (["config.json", "weights.pt"], ["config.json", "forest.npz", "weights.pt"])
    meta = strict_json((trained.model / "config.json").read_text())
    assert meta["sparseseg_version"] == __version__
    assert meta["in_channels"] == 1
    assert meta["classes"] == trained.classes
    assert meta["pools"] == [[1, 2, 2], [2, 2, 2], [2, 2, 2]]  # z is twice as coarse: no pooling along it first
    assert isinstance(meta["normalisation"], str) and "percentile" in meta["normalisation"]
    config = meta["config"]
    assert config["spacing"] == [2.0, 1.0, 1.0]
    assert config["base"] == 4 and config["patch"] == [8, 16, 16] and config["seed"] == 0
    assert config["iterations"] == 3 and config["device"] == "cpu" and config["calibrate"] is True
    assert len(meta["class_offsets"]) == len(trained.classes)  # fitted on the held-out planes
    assert (meta["forest"] == "forest.npz") == ("forest.npz" in files) and 0 <= meta["blend"] <= 1
    assert set(meta["estimate"]["held_out_planes"]) == {"z", "y", "x"} and 0 <= meta["estimate"]["iou"] <= 1
    said = meta["estimate"]  # the held-out planes' score, and the forest's correction where a forest was fitted
    assert said["iou"] == pytest.approx(said["held_out_iou"] + said["correction"], abs=2e-4)


def test_weights_are_a_plain_tensor_state_dict(trained):
    state = torch.load(trained.model / "weights.pt", map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and state
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    model = modelfolder.load_model(trained.model)
    expected = model.network.state_dict()
    assert state.keys() == expected.keys()
    for name, tensor in state.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)


def test_load_model_round_trip_predicts_the_same(trained):
    model = modelfolder.load_model(trained.model)
    np.testing.assert_array_equal(model.classes, trained.classes)
    assert model.in_channels == 1 and model.config.spacing == (2.0, 1.0, 1.0) and model.config.patch == (8, 16, 16)
    assert not model.network.training
    segmentation = core.segment(model, trained.image[None])
    np.testing.assert_array_equal(segmentation.labels, io.read_labels(trained.seg).data)
    scaled = np.round(segmentation.probabilities * 255).astype(np.uint8)
    np.testing.assert_array_equal(scaled, io.read_volume(trained.prob).data)


def test_densify_refuses_an_existing_model_folder(trained, tmp_path, listing, run, bad_input, train_args):
    model = tmp_path / "model"
    shutil.copytree(trained.model, model)
    before = listing(tmp_path)
    result = run(
        "densify",
        trained.volume,
        "--slices",
        trained.sparse,
        "-o",
        tmp_path / "seg.tif",
        "--save-model",
        model,
        *train_args,
    )
    bad_input(result, "model", "--overwrite")
    assert listing(tmp_path) == before


def test_densify_overwrites_a_model_folder_with_overwrite(trained, tmp_path, run, train_args):
    model = tmp_path / "model"
    shutil.copytree(trained.model, model)
    (model / "config.json").write_text(json.dumps({**json.loads((model / "config.json").read_text()), "marker": 1}))
    result = run(
        "densify",
        trained.volume,
        "--slices",
        trained.sparse,
        "-o",
        tmp_path / "seg.tif",
        "--save-model",
        model,
        *train_args,
        "--iterations",
        "1",
        "--overwrite",
        "-q",
    )
    assert result.exit_code == 0, result.output
    assert "marker" not in json.loads((model / "config.json").read_text())
    assert modelfolder.load_model(model).in_channels == 1


class _RunsCode:
    """Unpickling this creates ``marker``: a weights file that would run code when opened."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _no_folder(folder, trained):
    return folder / "missing", ["missing", "no such model folder"]


def _empty_folder(folder, trained):
    (folder / "empty").mkdir()
    return folder / "empty", ["empty", "not a sparseseg model folder", "config.json"]


def _a_file(folder, trained):
    (folder / "file.txt").write_text("x")
    return folder / "file.txt", ["file.txt", "no such model folder"]


def _broken_json(folder, trained):
    shutil.copytree(trained.model, folder / "m")
    (folder / "m" / "config.json").write_text("{not json")
    return folder / "m", ["config.json", "JSON"]


def _no_weights(folder, trained):
    shutil.copytree(trained.model, folder / "m")
    (folder / "m" / "weights.pt").unlink()
    return folder / "m", ["weights.pt", "no such file"]


def _garbage_weights(folder, trained):
    shutil.copytree(trained.model, folder / "m")
    (folder / "m" / "weights.pt").write_bytes(b"not a torch file")
    return folder / "m", ["weights.pt", "cannot read weights"]


def _code_in_weights(folder, trained):
    shutil.copytree(trained.model, folder / "m")
    torch.save({"w": _RunsCode(folder / "ran")}, folder / "m" / "weights.pt")
    return folder / "m", ["weights.pt", "cannot read weights"]


def _missing_key(folder, trained):
    shutil.copytree(trained.model, folder / "m")
    meta = json.loads((folder / "m" / "config.json").read_text())
    del meta["classes"]
    (folder / "m" / "config.json").write_text(json.dumps(meta))
    return folder / "m", ["config.json", "'classes'", "missing"]


def _weights_of_another_shape(folder, trained):
    shutil.copytree(trained.model, folder / "m")
    meta = json.loads((folder / "m" / "config.json").read_text())
    meta["config"]["base"] *= 2  # a network twice as wide as its weights
    (folder / "m" / "config.json").write_text(json.dumps(meta))
    return folder / "m", ["weights.pt", "do not match config.json", "size mismatch"]


NOT_A_MODEL = [
    pytest.param(_no_folder, id="missing"),
    pytest.param(_empty_folder, id="empty-folder"),
    pytest.param(_a_file, id="a-file"),
    pytest.param(_broken_json, id="broken-config"),
    pytest.param(_no_weights, id="no-weights"),
    pytest.param(_garbage_weights, id="garbage-weights"),
    pytest.param(_code_in_weights, id="weights-that-run-code"),
    pytest.param(_missing_key, id="config-without-classes"),
    pytest.param(_weights_of_another_shape, id="weights-do-not-fit"),
]


@pytest.mark.parametrize("case", NOT_A_MODEL)
def test_predict_refuses_what_is_not_a_model(case, trained, tmp_path, listing, run):
    folder, needles = case(tmp_path, trained)
    before = listing(tmp_path)
    result = run("predict", folder, trained.volume, "-o", tmp_path / "out.tif")
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    assert result.stderr.startswith("error: ")
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    assert listing(tmp_path) == before  # nothing written, and no code ran
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    "case",
    [pytest.param(p.values[0], id=p.id) for p in NOT_A_MODEL],
)
def test_not_a_model_message_is_one_line(case, trained, tmp_path, run, bad_input):
    folder, needles = case(tmp_path, trained)
    bad_input(run("predict", folder, trained.volume, "-o", tmp_path / "out.tif"), *needles)


# --- train ---------------------------------------------------------------------------------


def test_train_two_volumes(files, tmp_path, run, one_json, bad_input, train_args):
    image, truth = synthetic.blobs((16, 32, 32), seed=3)
    sparse, _ = synthetic.sparsify(truth, 2)
    tifffile.imwrite(tmp_path / "v2.tif", image)
    tifffile.imwrite(tmp_path / "s2.tif", sparse)
    folder = tmp_path / "model"
    second = f"{tmp_path / 'v2.tif'}:{tmp_path / 's2.tif'}"
    result = run(
        "train", "--pair", f"{files.volume}:{files.sparse}", "--pair", second, "-o", folder, *train_args, "--json"
    )
    summary = one_json(result)
    assert summary["model"] == str(folder)
    assert summary["classes"] == [0, 1, 2] and summary["iterations"] == 3 and summary["stopped_by"] == "iterations"
    assert "sparse.tif" in result.stderr and "s2.tif" in result.stderr  # both label files were read
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "weights.pt"]
    model = modelfolder.load_model(folder)
    assert model.in_channels == 1 and model.classes.tolist() == [0, 1, 2]
    assert model.offsets.shape == (3,)  # calibrated on the annotated voxels of both volumes
    assert "calibrate" in result.stderr
    again = run("train", "--pair", f"{files.volume}:{files.sparse}", "-o", folder, *train_args)
    bad_input(again, "model", "--overwrite")


def test_train_two_channels_then_predict_needs_two_channels(files, tmp_path, listing, run, bad_input, train_args):
    second = tmp_path / "second.tif"
    tifffile.imwrite(second, -tifffile.imread(files.volume))
    folder = tmp_path / "model"
    result = run("train", "--pair", f"{files.volume},{second}:{files.sparse}", "-o", folder, *train_args, "-q")
    assert result.exit_code == 0, result.output
    meta = json.loads((folder / "config.json").read_text())
    assert meta["in_channels"] == 2
    before = listing(tmp_path)
    one = run("predict", folder, files.volume, "-o", tmp_path / "seg.tif")
    line = bad_input(one, "channel", "2")
    assert "volume.tif" in line or str(folder) in line
    assert listing(tmp_path) == before
    two = run("predict", folder, files.volume, second, "-o", tmp_path / "seg.tif", "-q")
    assert two.exit_code == 0, two.output
    assert io.read_labels(tmp_path / "seg.tif").data.shape == files.shape


@pytest.mark.parametrize(
    "pair", ["{v}", "{v}:", ":{s}", "{v}{s}"], ids=["no-colon", "no-labels", "no-volume", "no-colon-2"]
)
def test_train_refuses_bad_pair_syntax(files, pair, listing, run, bad_input, train_args):
    pair = pair.format(v=files.volume.name, s=files.sparse.name)
    before = listing(files.folder)
    result = run("train", "--pair", pair, "-o", files.folder / "model", *train_args)
    bad_input(result, "--pair", "VOLUME")
    assert listing(files.folder) == before


@pytest.mark.parametrize(
    "pair, volumes, labels",
    [
        ("a.tif:b.tif", ["a.tif"], "b.tif"),
        ("f.nii.gz,t.nii.gz:s.nii.gz", ["f.nii.gz", "t.nii.gz"], "s.nii.gz"),
        ("a.h5:/raw:b.h5:/labels", ["a.h5:/raw"], "b.h5:/labels"),
        ("a.h5:/raw,a.h5:/raw2:a.hdf5:/g/labels", ["a.h5:/raw", "a.h5:/raw2"], "a.hdf5:/g/labels"),
        ("a.h5:b.tif", ["a.h5"], "b.tif"),  # an HDF5 file of one dataset, then labels
        ("v.zarr/raw:a.H5:/labels", ["v.zarr/raw"], "a.H5:/labels"),
    ],
)
def test_pair_splits_volumes_from_labels_past_hdf5_datasets(pair, volumes, labels):
    assert models._parse_pair(pair) == (volumes, labels)


@pytest.mark.parametrize("pair", ["a.h5:/raw", "a.tif,:b.tif", "a.h5:/raw:"])
def test_pair_without_labels_is_refused(pair):
    with pytest.raises(core.InputError, match="VOLUME"):
        models._parse_pair(pair)


def test_train_on_hdf5_datasets(files, run, one_json, train_args):
    import h5py

    h5 = files.folder / "em.h5"
    with h5py.File(h5, "w") as f:
        f["raw"] = tifffile.imread(files.volume)
        f["sparse"] = tifffile.imread(files.sparse)
    summary = one_json(
        run("train", "--pair", f"{h5}:/raw:{h5}:/sparse", "-o", files.folder / "model", *train_args, "--json")
    )
    assert summary["classes"] == [0, 1, 2]


def test_train_refuses_pairs_with_different_channel_counts(files, listing, run, bad_input, train_args):
    second = files.folder / "second.tif"
    tifffile.imwrite(second, tifffile.imread(files.volume))
    before = listing(files.folder)
    result = run(
        "train",
        "--pair",
        f"{files.volume}:{files.sparse}",
        "--pair",
        f"{files.volume},{second}:{files.sparse}",
        "-o",
        files.folder / "model",
        *train_args,
    )
    bad_input(result, "channels", "the first volume has 1")
    assert listing(files.folder) == before


def test_train_needs_a_pair(files, run, train_args):
    result = run("train", "-o", files.folder / "model", *train_args)
    assert result.exit_code == 2 and "--pair" in result.output
    assert not (files.folder / "model").exists()


# --- predict -------------------------------------------------------------------------------


def test_predict_writes_segmentation_probabilities_and_preview(trained, tmp_path, run, one_json):
    out, prob, png = tmp_path / "seg.tif", tmp_path / "p.tif", tmp_path / "seg.png"
    result = run(
        "predict", trained.model, trained.volume, "-o", out, "--probabilities", prob, "--preview", png, "--json"
    )
    summary = one_json(result)
    assert summary["output"] == [str(out), str(prob), str(png)]
    # one sliding-window pass per annotated axis, each window as deep as the training patch across that axis
    assert summary["classes"] == trained.classes and len(summary["windows"]) == sum(
        bool(v) for v in trained.planes.values()
    )
    assert all(len(w) == 3 for w in summary["windows"])
    seg = io.read_labels(out).data
    assert seg.shape == trained.shape and seg.dtype == np.uint8
    assert set(np.unique(seg)) <= set(trained.classes)
    np.testing.assert_array_equal(seg, io.read_labels(trained.seg).data)  # the model that densify used
    probabilities = io.read_volume(prob).data
    assert probabilities.shape == (3,) + trained.shape and probabilities.dtype == np.uint8
    np.testing.assert_array_equal(probabilities, io.read_volume(trained.prob).data)
    with Image.open(png) as picture:
        assert picture.format == "PNG" and picture.mode == "RGB" and min(picture.size) > 16


def test_predict_overlap_sets_how_far_the_windows_overlap_across_the_planes(trained, tmp_path, run, monkeypatch):
    from sparseseg.method import streaming

    seen, real = [], streaming.predict_probabilities

    def spy(network, image, window, device, overlaps, **kwargs):
        seen.append(tuple(overlaps))
        return real(network, image, window, device, overlaps, **kwargs)

    monkeypatch.setattr(streaming, "predict_probabilities", spy)
    run("predict", trained.model, trained.volume, "-o", tmp_path / "default.tif")
    default, seen[:] = list(seen), []
    run("predict", trained.model, trained.volume, "-o", tmp_path / "less.tif", "--overlap", "0.3")
    wide = modelfolder.load_model(trained.model).config.wide_overlap
    assert default and all(0.3 not in o for o in default)
    # each pass: 0.3 across its planes (one axis), the model's own overlap along the two others
    assert len(seen) == len(default) and all(o.count(0.3) == 1 and o.count(wide) == 2 for o in seen)


def test_predict_uint16_class_values(files, tmp_path, run, one_json, train_args):
    truth = np.array([0, 7, 1000], np.uint16)[tifffile.imread(files.truth)]
    sparse, _ = synthetic.sparsify(truth, 2)
    tifffile.imwrite(tmp_path / "s16.tif", sparse)
    folder = tmp_path / "model"
    assert (
        run("train", "--pair", f"{files.volume}:{tmp_path / 's16.tif'}", "-o", folder, *train_args, "-q").exit_code == 0
    )
    summary = one_json(run("predict", folder, files.volume, "-o", tmp_path / "seg.nii.gz", "--json"))
    assert summary["classes"] == [0, 7, 1000]
    seg = io.read_labels(tmp_path / "seg.nii.gz").data
    assert seg.shape == files.shape and seg.dtype == np.uint16 and set(np.unique(seg)) <= {0, 7, 1000}


def test_predict_refuses_an_existing_output(trained, tmp_path, run, bad_input):
    out = tmp_path / "seg.tif"
    out.write_bytes(b"old")
    bad_input(run("predict", trained.model, trained.volume, "-o", out), "seg.tif", "--overwrite")
    assert out.read_bytes() == b"old"
    png = tmp_path / "p.png"
    png.write_bytes(b"old")
    bad_input(run("predict", trained.model, trained.volume, "-o", tmp_path / "new.tif", "--preview", png), "p.png")
    assert not (tmp_path / "new.tif").exists()


def test_predict_refuses_a_bad_device(trained, tmp_path, run, bad_input):
    bad_input(run("predict", trained.model, trained.volume, "-o", tmp_path / "seg.tif", "--device", "tpu"), "device")


# --- warm start ----------------------------------------------------------------------------


def test_warm_start_with_zero_iterations_keeps_the_network_and_predicts_like_its_model(
    trained, tmp_path, listing, run, one_json
):
    before = listing(trained.model)
    out, again = tmp_path / "seg.tif", tmp_path / "model"
    result = run(
        "densify",
        trained.volume,
        "--slices",
        trained.sparse,
        "-o",
        out,
        "--init",
        trained.model,
        "--iterations",
        "0",
        "--patch",
        "8,16,16",
        "--device",
        "cpu",
        "--seed",
        "0",
        "--json",
        "--save-model",
        again,
    )
    summary = one_json(result)  # final_loss is NaN after 0 steps: it must come out as null
    assert summary["iterations"] == 0 and summary["final_loss"] is None
    assert summary["classes"] == trained.classes
    assert summary["parameters"] == modelfolder.load_model(trained.model).parameters  # --base came from the model
    saved, kept = modelfolder.load_model(trained.model), modelfolder.load_model(again)
    for name, weights in saved.network.state_dict().items():  # no step taken: the network is the saved one
        torch.testing.assert_close(kept.network.state_dict()[name], weights)
    # the blend and offsets are chosen again on the held-out planes; the model saved with them predicts the same labels
    assert run("predict", again, trained.volume, "-o", tmp_path / "again.tif", "--device", "cpu").exit_code == 0
    np.testing.assert_array_equal(io.read_labels(out).data, io.read_labels(tmp_path / "again.tif").data)
    assert listing(trained.model) == before


def test_warm_start_starts_from_the_saved_weights(trained, monkeypatch):
    """The network handed to training is the saved one (same weights), not a fresh one."""
    seen = {}

    def fake_train(network, data, plan, progress=None):
        seen["state"] = {k: v.clone() for k, v in network.state_dict().items()}
        return TrainLog(iterations=0)

    monkeypatch.setattr(fitting, "train", fake_train)
    init = modelfolder.load_model(trained.model)
    annotation, _ = L.read_annotation(io.read_labels(trained.sparse).data)
    model, _ = fitting.fit([trained.image[None]], [annotation], Config(device="cpu", seed=1), init=init)
    saved = torch.load(trained.model / "weights.pt", weights_only=True)
    for name, tensor in saved.items():
        torch.testing.assert_close(seen["state"][name], tensor, rtol=0, atol=0)
    assert model.config.base == 4 and model.config.spacing == (2.0, 1.0, 1.0)


def test_warm_start_keeps_the_model_classes(trained, tmp_path, run, one_json, train_args):
    """Labels holding a subset of the model's classes: the new model still knows all of them."""
    sparse = io.read_labels(trained.sparse).data.copy()
    sparse[sparse == 200] = 255
    tifffile.imwrite(tmp_path / "fewer.tif", sparse)
    result = run(
        "densify",
        trained.volume,
        "--slices",
        tmp_path / "fewer.tif",
        "-o",
        tmp_path / "seg.tif",
        "--init",
        trained.model,
        "--save-model",
        tmp_path / "m2",
        *train_args,
        "--iterations",
        "2",
        "--json",
    )
    summary = one_json(result)
    assert summary["classes"] == trained.classes and summary["iterations"] == 2
    assert json.loads((tmp_path / "m2" / "config.json").read_text())["classes"] == trained.classes


def test_warm_start_refuses_an_unknown_class(trained, tmp_path, listing, run, bad_input, train_args):
    sparse = io.read_labels(trained.sparse).data.copy()
    sparse[sparse == 10] = 7
    tifffile.imwrite(tmp_path / "other.tif", sparse)
    before = listing(tmp_path)
    result = run(
        "densify",
        trained.volume,
        "--slices",
        tmp_path / "other.tif",
        "-o",
        tmp_path / "seg.tif",
        "--init",
        trained.model,
        *train_args,
    )
    bad_input(result, "--init", "[7]")
    assert listing(tmp_path) == before


def test_warm_start_refuses_another_channel_count(trained, tmp_path, listing, run, bad_input, train_args):
    before = listing(tmp_path)
    result = run(
        "densify",
        trained.volume,
        trained.volume,
        "--slices",
        trained.sparse,
        "-o",
        tmp_path / "seg.tif",
        "--init",
        trained.model,
        *train_args,
    )
    bad_input(result, "--init", "channel")
    assert listing(tmp_path) == before


# --- suggest -------------------------------------------------------------------------------


def _probabilities(shape):
    """Confident everywhere, uniform (most uncertain) on z=4 (annotated), z=5 (next to it) and y=12 (free)."""
    probs = np.empty((3,) + shape, np.float32)
    probs[0], probs[1], probs[2] = 0.9, 0.05, 0.05
    for where in [np.s_[:, 4], np.s_[:, 5], np.s_[:, :, 12]]:
        probs[where] = 1 / 3
    return np.round(probs * 255).astype(np.uint8)


def _check_suggestions(suggestions, planes, top):
    assert len(suggestions) == top
    values = [s["uncertainty"] for s in suggestions]
    assert values == sorted(values, reverse=True) and all(0 <= v <= 1 + 1e-6 for v in values)
    for i, s in enumerate(suggestions):
        assert set(s) == {"axis", "index", "uncertainty"}
        assert s["index"] not in planes[s["axis"]]  # never an annotated plane
        for t in planes[s["axis"]] + [o["index"] for o in suggestions[:i] if o["axis"] == s["axis"]]:
            assert abs(s["index"] - t) >= 2  # default distance on these short axes


def test_suggest_from_probabilities_json(files, listing, run, one_json):
    prob = files.folder / "p.tif"
    io.write_volume(prob, _probabilities(files.shape))
    before = listing(files.folder)
    result = run("suggest", files.volume, "--probabilities", prob, "--slices", files.sparse, "--top", "3", "--json")
    data = one_json(result)
    assert list(data) == ["suggestions"]
    _check_suggestions(data["suggestions"], files.planes, 3)
    best = data["suggestions"][0]
    assert (best["axis"], best["index"]) == ("y", 12)  # z=4 is annotated, z=5 is next to it
    assert best["uncertainty"] == pytest.approx(1, abs=1e-4)
    assert result.stderr == ""
    assert listing(files.folder) == before


def test_suggest_without_slices_suggests_annotated_planes_too(files, run, one_json):
    prob = files.folder / "p.tif"
    io.write_volume(prob, _probabilities(files.shape))
    data = one_json(run("suggest", files.volume, "--probabilities", prob, "--top", "2", "--json"))
    assert {(s["axis"], s["index"]) for s in data["suggestions"]} == {("z", 4), ("y", 12)}  # equally uncertain


def test_suggest_table(files, run):
    prob = files.folder / "p.tif"
    io.write_volume(prob, _probabilities(files.shape))
    result = run("suggest", files.volume, "--probabilities", prob, "--slices", files.sparse, "--top", "3")
    assert result.exit_code == 0, result.output
    assert "uncertainty" in result.stdout and "12" in result.stdout
    assert "y=12" in result.stderr and "--init" in result.stderr  # the hint goes to stderr


def test_suggest_with_a_model(trained, run, one_json):
    result = run(
        "suggest",
        trained.volume,
        "--model",
        trained.model,
        "--slices",
        trained.sparse,
        "--top",
        "3",
        "--device",
        "cpu",
        "--json",
    )
    data = one_json(result)
    _check_suggestions(data["suggestions"], trained.planes, 3)
    model = modelfolder.load_model(trained.model)
    expected = rank_planes(plane_uncertainty(core.segment(model, trained.image[None]).probabilities), trained.planes, 3)
    assert [(s["axis"], s["index"]) for s in data["suggestions"]] == [(s.axis, s.index) for s in expected]
    for got, want in zip(data["suggestions"], expected):
        assert got["uncertainty"] == pytest.approx(want.uncertainty, rel=1e-6)


def test_suggest_needs_a_model_or_probabilities(files, run, bad_input):
    bad_input(run("suggest", files.volume, "--slices", files.sparse), "model folder", "probabilities")


def test_suggest_refuses_top_zero(files, run, bad_input):
    prob = files.folder / "p.tif"
    io.write_volume(prob, _probabilities(files.shape))
    bad_input(run("suggest", files.volume, "--probabilities", prob, "--top", "0"), "--top")


def test_suggest_refuses_probabilities_of_another_shape(files, run, bad_input):
    prob = files.folder / "p.tif"
    io.write_volume(prob, _probabilities(files.shape)[:, :-1])
    bad_input(run("suggest", files.volume, "--probabilities", prob), "p.tif", "probabilities")
    bad_input(run("suggest", files.volume, "--probabilities", files.truth), "truth.tif", "probabilities")


def test_suggest_refuses_slices_of_another_shape(files, run, bad_input):
    prob = files.folder / "p.tif"
    io.write_volume(prob, _probabilities(files.shape))
    tifffile.imwrite(files.folder / "small.tif", tifffile.imread(files.sparse)[1:])
    bad_input(
        run("suggest", files.volume, "--probabilities", prob, "--slices", files.folder / "small.tif"),
        "small.tif",
        "differs",
    )


def test_suggest_refuses_one_channel_probabilities(files, run, bad_input):
    prob = files.folder / "p.tif"
    io.write_volume(prob, _probabilities(files.shape)[:1])
    bad_input(run("suggest", files.volume, "--probabilities", prob), "p.tif")


def test_suggest_refuses_probabilities_with_nan(files, run, bad_input):
    prob = files.folder / "p.tif"
    probs = _probabilities(files.shape).astype(np.float32) / 255
    probs[:, 0, 0, 0] = np.nan
    io.write_volume(prob, probs)
    bad_input(run("suggest", files.volume, "--probabilities", prob, "--json"), "p.tif", "NaN")


# --- preview -------------------------------------------------------------------------------


def test_preview_writes_a_png(files, run):
    out = files.folder / "x.png"
    result = run("preview", files.volume, files.sparse, "-o", out)
    assert result.exit_code == 0, result.output
    assert str(out) in result.stdout
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.mode == "RGB"
        default = np.asarray(picture)
    moved = files.folder / "moved.png"
    assert run("preview", files.volume, files.sparse, "-o", moved, "--centre", "4,8,8").exit_code == 0
    with Image.open(moved) as picture:
        assert not np.array_equal(np.asarray(picture), default)
    assert run("preview", files.volume, "-o", files.folder / "plain.png").exit_code == 0  # labels are optional
    assert (files.folder / "plain.png").is_file()


@pytest.mark.parametrize(
    "centre, needle",
    [
        ("12,0,0", "centre"),
        ("0,0,24", "centre"),
        ("-1,0,0", "centre"),
        ("1,2", "--centre"),
        ("a,b,c", "--centre"),
        ("1,2,3,4", "--centre"),
        ("", "--centre"),
    ],
    ids=["z-too-large", "x-too-large", "negative", "two-values", "not-numbers", "four-values", "empty"],
)
def test_preview_refuses_a_bad_centre(files, centre, needle, listing, run, bad_input):
    before = listing(files.folder)
    bad_input(run("preview", files.volume, files.sparse, "-o", files.folder / "x.png", "--centre", centre), needle)
    assert listing(files.folder) == before


def test_preview_refuses_an_existing_png(files, run, bad_input):
    out = files.folder / "x.png"
    out.write_bytes(b"old")
    bad_input(run("preview", files.volume, files.sparse, "-o", out), "x.png", "--overwrite")
    assert out.read_bytes() == b"old"
    assert run("preview", files.volume, files.sparse, "-o", out, "--overwrite").exit_code == 0
    with Image.open(out) as picture:
        assert picture.format == "PNG"


def test_preview_refuses_other_outputs_and_shapes(files, listing, run, bad_input):
    before = listing(files.folder)
    bad_input(run("preview", files.volume, files.sparse, "-o", files.folder / "x.tif"), "x.tif", "unsupported")
    tifffile.imwrite(files.folder / "small.tif", tifffile.imread(files.sparse)[1:])
    before["small.tif"] = (files.folder / "small.tif").read_bytes()
    bad_input(run("preview", files.volume, files.folder / "small.tif", "-o", files.folder / "x.png"), "small.tif")
    assert listing(files.folder) == before


# --- sweep ---------------------------------------------------------------------------------


def test_sweep_writes_a_report(files, run, one_json, train_args):
    report = files.folder / "report"
    result = run(
        "sweep",
        files.volume,
        "--gt",
        files.truth,
        "--planes",
        "1,2",
        "--axes",
        "z",
        "-o",
        report,
        *train_args,
        "--iterations",
        "2",
        "--json",
    )
    data = one_json(result)
    assert [row["planes_per_axis"] for row in data["rows"]] == [1, 2]
    assert data["written"] == [str(report / n) for n in ("sweep.csv", "sweep.json", "sweep.png")]
    assert "training on cpu" in result.stderr
    lines = (report / "sweep.csv").read_text().splitlines()
    assert len(lines) == 3
    assert lines[0].split(",")[:5] == ["planes_per_axis", "seed", "annotated_fraction", "seconds", "mean_fg_iou"]
    assert [line.split(",")[:2] for line in lines[1:]] == [["1", "0"], ["2", "0"]]
    rows = json.loads((report / "sweep.json").read_text())
    assert [r["planes"] for r in rows] == [{"z": [6], "y": [], "x": []}, {"z": [4, 8], "y": [], "x": []}]
    assert [r["offset"] for r in rows] == [None, None]
    assert [r["annotated_fraction"] for r in rows] == pytest.approx([1 / 12, 2 / 12])
    with Image.open(report / "sweep.png") as picture:
        assert picture.format == "PNG" and picture.size == (720, 480)


def test_sweep_repeats_each_plane_count_with_successive_seeds(files, run, one_json, train_args):
    result = run(
        "sweep",
        files.volume,
        "--gt",
        files.truth,
        "--planes",
        "1,2",
        "--axes",
        "z",
        "--repeats",
        "2",
        *train_args,
        "--iterations",
        "1",
        "--seed",
        "5",
        "--json",
    )
    data = one_json(result)
    assert [(r["planes_per_axis"], r["seed"]) for r in data["rows"]] == [(1, 5), (1, 6), (2, 5), (2, 6)]
    assert result.stderr.count("seed 5") == 2 and result.stderr.count("seed 6") == 2
    means = data["means"]
    assert [(m["planes_per_axis"], m["runs"]) for m in means] == [(1, 2), (2, 2)]
    for m, pair in zip(means, (data["rows"][:2], data["rows"][2:])):
        fg = [r["mean_fg_iou"] for r in pair]
        assert m["mean_fg_iou"] == pytest.approx(sum(fg) / 2)
        assert (m["mean_fg_iou_min"], m["mean_fg_iou_max"]) == (min(fg), max(fg))


def test_sweep_stagger_shifts_the_planes_in_each_run(files, run, train_args):
    report = files.folder / "report"
    result = run(
        "sweep",
        files.volume,
        "--gt",
        files.truth,
        "--planes",
        "1",
        "--axes",
        "z",
        "--repeats",
        "2",
        "--stagger",
        "-o",
        report,
        *train_args,
        "--iterations",
        "1",
        "--seed",
        "0",
    )
    assert result.exit_code == 0, result.stderr
    rows = json.loads((report / "sweep.json").read_text())
    assert [r["offset"] for r in rows] == [0.25, 0.75]
    assert [r["planes"]["z"] for r in rows] == [[3], [9]]  # at 0.25 and 0.75 of the 12 planes


def test_sweep_tables_are_whole_in_a_pipe(files, monkeypatch, run, train_args):
    monkeypatch.delenv("COLUMNS", raising=False)
    truth = tifffile.imread(files.truth)
    truth[..., truth.shape[2] // 2 :] *= 2  # classes 0, 1, 2, 4: as many columns as BraTS, wider than 80
    tifffile.imwrite(files.folder / "five.tif", truth)
    result = run(
        "sweep",
        files.volume,
        "--gt",
        files.folder / "five.tif",
        "--planes",
        "1",
        "--axes",
        "z",
        "--repeats",
        "2",
        *train_args,
        "--iterations",
        "1",
    )
    assert result.exit_code == 0, result.stderr
    assert "lowest" in result.stdout and "highest" in result.stdout
    assert "…" not in result.stdout


def test_sweep_refuses_existing_report_files(files, listing, run, bad_input, train_args):
    report = files.folder / "report"
    report.mkdir()
    (report / "sweep.png").write_bytes(b"old")
    before = listing(files.folder)
    result = run("sweep", files.volume, "--gt", files.truth, "--planes", "1", "--axes", "z", "-o", report, *train_args)
    bad_input(result, "sweep", "--overwrite")
    assert listing(files.folder) == before


@pytest.mark.parametrize(
    "option, value, needle",
    [
        ("--planes", "0", "--planes"),
        ("--planes", "a", "--planes"),
        ("--planes", "1,,2", "--planes"),
        ("--planes", "-1", "--planes"),
        ("--axes", "q", "--axes"),
        ("--axes", "zz", "--axes"),
        ("--axes", "", "--axes"),
        ("--repeats", "0", "--repeats"),
    ],
    ids=[
        "planes-0",
        "planes-a",
        "planes-empty-item",
        "planes-negative",
        "axes-q",
        "axes-zz",
        "axes-empty",
        "repeats-0",
    ],
)
def test_sweep_refuses_bad_planes_and_axes(files, option, value, needle, listing, run, bad_input, train_args):
    args = {"--planes": "1", "--axes": "z", option: value}
    before = listing(files.folder)
    result = run(
        "sweep",
        files.volume,
        "--gt",
        files.truth,
        *(x for kv in args.items() for x in kv),
        "-o",
        files.folder / "report",
        *train_args,
    )
    bad_input(result, needle)
    assert listing(files.folder) == before


def test_sweep_refuses_more_planes_than_the_axis_has(files, run, bad_input, train_args):
    result = run("sweep", files.volume, "--gt", files.truth, "--planes", "1,13", "--axes", "z", *train_args)
    bad_input(result, "--planes 13", "12 planes")


def test_sweep_bad_plane_count_writes_nothing(files, listing, run, train_args):
    before = listing(files.folder)
    result = run(
        "sweep",
        files.volume,
        "--gt",
        files.truth,
        "--planes",
        "13",
        "--axes",
        "z",
        "-o",
        files.folder / "report",
        *train_args,
    )
    assert result.exit_code == 2
    assert listing(files.folder) == before


def test_sweep_refuses_a_report_path_that_is_a_file(files, run, bad_input, train_args):
    (files.folder / "report").write_text("x")
    result = run(
        "sweep",
        files.volume,
        "--gt",
        files.truth,
        "--planes",
        "1",
        "--axes",
        "z",
        "-o",
        files.folder / "report",
        *train_args,
    )
    bad_input(result, "report")


def test_sweep_refuses_as_many_planes_as_the_axis_has(files, run, bad_input, train_args):
    result = run("sweep", files.volume, "--gt", files.truth, "--planes", "12", "--axes", "z", *train_args)
    bad_input(result, "--planes 12")


# --- Ctrl-C --------------------------------------------------------------------------------


def test_interrupt_with_partial_writes_the_segmentation(files, tiny_config):
    out = files.folder / "seg.tif"
    progress = _stop_at(2)
    report = workflows.densify([files.volume], files.sparse, out, tiny_config(iterations=5), progress=progress)
    assert report.train_log.stopped_by == "interrupt"
    assert report.train_log.iterations == 2 and progress.calls == 2
    assert report.written == [out]
    np.testing.assert_array_equal(io.read_labels(out).data, report.segmentation.labels)


def test_interrupt_without_partial_writes_nothing(files, tiny_config, listing):
    before = listing(files.folder)
    out = files.folder / "seg.tif"
    progress = _stop_at(2)
    with pytest.raises(KeyboardInterrupt):
        workflows.densify(
            [files.volume],
            files.sparse,
            out,
            tiny_config(iterations=5),
            workflows.DensifyOptions(
                weights_out=files.folder / "w.tif",
                outputs=workflows.Outputs(probabilities=files.folder / "p.tif", preview=files.folder / "p.png"),
                save_model_to=files.folder / "model",
                partial=False,
            ),
            progress,
        )
    assert progress.calls == 2
    assert listing(files.folder) == before  # no output, no model folder, no temporary file
    assert not [name for name in os.listdir(files.folder) if name.startswith(".")]


def _pressing_ctrl_c(function, press=True):
    """``function``, pressing Ctrl-C (SIGINT to this process) before its first run; ``.calls`` holds the arguments of
    each call."""

    def pressed(*args, **kwargs):
        pressed.calls.append(args)
        if press and len(pressed.calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return function(*args, **kwargs)

    pressed.calls = []
    return pressed


def test_ctrl_c_while_the_forest_is_fitted_segments_with_the_forest(files, tiny_config, monkeypatch, sigint_default):
    from sparseseg.method import forest

    monkeypatch.setattr(forest, "fit_forest", _pressing_ctrl_c(forest.fit_forest))
    out = files.folder / "seg.tif"
    report = workflows.densify([files.volume], files.sparse, out, tiny_config(iterations=5))
    assert report.train_log.stopped_by == "interrupt" and report.train_log.iterations == 0
    assert report.model.estimate["network_iou"] is None  # an untrained network: not run, the forest alone
    (_, kept), (_, everything) = [args[:2] for args in forest.fit_forest.calls]  # fitted again, on all planes
    assert report.model.blend == 0 and everything.mask.sum() > kept.mask.sum()
    np.testing.assert_array_equal(io.read_labels(out).data, report.segmentation.labels)


def test_ctrl_c_during_the_estimate_skips_the_fine_tuning(files, tiny_config, monkeypatch, sigint_default):
    from sparseseg.method import core, ensemble, forest, volume

    pressing = _pressing_ctrl_c(volume.network_probabilities)
    for module in (volume, core):
        monkeypatch.setattr(module, "network_probabilities", pressing)
    monkeypatch.setattr(forest, "fit_forest", _pressing_ctrl_c(forest.fit_forest, press=False))
    out = files.folder / "seg.tif"
    report = workflows.densify([files.volume], files.sparse, out, tiny_config(iterations=5))
    assert len(volume.network_probabilities.calls) == 2  # the held-out planes, then the result
    assert len(forest.fit_forest.calls) == (2 if report.model.blend < 1 else 1)  # on all planes, where it is blended
    assert report.train_log.stopped_by == "interrupt"
    assert report.train_log.iterations == math.ceil(ensemble.FIRST_PART * 5)  # the first part only
    assert report.model.estimate is not None
    assert io.read_labels(out).data.shape == files.shape


def test_ctrl_c_during_the_calibration_of_train_still_saves_the_model(files, tiny_config, monkeypatch, sigint_default):
    monkeypatch.setattr(workflows, "network_probabilities", _pressing_ctrl_c(workflows.network_probabilities))
    folder = files.folder / "model"
    model, train_log, written = workflows.train_files(
        [([files.volume], files.sparse)], folder, tiny_config(iterations=3)
    )
    assert len(workflows.network_probabilities.calls) == 1
    assert train_log.stopped_by == "interrupt" and train_log.iterations == 3
    assert written == folder and modelfolder.load_model(folder).offsets is not None


@pytest.fixture
def ctrl_c_at_step_2(monkeypatch):
    """Makes the command's progress bar press Ctrl-C after the second training step."""
    real = models.TrainingProgress.__call__

    def call(self, iteration, loss, elapsed):
        real(self, iteration, loss, elapsed)
        if iteration >= 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(models.TrainingProgress, "__call__", call)


def test_cli_interrupt_without_partial_exits_130(files, ctrl_c_at_step_2, listing, run, train_args):
    before = listing(files.folder)
    result = run(
        "densify",
        files.volume,
        "--slices",
        files.sparse,
        "-o",
        files.folder / "seg.tif",
        *train_args,
        "--iterations",
        "5",
        "--save-model",
        files.folder / "model",
        "--no-partial",
        "--json",
    )
    assert result.exit_code == 130, result.output
    assert result.stdout == ""
    assert "interrupted" in result.stderr and "Traceback" not in result.output
    assert listing(files.folder) == before


def test_cli_interrupt_with_partial_segments_with_the_model_so_far(files, ctrl_c_at_step_2, run, one_json, train_args):
    out = files.folder / "seg.tif"
    result = run(
        "densify", files.volume, "--slices", files.sparse, "-o", out, *train_args, "--iterations", "5", "--json"
    )
    summary = one_json(result, exit_code=130)
    assert summary["stopped_by"] == "interrupt" and summary["iterations"] == 2 and summary["interrupted"] is True
    assert "interrupted" in result.stderr
    assert io.read_labels(out).data.shape == files.shape


def test_cli_train_interrupted_saves_the_model_so_far(files, ctrl_c_at_step_2, run, one_json, train_args):
    folder = files.folder / "model"
    summary = one_json(
        run(
            "train",
            "--pair",
            f"{files.volume}:{files.sparse}",
            "-o",
            folder,
            *train_args,
            "--iterations",
            "5",
            "--json",
        ),
        exit_code=130,
    )
    assert summary["stopped_by"] == "interrupt" and summary["iterations"] == 2 and summary["interrupted"] is True
    assert modelfolder.load_model(folder).classes.tolist() == [0, 1, 2]


# --- --json for pipelines ------------------------------------------------------------------


def test_eval_json_on_a_prediction(trained, run, one_json):
    data = one_json(run("eval", trained.seg, "--gt", trained.truth, "--ignore", trained.sparse, "--json"))
    assert [c["label"] for c in data["classes"]] == trained.classes


def test_json_output_is_never_interleaved_with_progress(trained, tmp_path, run, one_json):
    """Even without --quiet, a --json run's stdout is the JSON line alone; the bar and log are on stderr."""
    result = run("predict", trained.model, trained.volume, "-o", tmp_path / "seg.tif", "--json")
    summary = one_json(result)
    assert "seconds_infer" in summary and result.stderr == ""


def test_pickle_marker_class_would_run_code(tmp_path):
    """Guard for the weights-that-run-code case above: plain pickle really would create the marker."""
    pickle.loads(pickle.dumps(_RunsCode(tmp_path / "ran"))).close()
    assert (tmp_path / "ran").exists()


def test_densify_opens_the_volume_once_and_reads_it_whole_from_there(files, tiny_config, monkeypatch):
    from sparseseg import io
    from sparseseg.commands import densify as densify_command

    opened, real = [], io.open_source
    monkeypatch.setattr(io, "open_source", lambda *a, **k: opened.append(a) or real(*a, **k))
    monkeypatch.setattr(io, "read_image", lambda *a, **k: pytest.fail("the volume was read again"))
    report = densify_command.densify([files.volume], files.sparse, files.folder / "seg.tif", tiny_config(iterations=2))
    assert len(opened) == 1
    assert report.segmentation.labels.shape == io.read_labels(files.sparse).data.shape
