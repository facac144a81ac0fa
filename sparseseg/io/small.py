"""Small files beside the volumes: PNG previews, JSON or CSV reports and other files (a model package), written
atomically, and JSON read."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sparseseg.errors import InputError
from sparseseg.io.atomic import _atomic
from sparseseg.io.checks import check_output


def write_png(path: str | os.PathLike, rgb: np.ndarray, overwrite: bool = False) -> Path:
    """Write an (H, W, 3) uint8 array as a PNG file, atomically."""
    from PIL import Image

    path = check_output(path, overwrite, suffixes=(".png",))
    _atomic(path, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"), overwrite)
    return path


def write_text(
    path: str | os.PathLike, text: str, overwrite: bool = False, suffixes: Sequence[str] = (".json", ".csv")
) -> Path:
    """Write a text file (a JSON or CSV report), atomically."""
    path = check_output(path, overwrite, suffixes=suffixes)
    _atomic(path, lambda tmp: tmp.write_text(text), overwrite)
    return path


def write_json(path: str | os.PathLike, obj: Any, overwrite: bool = False) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return write_text(path, json.dumps(obj, indent=2) + "\n", overwrite, suffixes=(".json",))


def write_file(
    path: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = False, suffixes: Sequence[str] = (".zip",)
) -> Path:
    """Write a file by calling ``write(tmp)`` on a temporary file beside ``path`` (same suffix), atomically."""
    path = check_output(path, overwrite, suffixes=suffixes)
    _atomic(path, write, overwrite)
    return path


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, with a clear error if it is missing or broken."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read JSON ({exc})") from exc
