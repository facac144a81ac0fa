"""Tests for the command line: happy paths on tiny files, and one clear line for each bad input.

The installed click (vendored by typer) always captures stderr apart from stdout, so
``result.stderr`` holds only what went to stderr. `run` and `bad_input` are fixtures of conftest.py.
"""

import json
import shutil

import numpy as np
import pytest
import tifffile
import torch

from sparseseg import __version__, io, load_model
from sparseseg.method.metrics import score

TRAIN = ["--iterations", "3", "--base", "4", "--patch", "8,16,16", "--seed", "0", "--device", "cpu"]


def _assert_ok(result):
    assert result.exit_code == 0, result.output


# --- happy paths ----------------------------------------------------------------------


def test_version(run):
    result = run("--version")
    _assert_ok(result)
    assert __version__ in result.stdout


def test_densify_json(files, run):
    out = files.folder / "seg.tif"
    result = run("densify", files.volume, "--slices", files.sparse, "-o", out, *TRAIN, "--json")
    _assert_ok(result)
    summary = json.loads(result.stdout)  # one JSON object and nothing else
    assert isinstance(summary, dict)
    assert summary["output"] == [str(out)]
    assert summary["classes"] == [0, 1, 2]
    assert summary["iterations"] == 3 and summary["stopped_by"] == "iterations"
    assert summary["seed"] == 0 and summary["patch"] == [8, 16, 16] and summary["device"] == "cpu"
    assert len(summary["class_offsets"]) == 3  # fitted on the annotated voxels
    labels = io.read_labels(out).data
    assert labels.shape == files.shape and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2}


@pytest.mark.parametrize("flag, reads", [("--filters", 1 + 25), ("--no-filters", 1)])
def test_densify_filters_flag_sets_what_the_network_reads(files, run, flag, reads):
    folder = files.folder / f"model{flag}"
    result = run(
        "densify", files.volume, "--slices", files.sparse, "-o", files.folder / "s.tif", *TRAIN, flag,
        "--save-model", folder, "--overwrite", "--json",
    )  # fmt: skip
    _assert_ok(result)
    meta = json.loads((folder / "config.json").read_text())
    assert meta["config"]["filters"] == (flag == "--filters")
    assert (meta["inputs"] is None) == (flag == "--no-filters")
    assert load_model(folder).network.encoders[0].block[0].in_channels == reads


def test_densify_table_and_progress(files, monkeypatch, run):
    monkeypatch.chdir(files.folder)  # relative paths, short enough for the table
    result = run("densify", "volume.tif", "--slices", "sparse.tif", "-o", "seg.nii.gz", *TRAIN)
    _assert_ok(result)
    assert "seg.nii.gz" in result.stdout and "stopped_by" in result.stdout
    assert "training" in result.stderr  # progress and messages go to stderr
    assert io.read_labels(files.folder / "seg.nii.gz").data.shape == files.shape


def test_the_estimate_is_said_with_its_correction():
    from sparseseg.cli.output import estimate_said

    said = dict(
        iou=0.66, spread=0.05, held_out_planes={"z": [33], "y": [68]}, network_iou=0.58, forest_iou=0.6, blend=0.7
    )
    assert estimate_said(said) == (
        "IoU 0.66 ± 0.05 (on held-out planes z=33, y=68; network 0.58, forest 0.60; network weight 0.7)"
    )  # as a model folder saved before the correction holds it
    assert estimate_said({**said, "held_out_iou": 0.62, "correction": 0.04}) == (
        "IoU 0.66 ± 0.05 (0.62 on held-out planes z=33, y=68, +0.04 from the forest fitted without each plane in "
        "turn; network 0.58, forest 0.60; network weight 0.7)"
    )


def test_densify_quiet_prints_nothing(files, run):
    # --no-holdout: a run this short is estimated low, which -q still warns of (warnings are not silenced)
    result = run(
        "densify", files.volume, "--slices", files.sparse, "-o", files.folder / "seg.tif", *TRAIN, "-q", "--no-holdout"
    )
    _assert_ok(result)
    assert result.stdout == "" and result.stderr == ""
    assert (files.folder / "seg.tif").is_file()


def test_densify_overwrite(files, run):
    out = files.folder / "seg.tif"
    out.write_bytes(b"old")
    result = run("densify", files.volume, "--slices", files.sparse, "-o", out, *TRAIN, "--overwrite", "-q")
    _assert_ok(result)
    assert io.read_labels(out).data.shape == files.shape


def test_densify_two_channels_and_extra_outputs(files, run):
    second = files.folder / "second.tif"
    tifffile.imwrite(second, -tifffile.imread(files.volume))
    out, weights, prob, preview = (files.folder / n for n in ("seg.tif", "w.tif", "p.tif", "p.png"))
    result = run(
        "densify",
        files.volume,
        second,
        "--slices",
        files.sparse,
        "-o",
        out,
        *TRAIN,
        "--json",
        "--weights-out",
        weights,
        "--probabilities",
        prob,
        "--preview",
        preview,
        "--save-model",
        files.folder / "model",
    )
    _assert_ok(result)
    summary = json.loads(result.stdout)
    assert set(summary["output"]) == {str(p) for p in (out, weights, prob, preview, files.folder / "model")}
    assert io.read_volume(prob).data.shape == (3,) + files.shape
    assert (files.folder / "model" / "weights.pt").is_file()


def _painted(files):
    """Labels painted (background 0) on the whole planes z=3 and y=12 only."""
    truth = tifffile.imread(files.truth)
    painted = np.zeros_like(truth)
    painted[3] = truth[3]
    painted[:, 12] = truth[:, 12]
    path = files.folder / "painted.tif"
    tifffile.imwrite(path, painted)
    return path


def test_densify_with_planes_as_the_shell_splits_them(files, run):
    result = run(
        "densify",
        files.volume,
        "--slices",
        _painted(files),
        "-o",
        files.folder / "seg.tif",
        *TRAIN,
        "--json",
        "--planes",
        "z=3",
        "y=12",  # the shell hands `--planes z=3 y=12` over like this
    )
    _assert_ok(result)
    assert "z=3 y=12" in json.loads(result.stdout)["annotation"]


def test_eval(files, run):
    truth = tifffile.imread(files.truth)
    pred = truth.copy()
    pred[:, :, :5] = 0
    tifffile.imwrite(files.folder / "pred.tif", pred)
    result = run("eval", files.folder / "pred.tif", "--gt", files.truth)
    _assert_ok(result)
    assert "IoU" in result.stdout and "mean fg" in result.stdout
    result = run("eval", files.folder / "pred.tif", "--gt", files.truth, "--ignore", files.sparse, "--json")
    _assert_ok(result)
    data = json.loads(result.stdout)
    sparse = tifffile.imread(files.sparse)
    expected = score(pred, truth, sparse == 255)
    assert data["voxels"] == int((sparse == 255).sum())
    assert [c["label"] for c in data["classes"]] == [0, 1, 2]
    for row, want in zip(data["classes"], expected.classes):
        assert row["iou"] == pytest.approx(want.iou)
    assert data["mean_foreground"]["iou"] == pytest.approx(expected.mean("iou"))


def test_eval_json_is_strict_json(files, run, strict_json):
    truth = tifffile.imread(files.truth)
    tifffile.imwrite(files.folder / "pred.tif", np.zeros_like(truth))  # classes 1, 2 never predicted
    result = run("eval", files.folder / "pred.tif", "--gt", files.truth, "--json")
    _assert_ok(result)
    strict_json(result.stdout)


# --- bad input: exit code 2, one line naming the problem, nothing written -----------------


def _write(files, name, data):
    path = files.folder / name
    tifffile.imwrite(path, data)
    return path


def _sparse(files):
    return tifffile.imread(files.sparse)


def _volume(files):
    return tifffile.imread(files.volume)


def _densify(files, volume=None, slices=None, out=None, *extra):
    return [
        "densify",
        volume or files.volume,
        "--slices",
        slices or files.sparse,
        "-o",
        out or files.folder / "seg.tif",
        *TRAIN,
        *extra,
    ]


def _with_nan(files):
    volume = _volume(files)
    volume[2, 3, 4] = np.nan
    return _densify(files, _write(files, "nan.tif", volume)), ["nan.tif", "NaN"]


def _with_inf(files):
    volume = _volume(files)
    volume[2, 3, 4] = np.inf
    return _densify(files, _write(files, "inf.tif", volume)), ["inf.tif", "Inf"]


def _labels_case(name, make, needle):
    def case(files):
        return _densify(files, None, _write(files, name, make(files))), [name, needle]

    return case


def _no_annotation(files):
    return np.full(files.shape, 255, np.uint8)


def _one_class(files):
    sparse = _sparse(files)
    sparse[sparse != 255] = 0
    return sparse


def _non_integer(files):
    sparse = _sparse(files).astype(np.float32)
    sparse[sparse == 1] = 1.5
    return sparse


def _too_large(files):
    sparse = _sparse(files).astype(np.uint32)
    sparse[sparse == 2] = 70000
    return sparse


def _negative(files):
    sparse = _sparse(files).astype(np.int16)
    sparse[sparse == 2] = -2
    return sparse


def _ambiguous(files):
    painted = np.zeros(files.shape, np.uint8)
    painted[3, 5:8, 5:8] = 1
    painted[2:4, 12, 5:8] = 2
    return painted


def _other_shape(files):
    return _densify(files, None, _write(files, "small.tif", _sparse(files)[:, :, :-1])), ["small.tif", "differs"]


def _channel_shapes(files):
    other = _write(files, "other.tif", _volume(files)[:-1])
    return ["densify", files.volume, other, "--slices", files.sparse, "-o", files.folder / "seg.tif", *TRAIN], [
        "other.tif",
        "shape",
    ]


def _two_d(files):
    return _densify(files, _write(files, "flat.tif", _volume(files)[0])), ["flat.tif", "3D"]


def _missing_volume(files):
    return _densify(files, files.folder / "missing.tif"), ["missing.tif", "no such file"]


def _missing_labels(files):
    return _densify(files, None, files.folder / "missing.nii.gz"), ["missing.nii.gz", "no such file"]


def _unsupported_volume(files):
    path = files.folder / "volume.png"
    path.write_bytes(b"\x89PNG")
    return _densify(files, path), ["volume.png", "unsupported"]


def _corrupt_volume(files):
    path = files.folder / "corrupt.tif"
    path.write_bytes(b"II*\x00garbage")
    return _densify(files, path), ["corrupt.tif", "cannot read"]


def _unsupported_output(files):
    return _densify(files, None, None, files.folder / "seg.png"), ["seg.png", "unsupported"]


def _missing_folder(files):
    return _densify(files, None, None, files.folder / "nowhere" / "seg.tif"), ["nowhere", "does not exist"]


def _output_exists(files):
    out = files.folder / "seg.tif"
    out.write_bytes(b"old")
    return _densify(files, None, None, out), ["seg.tif", "--overwrite"]


def _same_outputs(files):
    out = files.folder / "seg.tif"
    return _densify(files, None, None, out, "--weights-out", out), ["differ"]


def _cuda(files):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is available here")
    return _densify(files) + ["--device", "cuda"], ["--device cuda"]


def _plane_out_of_range(files):
    return _densify(files, None, None, None, "--planes", "z=99"), ["--planes", "z=99"]


def _plane_two_axes(files):
    return _densify(files, None, None, None, "--planes", "zy=3"), ["--planes", "zy=3"]


def _plane_without_option(files):
    return ["densify", files.volume, "y=12", "--slices", files.sparse, "-o", files.folder / "seg.tif", *TRAIN], [
        "y=12",
        "--planes",
    ]


def _bad_time_budget(files):
    return _densify(files, None, None, None, "--time-budget", "soon"), ["soon", "--time-budget"]


def _bad_time_limit(files):
    return _densify(files, None, None, None, "--time-limit", "soon"), ["soon", "--time-limit"]


def _zero_time_limit(files):
    return _densify(files, None, None, None, "--time-limit", "0"), ["--time-limit", "> 0"]


def _bad_patch(files):
    return _densify(files, None, None, None, "--patch", "8,16"), ["--patch", "8,16"]


def _patch_not_multiple(files):
    return _densify(files, None, None, None, "--patch", "6,16,16"), ["--patch", "multiple"]


def _negative_iterations(files):
    return _densify(files, None, None, None, "--iterations", "-1"), ["iterations"]


def _negative_class_power(files):
    return _densify(files, None, None, None, "--class-power", "-0.5"), ["--class-power", "-0.5"]


def _prior_correction_above_one(files):
    return _densify(files, None, None, None, "--prior-correction", "1.5"), ["--prior-correction", "1.5"]


def _bad_init(files):
    return _densify(files, None, None, None, "--init", files.folder / "no_model"), ["no_model"]


DENSIFY_BAD = [
    pytest.param(_missing_volume, id="missing-volume"),
    pytest.param(_missing_labels, id="missing-labels"),
    pytest.param(_unsupported_volume, id="unsupported-suffix"),
    pytest.param(_corrupt_volume, id="corrupt-file"),
    pytest.param(_other_shape, id="labels-shape-differs"),
    pytest.param(_channel_shapes, id="channel-shapes-differ"),
    pytest.param(_two_d, id="2d-image"),
    pytest.param(_labels_case("none.tif", _no_annotation, "no voxel is annotated"), id="no-annotated-voxel"),
    pytest.param(_labels_case("one.tif", _one_class, "only class 0"), id="one-class"),
    pytest.param(_labels_case("float.tif", _non_integer, "whole numbers"), id="non-integer-ids"),
    pytest.param(_labels_case("large.tif", _too_large, "65535"), id="ids-above-65535"),
    pytest.param(_labels_case("negative.tif", _negative, "65535"), id="negative-ids"),
    pytest.param(_labels_case("ambiguous.tif", _ambiguous, "--planes"), id="ambiguous-painting"),
    pytest.param(_with_nan, id="nan"),
    pytest.param(_with_inf, id="inf"),
    pytest.param(_unsupported_output, id="unsupported-output"),
    pytest.param(_missing_folder, id="output-folder-missing"),
    pytest.param(_output_exists, id="output-exists"),
    pytest.param(_same_outputs, id="outputs-collide"),
    pytest.param(_cuda, id="cuda-without-gpu"),
    pytest.param(_plane_out_of_range, id="plane-out-of-range"),
    pytest.param(_plane_two_axes, id="plane-axis-zy"),
    pytest.param(_plane_without_option, id="plane-without-option"),
    pytest.param(_bad_time_budget, id="bad-time-budget"),
    pytest.param(_bad_time_limit, id="bad-time-limit"),
    pytest.param(_zero_time_limit, id="zero-time-limit"),
    pytest.param(_bad_patch, id="bad-patch"),
    pytest.param(_patch_not_multiple, id="patch-not-multiple"),
    pytest.param(_negative_iterations, id="negative-iterations"),
    pytest.param(_negative_class_power, id="negative-class-power"),
    pytest.param(_prior_correction_above_one, id="prior-correction-above-one"),
    pytest.param(_bad_init, id="missing-init-model"),
]


@pytest.mark.parametrize("case", DENSIFY_BAD)
def test_densify_bad_input(files, case, listing, run, bad_input):
    args, needles = case(files)
    before = listing(files.folder)
    result = run(*args)
    bad_input(result, *needles)
    assert listing(files.folder) == before  # nothing written, nothing replaced


@pytest.mark.parametrize(
    "case",
    [_missing_labels, _other_shape, _labels_case("one.tif", _one_class, "only class 0")],
    ids=["missing-labels", "labels-shape-differs", "one-class"],
)
def test_densify_bad_input_quiet_is_one_line(files, case, run):
    args, _ = case(files)
    result = run(*args, "--quiet")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "case", [_missing_labels, _labels_case("one.tif", _one_class, "only class 0")], ids=["missing-labels", "one-class"]
)
def test_densify_bad_input_is_one_line(files, case, run):
    args, _ = case(files)
    result = run(*args)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _eval_missing(files):
    return ["eval", files.folder / "missing.tif", "--gt", files.truth], ["missing.tif", "no such file"]


def _eval_shapes(files):
    small = _write(files, "small.tif", tifffile.imread(files.truth)[1:])
    return ["eval", small, "--gt", files.truth], ["small.tif", "differs"]


def _eval_ignore_shape(files):
    small = _write(files, "small.tif", _sparse(files)[1:])
    return ["eval", files.truth, "--gt", files.truth, "--ignore", small], ["small.tif", "differs"]


def _eval_suffix(files):
    return ["eval", files.truth, "--gt", files.folder / "truth.csv"], ["truth.csv", "unsupported"]


def _eval_4d(files):
    stack = _write(files, "stack.tif", np.stack([tifffile.imread(files.truth)] * 2))
    return ["eval", stack, "--gt", files.truth], ["stack.tif", "3D"]


@pytest.mark.parametrize(
    "case",
    [_eval_missing, _eval_shapes, _eval_ignore_shape, _eval_suffix, _eval_4d],
    ids=["missing", "shapes-differ", "ignore-shape-differs", "unsupported-suffix", "4d-labels"],
)
def test_eval_bad_input(files, case, listing, run, bad_input):
    args, needles = case(files)
    before = listing(files.folder)
    result = run(*args)
    bad_input(result, *needles)
    assert len(result.stderr.strip().splitlines()) == 1
    assert listing(files.folder) == before


def test_no_arguments_shows_help(run):
    result = run()
    assert "densify" in result.output and "eval" in result.output


def test_help_shows_device_dependent_defaults(monkeypatch, run):
    result = run("densify", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # the help as one line, whatever its width
    assert "[default: 8 CPU, 32 CUDA]" in text  # not eaten as markup
    assert "[default: 5m CPU, 2m CUDA]" in text
    assert "[default: no-augment]" in text


@pytest.mark.parametrize("command", ["densify", "train", "predict", "export", "suggest", "preview", "sweep", "eval"])
def test_help_is_readable_at_80_columns(command, run, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = run(command, "--help")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "Examples:" in result.stdout
    # the everyday options have a panel of their own, before the expert levers
    if command in ("densify", "train", "sweep"):
        assert result.stdout.index("Everyday options") < result.stdout.index("Expert levers")


def test_predict_runs_on_this_machine_whatever_device_the_model_was_trained_on(trained, tmp_path, run):
    model = tmp_path / "cuda_model"
    shutil.copytree(trained.model, model)
    meta = json.loads((model / "config.json").read_text())
    meta["config"]["device"] = "cuda"  # as saved by a run with --device cuda
    (model / "config.json").write_text(json.dumps(meta))
    result = run("predict", model, trained.volume, "-o", tmp_path / "seg.tif", "--json")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "seg.tif"), tifffile.imread(trained.seg))


@pytest.mark.parametrize("name", ["densify", "predict", "train", "sweep", "suggest", "export", "eval", "preview"])
def test_help_reads_at_80_columns(name):
    """Every option's description starts at most 50 columns in, so that it is at least 30 wide at 80 columns, and the
    usage line names the arguments plainly (VOLUME..., not typer's {volumes}...)."""
    import re

    from typer.testing import CliRunner

    from sparseseg.cli.app import app

    result = CliRunner().invoke(app, [name, "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert re.match(rf"Usage: \S+ {name} \[OPTIONS\]", lines[0]) and "{" not in lines[0], lines[0]
    body = lines[: next(i for i, line in enumerate(lines) if line.strip() == "Examples:")]
    starts = [m.end() for line in body if (m := re.match(r"^  (-|[A-Z]).*?\S  +(?=\S)", line))]
    assert starts and 80 - max(starts) >= 30, (max(starts), result.output)
    assert max(len(line) for line in body) <= 80
