"""The model folder: ``config.json`` (what the network is and how to apply it), ``weights.pt`` and ``forest.npz``.

``forest.npz`` is there only for a model that has a pixel classifier (`sparseseg.method.forest.Forest`) to blend the
network
with; ``config.json`` names it (field ``forest``, else null) and holds the network's weight in the blend (``blend``).
Nothing in a model folder runs code when it is read: the weights are read with ``torch.load(weights_only=True)``, the
forest is numeric arrays read without pickle (`sparseseg.method.forest_file`), and every file is size-capped before it
is
read. A folder of format 2 whose forest is a pickle (``forest.joblib``) is refused with a message saying how to re-save
it, unless a ``forest.npz`` lies beside it.

The format has a version (`FORMAT_VERSION`); a folder with an unknown version, or a field that is missing, wrong or out
of range (classes 0..65535, finite weights and offsets, patch sizes up to `sparseseg.config.MAX_PATCH`), is refused with
a message naming the file and the field. Folders of format 1 (before the forest) still load, as models of the network
alone. A folder is written whole into a hidden temporary folder beside its place and renamed into place, so a killed
run never leaves a folder that looks like a model.

`load_model` also reads a bioimage.io package written by ``sparseseg export`` (`sparseseg.commands.export`): a ``.zip``
holding the same files beside its ``rdf.yaml``. Its members are size-capped before they are read.
"""

from __future__ import annotations

import io as _bytes
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from sparseseg import __version__, io
from sparseseg.errors import InputError
from sparseseg.io.atomic import _file_mode, record_written
from sparseseg.method.core import Model
from sparseseg.method.forest_file import FOREST_FILE, MAX_FOREST_BYTES, load_forest, save_forest
from sparseseg.method.model_config import (
    PICKLED_FOREST,
    check_fields,
    check_version,
    read_config,
)
from sparseseg.method.model_files import CONFIG, ModelFiles
from sparseseg.method.preprocess import NORMALISATION

#: Version of the folder's layout and fields; raised whenever a field is added, removed or changes meaning.
#: 2: the fields ``blend``, ``forest`` and ``estimate`` (the IoU estimated on held-out planes, or null) and the file
#: ``forest.joblib``; 3: the forest as ``forest.npz`` (numeric arrays, no pickle); 4: the field ``inputs`` (what the
#: network reads: null for the raw channels, or the filter features' normalisation).
FORMAT_VERSION = 4
WEIGHTS = "weights.pt"
FOREST = FOREST_FILE


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
        "inputs": model.network_inputs.as_dict(),
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
            save_forest(model.forest, tmp / FOREST)
        io.write_json(tmp / CONFIG, meta)
        if folder.is_dir() and any(folder.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old / "model")
        elif folder.is_dir():
            folder.rmdir()
        _file_mode(tmp)  # mkdtemp makes 0700; give the folder the mode a plain mkdir would
        os.replace(tmp, folder)
        record_written(folder)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not folder.exists():
            os.replace(old / "model", folder)  # put the previous model back
        if isinstance(exc, (OSError, RuntimeError)):  # a full disk, a read-only folder (torch.save: a RuntimeError)
            why = getattr(exc, "strerror", None) or " ".join(str(exc).split())[:120]
            raise InputError(f"'{folder}': cannot write the model ({why}); nothing was changed there") from exc
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def check_blend(model: Model) -> None:
    """Refuse a blend weight outside [0, 1], a forest that is not a `sparseseg.method.forest.Forest` or does not fit the
    network (channels, classes), and a blend below 1 without a forest (an `InputError` of parameter ``blend``
    or ``forest``)."""
    blend = model.blend
    if isinstance(blend, bool) or not isinstance(blend, (int, float, np.floating)) or not 0 <= blend <= 1:
        raise InputError("must be a number in [0, 1] (the network's weight in the blend)", param="blend", value=blend)
    if model.forest is None:
        if blend != 1:
            raise InputError(
                "must be 1 for a model without a forest (nothing to blend with)", param="blend", value=blend
            )
        return
    from sparseseg.method.forest import Forest

    forest = model.forest
    if not isinstance(forest, Forest):
        raise InputError(
            f"must be a sparseseg.method.forest.Forest, not {type(forest).__name__}",
            param="forest",
            value=type(forest).__name__,
        )
    if forest.n_channels != model.in_channels:
        raise InputError(
            f"was fitted on {forest.n_channels} channel(s), the network takes {model.in_channels}",
            param="forest",
            value=forest.n_channels,
        )
    extra = np.setdiff1d(forest.classes, model.classes)
    if len(extra):
        raise InputError(
            f"knows classes {extra.tolist()} that the network does not ({model.classes.tolist()})",
            param="forest",
            value=forest.classes.tolist(),
        )


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


def load_model(folder: str | os.PathLike) -> Model:
    """Read a model folder written by `save_model`, or a package of ``sparseseg export`` (a .zip).

    Nothing read runs code, and every file is size-capped before it is read (see the module's docstring).

    Raises
    ------
    InputError
        Names the file and the field that is missing, wrong or out of range, or the file that cannot be read.
    """
    from sparseseg.method.network import UNet3D

    files = ModelFiles(Path(folder))
    meta = read_config(files)
    where = files.label(CONFIG)
    version = check_version(meta, where)
    try:
        f = check_fields(meta, version)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    forest = None if f["forest"] is None else _read_forest(files)  # first: a pickled forest is refused unread
    network = UNet3D(f["inputs"].count, len(f["classes"]), f["config"].base, [tuple(p) for p in f["pools"]])
    _load_weights(network, files)
    model = Model(
        network.eval(),
        np.asarray(f["classes"], dtype=np.int64),
        f["config"],
        f["channels"],
        {(None if k == "cube" else k): tuple(v) for k, v in f["shapes"].items()},
        None if f["weights"] is None else np.asarray(f["weights"], dtype=np.float32),
        None if f["offsets"] is None else np.asarray(f["offsets"], dtype=np.float64),
        forest=forest,
        blend=f["blend"],
        estimate=f["estimate"],
        inputs=f["inputs"],
    )
    try:
        check_blend(model)
    except InputError as exc:
        raise InputError(f"{files.label(FOREST)}: does not fit the network in {CONFIG} ({exc})") from None
    return model


def _read_forest(files: ModelFiles):
    """The model's forest, from ``forest.npz``; a pickled ``forest.joblib`` alone is refused, never read."""
    if files.exists(FOREST):
        return load_forest(files.read(FOREST, MAX_FOREST_BYTES), files.path / FOREST)
    if files.exists(PICKLED_FOREST):
        old = files.path / PICKLED_FOREST
        raise InputError(
            f"'{old}' is a pickle, which can run code when it is read, and sparseseg does not read it. Train the model "
            f'again, or, only if you trust where it came from, re-save its forest beside it: python -c "import sys; '
            f"from joblib import load; from sparseseg.method import forest, forest_file; "
            f"sys.modules['sparseseg.forest'] = forest; "
            f"forest_file.save_forest(load('{old}'), '{files.path / FOREST}')\""
        )
    raise InputError(f"{files.label(FOREST)}: no such file, but {CONFIG} names a forest (field 'forest')")


def _state_bytes(network) -> int:
    """Most bytes a ``weights.pt`` of ``network`` can hold: its tensors, and room for torch's index and alignment."""
    state = network.state_dict()
    return sum(t.numel() * t.element_size() for t in state.values()) + 4096 * len(state) + (1 << 20)


def _load_weights(network, files: ModelFiles) -> None:
    """Load ``weights.pt`` into ``network``: size-capped by what the network holds, read with ``weights_only=True``."""
    import warnings

    import torch

    cap = _state_bytes(network)
    data = files.read(WEIGHTS, cap)
    where = files.label(WEIGHTS)
    try:
        with zipfile.ZipFile(_bytes.BytesIO(data)) as archive:
            if sum(info.file_size for info in archive.infolist()) > cap:
                raise InputError(f"{where}: unpacks to more than the {cap} bytes the network's weights take; not read")
    except zipfile.BadZipFile:
        pass  # torch's legacy format, not a zip: its size is its file's, checked above
    with warnings.catch_warnings(record=True) as said:  # torch warns about legacy and pickled files: fold it in
        warnings.simplefilter("always")
        try:
            state = torch.load(_bytes.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            why = " ".join(str(said[0].message).split())[:120] if said else type(exc).__name__
            raise InputError(f"{where}: cannot read weights, not a file written by sparseseg ({why})") from None
    if not isinstance(state, dict):
        raise InputError(f"{where}: holds a {type(state).__name__}, not the network's weights")
    try:
        network.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:  # torch's first line is a header; the next says what does not fit
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        raise InputError(
            f"{where}: weights do not match {CONFIG} ({' '.join(lines[1:2] or lines[:1])[:160]})"
        ) from None
