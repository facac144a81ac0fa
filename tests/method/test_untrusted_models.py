"""A model someone else made cannot run code, on any path that loads one.

Each crafted model holds a pickle whose unpickling would write a marker file. Every command that loads a model
(predict, suggest --model, densify --init, export, and the napari widget's Load model) must refuse it with exit 2 and
one ``error:`` line, and the marker must never appear. A package whose members unpack far past what a model holds is
refused before it is read.
"""

import json
import os
import pickle
import shutil
import zipfile

import pytest

from sparseseg.method import modelfolder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Payload:
    """Unpickled, it writes the file ``path`` (what an attacker's code would do first)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _crafted_folder(trained, folder, marker, forest_name):
    """A copy of the trained model whose config names a pickled forest ``forest_name`` holding the payload."""
    shutil.copytree(trained.model, folder)
    for name in (modelfolder.FOREST,):
        if (folder / name).exists():
            (folder / name).unlink()
    with open(folder / forest_name, "wb") as f:
        pickle.dump(_Payload(marker), f)
    meta = json.loads((folder / modelfolder.CONFIG).read_text())
    meta.update(format_version=2, forest=forest_name, blend=0.5)
    (folder / modelfolder.CONFIG).write_text(json.dumps(meta))
    return folder


def _zipped(folder, package):
    with zipfile.ZipFile(package, "w") as archive:
        for path in folder.iterdir():
            archive.write(path, path.name)
    return package


@pytest.fixture(params=["folder", "zip"])
def crafted(request, trained, tmp_path):
    """A crafted model (a folder, or the package of one) and the marker its payload would write."""
    marker = tmp_path / "code-ran"
    folder = _crafted_folder(trained, tmp_path / "shared_model", marker, modelfolder.PICKLED_FOREST)
    if request.param == "zip":
        model = _zipped(folder, tmp_path / "shared_model.zip")
        shutil.rmtree(folder)
    else:
        model = folder
    return model, marker


def _paths(crafted, trained, tmp_path, train_args):
    model, _ = crafted
    return {
        "predict": ["predict", model, trained.volume, "-o", tmp_path / "seg.tif"],
        "suggest": ["suggest", trained.volume, "--model", model, "--slices", trained.sparse],
        "densify-init": [
            "densify",
            trained.volume,
            "--slices",
            trained.sparse,
            "-o",
            tmp_path / "seg.tif",
            "--init",
            model,
            *train_args,
        ],
        "export": ["export", model, "-o", tmp_path / "out.zip"],
    }


@pytest.mark.parametrize("path", ["predict", "suggest", "densify-init", "export"])
def test_a_pickled_forest_never_runs(crafted, path, trained, tmp_path, train_args, run, bad_input):
    args = _paths(crafted, trained, tmp_path, train_args)[path]
    result = run(*args)
    line = bad_input(result, "forest.joblib", "pickle", alone=True)
    assert "save_forest" in line  # says how to re-save it, for a user who trusts its origin
    assert not crafted[1].exists(), "the pickle's code ran"
    assert not (tmp_path / "seg.tif").exists() and not (tmp_path / "out.zip").exists()


def test_a_pickle_named_as_the_safe_forest_never_runs(trained, tmp_path, run, bad_input):
    marker = tmp_path / "code-ran"
    folder = _crafted_folder(trained, tmp_path / "m", marker, modelfolder.FOREST)
    meta = json.loads((folder / modelfolder.CONFIG).read_text())
    meta.update(format_version=3)
    (folder / modelfolder.CONFIG).write_text(json.dumps(meta))
    result = run("predict", folder, trained.volume, "-o", tmp_path / "seg.tif")
    bad_input(result, "forest.npz", "cannot read", alone=True)
    assert not marker.exists()


def test_pickled_weights_never_run(trained, tmp_path, run, bad_input):
    marker = tmp_path / "code-ran"
    folder = tmp_path / "m"
    shutil.copytree(trained.model, folder)
    with open(folder / modelfolder.WEIGHTS, "wb") as f:
        pickle.dump(_Payload(marker), f)
    result = run("predict", folder, trained.volume, "-o", tmp_path / "seg.tif")
    bad_input(result, "weights.pt", alone=True, absent=("UserWarning", "Traceback"))
    assert not marker.exists()


def test_a_package_member_that_unpacks_far_past_a_model_is_not_read(trained, tmp_path, run, bad_input):
    package = tmp_path / "bomb.zip"
    with zipfile.ZipFile(package, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(trained.model / modelfolder.CONFIG, modelfolder.CONFIG)
        if (trained.model / modelfolder.FOREST).exists():
            archive.write(trained.model / modelfolder.FOREST, modelfolder.FOREST)
        with archive.open(modelfolder.WEIGHTS, "w", force_zip64=True) as member:
            zeros = bytes(2**20)
            for _ in range(256):  # 256 MiB of zeros, about 250 kB packed
                member.write(zeros)
    assert os.path.getsize(package) < 2**20
    result = run("predict", package, trained.volume, "-o", tmp_path / "seg.tif")
    bad_input(result, "weights.pt", "not read", alone=True)
