"""What the network reads: the normalised raw channels and, with ``Config.filters``, the forest's filter features of
them (`sparseseg.method.features.filter_features`: smoothed intensity, gradient magnitude and Hessian eigenvalues at
five scales), each feature normalised by statistics fitted once on the training volume and kept with the model.

The features give the network the rotation-invariant multiscale view the forest gets for free. They are computed
on the whole volume for training, and block by block with `HALO` voxels of context for inference, so that both see
the same values (no torch here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sparseseg.errors import InputError
from sparseseg.method.features import HALO, filter_features, filter_spacing, n_features
from sparseseg.method.preprocess import intensity_stats

#: Voxels sampled (evenly spaced) to fit the statistics of each feature channel.
STATS_SAMPLE = 2**20


@dataclass(frozen=True)
class NetworkInputs:
    """The channels the network reads for a volume of ``channels`` raw channels: those alone, or with the filter
    features of each (`sparseseg.method.features.filter_features` for voxels of ``spacing``), normalised by ``stats``,
    (F, 4) rows of `sparseseg.method.preprocess.intensity_stats`, one per feature channel."""

    channels: int
    spacing: tuple[float, float, float] | None = None  # the voxel size the filters follow (None: isotropic)
    stats: np.ndarray | None = None  # None: the raw channels alone

    @property
    def filters(self) -> bool:
        return self.stats is not None

    @property
    def count(self) -> int:
        """Channels of the network's input."""
        return self.channels + (n_features(self.channels) if self.filters else 0)

    @property
    def halo(self) -> int:
        """Voxels of context a block needs around it for its features to equal the whole volume's."""
        return HALO if self.filters else 0

    def as_dict(self) -> dict | None:
        """What a model folder keeps (None: the raw channels alone)."""
        if not self.filters:
            return None
        spacing = None if self.spacing is None else list(self.spacing)
        return {"filters": True, "spacing": spacing, "stats": self.stats.tolist()}


def raw_inputs(channels: int) -> NetworkInputs:
    """The raw channels alone."""
    return NetworkInputs(int(channels))


def inputs_from_dict(value: dict | None, channels: int) -> NetworkInputs:
    """`NetworkInputs` from a model folder's field (`NetworkInputs.as_dict`), checked; an `InputError` says what is
    wrong."""
    if value is None:
        return raw_inputs(channels)
    if not isinstance(value, dict) or set(value) != {"filters", "spacing", "stats"} or value["filters"] is not True:
        raise InputError("must be null or an object of 'filters' (true), 'spacing' and 'stats'", param="inputs")
    stats = value["stats"]
    rows = n_features(channels)
    if not (
        isinstance(stats, list)
        and len(stats) == rows
        and all(isinstance(r, list) and len(r) == 4 for r in stats)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for r in stats for v in r)
    ):
        raise InputError(f"'stats' must be {rows} rows of 4 numbers (lo, hi, mean, std)", param="inputs")
    stats = np.asarray(stats, dtype=np.float64)
    if not np.isfinite(stats).all():
        raise InputError("'stats' must be finite numbers", param="inputs")
    return NetworkInputs(int(channels), filter_spacing(value["spacing"]), stats)


def fit_inputs(
    normalised: np.ndarray, filters: bool, spacing: Sequence[float] | None = None, features: np.ndarray | None = None
) -> NetworkInputs:
    """The inputs of a network trained on a normalised (C, Z, Y, X) image: with ``filters``, the statistics of each
    feature channel, from an even sample of voxels (``features``: the image's (Z, Y, X, F) filter features, where
    computed already)."""
    channels = normalised.shape[0]
    if not filters:
        return raw_inputs(channels)
    spacing = filter_spacing(spacing)
    values = features if features is not None else filter_features(normalised, spacing)
    flat = values.reshape(-1, values.shape[-1])
    sample = flat[:: max(1, len(flat) // STATS_SAMPLE)]
    return NetworkInputs(channels, spacing, intensity_stats(np.ascontiguousarray(sample.T)))


def network_image(normalised: np.ndarray, inputs: NetworkInputs, features: np.ndarray | None = None) -> np.ndarray:
    """The network's (``inputs.count``, Z, Y, X) float32 input for a normalised (C, Z, Y, X) image (or block).

    ``features``: the image's (Z, Y, X, F) filter features, where computed already.
    Features of a block equal the volume's only where the block carries `NetworkInputs.halo` voxels of context.
    """
    if normalised.shape[0] != inputs.channels:
        raise InputError(f"the network reads {inputs.channels} channel(s), the image has {normalised.shape[0]}")
    if not inputs.filters:
        return normalised
    values = features if features is not None else filter_features(normalised, inputs.spacing)
    out = np.empty((inputs.count,) + normalised.shape[1:], dtype=np.float32)
    out[: inputs.channels] = normalised
    for k, (lo, hi, mean, std) in enumerate(inputs.stats):  # channel by channel: no second copy of the features
        out[inputs.channels + k] = (np.clip(values[..., k], lo, hi) - mean) / (std if std > 0 else 1.0)
    return out
