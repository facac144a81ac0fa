"""Make docs/napari_loop.png, the README's picture of the napari loop: paint, Densify, Suggest.

Run from the repository root with a display (Xvfb will do) and the napari extra installed::

    xvfb-run -a -s "-screen 0 1400x900x24" python docs/napari_loop.py [OUT.png]

A synthetic volume gets two painted z planes; the widget densifies them for a minute and
suggests the next plane; the picture shows the segmentation on an unpainted z plane between
them, with the suggestion in the layer list and the widget.
"""

import sys
from pathlib import Path

import napari
import numpy as np
from napari._qt.dialogs.qt_notification import NapariQtNotification
from qtpy.QtWidgets import QApplication

from sparseseg.commands import synthetic
from sparseseg.config import Config
from sparseseg.napari import layers
from sparseseg.napari.widget import DensifyWidget

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("napari_loop.png")
SHAPE, SCALE, PLANES = (32, 96, 96), (2.0, 1.0, 1.0), (9, 22)

image, truth = synthetic.blobs(SHAPE, noise=0.2, seed=3)
viewer = napari.Viewer()
viewer.window.resize(1400, 860)
viewer.add_image(image, name="volume", scale=SCALE)
painted = viewer.add_labels(np.zeros(SHAPE, dtype=np.uint8), name="painted", scale=SCALE)
widget = DensifyWidget(viewer, config=Config(device="cpu", seed=0))
viewer.window.add_dock_widget(widget, name="sparseseg")
for z in PLANES:  # as the brush paints: on the plane the viewer shows
    viewer.dims.set_point(0, z * SCALE[0])
    _, y, x = np.indices((1,) + SHAPE[1:]).reshape(3, -1)
    painted.data_setitem((y * 0 + z, y, x), truth[z].ravel())
widget.budget.setValue(60)
widget.densify()
while widget.worker is not None:
    QApplication.processEvents()
widget.suggest()
viewer.dims.order = (0, 1, 2)
viewer.dims.set_point(0, sum(PLANES) // 2 * SCALE[0])
viewer.layers[layers.SEGMENTATION].opacity = 0.5
viewer.layers.selection.active = viewer.layers[layers.SEGMENTATION]
for toast in viewer.window._qt_window.findChildren(NapariQtNotification):  # napari's PyQt5 deprecation note
    toast.close()
for _ in range(5):
    QApplication.processEvents()
viewer.screenshot(str(OUT), canvas_only=False)
print(f"{OUT}: {widget.status.text()}")
viewer.close()
