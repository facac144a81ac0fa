"""Overlap measures between a segmentation and its ground truth (numpy only).

IoU = TP / (TP + FP + FN), the paper's measure; Dice = 2 TP / (2 TP + FP + FN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassScores:
    label: int
    iou: float
    dice: float
    precision: float
    recall: float
    support: int  # ground-truth voxels of this class among the scored ones


@dataclass(frozen=True)
class Scores:
    classes: list[ClassScores]
    voxels: int  # voxels scored

    @property
    def foreground(self) -> list[ClassScores]:
        return [c for c in self.classes if c.label != 0]

    def mean(self, name: str) -> float:
        """Mean of one measure ('iou', 'dice', 'precision', 'recall') over foreground classes."""
        values = [getattr(c, name) for c in self.foreground]
        return float(np.nanmean(values)) if values and not np.all(np.isnan(values)) else float("nan")

    def as_dict(self) -> dict:
        return {
            "voxels": self.voxels,
            "classes": [vars(c) for c in self.classes],
            "mean_foreground": {m: self.mean(m) for m in ("iou", "dice", "precision", "recall")},
        }


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def confusion_matrix(pred: np.ndarray, target: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts: row = true class index, column = predicted class index (both 0..n_classes-1)."""
    return np.bincount(target * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU of each class from a `confusion_matrix`; NaN where a class is neither true nor predicted."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def score(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> Scores:
    """Per-class IoU, Dice, precision and recall of ``pred`` against ``gt``.

    Parameters
    ----------
    pred, gt : ndarray of int
        Label volumes of the same shape.
    mask : ndarray of bool, optional
        Score only where True (e.g. the voxels that were not annotated).

    Classes are those present in ``gt`` or ``pred`` on the scored voxels; a class absent
    from both gets no row. A measure whose denominator is 0 is NaN.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    if mask is not None and mask.shape != gt.shape:
        raise ValueError(f"mask shape {mask.shape} differs from ground truth shape {gt.shape}")
    if mask is not None:
        pred, gt = pred[mask], gt[mask]
    pred = pred.ravel().astype(np.int64)
    gt = gt.ravel().astype(np.int64)
    labels = np.union1d(np.unique(pred), np.unique(gt))
    p = np.searchsorted(labels, pred)
    g = np.searchsorted(labels, gt)
    confusion = confusion_matrix(p, g, len(labels))
    tp = np.diag(confusion).astype(np.float64)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    rows = [
        ClassScores(
            label=int(label),
            iou=_ratio(tp[i], tp[i] + fp[i] + fn[i]),
            dice=_ratio(2 * tp[i], 2 * tp[i] + fp[i] + fn[i]),
            precision=_ratio(tp[i], tp[i] + fp[i]),
            recall=_ratio(tp[i], tp[i] + fn[i]),
            support=int(tp[i] + fn[i]),
        )
        for i, label in enumerate(labels)
    ]
    return Scores(rows, int(gt.size))
