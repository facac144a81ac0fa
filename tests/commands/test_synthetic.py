"""Tests for sparseseg.commands.synthetic, which the other tests rely on."""

import numpy as np
import pytest

from sparseseg.commands import synthetic


def test_blobs_are_deterministic_and_labelled():
    image, labels = synthetic.blobs((8, 16, 16), seed=3)
    image2, labels2 = synthetic.blobs((8, 16, 16), seed=3)
    assert image.dtype == np.float32 and labels.dtype == np.uint8
    assert image.shape == labels.shape == (8, 16, 16)
    np.testing.assert_array_equal(image, image2)
    np.testing.assert_array_equal(labels, labels2)
    assert not np.array_equal(synthetic.blobs((8, 16, 16), seed=4)[1], labels)
    assert set(np.unique(labels)) <= {0, 1, 2}


def test_blob_classes_differ_in_brightness():
    image, labels = synthetic.blobs((24, 48, 48), seed=1)
    means = [image[labels == k].mean() for k in (0, 1, 2)]
    assert means[1] > means[0] > means[2]


@pytest.mark.parametrize(
    "size, k",
    [
        (10, 1),
        (10, 3),
        (10, 9),
        (100, 7),
    ],
)
def test_evenly_spaced(size, k):
    planes = synthetic.evenly_spaced(size, k)
    assert len(planes) == len(set(planes)) == k
    assert planes == sorted(planes)
    assert all(0 <= p < size for p in planes)


@pytest.mark.parametrize("size, k", [(10, 0), (3, 4), (5, 5)])
def test_evenly_spaced_rejects(size, k):
    with pytest.raises(ValueError):
        synthetic.evenly_spaced(size, k)


def test_evenly_spaced_with_an_offset_puts_one_plane_in_each_slab():
    assert synthetic.evenly_spaced(12, 2, 0.5) == [3, 9]
    assert synthetic.evenly_spaced(12, 3, 0.0) == [0, 4, 8]
    assert synthetic.evenly_spaced(96, 1, 5 / 6) == [80]


def test_evenly_spread_offsets_annotate_every_plane_equally_often():
    runs = 6
    seen = [p for r in range(runs) for p in synthetic.evenly_spaced(12, 2, (r + 0.5) / runs)]
    assert sorted(seen) == list(range(12))


@pytest.mark.parametrize("offset", [-0.1, 1.0, 1.5])
def test_evenly_spaced_rejects_an_offset_outside_0_1(offset):
    with pytest.raises(ValueError, match=str(offset)):
        synthetic.evenly_spaced(12, 2, offset)


def test_sparsify_keeps_whole_planes(blobs_small):
    labels = blobs_small[1]
    sparse, planes = synthetic.sparsify(labels, 2, axes="zx")
    assert planes["y"] == [] and len(planes["z"]) == len(planes["x"]) == 2
    kept = np.zeros(labels.shape, dtype=bool)
    kept[planes["z"]] = True
    kept[:, :, planes["x"]] = True
    np.testing.assert_array_equal(sparse[kept], labels[kept])
    assert np.all(sparse[~kept] == 255)


def test_sparsify_places_planes_at_the_offset(blobs_small):
    _, planes = synthetic.sparsify(blobs_small[1], 2, axes="z", offset=0.25)
    assert planes == {"z": synthetic.evenly_spaced(blobs_small[1].shape[0], 2, 0.25), "y": [], "x": []}


def test_sparsify_widens_dtype_for_a_large_unlabeled_value(blobs_small):
    sparse, _ = synthetic.sparsify(blobs_small[1], 1, unlabeled=1000)
    assert sparse.dtype == np.uint16 and (sparse == 1000).any()
