"""Tests for sparseseg.large.slabs and sparseseg.large.bounded: densify and suggest in memory that does not grow with
the volume.

The slab path (forced here on small volumes by lowering `bounded.SLAB_THRESHOLD`) must give
what the whole-array path gives: the same labels, probabilities, weights and offsets.
"""

import numpy as np
import pytest
import tifffile

from sparseseg import io
from sparseseg.commands import synthetic, workflows
from sparseseg.errors import InputError
from sparseseg.large import bounded, slabs
from sparseseg.method import annotation as L
from sparseseg.method import core, streaming
from sparseseg.method.uncertainty import PlaneEntropy, plane_uncertainty, rank_planes


def _source(tmp_path, array, name="labels.tif"):
    tifffile.imwrite(tmp_path / name, array)
    return io.open_source(tmp_path / name)


@pytest.fixture
def few_planes(monkeypatch):
    """Scans read three z-planes at a time, so that a small volume is scanned in several pieces."""
    monkeypatch.setattr(slabs, "SCAN_VOXELS", 3 * 24 * 24)


def _painted(blobs_small):
    _, truth = blobs_small
    painted = np.zeros_like(truth)
    painted[[3, 8]] = truth[[3, 8]]
    return painted


@pytest.mark.parametrize("kind", ["unlabeled", "painted", "given", "given-unlabeled"])
def test_scan_finds_what_annotated_mask_finds(tmp_path, blobs_small, sparse_small, few_planes, kind):
    sparse = {
        "unlabeled": sparse_small[0],
        "painted": _painted(blobs_small),
        "given": blobs_small[1],
        "given-unlabeled": sparse_small[0],
    }[kind]
    planes = {"z": [2, 7], "y": [], "x": [5]} if kind.startswith("given") else None
    scan = slabs.scan_labels(_source(tmp_path, sparse), 255, planes)
    annotation, how = L.read_annotation(sparse, 255, planes)
    assert scan.planes == annotation.planes and scan.how == how
    np.testing.assert_array_equal(scan.classes, annotation.classes)
    np.testing.assert_array_equal(scan.counts, np.bincount(annotation.target[annotation.mask]))
    for zyx in slabs.z_blocks(sparse.shape):
        np.testing.assert_array_equal(scan.mask(sparse[zyx], zyx), annotation.mask[zyx])


@pytest.mark.parametrize(
    "make, unlabeled, message",
    [
        (lambda s: np.full_like(s, 255), 255, "no voxel is annotated"),
        (lambda s: np.zeros_like(s), 255, "no non-zero voxel"),
        (lambda s: s, 0, "255 fills"),
        (lambda s: s.astype(np.float32) + 0.5, 255, "whole numbers"),
        (lambda s: np.where(s == 255, 255, -1).astype(np.int16), 255, "found values from -1 to 255"),
    ],
)
def test_scan_refuses_what_annotated_mask_refuses(tmp_path, sparse_small, few_planes, make, unlabeled, message):
    sparse = make(sparse_small[0])
    with pytest.raises(InputError, match=message) as whole:
        L.read_annotation(sparse, unlabeled, None, name="labels.tif")
    with pytest.raises(InputError) as scanned:
        slabs.scan_labels(_source(tmp_path, sparse), unlabeled, None, name="labels.tif")
    assert str(scanned.value) == str(whole.value)


def test_slab_runs_hold_each_crop_and_merge_where_they_meet():
    assert slabs.slab_runs([10, 40], 8, 64) == [(3, 18), (33, 48)]
    assert slabs.slab_runs([10, 20], 8, 64) == [(3, 28)]
    assert slabs.slab_runs([1, 62], 8, 64) == [(0, 9), (55, 64)]  # clipped to the volume, so crops meet its padding


def test_a_stack_holds_each_crop_as_the_volume_does(tmp_path, blobs_small, sparse_small):
    image, _ = blobs_small
    sparse, planes = sparse_small
    scan = slabs.scan_labels(_source(tmp_path, sparse), 255)
    source = _source(tmp_path, image, "volume.tif")
    stack, annotation = slabs.read_stack(source, io.open_source(tmp_path / "labels.tif"), scan, "y", 6)
    whole, _ = L.read_annotation(sparse)
    for v, at in zip(planes["y"], annotation.planes["y"]):
        lo = max(0, v - 5)
        np.testing.assert_array_equal(stack[0, :, at - (v - lo) : at + 6], image[:, lo : v + 6].astype(np.float32))
        np.testing.assert_array_equal(annotation.mask[:, at], whole.mask[:, v])
        np.testing.assert_array_equal(annotation.target[:, at], whole.target[:, v])


def _densify(files, out, tiny_config, **overrides):
    config = tiny_config(iterations=6, batch_size=2, seed=3, **overrides)
    return workflows.densify(
        [files.volume],
        files.sparse,
        out,
        config,
        workflows.DensifyOptions(
            weights_out=out.with_name(out.stem + "_w.tif"),
            outputs=workflows.Outputs(probabilities=out.with_name(out.stem + "_p.tif")),
        ),
    )


#: Planes near the faces and far apart, with thin crops: slabs apart, clipped by the volume.
APART = {"z": [0, 19], "y": [3, 30], "x": [44]}


@pytest.mark.parametrize(
    "shape, planes, budget, overrides",
    [
        ((12, 24, 24), None, None, {}),
        ((20, 48, 48), None, 20 * 48 * 48 * 44 / 4, {"augment": True}),  # augmented crops: deeper slabs
        ((20, 48, 48), APART, None, {"thin": 4}),
    ],
    ids=["one-block", "eight-blocks", "slabs-apart"],
)
def test_the_slab_path_gives_the_whole_paths_results(
    files, tiny_config, monkeypatch, one_torch_thread, shape, planes, budget, overrides
):
    if shape != files.shape:
        image, truth = synthetic.blobs(shape, seed=1)
        sparse = (
            synthetic.sparsify(truth, 2)[0] if planes is None else np.where(L.planes_mask(planes, shape), truth, 255)
        )
        tifffile.imwrite(files.volume, image)
        tifffile.imwrite(files.sparse, sparse.astype(np.uint8))
    if budget is not None:  # blocks and their halos: calibration gathers the annotated voxels of each
        monkeypatch.setattr(streaming, "BLOCK_BUDGET", budget)
    overrides = {
        **overrides,
        "holdout": False,
        "forest": False,
        "filters": False,
    }  # the slab path has none of them yet: compare like with like
    whole = _densify(files, files.folder / "whole.tif", tiny_config, **overrides)
    monkeypatch.setattr(bounded, "SLAB_THRESHOLD", 0)
    monkeypatch.setattr(io, "read_image", lambda *a: pytest.fail("the slab path read the volume whole"))
    stacks = []
    monkeypatch.setattr(bounded, "read_stack", lambda *a: stacks.append(slabs.read_stack(*a)) or stacks[-1])
    sliced = _densify(files, files.folder / "slabs.tif", tiny_config, **overrides)
    assert sliced.segmentation.labels is None  # the slab path: written block by block, not held
    if planes is not None:  # the slabs hold less than the volume
        assert all(stack.size < np.prod(shape) for stack, _ in stacks), [stack.shape for stack, _ in stacks]
    np.testing.assert_array_equal(sliced.model.offsets, whole.model.offsets)
    np.testing.assert_array_equal(sliced.train_log.losses, whole.train_log.losses)
    for suffix in (".tif", "_w.tif", "_p.tif"):
        np.testing.assert_array_equal(
            io.read_volume(files.folder / f"slabs{suffix}").data, io.read_volume(files.folder / f"whole{suffix}").data
        )


def _write_case(files, shape, planes):
    image, truth = synthetic.blobs(shape, seed=1)
    sparse = synthetic.sparsify(truth, 2)[0] if planes is None else np.where(L.planes_mask(planes, shape), truth, 255)
    tifffile.imwrite(files.volume, image)
    tifffile.imwrite(files.sparse, sparse.astype(np.uint8))


@pytest.mark.parametrize(
    "shape, planes, budget",
    [((12, 24, 24), None, None), ((20, 48, 48), APART, 20 * 48 * 48 * 44 / 4)],
    ids=["one-block", "slabs-apart-in-blocks"],
)
def test_with_holdout_and_forest_the_slab_path_gives_the_whole_paths_labels_and_estimate(
    files, tiny_config, monkeypatch, one_torch_thread, shape, planes, budget
):
    _write_case(files, shape, planes)
    if budget is not None:
        monkeypatch.setattr(streaming, "BLOCK_BUDGET", budget)
    overrides = {"holdout": True, "forest": True, "filters": False, "thin": 4}  # on slabs the network reads no filters
    whole = _densify(files, files.folder / "whole.tif", tiny_config, **overrides)
    monkeypatch.setattr(bounded, "SLAB_THRESHOLD", 0)
    monkeypatch.setattr(io, "read_image", lambda *a: pytest.fail("the slab path read the volume whole"))
    sliced = _densify(files, files.folder / "slabs.tif", tiny_config, **overrides)
    assert sliced.segmentation.labels is None  # written block by block
    assert whole.model.estimate is not None and whole.model.forest is not None and 0 <= whole.model.blend < 1
    assert sliced.model.estimate == whole.model.estimate
    assert sliced.model.blend == whole.model.blend and sliced.model.forest is not None
    np.testing.assert_array_equal(sliced.model.offsets, whole.model.offsets)
    np.testing.assert_array_equal(sliced.train_log.losses, whole.train_log.losses)
    for suffix in (".tif", "_w.tif", "_p.tif"):
        np.testing.assert_array_equal(
            io.read_volume(files.folder / f"slabs{suffix}").data, io.read_volume(files.folder / f"whole{suffix}").data
        )


def test_on_the_slab_path_the_network_reads_the_raw_channels_alone(files, tiny_config, monkeypatch, caplog):
    monkeypatch.setattr(bounded, "SLAB_THRESHOLD", 0)
    caplog.set_level("INFO", "sparseseg")
    sliced = _densify(files, files.folder / "slabs.tif", tiny_config)  # the default: the network reads filters
    assert sliced.segmentation.labels is None and "training on the slabs" in caplog.text
    assert not sliced.model.network_inputs.filters and not sliced.model.config.filters
    assert "without filter features" in caplog.text
    assert sliced.model.network.encoders[0].block[0].in_channels == 1


def test_an_annotation_without_whole_planes_is_read_whole(files, tiny_config, monkeypatch, caplog):
    sparse = tifffile.imread(files.sparse)
    holes = np.random.default_rng(0).random(sparse.shape) < 0.1
    sparse[holes] = 255  # no annotated plane is whole any more: training crops are cubes around annotated voxels
    tifffile.imwrite(files.sparse, sparse)
    assert not any(L.annotation_planes(sparse != 255).values())
    monkeypatch.setattr(bounded, "SLAB_THRESHOLD", 0)
    report = _densify(files, files.folder / "seg.tif", tiny_config)
    assert report.segmentation.labels is not None and "read whole" in caplog.text


def test_plane_entropy_adds_up_to_plane_uncertainty():
    probabilities = np.random.default_rng(0).dirichlet(np.ones(3), size=(6, 10, 14)).astype(np.float32)
    probabilities = np.moveaxis(probabilities, -1, 0)
    planes = PlaneEntropy((6, 10, 14))
    for zyx in streaming.plan_blocks((6, 10, 14), (4, 3, 14)):
        planes.add(zyx, probabilities[(slice(None),) + zyx])
    for axis, values in plane_uncertainty(probabilities).items():
        np.testing.assert_allclose(planes.result()[axis], values, rtol=1e-5)


def test_blockwise_suggest_ranks_as_the_whole_volume_does(trained, monkeypatch):
    from sparseseg.method.modelfolder import load_model

    model = load_model(trained.model)
    whole = plane_uncertainty(core.segment(model, trained.image[None].astype(np.float32)).probabilities)
    monkeypatch.setattr(streaming, "BLOCK_BUDGET", 24 * 24 * 4 * 4 * 16)  # several blocks
    blockwise = bounded.model_uncertainty(model, io.open_source(trained.volume))
    from_file = bounded.file_uncertainty(io.open_source(trained.prob), trained.shape)
    whole_file = plane_uncertainty(io.read_volume(trained.prob).data.astype(np.float32) / 255)
    for axis in "zyx":
        np.testing.assert_allclose(from_file[axis], whole_file[axis], rtol=1e-5)
    assert rank_planes(from_file, trained.planes, 5) == rank_planes(whole_file, trained.planes, 5)
    suggested = workflows.suggest([trained.volume], model=trained.model, slices=trained.sparse, top=5)
    assert [(s.axis, s.index) for s in suggested] == [(s.axis, s.index) for s in rank_planes(whole, trained.planes, 5)]
    for axis in "zyx":  # blocks of other shapes shift the windows, so the probabilities are close, not equal
        assert np.abs(blockwise[axis] - whole[axis]).max() < 0.05


def test_only_the_windows_over_needed_voxels_run_and_they_give_what_a_full_run_gives():
    import torch

    from sparseseg.method.sliding_window import sliding_window

    image = torch.from_numpy(np.random.default_rng(0).random((1, 12, 40, 40), dtype=np.float32))
    calls = []

    def fn(batch):
        calls.append(len(batch))
        return torch.cat([batch, 2 * batch], dim=1).sin()

    full = sliding_window(image, fn, 2, (8, 16, 16))
    every = len(calls)
    needed = np.zeros((12, 40, 40), dtype=bool)
    needed[3, 5:9, 30] = True
    calls.clear()
    part = sliding_window(image, fn, 2, (8, 16, 16), needed=needed)
    assert 0 < len(calls) < every / 3
    where = torch.from_numpy(needed)
    assert torch.equal(part[:, where], full[:, where]) and torch.isfinite(part).all()
