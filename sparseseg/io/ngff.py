"""Zarr and NGFF (OME-Zarr) metadata: read from a store's JSON files and attributes, without the zarr library."""

from __future__ import annotations

import json
from pathlib import Path


def _zarr_meta(folder: Path) -> dict:
    """The attributes of a Zarr group or array folder, read from its JSON (format 2 or 3); {} where there are none."""
    try:
        if (folder / "zarr.json").is_file():
            return json.loads((folder / "zarr.json").read_text()).get("attributes") or {}
        if (folder / ".zattrs").is_file():
            return json.loads((folder / ".zattrs").read_text()) or {}
    except (OSError, ValueError):
        return {}
    return {}


def _zarr_kind(folder: Path) -> str | None:
    """'group' or 'array' for a Zarr node's folder (format 2 or 3), None for anything else."""
    try:
        if (folder / "zarr.json").is_file():
            return json.loads((folder / "zarr.json").read_text()).get("node_type")
    except (OSError, ValueError):
        return None
    if (folder / ".zgroup").is_file():
        return "group"
    if (folder / ".zarray").is_file():
        return "array"
    return None


def _ngff(attrs: dict) -> dict | None:
    """The NGFF metadata (0.4: the attributes themselves; 0.5: under 'ome') where it describes an image."""
    meta = attrs.get("ome", attrs) if isinstance(attrs.get("ome"), dict) else attrs
    return meta if meta.get("multiscales") else None


def _ngff_version(meta: dict) -> str:
    return str(meta.get("version") or meta["multiscales"][0].get("version") or "0.4")


def _ngff_scale(multiscale: dict, level: int) -> list[float] | None:
    """The scale of a level (with the multiscale's own scale, where it has one), or None where none is given."""

    def scale_of(transforms):
        for t in transforms or []:
            if t.get("type") == "scale" and "scale" in t:
                return [float(s) for s in t["scale"]]
        return None

    scale = scale_of(multiscale["datasets"][level].get("coordinateTransformations"))
    overall = scale_of(multiscale.get("coordinateTransformations"))
    if scale is not None and overall is not None and len(overall) == len(scale):
        scale = [a * b for a, b in zip(scale, overall)]
    return scale


def _ngff_axis_names(multiscale: dict) -> list[str]:
    axes = multiscale.get("axes") or ["t", "c", "z", "y", "x"]  # before 0.3 the image was always 5D
    return [a.get("name") if isinstance(a, dict) else a for a in axes]


def _zarr_format(folder: Path) -> int:
    return 3 if (folder / "zarr.json").is_file() else 2
