"""The model folder: ``config.json`` (what the network is and how to apply it), ``weights.pt`` and ``forest.joblib``.

``forest.joblib`` is there only for a model that has a pixel classifier (`sparseseg.forest.Forest`) to blend the
network with; ``config.json`` names it (field ``forest``, else null) and holds the network's weight in the blend
(``blend``). The weights are read with ``torch.load(weights_only=True)``, which runs no code, but ``forest.joblib`` is
a pickle (joblib's, of scikit-learn's forest): loading it can run any code the file holds. Load only model folders
you trust, as you would run only programs you trust.

The format has a version (`FORMAT_VERSION`); a folder with an unknown version, or a field
that is missing or wrong, is refused with a message naming the field. Folders of format 1
(before the forest) still load, as models of the network alone (no forest, blend 1). A folder is written
whole into a hidden temporary folder beside its place and renamed into place, so a killed
run never leaves a folder that looks like a model.

`load_model` also reads a bioimage.io package written by ``sparseseg export``
(`sparseseg.bioimage`): a ``.zip`` holding the same two files beside its ``rdf.yaml``
(unpacked, such a package is a model folder). Reading one needs only the standard library's
zipfile, not bioimageio. A package holds the network alone (see `sparseseg.bioimage`).
"""

from __future__ import annotations

import io as _bytes
import json
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from sparseseg import __version__, io
from sparseseg.config import Config
from sparseseg.core import Model
from sparseseg.errors import InputError
from sparseseg.io.atomic import _file_mode
from sparseseg.preprocess import NORMALISATION

#: Version of the folder's layout and fields; raised whenever a field is added, removed or changes meaning.
#: 2: the fields ``blend``, ``forest`` and ``estimate`` (the IoU estimated on held-out planes, or null) and the file
#: ``forest.joblib``.
FORMAT_VERSION = 2
#: The versions `load_model` reads.
READ_VERSIONS = (1, 2)
CONFIG = "config.json"
WEIGHTS = "weights.pt"
FOREST = "forest.joblib"
FIELDS_V1 = ("format_version", "sparseseg_version", "in_channels", "classes", "class_weights", "class_offsets",
             "pools", "train_shapes", "normalisation", "config")
FIELDS = FIELDS_V1 + ("blend", "forest", "estimate")


def is_model_folder(folder: str | os.PathLike) -> bool:
    """True where ``folder`` holds a model folder's config file."""
    return (Path(folder) / CONFIG).is_file()


def check_model_folder(folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check before any work that a model folder can be written at ``folder``.

    Its parent must exist; ``folder`` itself must not exist, be an empty folder, or (with
    ``overwrite``) hold a model. A file, or a folder holding anything else, is never replaced.
    """
    folder = Path(folder)
    if not folder.parent.is_dir():
        raise InputError(f"{folder}: folder {folder.parent} does not exist")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        if not is_model_folder(folder):
            raise InputError(f"{folder}: holds files that are not a sparseseg model; give a new or empty folder")
        if not overwrite:
            raise InputError(f"{folder}: holds a model already (use --overwrite to replace it)")
    return folder


def model_meta(model: Model) -> dict:
    """The fields of ``config.json`` for ``model`` (see `FIELDS`)."""
    return {
        "format_version": FORMAT_VERSION,
        "sparseseg_version": __version__,
        "in_channels": model.in_channels,
        "classes": model.classes.tolist(),
        "class_weights": None if model.class_weights is None else model.class_weights.tolist(),
        "class_offsets": None if model.offsets is None else model.offsets.tolist(),
        "pools": [list(p) for p in model.network.pools],
        "train_shapes": {axis or "cube": list(shape) for axis, shape in model.windows.items()},
        "normalisation": NORMALISATION,
        "config": model.config.to_dict(),
        "blend": float(model.blend),
        "forest": None if model.forest is None else FOREST,
        "estimate": model.estimate,
    }


def model_state(model: Model) -> dict:
    """The network's weights as a state dict on the CPU: what ``weights.pt`` holds."""
    return {k: v.detach().cpu() for k, v in model.network.state_dict().items()}


def save_model(folder: str | os.PathLike, model: Model, overwrite: bool = False) -> Path:
    """Write a model folder (see the module's docstring), atomically: all of it or nothing."""
    import torch

    folder = check_model_folder(folder, overwrite)
    check_blend(model)
    meta, state = model_meta(model), model_state(model)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    old = None
    try:
        torch.save(state, tmp / WEIGHTS)
        if model.forest is not None:
            import joblib

            joblib.dump(model.forest, tmp / FOREST)
        io.write_json(tmp / CONFIG, meta)
        if folder.is_dir() and any(folder.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old / "model")
        elif folder.is_dir():
            folder.rmdir()
        _file_mode(tmp)  # mkdtemp makes 0700; give the folder the mode a plain mkdir would
        os.replace(tmp, folder)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not folder.exists():
            os.replace(old / "model", folder)  # put the previous model back
        if isinstance(exc, OSError):  # a full disk, a read-only folder
            raise InputError(f"{folder}: cannot write the model ({exc.strerror or exc}); nothing was changed there") from exc
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def check_blend(model: Model) -> None:
    """Refuse a blend weight outside [0, 1], a forest that is not a `sparseseg.forest.Forest` or does not fit the
    network (channels, classes), and a blend below 1 without a forest (an `InputError` of parameter ``blend``
    or ``forest``)."""
    blend = model.blend
    if isinstance(blend, bool) or not isinstance(blend, (int, float, np.floating)) or not 0 <= blend <= 1:
        raise InputError("must be a number in [0, 1] (the network's weight in the blend)", param="blend", value=blend)
    if model.forest is None:
        if blend != 1:
            raise InputError("must be 1 for a model without a forest (nothing to blend with)", param="blend", value=blend)
        return
    from sparseseg.forest import Forest

    forest = model.forest
    if not isinstance(forest, Forest):
        raise InputError(f"must be a sparseseg.forest.Forest, not {type(forest).__name__}", param="forest",
                         value=type(forest).__name__)
    if forest.n_channels != model.in_channels:
        raise InputError(f"was fitted on {forest.n_channels} channel(s), the network takes {model.in_channels}",
                         param="forest", value=forest.n_channels)
    extra = np.setdiff1d(forest.classes, model.classes)
    if len(extra):
        raise InputError(f"knows classes {extra.tolist()} that the network does not ({model.classes.tolist()})",
                         param="forest", value=forest.classes.tolist())


def model_digest(folder: str | os.PathLike) -> str:
    """A SHA-256 of a model folder's files (their names and contents: the forest's too), or of an exported package's
    .zip file: what says that two runs used the same model."""
    import hashlib

    digest = hashlib.sha256()
    folder = Path(folder)
    files = [folder] if folder.is_file() else sorted(p for p in folder.iterdir() if p.is_file())
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for piece in iter(lambda: f.read(2**20), b""):
                digest.update(piece)
    return digest.hexdigest()


def _field(meta: dict, name: str, check, rule: str):
    value = meta[name]
    try:
        ok = check(value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"field {name!r} {rule}, found {json.dumps(value)[:80]}")
    return value


def _ints(n: int | None = None):
    return lambda v: isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v) and (n is None or len(v) == n)


def _numbers_or_none(n: int):
    return lambda v: v is None or (isinstance(v, list) and len(v) == n and all(isinstance(x, (int, float)) for x in v))


def load_model(folder: str | os.PathLike) -> Model:
    """Read a model folder written by `save_model`, or a package of ``sparseseg export`` (a .zip); an `InputError`
    names what is missing or wrong."""
    from sparseseg.model import UNet3D

    folder = Path(folder)
    forest_file = folder / FOREST
    if folder.is_file() and folder.name.lower().endswith(".zip"):
        meta, stored, forest_file = _read_package(folder)
    elif folder.is_file():
        raise InputError(f"{folder}: no such model folder, and not a bioimage.io package (.zip) from sparseseg export")
    elif not folder.is_dir():
        raise InputError(f"{folder}: no such model folder")
    elif not (folder / CONFIG).is_file():
        raise InputError(f"{folder}: not a sparseseg model folder (no {CONFIG})")
    else:
        meta, stored = io.read_json(folder / CONFIG), folder / WEIGHTS
    where = f"{folder / CONFIG}"
    if not isinstance(meta, dict):
        raise InputError(f"{where}: not a sparseseg model config (expected an object of fields)")
    if "format_version" not in meta:
        raise InputError(f"{where}: field 'format_version' missing: written by an older sparseseg, or not a model "
                         f"(train the model again with this version)")
    version = meta["format_version"]
    if isinstance(version, bool) or version not in READ_VERSIONS:
        raise InputError(f"{where}: field 'format_version' is {json.dumps(version)[:40]}, this sparseseg reads "
                         f"versions {', '.join(map(str, READ_VERSIONS))} (train the model again with this version)")
    missing = [name for name in (FIELDS_V1 if version == 1 else FIELDS) if name not in meta]
    if missing:
        raise InputError(f"{where}: field(s) {missing} missing")
    try:
        channels = _field(meta, "in_channels", lambda v: isinstance(v, int) and v >= 1, "must be a channel count >= 1")
        classes = _field(meta, "classes", lambda v: _ints()(v) and len(v) >= 2 and v == sorted(set(v)),
                         "must list at least 2 distinct class ids in increasing order")
        weights = _field(meta, "class_weights", _numbers_or_none(len(classes)), f"must be null or {len(classes)} numbers")
        offsets = _field(meta, "class_offsets", _numbers_or_none(len(classes)), f"must be null or {len(classes)} numbers")
        pools = _field(meta, "pools", lambda v: isinstance(v, list) and all(_ints(3)(p) for p in v),
                       "must list one pooling kernel [z, y, x] per level")
        shapes = _field(meta, "train_shapes", lambda v: isinstance(v, dict) and set(v) <= {"z", "y", "x", "cube"}
                        and all(_ints(3)(s) for s in v.values()), "must map z, y, x or cube to a patch [z, y, x]")
        _field(meta, "config", lambda v: isinstance(v, dict), "must be an object of training settings")
        config = Config.from_dict(meta["config"])
        blend = 1.0 if version == 1 else _field(meta, "blend", lambda v: isinstance(v, (int, float)) and not
                                                 isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1,
                                                 "must be a number in [0, 1]")
        named = None if version == 1 else _field(meta, "forest", lambda v: v is None or v == FOREST,
                                                 f"must be null or {FOREST!r}")
        if named is None and blend != 1:
            raise InputError(f"field 'blend' is {blend} but 'forest' is null: nothing to blend the network with")
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    if config.base is None or config.patch is None:
        raise InputError(f"{where}: field 'config' holds no network width (base) or patch: not a trained model")
    network = UNet3D(channels, len(classes), config.base, [tuple(p) for p in pools])
    state = _read_weights(stored, folder / WEIGHTS)
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:  # torch's first line is a header; the next says what does not fit
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        raise InputError(f"{folder / WEIGHTS}: weights do not match {CONFIG} ({' '.join(lines[1:2] or lines[:1])[:160]})") from None
    model = Model(
        network.eval(), np.asarray(classes, dtype=np.int64), config, channels,
        {(None if k == "cube" else k): tuple(v) for k, v in shapes.items()},
        None if weights is None else np.asarray(weights, dtype=np.float32),
        None if offsets is None else np.asarray(offsets, dtype=np.float64),
        forest=None if named is None else _read_forest(forest_file, folder / FOREST), blend=float(blend),
        estimate=_field(meta, "estimate", lambda v: v is None or isinstance(v, dict), "must be an object or null") if version > 1 else None,
    )
    try:
        check_blend(model)
    except InputError as exc:
        raise InputError(f"{folder / FOREST}: does not fit the network in {CONFIG} ({exc})") from None
    return model


def _read_forest(source: Path | bytes | None, path: Path):
    """The `sparseseg.forest.Forest` pickled in the file ``source`` (or its bytes, read from ``path``)."""
    import joblib

    from sparseseg.forest import Forest

    if source is None or (isinstance(source, Path) and not source.is_file()):
        raise InputError(f"{path}: no such file, but {CONFIG} names it (field 'forest')")
    try:
        forest = joblib.load(_bytes.BytesIO(source) if isinstance(source, bytes) else source)
    except Exception as exc:
        raise InputError(f"{path}: cannot read the forest, not a file written by sparseseg ({type(exc).__name__})") from exc
    if not isinstance(forest, Forest):
        raise InputError(f"{path}: holds a {type(forest).__name__}, not a sparseseg forest")
    return forest


def _read_package(path: Path) -> tuple[dict, bytes, bytes | None]:
    """The config, the weights and the forest (bytes; None where it holds none) that a package of ``sparseseg export``
    carries beside its rdf.yaml."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            missing = [name for name in (CONFIG, WEIGHTS) if name not in names]
            if missing:
                raise InputError(f"{path}: holds no {' and no '.join(missing)}: not a package written by sparseseg export")
            config, weights = archive.read(CONFIG), archive.read(WEIGHTS)
            forest = archive.read(FOREST) if FOREST in names else None
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path}: cannot read the package ({exc})") from exc
    try:
        return json.loads(config), weights, forest
    except ValueError as exc:
        raise InputError(f"{path / CONFIG}: cannot read JSON ({exc})") from exc


def _read_weights(source: Path | bytes, path: Path) -> dict:
    """The state dict in the file ``source`` (or its bytes, read from ``path``), loaded with ``weights_only=True``:
    opening it runs no code."""
    import torch

    if isinstance(source, Path) and not source.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return torch.load(_bytes.BytesIO(source) if isinstance(source, bytes) else source, map_location="cpu",
                          weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: cannot read weights, not a file written by sparseseg ({type(exc).__name__})") from exc
