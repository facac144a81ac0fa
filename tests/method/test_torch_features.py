"""The filter features in torch (`sparseseg.method.torch_features`) equal the numpy ones, and a network that reads them
runs on the raw channels alone with the U-Net's own weights: what ``export`` packages."""

import numpy as np
import pytest
import torch

from sparseseg.commands import synthetic
from sparseseg.method.features import filter_features
from sparseseg.method.inputs import fit_inputs, network_image
from sparseseg.method.network import UNet3D
from sparseseg.method.preprocess import normalise
from sparseseg.method.torch_features import FilteredUNet3D, FilterStack, architecture, gaussian_kernel, runnable_on_raw


@pytest.fixture(scope="module")
def image():
    one, _ = synthetic.blobs((16, 40, 36), seed=5)
    two, _ = synthetic.blobs((16, 40, 36), seed=6)
    return normalise(np.stack([one, two]).astype(np.float32))


def test_the_gaussian_kernel_is_scipys():
    from scipy.ndimage import gaussian_filter1d

    for sigma in (0.056, 0.7, 2.366, 8.0):
        impulse = np.zeros(101)
        impulse[50] = 1
        kernel = gaussian_kernel(sigma)
        radius = len(kernel) // 2
        np.testing.assert_allclose(gaussian_filter1d(impulse, sigma)[50 - radius : 51 + radius], kernel, atol=1e-12)


@pytest.mark.parametrize("spacing", [None, (50.0, 4.0, 4.0)], ids=["isotropic", "anisotropic"])
def test_torch_features_equal_the_numpy_ones_everywhere(image, spacing):
    expected = np.moveaxis(filter_features(image, spacing), -1, 0)
    with torch.inference_mode():
        got = FilterStack(spacing)(torch.from_numpy(image[None]))[0].numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-3)


def test_the_filtered_network_keeps_the_unets_weights_and_output(image):
    inputs = fit_inputs(image, filters=True)
    torch.manual_seed(0)
    network = UNet3D(inputs.count, 3, 4, [(2, 2, 2)] * 2).eval()
    filtered = runnable_on_raw(network, inputs)
    assert isinstance(filtered, FilteredUNet3D) and not filtered.training
    assert filtered.state_dict().keys() == network.state_dict().keys()  # one weights.pt serves both
    name, kwargs = architecture(network, inputs)
    assert name == "FilteredUNet3D" and kwargs["in_channels"] == 2 and kwargs["base"] == 4
    crop = np.ascontiguousarray(image[:, :16, :32, :32])
    with torch.inference_mode():
        wrapped = filtered(torch.from_numpy(crop[None]))
        direct = network(torch.from_numpy(network_image(crop, inputs)[None]))
    np.testing.assert_allclose(wrapped.numpy(), direct.numpy(), atol=2e-3)


def test_a_network_of_the_raw_channels_is_itself():
    network = UNet3D(2, 3, 4, [(2, 2, 2)])
    inputs = fit_inputs(np.zeros((2, 4, 4, 4), np.float32), filters=False)
    assert runnable_on_raw(network, inputs) is network
    assert architecture(network, inputs) == (
        "UNet3D",
        {"in_channels": 2, "n_classes": 3, "base": 4, "pools": [[2, 2, 2]]},
    )
