"""What the widget shows in the viewer: the result layers, and the move to the suggested plane with its marker."""

from __future__ import annotations

import numpy as np

from sparseseg.method.planning import AXES

SEGMENTATION = "sparseseg segmentation"
UNCERTAINTY = "sparseseg uncertainty"
NEXT_PLANE = "sparseseg: paint next"


def _replace(viewer, name: str, add, data, **kwargs):
    """Update the layer called ``name`` in place (keeping what the user set), or add it with ``add``."""
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.data = data
        layer.scale = kwargs["scale"]
        return layer
    return add(data, name=name, **kwargs)


#: The key of the segmentation layer's metadata that holds the run's estimate (`sparseseg.method.holdout.Estimate`,
#: as a dict), or None where no plane could be held out.
ESTIMATE = "sparseseg_estimate"
#: The key of its metadata that says what made it: 'densify' (the run's result) or the forest's first result.
SOURCE = "sparseseg_source"


def show_result(viewer, result, scale) -> tuple:
    """Add, or update, the segmentation as a Labels layer (painted voxels as painted) and the uncertainty as an image
    layer.

    Returns both layers.
    """
    labels = _replace(viewer, SEGMENTATION, viewer.add_labels, result.labels(), scale=scale, opacity=0.4)
    labels.metadata = {**labels.metadata, ESTIMATE: result.model.estimate, SOURCE: "densify"}
    uncertainty = _replace(
        viewer,
        UNCERTAINTY,
        viewer.add_image,
        result.uncertainty(),
        scale=scale,
        colormap="magma",
        blending="additive",
        contrast_limits=(0.0, 1.0),
        visible=False,
    )
    return labels, uncertainty


def show_preview(viewer, labels, scale):
    """Show the forest's first segmentation as the segmentation layer, until the run's result replaces it; its metadata
    says so (no estimate yet)."""
    layer = _replace(viewer, SEGMENTATION, viewer.add_labels, labels, scale=scale, opacity=0.4)
    layer.metadata = {**layer.metadata, ESTIMATE: None, SOURCE: "forest, first result"}
    return layer


def go_to_plane(viewer, axis: str, index: int, shape, scale) -> None:
    """Slice the viewer across ``axis`` (z, y or x of the volume) at plane ``index``, and outline that plane.

    The outline is a rectangle on a Shapes layer (`NEXT_PLANE`), named after the plane.
    """
    ndim = viewer.dims.ndim
    dim = ndim - 3 + AXES.index(axis)
    others = [d for d in range(ndim) if d != dim]
    viewer.dims.order = tuple(others[:-2] + [dim] + others[-2:])
    viewer.dims.set_point(dim, index * float(scale[AXES.index(axis)]))
    across = [i for i in range(3) if i != AXES.index(axis)]
    corners = []
    for a, b in ((0, 0), (0, 1), (1, 1), (1, 0)):
        corner = np.zeros(3)
        corner[AXES.index(axis)] = index
        corner[across[0]] = a * (shape[across[0]] - 1)
        corner[across[1]] = b * (shape[across[1]] - 1)
        corners.append(corner)
    name = f"{NEXT_PLANE} {axis}={index}"
    for layer in [layer for layer in viewer.layers if layer.name.startswith(NEXT_PLANE)]:
        viewer.layers.remove(layer)
    viewer.add_shapes(
        [np.array(corners)],
        shape_type="rectangle",
        name=name,
        scale=scale,
        edge_color="yellow",
        face_color="transparent",
        edge_width=max(1.0, min(shape) / 40),
    )


def painted_plane(viewer, layer) -> tuple[str, int] | None:
    """The plane of ``layer`` (3D Labels) that the viewer shows now, as (axis, index); None in a 3D view."""
    if viewer.dims.ndisplay != 2 or layer.ndim != 3 or viewer.dims.ndim < 3:
        return None
    sliced = viewer.dims.not_displayed[-1] - (viewer.dims.ndim - 3)
    if sliced < 0:
        return None
    world = viewer.dims.point[viewer.dims.not_displayed[-1]]
    index = int(round((world - layer.translate[sliced]) / layer.scale[sliced]))
    return AXES[sliced], index


def drop_outline(viewer, axis: str, index: int) -> None:
    """Remove the outline of the suggested plane ``axis``=``index`` (it has been painted)."""
    name = f"{NEXT_PLANE} {axis}={index}"
    if name in viewer.layers:
        viewer.layers.remove(name)
