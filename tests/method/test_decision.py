"""Tests for sparseseg.method.decision: the prior correction and the class offsets fitted on annotated voxels."""

import numpy as np
import pytest

from sparseseg.method import decision as C


def _probabilities():
    rng = np.random.default_rng(0)
    p = rng.random((3, 4, 5, 6)).astype(np.float32)
    return p / p.sum(axis=0)


def test_full_prior_correction_undoes_class_weighting():
    unweighted = _probabilities()
    weights = np.array([0.5, 2.0, 8.0], dtype=np.float32)
    weighted = unweighted * weights.reshape(3, 1, 1, 1)
    weighted /= weighted.sum(axis=0)
    np.testing.assert_allclose(C.correct_prior(weighted, weights, 1.0), unweighted, rtol=1e-5)


def test_prior_correction_moves_voxels_away_from_up_weighted_classes():
    p = _probabilities()
    weights = np.array([0.5, 1.0, 8.0], dtype=np.float32)
    before = np.bincount(p.argmax(0).ravel(), minlength=3)
    after = np.bincount(C.correct_prior(p.copy(), weights, 0.5).argmax(0).ravel(), minlength=3)
    assert after[2] < before[2] and after[0] > before[0]


def test_prior_correction_is_in_place_and_keeps_a_distribution():
    p = _probabilities()
    out = C.correct_prior(p, np.array([1.0, 2.0, 4.0]), 0.5)
    assert out is p
    np.testing.assert_allclose(p.sum(axis=0), 1.0, rtol=1e-6)


def test_prior_correction_zero_strength_or_unannotated_class_changes_nothing():
    p = _probabilities()
    np.testing.assert_array_equal(C.correct_prior(p.copy(), np.array([1.0, 2.0, 4.0]), 0.0), p)
    np.testing.assert_allclose(C.correct_prior(p.copy(), np.array([0.0, 0.0, 0.0]), 1.0), p, rtol=1e-6)


@pytest.mark.parametrize(
    "weights, strength, message",
    [
        (np.ones(3), 1.5, "strength"),
        (np.ones(3), -0.1, "strength"),
        (np.ones(2), 0.5, "class weights"),
    ],
    ids=["strength-above-one", "negative-strength", "wrong-number-of-weights"],
)
def test_prior_correction_rejects(weights, strength, message):
    with pytest.raises(ValueError, match=message):
        C.correct_prior(_probabilities(), weights, strength)


def _biased(offset: float, seed: int = 0):
    """Three-class probabilities whose argmax is right on 80 % of voxels, then class 2 pushed up by exp(offset)."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 3, 3000)
    logits = rng.normal(0, 1, (3, target.size))
    logits[target, np.arange(target.size)] += 2.0
    logits[2] += offset
    p = np.exp(logits)
    return (p / p.sum(axis=0)).astype(np.float32), target


def test_fit_offsets_takes_back_a_known_bias():
    p, target = _biased(2.0)
    before = C.mean_iou(p.argmax(0), target, 3)
    offsets = C.fit_offsets(p, target)
    after = C.mean_iou(C.apply_offsets(p.copy(), offsets).argmax(0), target, 3)
    assert after > before + 0.1
    assert -2.75 <= offsets[2] - offsets[0] <= -1.25


def test_fit_offsets_never_lowers_the_fit_and_leaves_a_good_prediction_alone():
    p, target = _biased(0.0)
    offsets = C.fit_offsets(p, target)
    assert C.mean_iou(C.apply_offsets(p.copy(), offsets).argmax(0), target, 3) >= C.mean_iou(p.argmax(0), target, 3)
    perfect = np.eye(3, dtype=np.float32)[target].T
    np.testing.assert_array_equal(C.fit_offsets(perfect, target), np.zeros(3))


def test_fit_offsets_is_deterministic_and_subsamples():
    p, target = _biased(1.5)
    np.testing.assert_array_equal(C.fit_offsets(p, target), C.fit_offsets(p, target))
    half = C.fit_offsets(p, target, max_voxels=1500)
    np.testing.assert_array_equal(half, C.fit_offsets(p[:, ::2], target[::2]))


def test_fit_offsets_scores_only_foreground_classes():
    p, target = _biased(2.0)
    foreground = np.array([False, True, True])
    fg, every = C.fit_offsets(p, target, foreground=foreground), C.fit_offsets(p, target)

    def fg_iou(offsets):
        return C.mean_iou(C.apply_offsets(p.copy(), offsets).argmax(0), target, 3, foreground)

    # tuned for the foreground classes only: a different optimum, far better for them than no offsets
    assert fg_iou(fg) > fg_iou(np.zeros(3)) + 0.1
    assert not np.array_equal(fg, every)


@pytest.mark.parametrize(
    "probabilities, target, message",
    [
        (np.ones((3,)), np.zeros(3, int), "probabilities"),
        (np.ones((1, 4)), np.zeros(4, int), "probabilities"),
        (np.ones((2, 4)), np.zeros(3, int), "target"),
        (np.ones((2, 0)), np.zeros(0, int), "at least one"),
        (np.ones((2, 4)), np.array([0, 1, 2, 0]), "target classes"),
    ],
    ids=["one-dimensional", "one-class", "target-length", "no-voxels", "class-out-of-range"],
)
def test_fit_offsets_rejects(probabilities, target, message):
    with pytest.raises(ValueError, match=message):
        C.fit_offsets(probabilities, target)


def test_fit_offsets_rejects_a_foreground_of_the_wrong_length():
    with pytest.raises(ValueError, match="foreground"):
        C.fit_offsets(np.ones((2, 4)), np.zeros(4, int), foreground=np.array([True]))


def test_fit_offsets_rejects_negative_rounds():
    with pytest.raises(ValueError, match="rounds"):
        C.fit_offsets(np.ones((2, 4)), np.zeros(4, int), rounds=-1)


def test_mean_iou():
    pred, target = np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2])
    assert C.mean_iou(pred, target, 3) == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert C.mean_iou(pred, target, 3, np.array([False, True, True])) == pytest.approx(0.5)
    assert np.isnan(C.mean_iou(np.zeros(2, int), np.zeros(2, int), 2, np.array([False, True])))


def test_apply_offsets_multiplies_and_renormalises():
    p = _probabilities()
    out = C.apply_offsets(p.copy(), np.log([1.0, 2.0, 4.0]))
    expected = p * np.array([1.0, 2.0, 4.0]).reshape(3, 1, 1, 1)
    np.testing.assert_allclose(out, expected / expected.sum(axis=0), rtol=1e-5)


@pytest.mark.parametrize(
    "offsets, message",
    [(np.zeros(2), "3 class offsets"), (np.array([0.0, np.inf, 0.0]), "finite")],
    ids=["wrong-length", "infinite"],
)
def test_apply_offsets_rejects(offsets, message):
    with pytest.raises(ValueError, match=message):
        C.apply_offsets(_probabilities(), offsets)


def test_prior_offsets():
    np.testing.assert_allclose(C.prior_offsets(np.array([1.0, 4.0, 0.0]), 0.5), [0.0, -np.log(2.0), 0.0])


def test_prior_offsets_reject_negative_weights():
    with pytest.raises(ValueError, match="non-negative"):
        C.prior_offsets(np.array([1.0, -1.0]), 0.5)
