"""The model folder with a forest: formats 3 and 4 save the forest (forest.npz, numeric arrays) and the blend weight and
load them back, format 1 and 3 folders still load (the network on the raw channels), format 2 folders with a pickled
forest are refused, the --resume fingerprint covers the forest, bad ones are refused."""

import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import torch

from sparseseg.commands import synthetic
from sparseseg.config import Config
from sparseseg.errors import InputError
from sparseseg.method import forest as F
from sparseseg.method import model_config, modelfolder
from sparseseg.method.annotation import Annotation
from sparseseg.method.core import Model
from sparseseg.method.forest_apply import forest_probabilities
from sparseseg.method.network import UNet3D

SHAPE = (12, 24, 24)


def _annotation(sparse, planes):
    mask = sparse != 255
    return Annotation(np.array([0, 1, 2]), np.where(mask, sparse, 0).astype(np.int64), mask, planes)


@pytest.fixture(scope="module")
def volume():
    image, truth = synthetic.blobs(SHAPE, seed=0)
    return image[None], _annotation(*synthetic.sparsify(truth, 2))


@pytest.fixture(scope="module")
def model(volume):
    """A small untrained network (classes 0, 1, 2) with a forest fitted on a blobs volume, blended half and half."""
    torch.manual_seed(0)
    config = Config(iterations=3, time_budget=60.0, base=4, batch_size=1, seed=0, device="cpu", patch=(8, 16, 16))
    network = UNet3D(1, 3, 4, [(2, 2, 2)] * 2).eval()
    forest = F.fit_forest(volume[0], volume[1], seed=0, n_estimators=5)
    return Model(network, np.array([0, 1, 2]), config, 1, forest=forest, blend=0.5)


def _meta(folder):
    return json.loads((folder / modelfolder.CONFIG).read_text())


def _rewrite(folder, change):
    meta = _meta(folder)
    change(meta)
    (folder / modelfolder.CONFIG).write_text(json.dumps(meta))


def test_round_trip_with_a_forest_and_blend(model, volume, tmp_path):
    folder = modelfolder.save_model(tmp_path / "m", model)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "forest.npz", "weights.pt"]
    meta = _meta(folder)
    assert meta["format_version"] == 4 and meta["blend"] == 0.5 and meta["forest"] == "forest.npz"
    loaded = modelfolder.load_model(folder)
    assert loaded.blend == 0.5 and isinstance(loaded.forest, F.Forest)
    assert np.array_equal(loaded.forest.classes, model.forest.classes)
    assert np.array_equal(loaded.forest.stats, model.forest.stats)
    expected = forest_probabilities(model.forest, volume[0], [0, 1, 2])
    assert np.array_equal(forest_probabilities(loaded.forest, volume[0], [0, 1, 2]), expected)
    for key, value in model.network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[key], value)


def test_without_a_forest_no_file_and_blend_1(model, tmp_path):
    folder = modelfolder.save_model(tmp_path / "m", replace(model, forest=None, blend=1.0))
    assert not (folder / modelfolder.FOREST).exists()
    assert _meta(folder)["forest"] is None and _meta(folder)["blend"] == 1.0
    loaded = modelfolder.load_model(folder)
    assert loaded.forest is None and loaded.blend == 1.0


def test_a_format_1_folder_still_loads(model, tmp_path):
    folder = modelfolder.save_model(tmp_path / "m", replace(model, forest=None, blend=1.0))

    def to_format_1(meta):
        meta["format_version"] = 1
        del meta["blend"], meta["forest"], meta["estimate"], meta["inputs"]

    _rewrite(folder, to_format_1)
    assert set(_meta(folder)) == set(model_config.FIELDS_V1)
    loaded = modelfolder.load_model(folder)
    assert loaded.forest is None and loaded.blend == 1.0 and loaded.classes.tolist() == [0, 1, 2]


def test_a_format_3_folder_still_loads_as_a_network_on_the_raw_channels(model, tmp_path):
    folder = modelfolder.save_model(tmp_path / "m", model)

    def to_format_3(meta):
        meta["format_version"] = 3
        del meta["inputs"]

    _rewrite(folder, to_format_3)
    loaded = modelfolder.load_model(folder)
    assert loaded.inputs.count == 1 and not loaded.inputs.filters and loaded.blend == 0.5


def test_a_format_4_folder_without_its_inputs_is_refused(model, tmp_path):
    folder = modelfolder.save_model(tmp_path / "m", model)
    _rewrite(folder, lambda meta: meta.pop("inputs"))
    with pytest.raises(InputError, match="inputs"):
        modelfolder.load_model(folder)


def test_a_package_without_a_forest_loads(model, tmp_path):
    folder = modelfolder.save_model(tmp_path / "m", replace(model, forest=None, blend=1.0))
    package = tmp_path / "m.zip"
    with zipfile.ZipFile(package, "w") as archive:
        for name in (modelfolder.CONFIG, modelfolder.WEIGHTS):
            archive.write(folder / name, name)
    loaded = modelfolder.load_model(package)
    assert loaded.forest is None and loaded.blend == 1.0


def test_the_fingerprint_covers_the_forest(model, volume, tmp_path):
    one = modelfolder.save_model(tmp_path / "one", model)
    other = F.fit_forest(volume[0], volume[1], seed=1, n_estimators=5)
    two = modelfolder.save_model(tmp_path / "two", replace(model, forest=other))
    assert (one / modelfolder.WEIGHTS).read_bytes() == (two / modelfolder.WEIGHTS).read_bytes()
    assert (one / modelfolder.CONFIG).read_bytes() == (two / modelfolder.CONFIG).read_bytes()
    assert modelfolder.model_digest(one) != modelfolder.model_digest(two)


# --- refused: on saving, an InputError naming the parameter; on loading, one naming the file --------------------


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        pytest.param(dict(blend=1.5), "blend", id="blend-above-1"),
        pytest.param(dict(blend=float("nan")), "blend", id="blend-nan"),
        pytest.param(dict(forest=None, blend=0.5), "blend", id="blend-without-a-forest"),
        pytest.param(dict(forest="a forest"), "forest", id="forest-not-a-forest"),
        pytest.param(dict(in_channels=2), "forest", id="forest-of-other-channels"),
        pytest.param(dict(classes=np.array([0, 1])), "forest", id="forest-knows-other-classes"),
    ],
)
def test_saving_a_bad_blend_or_forest_is_refused(model, tmp_path, changes, param):
    with pytest.raises(InputError) as refused:
        modelfolder.save_model(tmp_path / "m", replace(model, **changes))
    assert refused.value.param == param
    assert not (tmp_path / "m").exists() and list(tmp_path.iterdir()) == []


def _set(key, value):
    return lambda folder: _rewrite(folder, lambda meta: meta.__setitem__(key, value))


def _set_raw(key, text):
    """Set ``key`` to JSON ``text`` as written (1e999 reads as infinity, which json.dumps cannot write)."""

    def change(folder):
        _rewrite(folder, lambda meta: meta.__setitem__(key, "RAW"))
        path = folder / modelfolder.CONFIG
        path.write_text(path.read_text().replace('"RAW"', text))

    return change


def _drop(key):
    return lambda folder: _rewrite(folder, lambda meta: meta.pop(key))


def _garbage(folder):
    (folder / modelfolder.FOREST).write_bytes(b"not an archive")


def _not_a_forest(folder):
    np.savez(folder / modelfolder.FOREST, a=np.arange(3))


def _edit_forest(change):
    """Rewrite forest.npz with ``change(arrays)`` applied to its arrays."""

    def damage(folder):
        with np.load(folder / modelfolder.FOREST) as archive:
            arrays = {name: archive[name] for name in archive.files}
        change(arrays)
        with open(folder / modelfolder.FOREST, "wb") as f:
            np.savez(f, **arrays)

    return damage


def _child_before_parent(arrays):
    arrays["left"][0] = 0  # the root its own child: a loop the compiled tree code would never leave


def _child_outside(arrays):
    arrays["right"][0] = 10**6


def _pickled_array(arrays):
    arrays["classes"] = np.array([{"a": 1}], dtype=object)


@pytest.mark.parametrize(
    ("damage", "needles"),
    [
        pytest.param(_set("blend", 2), ["blend"], id="blend-2"),
        pytest.param(_set("blend", "half"), ["blend"], id="blend-a-string"),
        pytest.param(_drop("blend"), ["blend", "missing"], id="blend-missing"),
        pytest.param(_set("forest", "other.npz"), ["forest"], id="forest-another-file"),
        pytest.param(_set("forest", None), ["blend", "forest"], id="forest-null-but-blend-below-1"),
        pytest.param(
            lambda folder: (folder / modelfolder.FOREST).unlink(),
            ["forest.npz", "no such file"],
            id="forest-file-missing",
        ),
        pytest.param(_garbage, ["forest.npz", "cannot read"], id="forest-file-garbage"),
        pytest.param(_not_a_forest, ["forest.npz", "no array"], id="forest-file-not-a-forest"),
        pytest.param(_edit_forest(_child_before_parent), ["forest.npz", "child"], id="forest-tree-loops"),
        pytest.param(_edit_forest(_child_outside), ["forest.npz", "child"], id="forest-tree-points-outside"),
        pytest.param(_edit_forest(_pickled_array), ["forest.npz", "cannot read"], id="forest-object-array"),
        pytest.param(_set("class_weights", [1, -1, 1]), ["class_weights"], id="class-weights-negative"),
        pytest.param(_set_raw("class_weights", "[1, 1e999, 1]"), ["class_weights"], id="class-weights-infinite"),
        pytest.param(_set_raw("class_offsets", "[0, 0, 1e999]"), ["class_offsets"], id="class-offsets-infinite"),
        pytest.param(_set("classes", [0, 1, 70000]), ["classes", "65535"], id="classes-above-65535"),
        pytest.param(_set("classes", [-5, 1, 2]), ["classes", "65535"], id="classes-negative"),
        pytest.param(_set("train_shapes", {"z": [10**9, 48, 48]}), ["train_shapes"], id="train-shape-huge"),
        pytest.param(_set("train_shapes", {"z": [0, 0, 0]}), ["train_shapes"], id="train-shape-zero"),
        pytest.param(_set("pools", [[0, 2, 2], [2, 2, 2]]), ["pools"], id="pool-kernel-0"),
        pytest.param(_set("in_channels", 10**6), ["in_channels"], id="in-channels-a-million"),
        pytest.param(_set("format_version", 5), ["format_version", "1, 2, 3, 4"], id="format-5"),
    ],
)
def test_loading_a_damaged_folder_is_refused(model, tmp_path, damage, needles):
    folder = modelfolder.save_model(tmp_path / "m", model)
    damage(folder)
    with pytest.raises(InputError) as refused:
        modelfolder.load_model(folder)
    for needle in needles:
        assert needle in str(refused.value), (needle, str(refused.value))


def _config_text(folder, text):
    (folder / modelfolder.CONFIG).write_text(text)


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        pytest.param("[" * 100_000 + "]" * 100_000, ["config.json", "nested too deep"], id="nested-100000-deep"),
        pytest.param('{"format_version": NaN}', ["config.json", "NaN"], id="nan-constant"),
        pytest.param(" " * (model_config.MAX_CONFIG_BYTES + 1), ["config.json", "bytes"], id="config-too-large"),
    ],
)
def test_a_config_that_cannot_be_a_model_is_refused(model, tmp_path, text, needles):
    folder = modelfolder.save_model(tmp_path / "m", model)
    _config_text(folder, text)
    with pytest.raises(InputError) as refused:
        modelfolder.load_model(folder)
    for needle in needles:
        assert needle in str(refused.value), (needle, str(refused.value))


def test_a_format_2_folder_with_a_pickled_forest_is_refused_with_how_to_resave(model, tmp_path):
    import re
    import subprocess
    import sys

    import joblib

    folder = modelfolder.save_model(tmp_path / "m", model)
    (folder / modelfolder.FOREST).unlink()
    # a forest pickled by sparseseg before its packages, whose class was sparseseg.forest.Forest
    old_module = F.Forest.__module__
    sys.modules["sparseseg.forest"], F.Forest.__module__ = F, "sparseseg.forest"
    try:
        joblib.dump(model.forest, folder / modelfolder.PICKLED_FOREST)
    finally:
        F.Forest.__module__ = old_module
        del sys.modules["sparseseg.forest"]
    _rewrite(folder, lambda meta: meta.update(format_version=2, forest=modelfolder.PICKLED_FOREST))
    with pytest.raises(InputError) as refused:
        modelfolder.load_model(folder)
    message = str(refused.value)
    assert "pickle" in message and "\n" not in message
    # the command the message gives, run as a user would, makes the folder load, with the same forest
    command = re.search(r'python -c "(.*)"', message).group(1)
    done = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = modelfolder.load_model(folder)
    assert loaded.blend == 0.5 and np.array_equal(loaded.forest.classes, model.forest.classes)
    features = np.random.default_rng(0).normal(size=(100, model.forest.classifier.n_features_in_)).astype(np.float32)
    assert np.array_equal(
        loaded.forest.classifier.predict_proba(features), model.forest.classifier.predict_proba(features)
    )


def test_the_saved_forest_predicts_as_the_fitted_one(model, volume, tmp_path):
    folder = modelfolder.save_model(tmp_path / "m", model)
    loaded = modelfolder.load_model(folder)
    features = np.random.default_rng(0).normal(size=(500, model.forest.classifier.n_features_in_)).astype(np.float32)
    assert np.array_equal(
        loaded.forest.classifier.predict_proba(features), model.forest.classifier.predict_proba(features)
    )
