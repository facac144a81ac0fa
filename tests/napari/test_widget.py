"""The napari plugin as a person uses it: paint planes in a real viewer, Densify, Cancel, Suggest, Densify again.

Needs the napari extra and a display: pytest-xvfb starts Xvfb where it is installed (napari's
OpenGL canvas does not draw on Qt's offscreen platform). Skipped without them.
"""

import os
import shutil
import time

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")
if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    pytest.skip(
        "no display for napari's OpenGL canvas: install Xvfb (pytest-xvfb then starts it)", allow_module_level=True
    )

from qtpy.QtCore import Qt  # noqa: E402

from sparseseg.commands import synthetic  # noqa: E402
from sparseseg.method.planning import AXES  # noqa: E402
from sparseseg.napari import files, layers, planes  # noqa: E402
from sparseseg.napari import loop as library_calls  # noqa: E402
from sparseseg.napari.widget import DensifyWidget  # noqa: E402

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
]

SHAPE = (16, 32, 32)
SCALE = (2.0, 1.0, 1.0)
Z_PLANES = (4, 11)
Y_PLANE = 16
#: Seconds a densify may take here before a test fails (a busy 2-core machine).
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def volume():
    return synthetic.blobs(SHAPE, seed=1)


def _paint_plane(viewer, layer, truth, axis, index):
    """Paint one plane of ``truth`` the way the brush does: the viewer sliced there, one paint event per class."""
    dim = AXES.index(axis)
    viewer.dims.order = tuple([dim] + [d for d in range(3) if d != dim])
    viewer.dims.set_point(dim, index * SCALE[dim])
    plane = np.take(truth, index, axis=dim)
    for value in np.unique(plane[plane > 0]):
        where = list(np.nonzero(plane == value))
        where.insert(dim, np.full(where[0].shape, index))
        layer.data_setitem(tuple(where), int(value))


@pytest.fixture
def loop(make_napari_viewer, qtbot, volume, tiny_config):
    """A viewer with an image and a Labels layer with two z planes and one y plane painted, and the widget docked
    through napari's plugin menu (so that it sees its viewer behind napari's proxy, as a user's does)."""
    image, truth = volume
    viewer = make_napari_viewer()
    viewer.add_image(image, name="volume", scale=SCALE)
    painted = viewer.add_labels(np.zeros(SHAPE, dtype=np.uint8), name="painted", scale=SCALE)
    _, widget = viewer.window.add_plugin_dock_widget("sparseseg", "Densify")
    assert isinstance(widget, DensifyWidget)
    widget.config = tiny_config(iterations=20, patch=(8, 16, 16))
    for z in Z_PLANES:
        _paint_plane(viewer, painted, truth, "z", z)
    _paint_plane(viewer, painted, truth, "y", Y_PLANE)
    return viewer, widget, viewer.layers["painted"], truth


def _densify(qtbot, widget, button):
    qtbot.mouseClick(button, Qt.LeftButton)
    assert widget.worker is not None, widget.status.text()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert widget.status.text().startswith("done in"), widget.status.text()
    return widget.result


def test_the_whole_loop_through_the_plugin_menu(loop, qtbot, tmp_path):
    """Paint, Densify, Suggest, paint the suggested plane, Densify again, Save, Load: the planes each run trained on,
    the result's IoU, the estimate shown, the painted layer kept active, the outline gone once its plane is painted."""
    viewer, widget, painted, truth = loop
    assert [item.text() for item in _items(widget.planes.listed)] == [
        f"z={Z_PLANES[0]}",
        f"z={Z_PLANES[1]}",
        f"y={Y_PLANE}",
    ]

    first = _densify(qtbot, widget, widget.densify_button)
    assert first.annotation.planes == {"z": list(Z_PLANES), "y": [Y_PLANE], "x": []}
    result = viewer.layers[layers.SEGMENTATION]
    assert result.metadata[layers.ESTIMATE] == first.model.estimate and result.metadata[layers.SOURCE] == "densify"
    assert f"estimated IoU {first.model.estimate['iou']:.2f}" in widget.estimate.text()
    assert viewer.layers.selection.active.name == "painted"  # the next stroke goes to the painted layer
    assert np.array_equal(result.data[first.annotation.mask], truth[first.annotation.mask])
    first_iou = _mean_iou(result.data, truth, first.annotation)
    assert first_iou > 0.5, first_iou

    qtbot.mouseClick(widget.suggest_button, Qt.LeftButton)
    suggestion = first.suggestion()
    outline = f"{layers.NEXT_PLANE} {suggestion.axis}={suggestion.index}"
    assert outline in viewer.layers and viewer.layers.selection.active.name == "painted"
    assert viewer.dims.not_displayed == (AXES.index(suggestion.axis),)
    _paint_plane(viewer, painted, truth, suggestion.axis, suggestion.index)
    assert outline not in viewer.layers
    assert suggestion.index in widget.painted[suggestion.axis]

    shot = tmp_path / "napari_loop.png"
    viewer.layers[layers.UNCERTAINTY].visible = False
    viewer.screenshot(str(shot), canvas_only=False)
    assert shot.stat().st_size > 10_000

    again = _densify(qtbot, widget, widget.again_button)
    planes = {"z": list(Z_PLANES), "y": [Y_PLANE], "x": []}
    planes[suggestion.axis] = sorted(planes[suggestion.axis] + [suggestion.index])
    assert again.annotation.planes == planes
    assert again.model is not first.model and np.array_equal(again.model.classes, first.model.classes)
    assert [layer.name for layer in viewer.layers].count(layers.SEGMENTATION) == 1  # updated in place
    assert _mean_iou(viewer.layers[layers.SEGMENTATION].data, truth, again.annotation) > 0.5

    assert widget.save_model(tmp_path / "model") == tmp_path / "model"
    widget.model = None
    widget.load_model(tmp_path / "model")
    assert np.array_equal(widget.model.classes, again.model.classes) and widget.again_button.isEnabled()
    widget.load_model(tmp_path / "nothing")
    assert widget.status.text().startswith("error:") and "nothing" in widget.status.text()


def _items(listed):
    return [listed.item(i) for i in range(listed.count())]


def _mean_iou(labels, truth, annotation) -> float:
    """Mean foreground IoU on the voxels nobody annotated."""
    free = ~annotation.mask
    ious = [
        np.sum((labels[free] == c) & (truth[free] == c)) / np.sum((labels[free] == c) | (truth[free] == c))
        for c in (1, 2)
    ]
    return float(np.mean(ious))


def test_cancel_gives_the_run_up_within_seconds(loop, qtbot, tiny_config):
    viewer, widget, painted, truth = loop
    widget.config = tiny_config(iterations=10**6)
    widget.budget.setValue(600)
    qtbot.mouseClick(widget.densify_button, Qt.LeftButton)
    assert widget.cancel_button.isEnabled() and not widget.densify_button.isEnabled()
    qtbot.waitUntil(lambda: widget.progress.iteration >= 2, timeout=WAIT_MS)
    clicked = time.perf_counter()
    qtbot.mouseClick(widget.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert time.perf_counter() - clicked < 5
    assert widget.status.text().startswith("cancelled after") and widget.result is None
    assert viewer.layers[layers.SEGMENTATION].metadata[layers.SOURCE] == "forest, first result"  # what was shown stays
    assert widget.densify_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_the_time_limit_is_the_whole_run(loop, qtbot, tiny_config):
    """A 10 s limit with steps to spare: the run, features, forest, estimate and segmentation included, ends in
    about 10 s, and the forest's first segmentation was shown on the way."""
    viewer, widget, painted, truth = loop
    widget.config = tiny_config(iterations=10**6)
    widget.budget.setValue(10)
    result = _densify(qtbot, widget, widget.densify_button)
    assert widget.progress.elapsed < 20 and result.train_log.stopped_by == "time"
    assert result.train_log.iterations > 0


def test_closing_the_viewer_cancels_the_run(loop, qtbot, tiny_config):
    from qtpy.QtCore import QThreadPool

    viewer, widget, painted, truth = loop
    widget.config = tiny_config(iterations=10**6)
    widget.budget.setValue(600)
    qtbot.mouseClick(widget.densify_button, Qt.LeftButton)
    progress = widget.progress
    qtbot.waitUntil(lambda: progress.iteration >= 2, timeout=WAIT_MS)
    viewer.close()
    qtbot.waitUntil(lambda: progress.cancelled, timeout=5_000)
    assert QThreadPool.globalInstance().waitForDone(10_000)  # the worker has ended


def test_planes_can_be_marked_typed_and_forgotten(loop, qtbot):
    """A plane marked with nothing painted is a background plane; typed planes add to the painted ones; Forget takes
    planes out."""
    viewer, widget, painted, truth = loop
    viewer.dims.order = (2, 0, 1)
    viewer.dims.set_point(2, 3.0)  # x = 3, nothing painted there
    widget.planes.mark()
    widget.planes.typed.setText("x=20")
    qtbot.keyClick(widget.planes.typed, Qt.Key_Return)
    record = widget.planes.record
    assert record.marked == {"z": set(), "y": set(), "x": {3, 20}}
    assert record.painted == {"z": set(Z_PLANES), "y": {Y_PLANE}, "x": set()}
    assert "x=3 (marked)" in [item.text() for item in _items(widget.planes.listed)]
    annotation, _ = library_calls.annotation_of(painted.data, record)
    assert annotation.planes["x"] == [3, 20]
    unpainted = painted.data[:, :, 3] == 0  # all but where the painted z and y planes cross it
    assert annotation.mask[:, :, 3].all() and np.all(annotation.classes[annotation.target[:, :, 3][unpainted]] == 0)
    for item in _items(widget.planes.listed):
        item.setSelected(item.text().startswith("x=20"))
    qtbot.mouseClick(widget.planes.forget_button, Qt.LeftButton)
    assert widget.planes.record.marked["x"] == {3}
    assert painted.metadata[planes.MARKED] == {"x": [3]}
    widget.planes.typed.setText("x=999")  # outside the volume: Densify refuses it on the click
    qtbot.mouseClick(widget.densify_button, Qt.LeftButton)
    assert widget.worker is None and widget.status.text().startswith("error:") and "999" in widget.status.text()


def test_bad_input_is_said_not_raised(make_napari_viewer, volume):
    viewer = make_napari_viewer()
    viewer.add_image(volume[0], name="volume")
    widget = DensifyWidget(viewer)
    widget.densify()
    assert widget.worker is None and "Labels layer" in widget.status.text()
    viewer.add_labels(np.zeros(SHAPE, dtype=np.uint8), name="empty")
    widget.densify()
    assert widget.worker is None and "no non-zero voxel" in widget.status.text()
    widget.suggest()
    assert "Densify first" in widget.status.text()


def test_reader_and_writer(tmp_path, volume):
    image, truth = volume
    path = tmp_path / "labels.tif"
    assert files.write_labels(str(path), truth.astype(np.int32), {"scale": SCALE}) == [str(path)]
    reader = files.get_reader(str(path))
    [(data, meta, kind)] = reader(str(path))
    assert kind == "labels" and np.array_equal(data, truth) and tuple(meta["scale"]) == SCALE
    np.save(tmp_path / "image.npy", image)
    assert files.get_reader(str(tmp_path / "image.npy")) is None
    import tifffile

    tifffile.imwrite(tmp_path / "image.tif", image)
    [(data, meta, kind)] = files.get_reader(str(tmp_path / "image.tif"))(str(tmp_path / "image.tif"))
    assert kind == "image" and data.shape == SHAPE


def test_manifest_names_what_exists():
    npe2 = pytest.importorskip("npe2")
    from pathlib import Path

    import sparseseg

    manifest = npe2.PluginManifest.from_file(Path(sparseseg.__file__).parent / "napari.yaml")
    assert manifest.name == "sparseseg"
    for command in manifest.contributions.commands:
        module, _, attribute = command.python_name.partition(":")
        assert callable(getattr(__import__(module, fromlist=[attribute]), attribute)), command.python_name
    assert [w.display_name for w in manifest.contributions.widgets] == ["Densify"]


def test_a_failure_in_the_worker_is_said(loop, qtbot, monkeypatch):
    viewer, widget, painted, truth = loop
    from sparseseg.errors import InputError
    from sparseseg.napari import loop as library_calls

    def fail(*args, **kwargs):
        raise InputError("out of GPU memory: lower patch or batch_size (or use the CPU)")

    monkeypatch.setattr(library_calls, "densify", fail)
    qtbot.mouseClick(widget.densify_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert widget.status.text() == "error: out of GPU memory: lower patch or batch_size (or use the CPU)"
    assert layers.SEGMENTATION not in viewer.layers and widget.densify_button.isEnabled()


def test_load_model_refuses_a_pickled_forest(make_napari_viewer, trained, tmp_path):
    """A model folder whose forest is a pickle is refused on Load model, and the pickle's code never runs."""
    import json
    import pickle

    from sparseseg.method import modelfolder

    marker = tmp_path / "code-ran"
    folder = tmp_path / "shared_model"
    shutil.copytree(trained.model, folder)
    (folder / modelfolder.FOREST).unlink(missing_ok=True)
    with open(folder / modelfolder.PICKLED_FOREST, "wb") as f:
        pickle.dump(_Payload(marker), f)
    meta = json.loads((folder / modelfolder.CONFIG).read_text())
    meta.update(format_version=2, forest=modelfolder.PICKLED_FOREST, blend=0.5)
    (folder / modelfolder.CONFIG).write_text(json.dumps(meta))
    widget = DensifyWidget(make_napari_viewer())
    widget.load_model(folder)
    assert widget.model is None
    assert widget.status.text().startswith("error:") and "pickle" in widget.status.text()
    assert not marker.exists()


class _Payload:
    """Unpickled, it writes the file ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_the_painted_record_survives_the_plugin_menu_and_layer_changes(make_napari_viewer, volume):
    """Docked through napari's plugin menu, the widget sees its viewer behind napari's proxy, where each
    ``viewer.layers[name]`` is a new object: the planes painted must survive any layer added, renamed or removed, and
    travel in the Labels layer's metadata."""
    image, truth = volume
    viewer = make_napari_viewer()
    viewer.add_image(image, name="volume", scale=SCALE)
    painted = viewer.add_labels(np.zeros(SHAPE, dtype=np.uint8), name="painted", scale=SCALE)
    _, widget = viewer.window.add_plugin_dock_widget("sparseseg", "Densify")
    assert type(widget).__name__ == "DensifyWidget"
    for z in Z_PLANES:
        _paint_plane(viewer, painted, truth, "z", z)
    viewer.add_image(image, name="another", scale=SCALE)  # each change of the layer list refreshes the widget
    viewer.layers["another"].name = "renamed"
    viewer.add_labels(np.zeros(SHAPE, dtype=np.uint8), name="sparseseg segmentation", scale=SCALE)
    viewer.layers.remove("renamed")
    _paint_plane(viewer, painted, truth, "y", Y_PLANE)
    assert widget.painted == {"z": set(Z_PLANES), "y": {Y_PLANE}, "x": set()}
    assert painted.metadata[planes.PAINTED] == {"z": sorted(Z_PLANES), "y": [Y_PLANE]}


def test_a_model_of_other_channels_is_refused_on_the_click(loop, qtbot, trained):
    """Densify again with a loaded 1-channel model and two image layers picked: refused at once, no run started."""
    viewer, widget, painted, truth = loop
    viewer.add_image(viewer.layers["volume"].data.copy(), name="second channel", scale=SCALE)
    for index in range(widget.images.count()):
        widget.images.item(index).setSelected(True)
    assert len(widget.image_layers()) == 2
    widget.load_model(trained.model)
    assert widget.model is not None and widget.model.in_channels == 1
    qtbot.mouseClick(widget.again_button, Qt.LeftButton)
    assert widget.worker is None
    assert widget.status.text().startswith("error:") and "1 channel(s)" in widget.status.text()


def test_a_model_without_a_painted_class_is_refused_on_the_click(loop, qtbot, trained):
    """Densify again from a loaded model that does not know a painted class: refused at once, no run started."""
    viewer, widget, painted, truth = loop
    widget.load_model(trained.model)  # classes 0, 10, 200; the painting holds 1 and 2
    qtbot.mouseClick(widget.again_button, Qt.LeftButton)
    assert widget.worker is None
    assert widget.status.text().startswith("error:") and "classes [0, 10, 200]" in widget.status.text()
