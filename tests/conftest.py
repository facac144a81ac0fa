"""Shared fixtures: small deterministic synthetic volumes and the same written as files, a tiny trained model,
and the command-line helpers (`run`, `bad_input`, `one_json`, `strict_json`)."""

import json
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from sparseseg.cli.app import app
from sparseseg.commands import synthetic
from sparseseg.config import Config

#: ../shared/data relative to the repository root (real volumes; tests marked `shared` need it).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

#: Shape of the small synthetic volume used by most tests: big enough for a depth-3 U-Net patch.
SMALL = (12, 24, 24)

#: Training options of a command-line run that takes a second or two on a CPU (see `train_args`).
TRAIN = [
    "--iterations",
    "3",
    "--base",
    "4",
    "--patch",
    "8,16,16",
    "--seed",
    "0",
    "--device",
    "cpu",
    "--batch-size",
    "1",
]
#: The class values of the `trained` model.
TRAINED_CLASSES = [0, 10, 200]


def _tiny_config(**overrides) -> Config:
    values = dict(iterations=3, time_budget=60.0, base=4, batch_size=1, seed=0, device="cpu", patch=(8, 16, 16))
    values.update(overrides)
    return Config(**values)


@pytest.fixture
def tiny_config():
    """Makes a training configuration that runs in about a second on a CPU: ``tiny_config(iterations=5)``."""
    return _tiny_config


@pytest.fixture(scope="session")
def blobs_small():
    """(image, dense labels) of shape SMALL, classes 0, 1, 2."""
    image, labels = synthetic.blobs(SMALL, seed=0)
    assert set(np.unique(labels)) == {0, 1, 2}
    return image, labels


@pytest.fixture(scope="session")
def sparse_small(blobs_small):
    """Sparse labels of `blobs_small`: 2 planes per axis annotated, 255 elsewhere; and the planes."""
    return synthetic.sparsify(blobs_small[1], 2)


@pytest.fixture
def files(tmp_path, blobs_small, sparse_small):
    """The small volume, its sparse labels and its dense truth as TIFF files in ``tmp_path``."""
    image, truth = blobs_small
    sparse, planes = sparse_small
    paths = SimpleNamespace(
        folder=tmp_path,
        volume=tmp_path / "volume.tif",
        sparse=tmp_path / "sparse.tif",
        truth=tmp_path / "truth.tif",
        planes=planes,
        shape=image.shape,
    )
    tifffile.imwrite(paths.volume, image)
    tifffile.imwrite(paths.sparse, sparse)
    tifffile.imwrite(paths.truth, truth)
    return paths


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def listing():
    """``listing(folder)``: every path under it with its content, to check that nothing was written or changed."""
    return lambda folder: _listing(Path(folder))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not there")
    return SHARED_DATA


# --- the command line ----------------------------------------------------------------------


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def run():
    """``run(*args)``: invoke the sparseseg command line in-process (arguments str()-ed); the click Result.

    The installed click keeps stderr apart from stdout, so ``result.stderr`` holds only what went to stderr.
    """
    return _run


@pytest.fixture(scope="session")
def train_args():
    """Training options for a tiny command-line run: ``run("densify", ..., *train_args)`` (later options win)."""
    return list(TRAIN)


def _refuse_constant(constant):
    raise ValueError(f"{constant} is not strict JSON")


def _strict_json(text: str):
    return json.loads(text, parse_constant=_refuse_constant)


@pytest.fixture(scope="session")
def strict_json():
    """``strict_json(text)``: json.loads that refuses NaN and Infinity (what Python's json writes, but JSON forbids)."""
    return _strict_json


def _one_json(result, exit_code: int = 0) -> dict:
    assert result.exit_code == exit_code, result.output
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1, result.stdout
    data = _strict_json(result.stdout)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="session")
def one_json():
    """``one_json(result, exit_code=0)``: the command ended with ``exit_code`` and printed exactly one line of strict
    JSON (an object) on stdout, nothing else; returns the object."""
    return _one_json


def _bad_input(result, *needles, code: int = 2, alone: bool = False, absent=()) -> str:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stdout == "", result.stdout
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert sum(line.startswith("error: ") for line in lines) == 1, result.stderr
    if alone:
        assert len(lines) == 1 and result.stderr == lines[0] + "\n", result.stderr
    for needle in needles:
        assert str(needle) in lines[-1], (needle, lines[-1])
    for word in absent:
        assert str(word) not in result.stderr, (word, result.stderr)
    return lines[-1]


@pytest.fixture(scope="session")
def bad_input():
    """``bad_input(result, *needles, code=2, alone=False, absent=())``: refused as bad input; returns the error line.

    Exit ``code``, nothing on stdout, no traceback; stderr ends with one line 'error: ...' holding every needle
    (log lines may precede it, unless ``alone``: then that line is all of stderr) and none of ``absent``.
    """
    return _bad_input


# --- a trained model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module's tests: on a busy 2-core machine two threads that wait for each other make
    a training step 100x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _relabel(labels):
    """Class ids 0, 1, 2 -> 0, 10, 200; everything else (255 = unlabeled) unchanged."""
    lut = np.arange(256, dtype=np.uint8)
    lut[1], lut[2] = 10, 200
    return lut[labels]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, blobs_small, sparse_small, one_torch_thread):
    """One model trained through `densify --save-model` (classes ``.classes`` = 0, 10, 200, spacing 2,1,1), read-only
    for the tests: its volume, sparse labels, truth, segmentation, probabilities and model folder in ``.folder``."""
    folder = tmp_path_factory.mktemp("trained")
    image, truth = blobs_small
    sparse, planes = sparse_small
    t = SimpleNamespace(
        folder=folder,
        volume=folder / "volume.tif",
        sparse=folder / "sparse.tif",
        truth=folder / "truth.tif",
        seg=folder / "seg.tif",
        prob=folder / "prob.tif",
        model=folder / "model",
        planes=planes,
        shape=image.shape,
        image=image,
        classes=list(TRAINED_CLASSES),
    )
    tifffile.imwrite(t.volume, image)
    tifffile.imwrite(t.sparse, _relabel(sparse))
    tifffile.imwrite(t.truth, _relabel(truth))
    t.result = _run(
        "densify",
        t.volume,
        "--slices",
        t.sparse,
        "-o",
        t.seg,
        "--probabilities",
        t.prob,
        "--save-model",
        t.model,
        "--spacing",
        "2,1,1",
        *TRAIN,
        "--json",
    )
    assert t.result.exit_code == 0, t.result.output
    return t


@pytest.fixture
def sigint_default():
    """Ctrl-C as in a terminal: Python's own SIGINT handler, also where pytest was started in the background (where the
    shell ignores SIGINT, and so does sparseseg, by design)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
