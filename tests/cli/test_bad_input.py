"""The bad-input suite: each way a user or a careless script gets a command wrong is one row (issue 13).

A row builds its inputs in ``tmp_path`` and returns a `Case`: the command line and the words
that the error must hold. The one shared assertion (`_refused`) checks that the command
exits 2 (or the code the row gives) before any work, prints nothing on stdout, prints
exactly one line on stderr, starting with "error: " and naming the file or flag (the
words are looked for with the test's own folder cut out of the line, so that a word in the
folder's name cannot stand in for one in the message), and leaves the folder as it was:
inputs byte-identical, nothing added, no temporary file.

Rows that need a trained model take the module's `trained` fixture (conftest.py) through
``c.trained()``; it is trained once, only when such a row runs.
"""

import json
import os
import shutil
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

from sparseseg.config import MAX_BASE, MAX_BATCH, MAX_PATCH

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: What an error line must never quote: Python's internals instead of the user's words.
INTERNALS = ("Traceback", "KeyError", "TypeError", "NoneType", "AttributeError", "IndexError", "internal error")


@dataclass
class Case:
    args: list
    needles: list
    code: int = 2
    absent: tuple = ()


@pytest.fixture
def c(files, request, train_args):
    """What a row builds on: the `files` fixture's volume, labels and truth, tiny training options, and the model."""
    return SimpleNamespace(
        folder=files.folder,
        volume=files.volume,
        sparse=files.sparse,
        truth=files.truth,
        shape=files.shape,
        train=train_args,
        trained=lambda: request.getfixturevalue("trained"),
    )


def _densify(c, *extra, volume=None, slices=None, out=None):
    return [
        "densify",
        volume or c.volume,
        "--slices",
        slices or c.sparse,
        "-o",
        out or c.folder / "seg.tif",
        *c.train,
        *extra,
    ]


def _sweep(c, *extra):
    return [
        "sweep",
        c.volume,
        "--gt",
        c.truth,
        "--planes",
        "1",
        "--axes",
        "z",
        "-o",
        c.folder / "report",
        *c.train,
        *extra,
    ]


def _model_copy(c, name="mymodel", change=None):
    """A copy of the trained model in the test's folder; ``change(meta)`` edits its config.json (or returns new
    text)."""
    folder = c.folder / name
    shutil.copytree(c.trained().model, folder)
    if change is not None:
        meta = json.loads((folder / "config.json").read_text())
        text = change(meta)
        (folder / "config.json").write_text(text if isinstance(text, str) else json.dumps(meta))
    return folder


# --- an input is never an output ----------------------------------------------------------


def _out_is_the_volume(c):
    return Case(_densify(c, "--overwrite", out=c.volume), ["volume.tif", "input"])


def _out_is_the_labels(c):
    return Case(_densify(c, "--overwrite", out=c.sparse), ["sparse.tif", "input"])


def _probabilities_is_the_volume(c):
    return Case(_densify(c, "--probabilities", c.volume, "--overwrite"), ["volume.tif", "input"])


def _probabilities_is_the_labels(c):
    return Case(_densify(c, "--probabilities", c.sparse, "--overwrite"), ["sparse.tif", "input"])


def _out_is_a_symlink_to_the_volume(c):
    link = c.folder / "link.tif"
    link.symlink_to(c.volume)
    return Case(_densify(c, "--overwrite", out=link), ["link.tif", "input"])


def _out_is_a_hard_link_to_the_volume(c):
    hard = c.folder / "hard.tif"
    os.link(c.volume, hard)
    return Case(_densify(c, "--overwrite", out=hard), ["hard.tif", "input"])


def _weights_out_is_the_volume(c):
    return Case(_densify(c, "--weights-out", c.volume, "--overwrite"), ["volume.tif", "input"])


def _preview_is_the_volume(c):
    return Case(_densify(c, "--preview", c.volume, "--overwrite"), ["volume.tif"])


def _predict_out_is_the_volume(c):
    return Case(["predict", c.trained().model, c.volume, "-o", c.volume, "--overwrite"], ["volume.tif", "input"])


def _preview_command_out_is_the_labels(c):
    return Case(["preview", c.volume, c.sparse, "-o", c.sparse, "--overwrite"], ["sparse.tif"])


def _out_inside_the_model_folder(c):
    (c.folder / "outdir").mkdir()
    return Case(
        _densify(c, "--save-model", c.folder / "outdir", out=c.folder / "outdir" / "seg.tif"), ["outdir", "seg.tif"]
    )


def _save_model_is_the_out(c):
    (c.folder / "outdir").mkdir()
    seg = c.folder / "outdir" / "seg.tif"
    return Case(_densify(c, "--save-model", seg, out=seg), ["seg.tif"])


def _save_model_is_the_init(c):
    model = _model_copy(c)
    shutil.copy(c.trained().sparse, c.folder / "sparse10.tif")  # the model's classes 0, 10, 200
    return Case(
        _densify(c, "--init", model, "--save-model", model, "--overwrite", slices=c.folder / "sparse10.tif"),
        ["mymodel", "input"],
    )


def _out_is_the_probabilities(c):
    seg = c.folder / "seg.tif"
    return Case(_densify(c, "--probabilities", seg, out=seg), ["seg.tif"])


def _out_is_an_existing_folder(c):
    (c.folder / "seg.tif").mkdir()
    return Case(_densify(c, "--overwrite", out=c.folder / "seg.tif"), ["seg.tif", "folder"])


def _sweep_report_is_the_truth(c):
    return Case(
        ["sweep", c.volume, "--gt", c.truth, "--planes", "1", "--axes", "z", "-o", c.truth, *c.train, "--overwrite"],
        ["truth.tif"],
    )


def _export(c, *extra, out=None):
    return ["export", c.trained().model, "-o", out or c.folder / "model.zip", *extra]


def _export_out_exists(c):
    (c.folder / "model.zip").write_bytes(b"an earlier package")
    return Case(_export(c), ["model.zip", "exists", "--overwrite"])


def _export_out_is_the_package_it_exports(c):
    package = c.folder / "package.zip"
    package.write_bytes(b"a package")
    return Case(["export", package, "-o", package, "--overwrite"], ["package.zip", "input"])


def _export_out_is_the_sample(c):
    return Case(_export(c, "--sample", c.volume, "--overwrite", out=c.volume), ["volume.tif"])


def _export_out_not_a_zip(c):
    return Case(_export(c, out=c.folder / "model.tif"), ["model.tif", ".zip"])


def _predict_with_a_zip_that_is_no_package(c):
    import zipfile

    with zipfile.ZipFile(c.folder / "other.zip", "w") as archive:
        archive.writestr("rdf.yaml", "type: model\n")
    return Case(
        ["predict", c.folder / "other.zip", c.volume, "-o", c.folder / "seg.tif"],
        ["other.zip", "config.json", "sparseseg export"],
    )


def _predict_with_a_broken_zip(c):
    (c.folder / "broken.zip").write_bytes(b"not a zip at all")
    return Case(
        ["predict", c.folder / "broken.zip", c.volume, "-o", c.folder / "seg.tif"], ["broken.zip", "cannot read"]
    )


def _export_no_such_model(c):
    return Case(["export", c.folder / "nomodel", "-o", c.folder / "model.zip"], ["nomodel", "no such model folder"])


# --- options out of range: the flag the user typed, and the allowed range ------------------


def _option(*extra, needles, command=_densify):
    def case(c):
        return Case(command(c, *extra), list(needles))

    return case


def _predict_option(*extra, needles):
    def case(c):
        return Case(["predict", c.trained().model, c.volume, "-o", c.folder / "seg.zarr", *extra], list(needles))

    return case


def _dangling_output(c):
    link = c.folder / "out.tif"
    link.symlink_to(c.folder / "elsewhere" / "gone.tif")
    return Case(_densify(c, out=link), ["out.tif", "symbolic link"])


def _ome_zarr_with_scale(scale):
    def case(c):
        pytest.importorskip("ome_zarr")
        import re

        from sparseseg import io

        volume = c.folder / "stack.ome.zarr"
        io.write_volume(volume, tifffile.imread(c.volume))
        for meta in [volume / ".zattrs", volume / "zarr.json"]:
            if meta.exists():
                meta.write_text(re.sub(r'"scale": \[[^\]]*\]', f'"scale": {scale}', meta.read_text(), count=1))
        return Case(_densify(c, volume=volume), ["stack.ome.zarr", "voxel size", "--spacing"], absent=("--spacing 0",))

    return case


def _truncated_nifti(c):
    import nibabel as nib

    path = c.folder / "cut.nii.gz"
    nib.save(nib.Nifti1Image(tifffile.imread(c.volume).T, np.eye(4)), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return Case(_densify(c, volume=path), ["cut.nii.gz"])


def _predict_device(c):
    return Case(
        ["predict", c.trained().model, c.volume, "-o", c.folder / "seg.tif", "--device", "tpu"], ["--device", "tpu"]
    )


def _predict_overlap(c):
    return Case(
        ["predict", c.trained().model, c.volume, "-o", c.folder / "seg.tif", "--overlap", "1"], ["--overlap", "1"]
    )


def _predict_resume(out, probabilities=None):
    def case(c):
        extra = ["--probabilities", c.folder / probabilities] if probabilities else []
        return Case(
            ["predict", c.trained().model, c.volume, "-o", c.folder / out, "--resume", *extra],
            ["--resume", probabilities or out, "Zarr"],
        )

    return case


def _predict_resume_nothing(c):
    return Case(
        ["predict", c.trained().model, c.volume, "-o", c.folder / "seg.zarr", "--resume"],
        ["--resume", "seg.zarr", "nothing to resume"],
    )


def _suggest_device(c):
    return Case(["suggest", c.volume, "--model", c.trained().model, "--device", "tpu"], ["--device", "tpu"])


def _suggest_top_zero(c):
    return Case(["suggest", c.volume, "--model", c.trained().model, "--top", "0"], ["--top"])


def _train_batch_size_zero(c):
    return Case(
        ["train", "--pair", f"{c.volume}:{c.sparse}", "-o", c.folder / "model", *c.train, "--batch-size", "0"],
        ["--batch-size"],
    )


# --- values that mean nothing ---------------------------------------------------------------


def _unlabeled(value):
    def case(c):  # the labels' unannotated voxels hold 255: --unlabeled VALUE would take 255 for a class
        return Case(_densify(c, "--unlabeled", value), ["--unlabeled"])

    return case


def _eval_float_prediction(c):
    return Case(["eval", c.volume, "--gt", c.truth], ["volume.tif"])


def _eval_float_truth(c):
    return Case(["eval", c.truth, "--gt", c.volume], ["volume.tif"])


def _eval_negative_whole_numbers(c):
    path = c.folder / "negative.tif"
    tifffile.imwrite(path, np.round(tifffile.imread(c.volume) * 4) - 3)  # float32 whole numbers, -3 and up
    return Case(["eval", path, "--gt", c.truth], ["negative.tif"])


def _eval_negative_integers(c):
    path = c.folder / "negative.tif"
    tifffile.imwrite(path, tifffile.imread(c.truth).astype(np.int16) - 1)
    return Case(["eval", path, "--gt", c.truth], ["negative.tif"])


# --- files that are not what they say --------------------------------------------------------


def _truncated(name):
    def case(c):
        path = c.folder / name
        source = c.volume if name == "cut.tif" else c.sparse
        tifffile.imwrite(path, tifffile.imread(source))  # uncompressed: the cut falls in the pixel data
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        if name == "cut.tif":
            return Case(_densify(c, volume=path), [name])
        return Case(_densify(c, slices=path), [name])

    return case


def _volume_is_a_folder(c):
    (c.folder / "x.tif").mkdir()
    return Case(_densify(c, volume=c.folder / "x.tif"), ["x.tif", "folder"], absent=("no such file",))


def _labels_is_a_folder(c):
    (c.folder / "x.tif").mkdir()
    return Case(_densify(c, slices=c.folder / "x.tif"), ["x.tif", "folder"], absent=("no such file",))


def _save_model_into_a_folder_of_other_files(*extra):
    def case(c):
        (c.folder / "notes").mkdir()
        (c.folder / "notes" / "keep.txt").write_text("not a model")
        return Case(_densify(c, "--save-model", c.folder / "notes", *extra), ["notes"])

    return case


def _train_into_a_folder_of_other_files(c):
    (c.folder / "notes").mkdir()
    (c.folder / "notes" / "keep.txt").write_text("not a model")
    return Case(
        ["train", "--pair", f"{c.volume}:{c.sparse}", "-o", c.folder / "notes", *c.train, "--overwrite"], ["notes"]
    )


# --- a corrupt model config: the field, in the user's words, never Python's -----------------


def _config(change, *needles):
    def case(c):
        model = _model_copy(c, "m", change)
        return Case(
            ["predict", model, c.volume, "-o", c.folder / "seg.tif"], ["config.json", *needles], absent=INTERNALS
        )

    return case


def _drop(*keys):
    def change(meta):
        for key in keys[:-1]:
            meta = meta[key]
        del meta[keys[-1]]

    return change


def _set(value, *keys):
    def change(meta):
        for key in keys[:-1]:
            meta = meta[key]
        meta[keys[-1]] = value

    return change


ROWS = [
    # an input is never an output, whatever --overwrite says
    pytest.param(_out_is_the_volume, id="out-is-the-volume"),
    pytest.param(_out_is_the_labels, id="out-is-the-labels"),
    pytest.param(_probabilities_is_the_volume, id="probabilities-is-the-volume"),
    pytest.param(_probabilities_is_the_labels, id="probabilities-is-the-labels"),
    pytest.param(_out_is_a_symlink_to_the_volume, id="out-is-a-symlink-to-the-volume"),
    pytest.param(_out_is_a_hard_link_to_the_volume, id="out-is-a-hard-link-to-the-volume"),
    pytest.param(_weights_out_is_the_volume, id="weights-out-is-the-volume"),
    pytest.param(_preview_is_the_volume, id="preview-is-the-volume"),
    pytest.param(_predict_out_is_the_volume, id="predict-out-is-the-volume"),
    pytest.param(_preview_command_out_is_the_labels, id="preview-out-is-the-labels"),
    pytest.param(_out_inside_the_model_folder, id="out-inside-the-model-folder"),
    pytest.param(_save_model_is_the_out, id="save-model-is-the-out"),
    pytest.param(_save_model_is_the_init, id="save-model-is-the-init"),
    pytest.param(_out_is_the_probabilities, id="out-is-the-probabilities"),
    pytest.param(_out_is_an_existing_folder, id="out-is-an-existing-folder"),
    pytest.param(_sweep_report_is_the_truth, id="sweep-report-is-the-truth"),
    pytest.param(_export_out_exists, id="export-out-exists"),
    pytest.param(_export_out_is_the_package_it_exports, id="export-out-is-its-input"),
    pytest.param(_export_out_is_the_sample, id="export-out-is-the-sample"),
    pytest.param(_export_no_such_model, id="export-no-such-model"),
    pytest.param(_predict_with_a_zip_that_is_no_package, id="predict-zip-not-a-package"),
    pytest.param(_predict_with_a_broken_zip, id="predict-broken-zip"),
    pytest.param(_export_out_not_a_zip, id="export-out-not-a-zip"),
    # options out of range, found before any work
    pytest.param(_option("--patch", "2000,2000,2000", needles=["--patch", str(MAX_PATCH)]), id="patch-above-max"),
    pytest.param(_option("--base", "100000", needles=["--base", str(MAX_BASE)]), id="base-100000"),
    pytest.param(_option("--batch-size", "0", needles=["--batch-size", str(MAX_BATCH)]), id="batch-size-0"),
    pytest.param(_option("--name", "x", needles=["--name x", "5 to 128"], command=_export), id="export-name-too-short"),
    pytest.param(
        _option("--name", "a/b c", needles=["--name a/b c", "letters"], command=_export), id="export-name-slash"
    ),
    pytest.param(_option("--author", "a/b", needles=["--author a/b"], command=_export), id="export-author-slash"),
    pytest.param(_option("--batch-size", "1000", needles=["--batch-size", str(MAX_BATCH)]), id="batch-size-1000"),
    pytest.param(_option("--lr", "0", needles=["--lr"]), id="lr-0"),
    pytest.param(_option("--lr", "5", needles=["--lr"]), id="lr-5"),
    pytest.param(_option("--iterations", "-1", needles=["--iterations"]), id="iterations-negative"),
    pytest.param(_option("--time-budget", "-5", needles=["--time-budget"]), id="time-budget-negative"),
    pytest.param(_option("--spacing", "0,1,1", needles=["--spacing"]), id="spacing-zero"),
    pytest.param(_option("--planes", "z=999", needles=["--planes", "z=999"]), id="planes-z-999"),
    pytest.param(_option("--patch", "6,16,16", needles=["--patch", "6,16,16"]), id="patch-not-a-multiple"),
    pytest.param(_option("--patch", "8,16", needles=["--patch"]), id="patch-two-values"),
    pytest.param(_option("--time-budget", "soon", needles=["--time-budget", "soon"]), id="time-budget-not-a-duration"),
    pytest.param(_option("--device", "tpu", needles=["--device", "tpu"]), id="densify-device-tpu"),
    pytest.param(_predict_device, id="predict-device-tpu"),
    pytest.param(_predict_overlap, id="predict-overlap-1"),
    pytest.param(_suggest_device, id="suggest-device-tpu"),
    pytest.param(_predict_resume("seg.tif"), id="predict-resume-tiff"),
    pytest.param(_predict_resume("seg.h5:/seg"), id="predict-resume-hdf5"),
    pytest.param(_predict_resume("seg.zarr", "p.tif"), id="predict-resume-tiff-probabilities"),
    pytest.param(_predict_resume_nothing, id="predict-resume-nothing-to-resume"),
    pytest.param(_option("--planes", "0", needles=["--planes"], command=_sweep), id="sweep-planes-0"),
    pytest.param(_option("--repeats", "0", needles=["--repeats"], command=_sweep), id="sweep-repeats-0"),
    pytest.param(
        _option("--base", "100000", needles=["--base", str(MAX_BASE)], command=_sweep), id="sweep-base-100000"
    ),
    pytest.param(_suggest_top_zero, id="suggest-top-0"),
    pytest.param(_train_batch_size_zero, id="train-batch-size-0"),
    # numbers that are not finite or out of range (issue 42), refused before any work
    pytest.param(_option("--spacing", "1,nan,1", needles=["--spacing", "finite"]), id="spacing-nan-not-first"),
    pytest.param(_option("--spacing", "inf,1,1", needles=["--spacing", "finite"]), id="spacing-inf"),
    pytest.param(_option("--dice", "inf", needles=["--dice", "finite"]), id="dice-inf"),
    pytest.param(_option("--class-power", "inf", needles=["--class-power", "finite"]), id="class-power-inf"),
    pytest.param(_option("--lr", "nan", needles=["--lr"]), id="lr-nan"),
    pytest.param(_option("--seed", "-1", needles=["--seed", "4294967295"]), id="seed-negative"),
    pytest.param(_option("--seed", str(2**70), needles=["--seed", "4294967295"]), id="seed-2-to-the-70"),
    pytest.param(_option("--workers", "0", needles=["--workers", "1.."]), id="workers-0"),
    pytest.param(_option("--workers", "-1", needles=["--workers", "1.."]), id="workers-negative"),
    pytest.param(
        _option("--scheduler", "not-an-address", needles=["--scheduler", "tcp://"]), id="scheduler-not-an-address"
    ),
    pytest.param(_predict_option("--workers", "0", needles=["--workers"]), id="predict-workers-0"),
    pytest.param(
        _predict_option("--scheduler", "10.0.0.5", needles=["--scheduler", "tcp://"]), id="predict-scheduler-no-scheme"
    ),
    # usage errors: one error line with a hint to --help, never click's box
    pytest.param(_option("--iterations", "abc", needles=["--iterations", "--help"]), id="iterations-abc"),
    pytest.param(_option("--base", "2.5", needles=["--base", "--help"]), id="base-2.5"),
    pytest.param(lambda c: Case(["densify"], ["VOLUME", "--help"]), id="densify-no-arguments"),
    pytest.param(lambda c: Case(["predict"], ["MODEL", "--help"]), id="predict-no-arguments"),
    pytest.param(lambda c: Case(["eval"], ["PREDICTION", "--help"]), id="eval-no-arguments"),
    pytest.param(lambda c: Case(["densify", "--no-such-flag"], ["--no-such-flag", "--help"]), id="unknown-flag"),
    # files whose numbers cannot be used: the file is named, never a flag the user did not type
    pytest.param(_ome_zarr_with_scale("[0, -1, 1]"), id="ome-zarr-scale-not-positive"),
    pytest.param(_truncated_nifti, id="truncated-nifti"),
    # a file name with a newline stays on the one error line
    pytest.param(
        lambda c: Case(_densify(c, volume=c.folder / "no\nsuch.tif"), ["no\\nsuch.tif"]),
        id="volume-name-with-a-newline",
    ),
    # an output name that is a symbolic link to nothing is never replaced without --overwrite
    pytest.param(_dangling_output, id="out-is-a-dangling-symlink"),
    # values that mean nothing
    pytest.param(_unlabeled("1"), id="unlabeled-1-is-a-class"),
    pytest.param(_unlabeled("0"), id="unlabeled-0-is-a-class"),
    pytest.param(_eval_float_prediction, id="eval-float-prediction"),
    pytest.param(_eval_float_truth, id="eval-float-truth"),
    pytest.param(_eval_negative_whole_numbers, id="eval-negative-whole-numbers"),
    pytest.param(_eval_negative_integers, id="eval-negative-integers"),
    # files that are not what they say
    pytest.param(_truncated("cut.tif"), id="truncated-volume"),
    pytest.param(_truncated("cut_labels.tif"), id="truncated-labels"),
    pytest.param(_volume_is_a_folder, id="volume-is-a-folder"),
    pytest.param(_labels_is_a_folder, id="labels-is-a-folder"),
    pytest.param(_save_model_into_a_folder_of_other_files(), id="save-model-into-other-files"),
    pytest.param(_save_model_into_a_folder_of_other_files("--overwrite"), id="save-model-into-other-files-overwrite"),
    pytest.param(_train_into_a_folder_of_other_files, id="train-into-other-files-overwrite"),
    # a corrupt model config
    pytest.param(_config(_drop("pools"), "pools"), id="config-missing-pools"),
    pytest.param(_config(_drop("classes"), "classes"), id="config-missing-classes"),
    pytest.param(_config(_set(None, "classes"), "classes"), id="config-classes-null"),
    pytest.param(_config(_set(["a", "b"], "classes"), "classes"), id="config-classes-strings"),
    pytest.param(_config(_set("one", "in_channels"), "in_channels"), id="config-in-channels-string"),
    pytest.param(_config(_set(99, "format_version"), "format_version"), id="config-unknown-format-version"),
    pytest.param(_config(_drop("format_version"), "format_version"), id="config-without-format-version"),
    pytest.param(_config(_drop("config", "base"), "base"), id="config-missing-config-base"),
    pytest.param(_config(_set("big", "config", "patch"), "patch"), id="config-patch-string"),
    pytest.param(_config(_set(None, "config"), "config"), id="config-config-null"),
    pytest.param(_config(lambda meta: "[1, 2]"), id="config-not-an-object"),
]


def _refused(result, case, folder, before, bad_input, listing):
    """The one assertion every row makes."""
    line = bad_input(result, code=case.code, alone=True, absent=case.absent)
    words = line.replace(str(folder.resolve()), "<tmp>").replace(str(folder), "<tmp>")
    for needle in case.needles:
        assert needle in words, (needle, line)
    assert listing(folder) == before  # inputs byte-identical, nothing added (no temporary file either)


@pytest.mark.parametrize("row", ROWS)
def test_refused(row, c, run, bad_input, listing):
    case = row(c)
    before = listing(c.folder)
    _refused(run(*case.args), case, c.folder, before, bad_input, listing)


# --- not refused, but said: clipped patches and runs that mean little -------------------------


def test_patch_larger_than_the_volume_is_clipped_with_a_note(c, run, one_json):
    result = run(*_densify(c, "--patch", "1000,1000,1000", "--iterations", "1", "--json"))
    summary = one_json(result)
    assert all(p <= -(-s // 8) * 8 for p, s in zip(summary["patch"], c.shape)), summary[
        "patch"
    ]  # the volume, rounded up
    assert "clipped" in result.stderr and "patch" in result.stderr
    assert tifffile.imread(c.folder / "seg.tif").shape == c.shape


def _constant_volume(c):
    tifffile.imwrite(c.folder / "constant.tif", np.full(c.shape, 7.0, np.float32))
    return _densify(c, volume=c.folder / "constant.tif")


@pytest.mark.parametrize(
    "make",
    [_constant_volume, lambda c: _densify(c, "--iterations", "0"), lambda c: _densify(c, "--time-budget", "0")],
    ids=["constant-volume", "iterations-0", "time-budget-0"],
)
def test_a_run_that_means_little_warns_and_says_so_in_json(make, c, run, one_json):
    result = run(*make(c), "--json")
    summary = one_json(result)
    assert summary["warnings"] and all(isinstance(w, str) and w for w in summary["warnings"])
    assert "WARNING" in result.stderr
    assert (c.folder / "seg.tif").is_file()
