"""Shared fixtures: small deterministic synthetic volumes, and the same written as files."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

from sparseseg import synthetic
from sparseseg.config import Config

#: ../shared/data relative to the repository root (real volumes; tests marked `shared` need it).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

#: Shape of the small synthetic volume used by most tests: big enough for a depth-3 U-Net patch.
SMALL = (12, 24, 24)


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
