"""`sparseseg export`: a bioimage.io model package that bioimageio.spec validates offline, that bioimageio.core
test-runs, and that `sparseseg predict` reads to give the labels of the model folder it came from.

The tests that need bioimageio.spec (or bioimageio.core) skip where the bioimage extra is not installed. No test
reaches the network: `no_network` makes every socket connection fail.
"""

import gc
import io as bytes_io
import json
import socket
import sys
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    # bioimageio leaves files it read open (ResourceWarning, reported as unraisable when collected; `_collect` has
    # them collected within each test), and torch 2.10+ calls TorchScript deprecated, which bioimage.io still reads
    pytest.mark.filterwarnings(
        "ignore::ResourceWarning",
        "ignore::pytest.PytestUnraisableExceptionWarning",
        "ignore:`torch.jit.load` is deprecated:DeprecationWarning",
    ),
]


@pytest.fixture(autouse=True)
def _collect():
    """Collect the files bioimageio left open while this module's warning filters hold, not at the session's end."""
    yield
    gc.collect()


def _refuse(self, *args, **kwargs):
    raise OSError("network disabled in this test")


@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection fails: what a CI runner without network gives."""
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse)


@pytest.fixture(scope="module")
def trained(trained, tmp_path_factory):
    """The shared trained model as the network alone (densify blended it with a forest, which a package leaves out),
    so that the folder and its package predict alike."""
    from dataclasses import replace

    from sparseseg.method import modelfolder

    folder = tmp_path_factory.mktemp("network") / "model"
    network = replace(modelfolder.load_model(trained.model), forest=None, blend=1.0, offsets=None)
    modelfolder.save_model(folder, network)
    return SimpleNamespace(**{**vars(trained), "model": folder})


@pytest.fixture(scope="module")
def spec():
    return pytest.importorskip("bioimageio.spec")


@pytest.fixture(scope="module")
def package(trained, spec, run, tmp_path_factory):
    """The `trained` model exported through the command line (offline), with the volume it was trained on as sample."""
    path = tmp_path_factory.mktemp("export") / "model.zip"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _refuse)
        result = run(
            "export",
            trained.model,
            "-o",
            path,
            "--sample",
            trained.volume,
            "--author",
            "Test Author",
            "--name",
            "tiny test model",
            "--json",
        )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f'{{"output": "{path}"}}'
    return path


def _member(path, name):
    with zipfile.ZipFile(path) as archive:
        return archive.read(name)


def _npy(path, name):
    return np.load(bytes_io.BytesIO(_member(path, name)))


def test_package_holds_what_bioimage_io_needs(package, trained, spec, no_network):
    with zipfile.ZipFile(package) as archive:
        assert {
            "rdf.yaml",
            "weights.pt",
            "weights_torchscript.pt",
            "test_input.npy",
            "test_output.npy",
            "cover.png",
            "README.md",
            "config.json",
        } <= set(archive.namelist())
    descr = spec.load_description(package, perform_io_checks=False)
    assert descr.validation_summary.status == "valid-format", descr.validation_summary.display()
    assert descr.type == "model" and str(descr.format_version).startswith("0.5")
    weights = descr.weights
    # the trained model's network reads filter features (the default): they are computed inside it
    assert weights.pytorch_state_dict.architecture.import_from == "sparseseg.method.torch_features"
    assert weights.pytorch_state_dict.architecture.callable == "FilteredUNet3D"
    assert weights.pytorch_state_dict.architecture.kwargs["in_channels"] == 1  # the raw channel alone
    assert weights.torchscript.parent == "pytorch_state_dict"
    (raw,), (out,) = descr.inputs, descr.outputs
    assert [str(a.type) for a in raw.axes] == ["batch", "channel", "space", "space", "space"]
    assert [(str(a.id), a.scale) for a in raw.axes[2:]] == [("z", 2.0), ("y", 1.0), ("x", 1.0)]  # the model's spacing
    assert [p.id for p in raw.preprocessing if p.id != "ensure_dtype"] == ["clip", "zero_mean_unit_variance"]
    assert [str(n) for n in out.axes[1].channel_names] == [f"class_{c}" for c in trained.classes]
    assert [p.id for p in out.postprocessing if p.id != "ensure_dtype"][-1] == "softmax"
    assert [c.doi for c in descr.cite] == ["10.1007/978-3-319-46723-8_49"]
    assert [a.name for a in descr.authors] == ["Test Author"] and descr.license == "CC-BY-4.0"
    # with the files read and their hashes checked: still offline, every file is in the package
    checked = spec.load_description(package, perform_io_checks=True)
    assert checked.validation_summary.status == "valid-format", checked.validation_summary.display()


@pytest.mark.slow
def test_bioimageio_core_test_run_passes(package, no_network):
    core = pytest.importorskip("bioimageio.core")
    summary = core.test_model(package, devices=["cpu"])
    assert summary.status == "passed", summary.display()
    names = " ".join(d.name for d in summary.details)
    assert "pytorch_state_dict" in names and "torchscript" in names


def test_predict_with_the_package_gives_the_folder_labels(package, trained, run, tmp_path, no_network):
    for model, name in ((trained.model, "folder"), (package, "package")):
        result = run(
            "predict",
            model,
            trained.volume,
            "-o",
            tmp_path / f"{name}.tif",
            "--probabilities",
            tmp_path / f"{name}_prob.tif",
            "--device",
            "cpu",
            "--quiet",
        )
        assert result.exit_code == 0, result.output
    assert np.array_equal(tifffile.imread(tmp_path / "package.tif"), tifffile.imread(tmp_path / "folder.tif"))
    assert np.array_equal(tifffile.imread(tmp_path / "package_prob.tif"), tifffile.imread(tmp_path / "folder_prob.tif"))


def test_unpacked_package_is_a_model_folder(package, trained, run, tmp_path):
    folder = tmp_path / "unpacked"
    with zipfile.ZipFile(package) as archive:
        archive.extractall(folder)
    for model, name in ((trained.model, "folder"), (folder, "unpacked")):
        assert run("predict", model, trained.volume, "-o", tmp_path / f"{name}.tif", "--device", "cpu").exit_code == 0
    assert np.array_equal(tifffile.imread(tmp_path / "unpacked.tif"), tifffile.imread(tmp_path / "folder.tif"))


def test_torchscript_gives_the_state_dict_network_output(package, spec):
    import importlib

    import torch

    from sparseseg.method.preprocess import intensity_stats, normalise_with

    descr = spec.load_description(package, perform_io_checks=False)
    architecture = descr.weights.pytorch_state_dict.architecture
    built = getattr(importlib.import_module(architecture.import_from), architecture.callable)
    raw = _npy(package, "test_input.npy")
    assert raw.dtype == np.float32 and raw.ndim == 5 and raw.shape[0] == 1
    x = torch.from_numpy(normalise_with(raw[0], intensity_stats(raw[0]))[None])
    network = built(**architecture.kwargs).eval()  # as a bioimage.io tool builds it
    network.load_state_dict(torch.load(bytes_io.BytesIO(_member(package, "weights.pt")), weights_only=True))
    scripted = torch.jit.load(bytes_io.BytesIO(_member(package, "weights_torchscript.pt")), map_location="cpu").eval()
    with torch.inference_mode():
        expected, got = network(x), scripted(x)
        bigger = torch.cat([x, x.flip(2)], dim=2)  # another size than the one traced
        torch.testing.assert_close(scripted(bigger), network(bigger), rtol=0, atol=1e-5)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # and the test output is that network's, with the decision offsets and softmax
    probabilities = _npy(package, "test_output.npy")
    assert probabilities.shape == (1, expected.shape[1]) + raw.shape[2:]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_license_bioimage_io_does_not_know_is_refused(trained, spec, run, bad_input, tmp_path, no_network):
    result = run("export", trained.model, "-o", tmp_path / "m.zip", "--license", "NOT-A-LICENSE")
    bad_input(result, "--license NOT-A-LICENSE", "SPDX", alone=True)
    assert list(tmp_path.iterdir()) == []


def test_sample_with_other_channels_is_refused(trained, spec, run, bad_input, tmp_path):
    two = tmp_path / "two.tif"
    tifffile.imwrite(two, np.stack([trained.image, trained.image], axis=1), imagej=True, metadata={"axes": "ZCYX"})
    result = run("export", trained.model, "-o", tmp_path / "m.zip", "--sample", two)
    bad_input(result, "--sample", "channel", alone=True)
    assert not (tmp_path / "m.zip").exists()


def test_without_the_extra_export_says_what_to_install(trained, run, bad_input, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bioimageio.spec", None)  # import bioimageio.spec raises ImportError
    result = run("export", trained.model, "-o", tmp_path / "m.zip")
    bad_input(result, "sparseseg[bioimage]", alone=True)
    assert list(tmp_path.iterdir()) == []


def test_a_model_with_a_forest_exports_the_whole_model_with_a_warning(trained, spec, tmp_path, caplog, no_network):
    from dataclasses import replace

    from sparseseg.commands.export import export_model
    from sparseseg.method import forest, forest_apply, modelfolder
    from sparseseg.method.annotation import Annotation

    sparse = tifffile.imread(trained.sparse)
    mask = sparse != 255
    classes = np.array(trained.classes)
    annotation = Annotation(
        classes, np.where(mask, np.searchsorted(classes, np.where(mask, sparse, 0)), 0), mask, trained.planes
    )
    fitted = forest.fit_forest(trained.image[None], annotation, seed=0, n_estimators=3)
    folder = modelfolder.save_model(
        tmp_path / "blended", replace(modelfolder.load_model(trained.model), forest=fitted, blend=0.7)
    )
    with caplog.at_level("WARNING", logger="sparseseg"):
        path = export_model(folder, tmp_path / "m.zip", sample=[trained.volume])
    assert any("network alone" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    with zipfile.ZipFile(path) as archive:
        assert modelfolder.FOREST in archive.namelist()
    meta = json.loads(_member(path, modelfolder.CONFIG))
    assert meta["forest"] == modelfolder.FOREST and meta["blend"] == 0.7
    assert "network alone" in _member(path, "README.md").decode()
    loaded, original = modelfolder.load_model(path), modelfolder.load_model(folder)
    assert loaded.blend == 0.7
    expected = forest_apply.forest_probabilities(original.forest, trained.image[None], trained.classes)
    assert np.array_equal(
        forest_apply.forest_probabilities(loaded.forest, trained.image[None], trained.classes), expected
    )
