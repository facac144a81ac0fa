"""Tests for sparseseg.method.sliding_window: sliding-window blending and class probabilities."""

import numpy as np
import pytest
import torch

from sparseseg.method import sliding_window as infer
from sparseseg.method.network import UNet3D


@pytest.mark.parametrize(
    "shape",
    [
        (9, 13, 17),
        (20, 31, 41),
        (3, 5, 7),
        (8, 16, 16),
        (4, 40, 10),
    ],  # odd, larger, smaller than the patch, exact, mixed
)
@pytest.mark.parametrize("overlap", [0.0, 0.5])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_identity_is_reproduced(shape, overlap, batch_size):
    generator = torch.Generator().manual_seed(0)
    image = torch.rand((2,) + shape, generator=generator)
    calls = []

    def identity(batch):
        calls.append(batch.shape)
        return batch

    out = infer.sliding_window(image, identity, 2, (8, 16, 16), overlap, batch_size)
    assert out.shape == image.shape and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), image.numpy(), atol=1e-6)
    assert all(c[0] <= batch_size and c[1:] == (2, 8, 16, 16) for c in calls)


def test_blending_weighs_window_centres_more():
    """Each window returns its own number; where windows overlap the result lies between them,
    closer to the window whose centre is nearer."""
    image = torch.zeros((1, 8, 8, 24))
    counter = iter(range(100))

    def window_id(batch):
        return torch.stack([torch.full(b.shape, float(next(counter))) for b in batch])

    # a line through the windows' centres in z and y (at their corners the weights sit at the floor)
    out = infer.sliding_window(image, window_id, 1, (8, 8, 16), overlap=0.5)[0, 3, 4]
    # windows along x start at 0 and 8: x < 8 only the first, x >= 16 only the second
    assert torch.all(out[:8] == 0) and torch.all(out[16:] == 1)
    middle = out[8:16]
    assert torch.all(middle > 0) and torch.all(middle < 1)
    assert torch.all(torch.diff(middle) > 0)


def test_output_channels_may_differ_from_input():
    image = torch.rand((1, 6, 10, 12))

    def three(batch):
        return torch.cat([batch, 2 * batch, batch + 1], dim=1)

    out = infer.sliding_window(image, three, 3, (4, 8, 8), 0.5)
    torch.testing.assert_close(out, torch.cat([image, 2 * image, image + 1]), atol=1e-6, rtol=1e-5)


def test_flips():
    assert infer.flips(False) == [()]
    flips = infer.flips(True)
    assert len(flips) == 8 == len(set(flips))
    assert all(set(f) <= {2, 3, 4} for f in flips)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return UNet3D(2, 3, 4, [(2, 2, 2)] * 2).eval()


@pytest.mark.parametrize("shape", [(10, 20, 20), (4, 6, 9)])
def test_probabilities_sum_to_one(tiny_model, shape):
    image = np.random.default_rng(0).normal(size=(2,) + shape).astype(np.float32)
    probabilities = infer.predict_probabilities(tiny_model, image, (8, 16, 16), torch.device("cpu"))
    assert probabilities.shape == (3,) + shape and probabilities.dtype == np.float32
    assert probabilities.min() >= 0 and probabilities.max() <= 1
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)


def test_tta_same_shape_and_still_probabilities(tiny_model):
    image = np.random.default_rng(1).normal(size=(2, 8, 12, 12)).astype(np.float32)
    plain = infer.predict_probabilities(tiny_model, image, (8, 8, 8), torch.device("cpu"), tta=False)
    tta = infer.predict_probabilities(tiny_model, image, (8, 8, 8), torch.device("cpu"), tta=True)
    assert tta.shape == plain.shape
    np.testing.assert_allclose(tta.sum(axis=0), 1.0, atol=1e-5)
    assert not np.allclose(tta, plain)  # the flips were really averaged in


def test_tta_of_a_flip_invariant_image_is_flip_invariant(tiny_model):
    """For an image that every flip leaves unchanged, the average over all 8 flips of the (flipped
    back) predictions is itself unchanged by every flip, whatever the network."""
    rng = np.random.default_rng(2)
    image = rng.normal(size=(2, 8, 8, 8)).astype(np.float32)
    for axis in (1, 2, 3):
        image = image + np.flip(image, axis)
    tta = infer.predict_probabilities(tiny_model, image, (8, 8, 8), torch.device("cpu"), tta=True)
    for axis in (1, 2, 3):
        np.testing.assert_allclose(np.flip(tta, axis), tta, atol=1e-5)


def test_model_output_matches_sliding_window_on_one_window(tiny_model):
    image = np.random.default_rng(3).normal(size=(2, 8, 16, 16)).astype(np.float32)
    probabilities = infer.predict_probabilities(tiny_model, image, (8, 16, 16), torch.device("cpu"))
    with torch.no_grad():
        direct = torch.softmax(tiny_model(torch.from_numpy(image)[None]), dim=1)[0].numpy()
    np.testing.assert_allclose(probabilities, direct, atol=1e-5)
