"""Tests for sparseseg.method.metrics on examples small enough to count by hand."""

import json
import math
import warnings

import numpy as np
import pytest

from sparseseg.method.metrics import score

#            voxel:  0  1  2  3  4  5
GT = np.array([0, 0, 1, 1, 1, 2]).reshape(1, 2, 3)
PRED = np.array([0, 1, 1, 1, 0, 0]).reshape(1, 2, 3)
# class 0: TP = {0}, FP = {4, 5}, FN = {1}
# class 1: TP = {2, 3}, FP = {1}, FN = {4}
# class 2: TP = {}, FP = {}, FN = {5}   (never predicted: precision 0/0)


def _by_label(scores):
    return {c.label: c for c in scores.classes}


def test_scores_counted_by_hand():
    scores = score(PRED, GT)
    assert scores.voxels == 6
    rows = _by_label(scores)
    assert sorted(rows) == [0, 1, 2]
    c0, c1, c2 = rows[0], rows[1], rows[2]
    assert (c0.iou, c0.dice, c0.precision, c0.recall, c0.support) == pytest.approx((1 / 4, 2 / 5, 1 / 3, 1 / 2, 2))
    assert (c1.iou, c1.dice, c1.precision, c1.recall, c1.support) == pytest.approx((2 / 4, 4 / 6, 2 / 3, 2 / 3, 3))
    assert (c2.iou, c2.dice, c2.recall, c2.support) == (0.0, 0.0, 0.0, 1)
    assert math.isnan(c2.precision)


def test_mean_over_foreground_classes():
    scores = score(PRED, GT)
    assert [c.label for c in scores.foreground] == [1, 2]
    assert scores.mean("iou") == pytest.approx((2 / 4 + 0) / 2)
    assert scores.mean("dice") == pytest.approx((4 / 6 + 0) / 2)
    assert scores.mean("precision") == pytest.approx(2 / 3)  # NaN of class 2 left out
    assert scores.mean("recall") == pytest.approx((2 / 3 + 0) / 2)


def test_identical_volumes_score_one():
    scores = score(GT, GT)
    for c in scores.classes:
        assert (c.iou, c.dice, c.precision, c.recall) == (1.0, 1.0, 1.0, 1.0)


def test_mask_restricts_scoring():
    mask = np.array([True, True, True, False, False, False]).reshape(1, 2, 3)
    scores = score(PRED, GT, mask)
    assert scores.voxels == 3
    rows = _by_label(scores)
    # voxels 0, 1, 2: gt 0 0 1, pred 0 1 1; class 2 is on no scored voxel: no row
    assert sorted(rows) == [0, 1]
    assert (rows[0].iou, rows[0].precision, rows[0].recall, rows[0].support) == pytest.approx((1 / 2, 1.0, 1 / 2, 2))
    assert (rows[1].iou, rows[1].precision, rows[1].recall, rows[1].support) == pytest.approx((1 / 2, 1 / 2, 1.0, 1))


def test_class_only_predicted_has_nan_recall_without_warnings():
    gt = np.zeros((2, 2, 2), dtype=np.uint8)
    pred = gt.copy()
    pred[0, 0, 0] = 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = score(pred, gt)
        mean_recall = scores.mean("recall")
    row = _by_label(scores)[3]
    assert math.isnan(row.recall) and row.support == 0
    assert row.iou == 0.0 and row.precision == 0.0
    assert math.isnan(mean_recall)


def test_no_foreground_gives_nan_mean_without_warnings():
    gt = np.zeros((2, 3, 4), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = score(gt, gt)
        assert math.isnan(scores.mean("iou"))
    assert [c.label for c in scores.classes] == [0]


def test_labels_need_not_be_contiguous_or_same_dtype():
    gt = np.array([0, 0, 7, 7, 300, 300], dtype=np.uint16).reshape(1, 1, 6)
    pred = np.array([0, 7, 7, 7, 300, 0], dtype=np.int64).reshape(1, 1, 6)
    rows = _by_label(score(pred, gt))
    assert sorted(rows) == [0, 7, 300]
    assert rows[7].iou == pytest.approx(2 / 3) and rows[300].iou == pytest.approx(1 / 2)


@pytest.mark.parametrize("pred_shape, mask_shape", [((1, 2, 4), None), ((1, 2, 3), (1, 3, 2))])
def test_shape_mismatch(pred_shape, mask_shape):
    pred = np.zeros(pred_shape, dtype=np.uint8)
    mask = None if mask_shape is None else np.ones(mask_shape, dtype=bool)
    with pytest.raises(ValueError, match="shape"):
        score(pred, GT, mask)


def test_as_dict_is_json_serialisable():
    data = score(PRED, GT).as_dict()
    assert data["voxels"] == 6
    assert [c["label"] for c in data["classes"]] == [0, 1, 2]
    assert data["mean_foreground"]["iou"] == pytest.approx(0.25)
    assert json.loads(json.dumps(data))["classes"][1]["support"] == 3
