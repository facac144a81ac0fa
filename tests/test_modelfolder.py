"""The model folder with a forest: format 2 saves the forest (forest.joblib) and the blend weight and loads them back,
format 1 folders still load (the network alone), the --resume fingerprint covers the forest, bad ones are refused."""

import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import torch

from sparseseg import forest as F
from sparseseg import modelfolder, synthetic
from sparseseg.config import Config
from sparseseg.core import Model
from sparseseg.errors import InputError
from sparseseg.labels import Annotation
from sparseseg.model import UNet3D

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
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "forest.joblib", "weights.pt"]
    meta = _meta(folder)
    assert meta["format_version"] == 2 and meta["blend"] == 0.5 and meta["forest"] == "forest.joblib"
    loaded = modelfolder.load_model(folder)
    assert loaded.blend == 0.5 and isinstance(loaded.forest, F.Forest)
    assert np.array_equal(loaded.forest.classes, model.forest.classes)
    assert np.array_equal(loaded.forest.stats, model.forest.stats)
    expected = F.forest_probabilities(model.forest, volume[0], [0, 1, 2])
    assert np.array_equal(F.forest_probabilities(loaded.forest, volume[0], [0, 1, 2]), expected)
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
        del meta["blend"], meta["forest"], meta["estimate"]

    _rewrite(folder, to_format_1)
    assert set(_meta(folder)) == set(modelfolder.FIELDS_V1)
    loaded = modelfolder.load_model(folder)
    assert loaded.forest is None and loaded.blend == 1.0 and loaded.classes.tolist() == [0, 1, 2]


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


@pytest.mark.parametrize(("changes", "param"), [
    pytest.param(dict(blend=1.5), "blend", id="blend-above-1"),
    pytest.param(dict(blend=float("nan")), "blend", id="blend-nan"),
    pytest.param(dict(forest=None, blend=0.5), "blend", id="blend-without-a-forest"),
    pytest.param(dict(forest="a forest"), "forest", id="forest-not-a-forest"),
    pytest.param(dict(in_channels=2), "forest", id="forest-of-other-channels"),
    pytest.param(dict(classes=np.array([0, 1])), "forest", id="forest-knows-other-classes"),
])
def test_saving_a_bad_blend_or_forest_is_refused(model, tmp_path, changes, param):
    with pytest.raises(InputError) as refused:
        modelfolder.save_model(tmp_path / "m", replace(model, **changes))
    assert refused.value.param == param
    assert not (tmp_path / "m").exists() and list(tmp_path.iterdir()) == []


def _set(key, value):
    return lambda folder: _rewrite(folder, lambda meta: meta.__setitem__(key, value))


def _drop(key):
    return lambda folder: _rewrite(folder, lambda meta: meta.pop(key))


def _garbage(folder):
    (folder / modelfolder.FOREST).write_bytes(b"not a pickle")


def _not_a_forest(folder):
    import joblib

    joblib.dump({"a": 1}, folder / modelfolder.FOREST)


@pytest.mark.parametrize(("damage", "needles"), [
    pytest.param(_set("blend", 2), ["blend"], id="blend-2"),
    pytest.param(_set("blend", "half"), ["blend"], id="blend-a-string"),
    pytest.param(_drop("blend"), ["blend", "missing"], id="blend-missing"),
    pytest.param(_set("forest", "other.joblib"), ["forest"], id="forest-another-file"),
    pytest.param(_set("forest", None), ["blend", "forest"], id="forest-null-but-blend-below-1"),
    pytest.param(lambda folder: (folder / modelfolder.FOREST).unlink(), ["forest.joblib", "no such file"],
                 id="forest-file-missing"),
    pytest.param(_garbage, ["forest.joblib", "cannot read"], id="forest-file-garbage"),
    pytest.param(_not_a_forest, ["forest.joblib", "dict"], id="forest-file-not-a-forest"),
    pytest.param(_set("format_version", 3), ["format_version", "1, 2"], id="format-3"),
])
def test_loading_a_damaged_folder_is_refused(model, tmp_path, damage, needles):
    folder = modelfolder.save_model(tmp_path / "m", model)
    damage(folder)
    with pytest.raises(InputError) as refused:
        modelfolder.load_model(folder)
    for needle in needles:
        assert needle in str(refused.value), (needle, str(refused.value))
