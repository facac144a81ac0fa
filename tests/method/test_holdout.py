"""Tests for sparseseg.method.holdout: which planes are held out, the annotation without them, the blend and the
estimate."""

from dataclasses import replace

import numpy as np
import pytest

from sparseseg.errors import InputError
from sparseseg.method import holdout as H
from sparseseg.method.annotation import Annotation, planes_mask


def _annotation(shape=(8, 10, 12), planes=None):
    planes = planes or {"z": [2, 5], "y": [3, 7], "x": [4]}
    rng = np.random.default_rng(0)
    mask = planes_mask(planes, shape)
    target = np.where(mask, rng.integers(0, 3, shape), 0)
    return Annotation(np.array([0, 1, 2]), target, mask, planes)


def test_one_plane_is_held_out_per_axis_with_two_or_more():
    held = H.held_out_planes({"z": [2, 5], "y": [3, 7, 9], "x": [4]}, np.random.default_rng(1))
    assert set(held) == {"z", "y"}
    assert len(held["z"]) == 1 and held["z"][0] in (2, 5)
    assert len(held["y"]) == 1 and held["y"][0] in (3, 7, 9)


def test_the_choice_repeats_with_the_seed_and_varies_without():
    planes = {"z": list(range(0, 40, 4))}
    assert H.held_out_planes(planes, np.random.default_rng(3)) == H.held_out_planes(planes, np.random.default_rng(3))
    assert len({H.held_out_planes(planes, np.random.default_rng(s))["z"][0] for s in range(20)}) > 1


def test_nothing_is_held_out_with_one_plane_per_axis():
    assert H.held_out_planes({"z": [3], "y": [], "x": [1]}, np.random.default_rng(0)) == {}


def test_held_out_planes_reject_an_unknown_axis():
    with pytest.raises(InputError, match="planes"):
        H.held_out_planes({"t": [1, 2]}, np.random.default_rng(0))


def test_without_planes_unannotates_the_held_out_planes_only():
    annotation = _annotation()
    kept = H.without_planes(annotation, {"z": [5], "y": [3]})
    assert not kept.mask[5].any() and not kept.mask[:, 3].any()
    assert kept.planes == {"z": [2], "y": [7], "x": [4]}
    np.testing.assert_array_equal(kept.classes, annotation.classes)
    other = planes_mask({"z": [2], "y": [7], "x": [4]}, annotation.mask.shape) & ~planes_mask(
        {"z": [5], "y": [3]}, annotation.mask.shape
    )
    np.testing.assert_array_equal(kept.mask, other)
    np.testing.assert_array_equal(kept.target[kept.mask], annotation.target[kept.mask])


def test_without_planes_rejects_a_plane_that_was_not_annotated():
    with pytest.raises(InputError, match="held"):
        H.without_planes(_annotation(), {"z": [4]})


def _voxels(n=600, seed=0):
    """Held-out voxels of 3 classes on 2 planes, with a network right on plane 0 and a forest right on plane 1."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 3, n)
    plane = np.repeat([0, 1], n // 2)
    right = np.eye(3, dtype=np.float32)[target].T * 0.8 + 0.1 / 1
    wrong = np.roll(right, 1, axis=0)
    network = np.where(plane == 0, right, wrong)
    forest = np.where(plane == 1, right, wrong)
    return network / network.sum(0), forest / forest.sum(0), target, plane


def test_the_blend_goes_to_the_better_classifier():
    network, forest, target, plane = _voxels()
    good = np.eye(3, dtype=np.float32)[target].T * 0.9 + 0.05
    assert H.choose_blend(good, forest, target, plane, np.array([False, True, True])).blend == 1.0
    wrong = np.roll(good, 1, axis=0)
    assert H.choose_blend(wrong, good, target, plane, np.array([False, True, True]), fit=False).blend < 0.5


def test_the_estimate_is_the_iou_of_the_chosen_decision_and_its_spread_is_between_planes():
    network, forest, target, plane = _voxels()
    estimate = H.choose_blend(network, None, target, plane, np.array([False, True, True]), ["z=1", "y=4"], fit=False)
    assert estimate.blend == 1.0 and np.isnan(estimate.forest_iou)
    assert estimate.per_plane["z=1"] == pytest.approx(1.0)
    assert estimate.per_plane["y=4"] == pytest.approx(0.0)
    assert estimate.spread == pytest.approx(0.5)
    decided = network.argmax(0)
    iou = [np.sum((decided == k) & (target == k)) / np.sum((decided == k) | (target == k)) for k in (1, 2)]
    assert estimate.iou == pytest.approx(np.mean(iou))
    assert estimate.network_iou == estimate.iou


def test_a_low_or_unstable_estimate_warns():
    network, forest, target, plane = _voxels()
    estimate = H.choose_blend(network, None, target, plane, np.array([False, True, True]), fit=False)
    said = " ".join(estimate.warnings)
    assert "low" in said and "unstable" in said
    good = np.eye(3, dtype=np.float32)[target].T * 0.9 + 0.05
    assert H.choose_blend(good, None, target, plane, np.array([False, True, True])).warnings == []


def test_a_low_warning_says_where_a_corrected_estimate_comes_from():
    network, forest, target, plane = _voxels()
    estimate = H.choose_blend(network, None, target, plane, np.array([False, True, True]), fit=False)
    corrected = replace(estimate, iou=estimate.iou - 0.1, correction=-0.1)
    assert f"{estimate.iou:.2f} on the held-out planes)" in estimate.warnings[0]
    assert (
        f"{corrected.iou:.2f}; {estimate.iou:.2f} on the held-out planes, corrected by -0.10" in corrected.warnings[0]
    )


def test_the_estimate_reads_as_plain_numbers():
    network, forest, target, plane = _voxels()
    said = H.choose_blend(network, forest, target, plane, np.array([False, True, True]), ["z=1", "y=4"]).as_dict()
    assert set(said) == {
        "iou",
        "held_out_iou",
        "correction",
        "spread",
        "per_plane",
        "blend",
        "network_iou",
        "forest_iou",
        "held_out_planes",
    }
    assert all(isinstance(v, float) for v in (said["iou"], said["spread"], said["blend"]))
    assert said["held_out_iou"] == said["iou"] and said["correction"] == 0.0  # no correction made


def test_the_correction_is_the_forest_s_score_over_every_plane_less_its_score_on_the_held_out_ones():
    network, forest, target, plane = _voxels()
    foreground = np.array([False, True, True])
    right = (forest[:, plane == 1], target[plane == 1])  # every voxel right
    wrong = (forest[:, plane == 0], target[plane == 0])  # every voxel wrong
    assert H.plane_correction(wrong, [right], foreground, fit=False) == pytest.approx(1.0)
    assert H.plane_correction(right, [wrong], foreground, fit=False) == pytest.approx(-1.0)
    assert H.plane_correction(right, [right, right], foreground) == pytest.approx(0.0)
    # the planes are scored together, not averaged plane by plane
    together = H.choose_blend(forest, None, target, plane, foreground, fit=False).iou
    assert H.plane_correction(right, [wrong, right], foreground, fit=False) == pytest.approx(together - 1.0)


def test_the_correction_is_0_where_a_score_is_undefined():
    network, forest, target, plane = _voxels()
    background = np.zeros_like(target)
    nothing = (np.eye(3, dtype=np.float32)[background].T, background)  # no foreground class anywhere
    assert H.plane_correction(nothing, [(forest, target)], np.array([False, True, True]), fit=False) == 0.0


def test_plane_correction_rejects_no_planes():
    network, forest, target, plane = _voxels()
    with pytest.raises(InputError, match="each="):
        H.plane_correction((forest, target), [], np.array([False, True, True]))


def test_plane_correction_rejects_probabilities_of_other_classes():
    network, forest, target, plane = _voxels()
    with pytest.raises(InputError, match="held="):
        H.plane_correction((forest[:2], target), [(forest, target)], np.array([False, True, True]))


def test_choose_blend_rejects_a_forest_of_another_shape():
    network, forest, target, plane = _voxels()
    with pytest.raises(InputError, match="forest"):
        H.choose_blend(network, forest[:, :10], target, plane, np.array([False, True, True]))


def test_choose_blend_rejects_targets_of_another_length():
    network, forest, target, plane = _voxels()
    with pytest.raises(InputError, match="target"):
        H.choose_blend(network, forest, target[:10], plane, np.array([False, True, True]))


def test_choose_blend_rejects_no_voxels():
    with pytest.raises(InputError, match="network"):
        H.choose_blend(np.zeros((3, 0)), None, np.zeros(0, int), np.zeros(0, int), np.array([False, True, True]))


def test_choose_blend_rejects_a_wrong_number_of_names():
    network, forest, target, plane = _voxels()
    with pytest.raises(InputError, match="names"):
        H.choose_blend(network, forest, target, plane, np.array([False, True, True]), ["z=1"])


def test_blend_probabilities_mixes_after_the_prior_correction():
    network = np.array([[0.5], [0.5]], dtype=np.float32)
    forest = np.array([[1.0], [0.0]], dtype=np.float32)
    prior = np.log(np.array([1.0, 3.0]))  # network part becomes 0.25 / 0.75
    out = H.blend_probabilities(network.copy(), forest, 0.5, prior)
    np.testing.assert_allclose(out[:, 0], [0.625, 0.375], rtol=1e-6)
    np.testing.assert_allclose(H.blend_probabilities(network.copy(), None, 0.5, np.zeros(2)), network)


def test_blend_probabilities_rejects_a_weight_outside_0_1():
    with pytest.raises(InputError, match="blend"):
        H.blend_probabilities(np.ones((2, 1), np.float32), None, 1.5, np.zeros(2))


def test_the_draw_keeps_each_class_on_both_sides_where_it_can():
    planes = {"z": [2, 5], "y": [3, 7], "x": [4, 9]}
    present = {("z", 2): {0, 1, 2}, ("z", 5): {0}, ("y", 3): {0, 1, 2}, ("y", 7): {0}, ("x", 4): {0}, ("x", 9): {0}}
    for seed in range(10):
        held = H.held_out_planes(planes, np.random.default_rng(seed), present)
        chosen = {(a, v[0]) for a, v in held.items()}
        assert len(chosen & {("z", 2), ("y", 3)}) == 1, held  # one rich plane held out, the other kept


def test_classes_on_planes_lists_the_annotated_classes_of_each_plane():
    annotation = _annotation()
    found = H.classes_on_planes(annotation)
    assert set(found) == {("z", 2), ("z", 5), ("y", 3), ("y", 7), ("x", 4)}
    assert found[("z", 2)] == set(np.unique(annotation.target[2]).tolist())
