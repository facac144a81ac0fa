"""What the network reads (`sparseseg.method.inputs`): the raw channels, or with them the forest's filter features,
normalised by statistics fitted once; the same values for the whole volume and block by block; kept in the model
folder (format 4)."""

import json

import numpy as np
import pytest
import torch

from sparseseg.commands import synthetic
from sparseseg.config import Config
from sparseseg.errors import InputError
from sparseseg.io.blocks import ArraySource, with_halo
from sparseseg.method import modelfolder
from sparseseg.method.annotation import read_annotation
from sparseseg.method.core import network_probabilities
from sparseseg.method.features import HALO, filter_features, n_features
from sparseseg.method.fitting import fit
from sparseseg.method.inputs import fit_inputs, inputs_from_dict, network_image, raw_inputs
from sparseseg.method.preprocess import intensity_stats, normalise, normalise_with
from sparseseg.method.streaming import BlockPlan, block_input

SMALL = dict(iterations=3, time_budget=60.0, base=4, batch_size=1, seed=0, device="cpu", patch=(8, 16, 16))


@pytest.fixture(scope="module")
def volume():
    image, truth = synthetic.blobs((20, 48, 48), seed=3)
    sparse, _ = synthetic.sparsify(truth, 2)
    return image[None].astype(np.float32), read_annotation(sparse, 255, None)[0]


def test_raw_inputs_are_the_normalised_channels(volume):
    image = normalise(volume[0])
    inputs = fit_inputs(image, filters=False)
    assert inputs == raw_inputs(1) and inputs.count == 1 and inputs.halo == 0 and inputs.as_dict() is None
    assert network_image(image, inputs) is image


def test_filter_inputs_add_every_feature_normalised(volume):
    image = normalise(volume[0])
    inputs = fit_inputs(image, filters=True, spacing=(2.0, 1.0, 1.0))
    assert inputs.count == 1 + n_features(1) and inputs.halo == HALO
    stacked = network_image(image, inputs)
    assert stacked.shape == (inputs.count,) + image.shape[1:] and stacked.dtype == np.float32
    np.testing.assert_array_equal(stacked[0], image[0])
    features = np.moveaxis(filter_features(image, (2.0, 1.0, 1.0)), -1, 0)
    lo, hi, mean, std = inputs.stats[4]
    np.testing.assert_allclose(stacked[5], (np.clip(features[4], lo, hi) - mean) / std, rtol=1e-5, atol=1e-5)
    # each feature channel is brought to about zero mean and unit spread on the volume it was fitted on
    assert np.abs(stacked[1:].mean(axis=(1, 2, 3))).max() < 0.1
    assert np.abs(stacked[1:].std(axis=(1, 2, 3)) - 1).max() < 0.1


def test_a_block_reads_the_context_its_features_need(volume):
    image = volume[0]
    stats = intensity_stats(image)
    inputs = fit_inputs(normalise_with(image, stats), filters=True)
    plan = BlockPlan([], (0, 0, 0), stats, {}, (8, 16, 16), [], [], inputs)
    whole = network_image(normalise_with(image, stats), inputs)
    block = (slice(4, 12), slice(8, 40), slice(0, 24))
    read, _ = with_halo(block, (2, 2, 2), image.shape[1:])
    np.testing.assert_allclose(block_input(ArraySource(image), read, plan), whole[(slice(None),) + read], atol=1e-5)


def test_fit_builds_the_network_for_its_inputs_and_given_features_change_nothing(volume):
    from sparseseg.method.features import volume_features

    image, annotation = volume
    config = Config(**SMALL, filters=True)
    model, _ = fit([image], [annotation], config)
    assert model.network.encoders[0].block[0].in_channels == 1 + n_features(1)
    given, _ = fit([image], [annotation], config, features=volume_features(image))
    for a, b in zip(model.network.state_dict().values(), given.network.state_dict().values()):
        torch.testing.assert_close(a, b)
    raw, _ = fit([image], [annotation], Config(**SMALL, filters=False))
    assert raw.inputs == raw_inputs(1) and raw.network.encoders[0].block[0].in_channels == 1


def test_the_network_pass_given_the_features_gives_what_it_computes_itself(volume):
    from sparseseg.method.features import volume_features

    image, annotation = volume
    model, _ = fit([image], [annotation], Config(**SMALL, filters=True))
    computed, _, _ = network_probabilities(model, image, "cpu")
    given, _, _ = network_probabilities(model, image, "cpu", features=volume_features(image))
    np.testing.assert_allclose(given, computed, atol=1e-5)
    with pytest.raises(InputError, match="must be the image's features"):
        network_probabilities(model, image, "cpu", features=volume_features(image[:, :10]))


def test_a_warm_start_keeps_the_inputs_it_was_fitted_with(volume):
    image, annotation = volume
    model, _ = fit([image], [annotation], Config(**SMALL, filters=True))
    again, _ = fit([image * 3 + 1], [annotation], Config(**SMALL, filters=False), init=model)
    np.testing.assert_array_equal(again.inputs.stats, model.inputs.stats)


def test_the_model_folder_keeps_the_inputs(volume, tmp_path):
    image, annotation = volume
    model, _ = fit([image], [annotation], Config(**SMALL, filters=True))
    modelfolder.save_model(tmp_path / "m", model)
    meta = json.loads((tmp_path / "m" / modelfolder.CONFIG).read_text())
    assert meta["format_version"] == 4 and len(meta["inputs"]["stats"]) == n_features(1)
    loaded = modelfolder.load_model(tmp_path / "m")
    np.testing.assert_array_equal(loaded.inputs.stats, model.inputs.stats)
    before, _, _ = network_probabilities(model, image, "cpu")
    after, _, _ = network_probabilities(loaded, image, "cpu")
    np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize(
    "value, needle",
    [
        ({"filters": True, "spacing": None}, "must be null or an object"),
        ({"filters": False, "spacing": None, "stats": []}, "must be null or an object"),
        ({"filters": True, "spacing": None, "stats": [[0, 1, 0, 1]]}, "25 rows of 4 numbers"),
        ({"filters": True, "spacing": [1, 1], "stats": [[0, 1, 0, 1]] * 25}, "three positive numbers"),
        ({"filters": True, "spacing": None, "stats": [[0, 1, 0, True]] * 25}, "25 rows of 4 numbers"),
        ({"filters": True, "spacing": None, "stats": [[0, 1e309, 0, 1]] * 25}, "finite"),
    ],
)
def test_bad_inputs_in_a_model_folder_are_refused(value, needle):
    with pytest.raises(InputError, match=needle):
        inputs_from_dict(value, 1)


def test_a_folder_with_bad_inputs_names_the_field(volume, tmp_path):
    image, annotation = volume
    model, _ = fit([image], [annotation], Config(**SMALL, filters=True))
    modelfolder.save_model(tmp_path / "m", model)
    path = tmp_path / "m" / modelfolder.CONFIG
    meta = json.loads(path.read_text())
    meta["inputs"]["stats"] = meta["inputs"]["stats"][:3]
    path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="field 'inputs'"):
        modelfolder.load_model(tmp_path / "m")
