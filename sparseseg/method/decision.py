"""The final decision: per-class offsets on the predicted probabilities (numpy only).

A network trained with class weights over-predicts the rare classes it was told to weigh
more, and one trained for only a few hundred steps is not calibrated either. Both are
corrected by one offset per class added to the log-probabilities before the argmax:
`prior_offsets` takes back part of the class weighting, and `fit_offsets` tunes the offsets
so that the argmax is as good as it can be (mean foreground IoU) on the annotated voxels,
the only voxels whose classes are known.
"""

from __future__ import annotations

import numpy as np

from sparseseg.method.metrics import confusion_matrix, iou_per_class

#: Offset changes tried per class and round by `fit_offsets` (log-probability units).
STEPS = np.linspace(-1.0, 1.0, 9)


def prior_offsets(weights: np.ndarray, strength: float = 0.5) -> np.ndarray:
    """Log-offsets ``-strength * log(w_k)`` that divide class probabilities by ``w_k ** strength``.

    A network trained with class weights ``w`` predicts about ``w_k * p_k`` (renormalised)
    where an unweighted one predicts ``p_k``. ``strength=1`` takes all of that back, 0
    nothing. Classes with weight 0 (not annotated) get offset 0.
    """
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must lie in [0, 1], got {strength}")
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or weights.min(initial=0) < 0:
        raise ValueError(f"weights must be a 1-D array of non-negative class weights, got {weights.tolist()}")
    return np.where(weights > 0, -strength * np.log(np.where(weights > 0, weights, 1.0)), 0.0)


def apply_offsets(probabilities: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Multiply class k's probabilities by ``exp(offsets[k])`` and renormalise, in place.

    Equal offsets leave the probabilities untouched.

    Parameters
    ----------
    probabilities : ndarray, (K, ...)
        Class probabilities, class first; changed in place and returned.
    offsets : ndarray, (K,)
        Log-probability offset per class.
    """
    offsets = np.asarray(offsets, dtype=np.float64)
    if offsets.shape != probabilities.shape[:1]:
        raise ValueError(f"expected {probabilities.shape[0]} class offsets, got shape {offsets.shape}")
    if not np.isfinite(offsets).all():
        raise ValueError(f"offsets must be finite, got {offsets.tolist()}")
    if np.all(offsets == offsets[0]):  # equal offsets change no distribution
        return probabilities
    factors = np.exp(offsets - offsets.max()).astype(probabilities.dtype)
    probabilities *= factors.reshape((-1,) + (1,) * (probabilities.ndim - 1))
    probabilities /= np.maximum(probabilities.sum(axis=0, keepdims=True), np.finfo(probabilities.dtype).tiny)
    return probabilities


def correct_prior(probabilities: np.ndarray, weights: np.ndarray, strength: float = 0.5) -> np.ndarray:
    """Divide class probabilities by ``weights ** strength`` and renormalise, in place (see `prior_offsets`)."""
    weights = np.asarray(weights)
    if weights.shape != probabilities.shape[:1]:
        raise ValueError(f"expected {probabilities.shape[0]} class weights, got {weights.shape}")
    return apply_offsets(probabilities, prior_offsets(weights, strength))


def mean_iou(pred: np.ndarray, target: np.ndarray, n_classes: int, foreground: np.ndarray | None = None) -> float:
    """Mean IoU over the ``foreground`` classes (all when None) present in ``pred`` or ``target``; NaN if none is."""
    iou = iou_per_class(confusion_matrix(pred, target, n_classes))
    keep = ~np.isnan(iou)
    if foreground is not None:
        keep &= foreground
    return float(np.mean(iou[keep])) if keep.any() else float("nan")


def _check_offset_inputs(probabilities, target, foreground, rounds, max_voxels) -> None:
    """`fit_offsets`'s input checks."""
    if probabilities.ndim != 2 or probabilities.shape[0] < 2:
        raise ValueError(f"probabilities must be (K, N) with K >= 2 classes, got shape {probabilities.shape}")
    n_classes, n = probabilities.shape
    if target.shape != (n,):
        raise ValueError(f"target must hold one class per voxel, shape ({n},), got {target.shape}")
    if n == 0:
        raise ValueError("need at least one labelled voxel, got none")
    if target.min() < 0 or target.max() >= n_classes:
        raise ValueError(f"target classes must lie in 0..{n_classes - 1}, got {target.min()}..{target.max()}")
    if foreground is not None and np.shape(foreground) != (n_classes,):
        raise ValueError(f"foreground must be {n_classes} booleans, got shape {np.shape(foreground)}")
    if rounds < 0 or max_voxels < 1:
        raise ValueError(f"need rounds >= 0 and max_voxels >= 1, got {rounds} and {max_voxels}")


def fit_offsets(
    probabilities: np.ndarray,
    target: np.ndarray,
    foreground: np.ndarray | None = None,
    rounds: int = 3,
    max_voxels: int = 1_000_000,
) -> np.ndarray:
    """Per-class log-offsets that maximise the mean foreground IoU of the argmax on labelled voxels.

    Coordinate ascent: in each round, each class but the first (the reference; only
    differences between offsets matter) tries the changes in `STEPS` and keeps the best,
    if it raises the mean IoU. Deterministic; the offsets start at 0, so a prediction that
    cannot be improved is left as it is.

    Parameters
    ----------
    probabilities : ndarray, (K, N)
        Predicted class probabilities of N labelled voxels.
    target : ndarray of int, (N,)
        Their classes, 0..K-1.
    foreground : ndarray of bool, (K,), optional
        Classes whose IoU is averaged (default: all), e.g. all but the background.
    rounds : int
        Passes over the classes.
    max_voxels : int
        At most this many voxels are used (every n-th), which bounds the cost.

    Returns
    -------
    ndarray, (K,)
        Offsets to add to the log-probabilities (`apply_offsets`).
    """
    _check_offset_inputs(probabilities, target, foreground, rounds, max_voxels)
    n_classes, n = probabilities.shape
    stride = -(-n // max_voxels)
    logp = np.log(np.maximum(probabilities[:, ::stride], 1e-12)).astype(np.float32)
    target = np.asarray(target[::stride], dtype=np.int64)

    def quality(offsets: np.ndarray) -> float:
        value = mean_iou(np.argmax(logp + offsets[:, None].astype(np.float32), axis=0), target, n_classes, foreground)
        return -1.0 if np.isnan(value) else value

    offsets = np.zeros(n_classes)
    best = quality(offsets)
    for _ in range(rounds):
        improved = False
        for k in range(1, n_classes):
            trials = [offsets + np.eye(n_classes)[k] * step for step in STEPS if step]
            values = [quality(t) for t in trials]
            i = int(np.argmax(values))
            if values[i] > best + 1e-9:
                offsets, best, improved = trials[i], values[i], True
        if not improved:
            break
    return offsets
