"""Tests for sparseseg.method.network: the 3D U-Net, its size and its pooling plan."""

import pytest
import torch

from sparseseg.method.network import UNet3D, count_parameters
from sparseseg.method.planning import pooling_kernels


def test_paper_parameter_count():
    # Cicek et al. 2016, section 2: "The architecture has 19069955 parameters in total."
    assert count_parameters(UNet3D(3, 3, 32)) == 19_069_955


def _conv(cin, cout, k):
    return cin * cout * k**3 + cout


def test_parameter_count_of_a_small_network():
    """Counted layer by layer for base 4, two poolings, 2 channels in, 5 classes out."""
    b = 4
    expected = (
        _conv(2, b, 3)
        + _conv(b, 2 * b, 3)  # level 0: 2 -> 4 -> 8
        + _conv(2 * b, 2 * b, 3)
        + _conv(2 * b, 4 * b, 3)  # level 1: 8 -> 8 -> 16
        + _conv(4 * b, 4 * b, 3)
        + _conv(4 * b, 8 * b, 3)  # level 2: 16 -> 16 -> 32
        + 8 * b * 8 * b * 8  # up-convolution 32 -> 32, 2x2x2, no bias
        + _conv(8 * b + 4 * b, 4 * b, 3)
        + _conv(4 * b, 4 * b, 3)  # 48 -> 16 -> 16
        + 4 * b * 4 * b * 8  # up-convolution 16 -> 16
        + _conv(4 * b + 2 * b, 2 * b, 3)
        + _conv(2 * b, 2 * b, 3)  # 24 -> 8 -> 8
        + _conv(2 * b, 5, 1)  # head
    )
    assert count_parameters(UNet3D(2, 5, b, [(2, 2, 2)] * 2)) == expected


@pytest.mark.parametrize(
    "pools, shape",
    [
        ([(2, 2, 2)] * 3, (8, 24, 40)),  # odd multiples (3x, 5x) of the size multiple 8
        ([(2, 2, 2)] * 3, (24, 8, 56)),
        ([(2, 2, 2)] * 2, (4, 12, 20)),
        (pooling_kernels((50, 4, 4), 3), (5, 24, 40)),  # no pooling along z: any z size works
        (pooling_kernels((3, 1, 1), 3), (4, 24, 8)),
        ([], (3, 5, 7)),  # depth 0: no pooling at all
    ],
)
def test_output_covers_the_input(pools, shape):
    torch.manual_seed(0)
    model = UNet3D(2, 3, 4, pools).eval()
    assert all(s % m == 0 for s, m in zip(shape, model.size_multiple))
    with torch.no_grad():
        out = model(torch.rand(2, 2, *shape))
    assert out.shape == (2, 3) + shape
    assert torch.isfinite(out).all()


def test_network_size_multiple_follows_its_pools():
    assert UNet3D(1, 2, 4, [(1, 2, 2), (2, 2, 1)]).size_multiple == (2, 4, 2)


@pytest.mark.parametrize("in_channels, n_classes, base", [(0, 2, 4), (1, 1, 4), (1, 2, 0)])
def test_unet_rejects(in_channels, n_classes, base):
    with pytest.raises(ValueError):
        UNet3D(in_channels, n_classes, base)


def test_count_parameters_skips_frozen():
    model = UNet3D(1, 2, 4, [(2, 2, 2)])
    total = count_parameters(model)
    for p in model.head.parameters():
        p.requires_grad_(False)
    assert count_parameters(model) == total - sum(p.numel() for p in model.head.parameters())
