"""Tests for sparseseg.method.annotation: the annotation convention, plane detection, class weights."""

import numpy as np
import pytest

from sparseseg.errors import InputError
from sparseseg.method import annotation as L

SHAPE = (12, 24, 24)


def _painted():
    """Labels painted on z planes 3 and 9 only (napari style: background 0 everywhere else).

    The painted objects span most of y and x, so only the z axis has few planes with labels.
    """
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[3, 2:22, 2:22] = 1
    labels[9, 1:20, 3:23] = 2
    return labels


def _ambiguous():
    """Two small painted squares, one on plane z=3 and one on plane y=12: either axis could be the annotated one."""
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[3, 5:8, 5:8] = 1
    labels[2:4, 12, 5:8] = 2
    return labels


def _sparse(classes=(0, 1, 2), unlabeled=255, dtype=np.uint8):
    """Planes z=4 and x=10 annotated with the given classes in stripes, ``unlabeled`` elsewhere."""
    labels = np.full(SHAPE, unlabeled, dtype=dtype)
    classes = np.array(classes, dtype=dtype)
    labels[4] = classes[np.arange(SHAPE[1] * SHAPE[2]).reshape(SHAPE[1:]) // 7 % len(classes)]
    labels[:, :, 10] = classes[np.arange(SHAPE[0] * SHAPE[1]).reshape(SHAPE[:2]) // 5 % len(classes)]
    return labels


# --- parse_planes -----------------------------------------------------------------


@pytest.mark.parametrize(
    "specs, expected",
    [
        (["z=3,1"], {"z": [1, 3], "y": [], "x": []}),
        (["z=2", "y=5"], {"z": [2], "y": [5], "x": []}),
        (["Z=2 x=4,0"], {"z": [2], "y": [], "x": [0, 4]}),  # one argument holding two axes, upper case
        (["z=2,2", "z=11"], {"z": [2, 11], "y": [], "x": []}),  # duplicates dropped, repeats merged
        (None, {"z": [], "y": [], "x": []}),
    ],
)
def test_parse_planes(specs, expected):
    assert L.parse_planes(specs, SHAPE) == expected


# `axis not in "zyx"` is a substring test: '' and 'zy' pass it and then fail with a KeyError.


@pytest.mark.parametrize(
    "spec",
    [
        "z",
        "z=",
        "q=1",
        "z=a",
        "z=1,,2",
        "z=1.5",
        "z=12",
        "z=-1",
        "y=24",
        "x=100",
        pytest.param("=3"),
        pytest.param("zy=3"),
        pytest.param("yx=1"),
    ],
)
def test_parse_planes_rejects(spec):
    with pytest.raises(InputError, match="--planes"):
        L.parse_planes([spec], SHAPE)


def test_planes_mask():
    planes = {"z": [1, 7], "y": [], "x": [20]}
    mask = L.planes_mask(planes, SHAPE)
    z, _, x = np.indices(SHAPE)
    expected = (z == 1) | (z == 7) | (x == 20)
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, expected)


def test_planes_mask_empty():
    assert not L.planes_mask({"z": [], "y": [], "x": []}, SHAPE).any()


def test_an_annotation_has_only_its_own_planes():
    mask = L.planes_mask({"z": [2, 5], "y": [3]}, SHAPE)
    annotation = L.Annotation(np.array([0, 1]), np.zeros(SHAPE, np.int64), mask, {"z": [2, 5], "y": [3], "x": []})
    assert annotation.has_planes({"z": [5], "y": [3]}) and annotation.has_planes({})
    assert not annotation.has_planes({"z": [4]})  # not annotated
    assert not annotation.has_planes({"x": [3]})  # annotated along another axis
    assert not annotation.has_planes({"t": [2]})  # no such axis


# --- which voxels are annotated ----------------------------------------------------


def test_detect_planes_finds_the_painted_axis():
    assert L.detect_planes(_painted()) == {"z": [3, 9], "y": [], "x": []}


def test_read_annotation_of_painted_planes():
    labels = _painted()
    annotation, how = L.read_annotation(labels)
    z = np.indices(SHAPE)[0]
    np.testing.assert_array_equal(annotation.mask, (z == 3) | (z == 9))
    assert annotation.planes == {"z": [3, 9], "y": [], "x": []}
    np.testing.assert_array_equal(annotation.classes, [0, 1, 2])
    np.testing.assert_array_equal(annotation.target[annotation.mask], labels[annotation.mask])
    assert "z=3,9" in how


def test_ambiguous_painting_says_both_ways_to_say_it():
    with pytest.raises(InputError) as info:
        L.read_annotation(_ambiguous())
    message = str(info.value)
    assert "--unlabeled" in message and "--planes" in message


def test_ambiguous_painting_is_fine_with_explicit_planes():
    labels = _ambiguous()
    annotation, _ = L.read_annotation(labels, planes={"z": [3], "y": [12], "x": []})
    np.testing.assert_array_equal(annotation.mask, L.planes_mask({"z": [3], "y": [12], "x": []}, SHAPE))
    np.testing.assert_array_equal(annotation.target[annotation.mask], labels[annotation.mask])


def test_read_annotation_with_unlabeled_value(blobs_small, sparse_small):
    truth = blobs_small[1]
    sparse, planes = sparse_small
    annotation, how = L.read_annotation(sparse)
    np.testing.assert_array_equal(annotation.mask, sparse != 255)
    np.testing.assert_array_equal(annotation.target[annotation.mask], truth[sparse != 255])
    np.testing.assert_array_equal(annotation.target[~annotation.mask], 0)
    assert annotation.target.dtype == np.int64
    assert annotation.planes == planes
    assert annotation.n_classes == 3
    assert "255" in how


def test_read_annotation_with_other_unlabeled_value():
    labels = _sparse(unlabeled=99)
    annotation, _ = L.read_annotation(labels, unlabeled=99)
    np.testing.assert_array_equal(annotation.mask, labels != 99)
    np.testing.assert_array_equal(annotation.classes, [0, 1, 2])


def test_explicit_planes_mark_everything_else_unlabeled():
    labels = _painted()
    labels[6, 4:8, 4:8] = 1  # paint outside the named planes: ignored
    planes = {"z": [3, 9], "y": [], "x": []}
    annotation, how = L.read_annotation(labels, planes=planes)
    np.testing.assert_array_equal(annotation.mask, L.planes_mask(planes, SHAPE))
    assert not annotation.mask[6].any()
    assert "z=3,9" in how


def test_explicit_planes_still_skip_unlabeled_voxels_inside_them():
    labels = _painted()
    labels[3, :2, :] = 255  # part of an annotated plane left unlabeled
    planes = {"z": [3, 9], "y": [], "x": []}
    annotation, _ = L.read_annotation(labels, unlabeled=255, planes=planes)
    np.testing.assert_array_equal(annotation.mask, L.planes_mask(planes, SHAPE) & (labels != 255))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32])
def test_class_ids_map_to_contiguous_indices(dtype):
    labels = _sparse(classes=(0, 3, 7), dtype=dtype)
    annotation, _ = L.read_annotation(labels)
    np.testing.assert_array_equal(annotation.classes, [0, 3, 7])
    index = {0: 0, 3: 1, 7: 2}
    expected = np.vectorize(index.get)(labels[annotation.mask].astype(int))
    np.testing.assert_array_equal(annotation.target[annotation.mask], expected)
    assert annotation.target.max() == 2


def test_largest_class_id_is_accepted():
    labels = _sparse(classes=(0, 65535), unlabeled=255, dtype=np.uint16)
    annotation, _ = L.read_annotation(labels)
    np.testing.assert_array_equal(annotation.classes, [0, 65535])


def _no_annotated_voxel():
    return np.full(SHAPE, 255, dtype=np.uint8)


def _nothing_painted():
    return np.zeros(SHAPE, dtype=np.uint8)


def _one_class():
    labels = np.full(SHAPE, 255, dtype=np.uint8)
    labels[4] = 0
    return labels


def _non_integer():
    labels = _sparse().astype(np.float32)
    labels[4, 0, 0] = 0.5
    return labels


def _not_finite():
    labels = _sparse().astype(np.float32)
    labels[4, 0, 0] = np.nan
    return labels


def _negative():
    labels = _sparse().astype(np.int16)
    labels[4, 0, 0] = -1
    return labels


def _too_large():
    labels = _sparse().astype(np.int32)
    labels[4, 0, 0] = 65536
    return labels


def _two_d():
    return np.zeros(SHAPE[1:], dtype=np.uint8)


@pytest.mark.parametrize(
    "make, message",
    [
        (_no_annotated_voxel, "no voxel is annotated"),
        (_nothing_painted, "no non-zero voxel"),
        (_one_class, "only class 0"),
        (_non_integer, "whole numbers"),
        (_not_finite, "whole numbers"),
        (_negative, "0..65535"),
        (_too_large, "0..65535"),
        (_two_d, "3D"),
    ],
)
def test_read_annotation_rejects(make, message):
    with pytest.raises(InputError, match=message):
        L.read_annotation(make(), name="my_labels.tif")


@pytest.mark.parametrize(
    "make",
    [
        _no_annotated_voxel,
        _one_class,
        _non_integer,
        _negative,
        _too_large,
        _two_d,
        pytest.param(_nothing_painted),
        pytest.param(_ambiguous),
    ],
)
def test_errors_name_the_labels(make):
    with pytest.raises(InputError) as info:
        L.read_annotation(make(), name="my_labels.tif")
    assert "my_labels.tif" in str(info.value)


def test_unlabeled_everywhere_inside_the_named_planes():
    labels = np.full(SHAPE, 255, dtype=np.uint8)
    with pytest.raises(InputError, match="no voxel is annotated"):
        L.read_annotation(labels, planes={"z": [2], "y": [], "x": []})


# --- class weights and the weight map ---------------------------------------------


def _annotation_with_counts(counts):
    """An annotation whose class k has counts[k] annotated voxels (on plane z=0), the rest unlabeled."""
    labels = np.full(SHAPE, 255, dtype=np.uint8)
    values = np.repeat(np.arange(len(counts)), counts).astype(np.uint8)
    assert values.size <= SHAPE[1] * SHAPE[2]
    plane = labels[0].ravel()
    plane[: values.size] = values
    labels[0] = plane.reshape(SHAPE[1:])
    return L.read_annotation(labels)[0]


def test_class_weights_favour_rare_classes():
    counts = np.array([400, 40, 10])
    annotation = _annotation_with_counts(counts)
    weights = L.class_weights(annotation)
    assert weights.dtype == np.float32
    assert weights[0] < weights[1] < weights[2]
    # power 0.5: w_k proportional to f_k ** -0.5
    np.testing.assert_allclose(weights[1] / weights[0], np.sqrt(400 / 40), rtol=1e-5)
    np.testing.assert_allclose(weights[2] / weights[0], np.sqrt(400 / 10), rtol=1e-5)


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_class_weights_mean_one_over_annotated_voxels(power):
    annotation = _annotation_with_counts([300, 50, 7])
    weights = L.class_weights(annotation, power)
    per_voxel = weights[annotation.target[annotation.mask]]
    np.testing.assert_allclose(per_voxel.mean(), 1.0, rtol=1e-5)


def test_class_weights_power_zero_is_equal():
    annotation = _annotation_with_counts([300, 50, 7])
    np.testing.assert_allclose(L.class_weights(annotation, 0.0), 1.0, rtol=1e-6)


def test_class_weights_reject_negative_power():
    with pytest.raises(ValueError):
        L.class_weights(_annotation_with_counts([10, 10]), -0.5)


def test_weight_map(sparse_small):
    annotation, _ = L.read_annotation(sparse_small[0])
    weights = L.class_weights(annotation)
    w = L.weight_map(annotation, weights)
    assert w.shape == SHAPE and w.dtype == np.float32
    assert np.all(w[~annotation.mask] == 0)
    np.testing.assert_array_equal(w[annotation.mask], weights[annotation.target[annotation.mask]])
    assert np.all(w[annotation.mask] > 0)
    # the default weights are the class weights
    np.testing.assert_array_equal(L.weight_map(annotation), w)


def test_weight_map_rejects_wrong_number_of_weights(sparse_small):
    annotation, _ = L.read_annotation(sparse_small[0])
    with pytest.raises(ValueError, match="3 class weights"):
        L.weight_map(annotation, np.ones(2, dtype=np.float32))


def test_weights_from_counts_match_class_weights():
    counts = [450, 45, 5]
    np.testing.assert_allclose(
        L.weights_from_counts(counts, 0.5), L.class_weights(_annotation_with_counts(counts), 0.5)
    )


def test_weights_from_counts_give_absent_classes_weight_zero():
    assert L.weights_from_counts([10, 0, 30], 0.5)[1] == 0


@pytest.mark.parametrize("counts", [[0, 0], [5, -1], [[1, 2]]], ids=["all-zero", "negative", "two-dimensional"])
def test_weights_from_counts_reject(counts):
    with pytest.raises(ValueError, match="counts"):
        L.weights_from_counts(counts)
