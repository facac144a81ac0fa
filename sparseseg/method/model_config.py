"""A model folder's ``config.json``, read and checked field by field before anything is built from it.

The file is size-capped, must be strict JSON (no NaN or Infinity) nested to a sane depth, and each field must have its
type and range (classes 0..65535, finite weights and offsets, patch sizes up to `sparseseg.config.MAX_PATCH`); an
`InputError` names the file and the field.
"""

from __future__ import annotations

import json
import math

from sparseseg.config import Config
from sparseseg.errors import InputError
from sparseseg.method.forest_file import FOREST_FILE as FOREST
from sparseseg.method.inputs import inputs_from_dict
from sparseseg.method.model_files import CONFIG, ModelFiles

#: The forest file of format 2: a pickle, never read.
PICKLED_FOREST = "forest.joblib"
#: The versions `load_model` reads.
READ_VERSIONS = (1, 2, 3, 4)


#: Largest ``config.json`` read: a model's config is a few kB.
MAX_CONFIG_BYTES = 1 << 20


#: Largest input channel count a model may declare.
MAX_CHANNELS = 256


FIELDS_V1 = (
    "format_version",
    "sparseseg_version",
    "in_channels",
    "classes",
    "class_weights",
    "class_offsets",
    "pools",
    "train_shapes",
    "normalisation",
    "config",
)


FIELDS = FIELDS_V1 + ("blend", "forest", "estimate")
#: Fields of format 4 and later: what the network reads (`sparseseg.method.inputs`).
FIELDS_V4 = FIELDS + ("inputs",)


def read_config(files: ModelFiles) -> dict:
    """``config.json``, parsed: an `InputError` where it is too large, not JSON, nested too deep or not an object."""
    where = files.label(CONFIG)
    try:
        meta = json.loads(files.read(CONFIG, MAX_CONFIG_BYTES), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deep" if isinstance(exc, RecursionError) else str(exc)[:120]
        raise InputError(f"{where}: cannot read JSON ({reason})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{where}: not a sparseseg model config (expected an object of fields)")
    return meta


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _field(meta: dict, name: str, check, rule: str):
    value = meta[name]
    try:
        ok = check(value)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise InputError(f"field {name!r} {rule}, found {json.dumps(value)[:80]}")
    return value


def _ints(n: int | None = None, low: int = 0, high: int = 65535):
    return lambda v: (
        isinstance(v, list)
        and all(isinstance(i, int) and not isinstance(i, bool) and low <= i <= high for i in v)
        and (n is None or len(v) == n)
    )


def _numbers_or_none(n: int, positive: bool = False):
    def fits(v):
        return v is None or (
            isinstance(v, list)
            and len(v) == n
            and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and (x > 0 or not positive)
                for x in v
            )
        )

    return fits


def check_version(meta: dict, where: str) -> int:
    if "format_version" not in meta:
        raise InputError(
            f"{where}: field 'format_version' missing: written by an older sparseseg, or not a model "
            f"(train the model again with this version)"
        )
    version = meta["format_version"]
    if isinstance(version, bool) or version not in READ_VERSIONS:
        raise InputError(
            f"{where}: field 'format_version' is {json.dumps(version)[:40]}, this sparseseg reads "
            f"versions {', '.join(map(str, READ_VERSIONS))} (train the model again with this version)"
        )
    expected = FIELDS_V1 if version == 1 else FIELDS if version < 4 else FIELDS_V4
    missing = [name for name in expected if name not in meta]
    if missing:
        raise InputError(f"{where}: field(s) {missing} missing")
    return int(version)


def _blend_fields(meta: dict, version: int) -> dict:
    """The training settings, the blend, the forest and the estimate of a config of ``version`` (1 had none of the
    last three)."""
    f = {}
    _field(meta, "config", lambda v: isinstance(v, dict), "must be an object of training settings")
    f["config"] = Config.from_dict(meta["config"])
    f["blend"] = (
        1.0
        if version == 1
        else float(
            _field(
                meta,
                "blend",
                lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1,
                "must be a number in [0, 1]",
            )
        )
    )
    forest_name = FOREST if version >= 3 else PICKLED_FOREST
    f["forest"] = (
        None
        if version == 1
        else _field(meta, "forest", lambda v: v is None or v == forest_name, f"must be null or {forest_name!r}")
    )
    if f["forest"] is None and f["blend"] != 1:
        raise InputError(f"field 'blend' is {f['blend']} but 'forest' is null: nothing to blend the network with")
    f["estimate"] = (
        None
        if version == 1
        else _field(meta, "estimate", lambda v: v is None or isinstance(v, dict), "must be an object or null")
    )
    return f


def check_fields(meta: dict, version: int) -> dict:
    """The fields of a config of ``version``, each checked for type and range (an `InputError` names the field)."""
    from sparseseg.config import MAX_PATCH

    f = {"version": version}
    f["channels"] = _field(
        meta,
        "in_channels",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_CHANNELS,
        f"must be a channel count in 1..{MAX_CHANNELS}",
    )
    f["classes"] = _field(
        meta,
        "classes",
        lambda v: _ints()(v) and len(v) >= 2 and v == sorted(set(v)),
        "must list at least 2 distinct class ids in 0..65535, in increasing order",
    )
    n = len(f["classes"])
    f["weights"] = _field(
        meta, "class_weights", _numbers_or_none(n, positive=True), f"must be null or {n} finite numbers > 0"
    )
    f["offsets"] = _field(meta, "class_offsets", _numbers_or_none(n), f"must be null or {n} finite numbers")
    f["pools"] = _field(
        meta,
        "pools",
        lambda v: isinstance(v, list) and len(v) <= 6 and all(_ints(3, 1, 2)(p) for p in v),
        "must list at most 6 pooling kernels [z, y, x] of 1s and 2s, one per level",
    )
    f["shapes"] = _field(
        meta,
        "train_shapes",
        lambda v: (
            isinstance(v, dict)
            and set(v) <= {"z", "y", "x", "cube"}
            and all(_ints(3, 1, MAX_PATCH)(s) for s in v.values())
        ),
        f"must map z, y, x or cube to a patch [z, y, x] of sizes in 1..{MAX_PATCH}",
    )
    f.update(_blend_fields(meta, version))
    try:
        f["inputs"] = inputs_from_dict(meta["inputs"] if version >= 4 else None, f["channels"])
    except InputError as exc:
        raise InputError(f"field 'inputs' {exc.rule}") from None
    if f["config"].base is None or f["config"].patch is None:
        raise InputError("field 'config' holds no network width (base) or patch: not a trained model")
    return f
