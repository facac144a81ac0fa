"""The napari plugin as a person uses it: paint planes in a real viewer, Densify, Cancel, Suggest, Densify again.

Needs the napari extra and a display: pytest-xvfb starts Xvfb where it is installed (napari's
OpenGL canvas does not draw on Qt's offscreen platform). Skipped without them.
Set SPARSESEG_SCREENSHOT=docs/napari_loop.png to write the screenshot of the loop there.
"""

import os
import shutil
from dataclasses import replace

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
from sparseseg.napari import files, layers  # noqa: E402
from sparseseg.napari.widget import DensifyWidget  # noqa: E402

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    # PyQt5 cannot tell the system's theme; napari says so once per viewer
    pytest.mark.filterwarnings("ignore:System theme detection requires a Qt6 backend:UserWarning"),
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
    """A viewer with an image, a Labels layer with two z planes and one y plane painted, and the docked widget."""
    image, truth = volume
    viewer = make_napari_viewer()
    viewer.add_image(image, name="volume", scale=SCALE)
    painted = viewer.add_labels(np.zeros(SHAPE, dtype=np.uint8), name="painted", scale=SCALE)
    widget = DensifyWidget(viewer, config=tiny_config(iterations=20, patch=(8, 16, 16)))
    viewer.window.add_dock_widget(widget, name="sparseseg")
    for z in Z_PLANES:
        _paint_plane(viewer, painted, truth, "z", z)
    _paint_plane(viewer, painted, truth, "y", Y_PLANE)
    return viewer, widget, painted, truth


def _densify(qtbot, widget, button):
    qtbot.mouseClick(button, Qt.LeftButton)
    assert widget.worker is not None, widget.status.text()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert widget.status.text().startswith("done:"), widget.status.text()
    return widget.result


def test_densify_suggest_densify_again(loop, qtbot, tmp_path):
    viewer, widget, painted, truth = loop
    assert widget.painted == {"z": set(Z_PLANES), "y": {Y_PLANE}, "x": set()}
    assert [layer.name for layer in widget.image_layers()] == ["volume"] and widget.labels_layer() is painted

    first = _densify(qtbot, widget, widget.densify_button)
    estimate = first.model.estimate  # two z planes painted: one is held out, and the quality is estimated
    assert estimate is not None and f"estimated IoU {estimate['iou']:.2f}" in widget.status.text()
    result = viewer.layers[layers.SEGMENTATION]
    assert result.metadata[layers.ESTIMATE] == estimate
    assert isinstance(result, napari.layers.Labels)
    assert result.data.shape == SHAPE and tuple(result.scale) == SCALE
    annotated = np.zeros(SHAPE, bool)
    annotated[list(Z_PLANES)] = True
    annotated[:, Y_PLANE] = True
    assert np.array_equal(first.annotation.mask, annotated)
    assert np.array_equal(result.data[annotated], truth[annotated])  # painted voxels keep their classes
    assert set(np.unique(result.data)) <= {0, 1, 2}
    uncertainty = viewer.layers[layers.UNCERTAINTY]
    assert uncertainty.data.shape == SHAPE and 0 <= uncertainty.data.min() <= uncertainty.data.max() <= 1

    qtbot.mouseClick(widget.suggest_button, Qt.LeftButton)
    suggestion = first.suggestion()
    dim = AXES.index(suggestion.axis)
    assert viewer.dims.not_displayed == (dim,)
    shown_index = int(round(viewer.dims.point[dim] / SCALE[dim]))
    assert shown_index == suggestion.index
    assert shown_index not in {"z": Z_PLANES, "y": (Y_PLANE,), "x": ()}[suggestion.axis]
    assert f"{layers.NEXT_PLANE} {suggestion.axis}={suggestion.index}" in viewer.layers
    assert widget.status.text().startswith(f"paint {suggestion.axis}={suggestion.index} next")

    shot = tmp_path / "napari_loop.png"
    viewer.layers[layers.UNCERTAINTY].visible = False
    viewer.screenshot(str(shot), canvas_only=False)
    assert shot.stat().st_size > 10_000
    if os.environ.get("SPARSESEG_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["SPARSESEG_SCREENSHOT"])

    _paint_plane(viewer, painted, truth, suggestion.axis, suggestion.index)
    again = _densify(qtbot, widget, widget.again_button)
    assert again.model is not first.model and np.array_equal(again.model.classes, first.model.classes)
    assert suggestion.index in again.annotation.planes[suggestion.axis]
    assert np.array_equal(viewer.layers[layers.SEGMENTATION].data[again.annotation.mask], truth[again.annotation.mask])
    assert [layer.name for layer in viewer.layers].count(layers.SEGMENTATION) == 1  # updated in place


def test_cancel_keeps_the_model_so_far(loop, qtbot, tiny_config):
    viewer, widget, painted, truth = loop
    widget.config = tiny_config(iterations=10**6)
    widget.budget.setValue(600)
    qtbot.mouseClick(widget.densify_button, Qt.LeftButton)
    assert widget.cancel_button.isEnabled() and not widget.densify_button.isEnabled()
    qtbot.waitUntil(lambda: widget.progress.iteration >= 2, timeout=WAIT_MS)
    qtbot.mouseClick(widget.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert widget.result.cancelled and widget.result.train_log.stopped_by == "stop"
    assert widget.result.train_log.seconds < 60
    assert "cancelled" in widget.status.text()
    assert viewer.layers[layers.SEGMENTATION].data.shape == SHAPE
    assert widget.again_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_save_and_load_the_model(loop, qtbot, tmp_path):
    viewer, widget, painted, truth = loop
    widget.config = replace(widget.config, iterations=2)
    first = _densify(qtbot, widget, widget.densify_button)
    assert widget.save_model(tmp_path / "model") == tmp_path / "model"
    widget.model = None
    widget.load_model(tmp_path / "model")
    assert np.array_equal(widget.model.classes, first.model.classes)
    assert widget.again_button.isEnabled()
    widget.load_model(tmp_path / "nothing")
    assert widget.status.text().startswith("error:") and "nothing" in widget.status.text()


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
    from sparseseg.napari.widget import PAINTED

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
    assert painted.metadata[PAINTED] == {"z": sorted(Z_PLANES), "y": [Y_PLANE]}


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
