"""The napari loop on a real volume, as a user meets it, measured; and docs/napari_loop.png, the README's picture.

Run from the repository root with a display (Xvfb will do), the napari extra installed and the shared data beside the
repository (or SPARSESEG_SHARED set)::

    xvfb-run -a -s "-screen 0 1400x900x24" python docs/napari_loop.py [OUT.png [SEED]]

The BraTS crop (FLAIR and T1c as two image layers) gets two painted planes per axis, painted from its ground truth;
the widget, docked through napari's plugin menu, densifies them with a 60 s limit, suggests the next plane, which is
painted, and densifies again from the last model. Then two runs are cancelled, 5 s and 25 s after their start. It
prints each run's wall time, the time its first (forest) segmentation appeared, its IoU on the unpainted voxels, its
estimate, and how long each Cancel took to return, as JSON.
"""

import json
import os
import sys
import time
from pathlib import Path

import napari
import numpy as np
import tifffile
from napari._qt.dialogs.qt_notification import NapariQtNotification
from qtpy.QtWidgets import QApplication

from sparseseg.config import Config
from sparseseg.napari import layers

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("napari_loop.png")
SHARED = Path(os.environ.get("SPARSESEG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CROP = SHARED / "data" / "brats2013_deepmedic" / "crop_pat0005_96x128x128"
PLANES = {"z": (30, 60), "y": (45, 85), "x": (45, 85)}
BUDGET, SEED = 60, int(sys.argv[2]) if len(sys.argv) > 2 else 0


def wait(condition, timeout: float = 600.0) -> None:
    end = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError("the widget did not finish in time")
        QApplication.processEvents()
        time.sleep(0.02)


def paint(viewer, layer, truth, axis: str, index: int) -> None:
    """Paint one plane of ``truth`` as the brush does: the viewer sliced there, one paint event per class."""
    dim = "zyx".index(axis)
    viewer.dims.order = tuple([dim] + [d for d in range(3) if d != dim])
    viewer.dims.set_point(dim, index)
    plane = np.take(truth, index, axis=dim)
    for value in np.unique(plane[plane > 0]):
        where = list(np.nonzero(plane == value))
        where.insert(dim, np.full(where[0].shape, index))
        layer.data_setitem(tuple(where), int(value))


def mean_iou(labels, truth, annotated) -> float:
    """Mean foreground IoU over the classes of the truth, on the voxels nobody painted."""
    free = ~annotated
    ious = [
        np.sum((labels[free] == c) & (truth[free] == c)) / max(np.sum((labels[free] == c) | (truth[free] == c)), 1)
        for c in np.unique(truth)
        if c != 0
    ]
    return round(float(np.mean(ious)), 4)


def densify(widget, truth, warm: bool) -> dict:
    """One Densify (or Densify again) click, watched: its wall time, the forest's first result, the IoU, the
    estimate."""
    (widget.again_button if warm else widget.densify_button).click()
    clicked, first = time.perf_counter(), None
    while widget.worker is not None:
        QApplication.processEvents()
        layer = widget.viewer.layers[layers.SEGMENTATION] if layers.SEGMENTATION in widget.viewer.layers else None
        if first is None and layer is not None and layer.metadata.get(layers.SOURCE, "").startswith("forest"):
            first = time.perf_counter() - clicked
        time.sleep(0.02)
    result = widget.result
    estimate = result.model.estimate
    return {
        "seconds": round(time.perf_counter() - clicked, 1),
        "forest_shown_after": None if first is None else round(first, 1),
        "planes": {a: v for a, v in result.annotation.planes.items() if v},
        "steps": result.train_log.iterations,
        "iou": mean_iou(result.labels(), truth, result.annotation.mask),
        "estimate": estimate["iou"],
        "spread": estimate["spread"],
        "network_weight": estimate["blend"],
        "shown": widget.estimate.text(),
    }


def cancel_after(widget, seconds: float) -> dict:
    widget.densify_button.click()
    wait(lambda: widget.progress.elapsed >= seconds)
    phase = widget.progress.phase_name
    clicked = time.perf_counter()
    widget.cancel_button.click()
    wait(lambda: widget.worker is None, 60)
    return {"after": seconds, "phase": phase, "returned_in": round(time.perf_counter() - clicked, 2)}


def main() -> None:
    truth = tifffile.imread(CROP / "label.tif")
    viewer = napari.Viewer()
    viewer.window.resize(1400, 860)
    for channel in ("flair", "t1c"):
        viewer.add_image(tifffile.imread(CROP / f"raw_{channel}.tif"), name=channel)
    painted = viewer.add_labels(np.zeros(truth.shape, dtype=np.uint8), name="painted")
    _, widget = viewer.window.add_plugin_dock_widget("sparseseg", "Densify")
    widget.config = Config(seed=SEED)
    for index in range(widget.images.count()):
        widget.images.item(index).setSelected(True)
    for axis, indices in PLANES.items():
        for index in indices:
            paint(viewer, painted, truth, axis, index)
    widget.budget.setValue(BUDGET)
    runs = [densify(widget, truth, warm=False)]
    suggestion = widget.suggest()
    paint(viewer, viewer.layers["painted"], truth, suggestion.axis, suggestion.index)
    runs.append(densify(widget, truth, warm=True))
    viewer.dims.order = (0, 1, 2)
    viewer.dims.set_point(0, 45)
    viewer.layers[layers.SEGMENTATION].opacity = 0.5
    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    for _ in range(5):
        QApplication.processEvents()
    viewer.screenshot(str(OUT), canvas_only=False)
    cancels = [cancel_after(widget, 5), cancel_after(widget, 25)]
    figures = {"budget": BUDGET, "seed": SEED, "suggested": f"{suggestion.axis}={suggestion.index}", "runs": runs}
    print(json.dumps({**figures, "cancels": cancels, "picture": str(OUT)}, indent=1))
    viewer.close()


if __name__ == "__main__":
    main()
