"""sparseseg.method.plane_annotation: an annotation held plane by plane reads as the whole `Annotation` does: the same
planes, voxels, held-out planes, forest sample and plane folds."""

import numpy as np
import pytest

from sparseseg.commands import synthetic
from sparseseg.io.blocks import ArraySource
from sparseseg.method import forest as F
from sparseseg.method.annotation import plane_index, read_annotation
from sparseseg.method.holdout import classes_on_planes, without_planes
from sparseseg.method.plane_annotation import PlaneAnnotation, on_planes

SHAPE = (12, 20, 24)


@pytest.fixture(scope="module")
def case():
    """A blobs volume annotated on two planes of each axis (planes cross), as an Annotation and as a PlaneAnnotation."""
    image, truth = synthetic.blobs(SHAPE, seed=2)
    sparse, planes = synthetic.sparsify(truth, 2)
    annotation, _ = read_annotation(sparse)
    sheets = {(a, i): annotation.plane(a, i) for a, indices in planes.items() for i in indices}
    return image[None], annotation, PlaneAnnotation(annotation.classes, SHAPE, sheets)


def test_it_reads_as_the_whole_annotation(case):
    _, whole, planes = case
    assert planes.planes == {a: v for a, v in whole.planes.items() if v}
    assert planes.has_planes({"z": whole.planes["z"][:1]}) and not planes.has_planes({"z": [1000]})
    for got, expected in zip(planes.voxels(), whole.voxels()):
        np.testing.assert_array_equal(got, expected)
    assert classes_on_planes(planes) == classes_on_planes(whole)
    target, mask = planes.plane("x", 5)  # not annotated
    assert target.shape == mask.shape == SHAPE[:2] and not mask.any()
    indices = np.arange(np.prod(SHAPE))
    np.testing.assert_array_equal(planes.annotated_at(indices), whole.mask.ravel())


def test_without_held_planes_it_loses_the_voxels_the_whole_annotation_loses(case):
    _, whole, planes = case
    held = {"z": whole.planes["z"][:1], "y": whole.planes["y"][1:]}
    kept, expected = planes.without(held), without_planes(whole, held)
    assert kept.planes == {a: v for a, v in expected.planes.items() if v}
    for got, wanted in zip(kept.voxels(), expected.voxels()):
        np.testing.assert_array_equal(got, wanted)


def test_on_planes_is_the_planes_mask(case):
    _, whole, _ = case
    indices = np.flatnonzero(whole.mask)
    fold = {"z": whole.planes["z"][:1], "x": whole.planes["x"]}
    expected = np.zeros(SHAPE, bool)
    for axis, chosen in fold.items():
        for i in chosen:
            expected[plane_index(axis, i)] = True
    np.testing.assert_array_equal(on_planes(indices, fold, SHAPE), expected.ravel()[indices])


def test_the_forest_s_sample_and_folds_are_those_of_the_whole_annotation(case):
    image, whole, planes = case
    from_source = F.annotated_sample(ArraySource(image), planes, seed=4, max_samples=900)
    expected = F.annotated_sample(image, whole, seed=4, max_samples=900)
    for name in ("indices", "ids", "features", "stats"):
        np.testing.assert_array_equal(getattr(from_source, name), getattr(expected, name))
    folds = [{"z": whole.planes["z"][:1]}, {"y": whole.planes["y"]}]
    for (p, t), (q, u) in zip(
        F.plane_folds(from_source, planes, folds, seed=1, n_estimators=5),
        F.plane_folds(expected, whole, folds, seed=1, n_estimators=5),
    ):
        np.testing.assert_array_equal(p, q)
        np.testing.assert_array_equal(t, u)
