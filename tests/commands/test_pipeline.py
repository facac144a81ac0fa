"""Tests for sparseseg.pipeline: densify from arrays and files, models, evaluation; end-to-end quality."""

import dataclasses

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from sparseseg import io
from sparseseg.commands import sweep, synthetic, workflows
from sparseseg.config import Config
from sparseseg.errors import InputError
from sparseseg.method import annotation as L
from sparseseg.method import core, ensemble, modelfolder
from sparseseg.method import decision as C
from sparseseg.method.metrics import score


def test_resolve_device():
    assert core.resolve_device("cpu") == torch.device("cpu")
    assert core.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_resolve_device_passes_a_torch_device_through_and_refuses_others():
    decided = torch.device("cpu")
    assert core.resolve_device(decided) is decided
    for bad in (torch.device("meta"), "gpu", 0):
        with pytest.raises(InputError, match="device="):
            core.resolve_device(bad)


def test_densify_decides_the_device_once_and_hands_the_torch_device_down(files, tiny_config, monkeypatch):
    from sparseseg.commands import densify

    decided, given = [], []
    real_resolve, real_segment = densify.resolve_device, densify.segment_estimated
    monkeypatch.setattr(densify, "resolve_device", lambda d: decided.append(d) or real_resolve(d))
    monkeypatch.setattr(densify, "segment_estimated", lambda e, d: given.append(d) or real_segment(e, d))
    report = workflows.densify([files.volume], files.sparse, files.folder / "seg.tif", tiny_config(device="auto"))
    here = "cuda" if torch.cuda.is_available() else "cpu"
    assert decided == ["auto"] and given == [torch.device(here)] and isinstance(given[0], torch.device)
    assert report.model.config.device == here  # the model records where it trained


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is available here")
def test_cuda_without_gpu_is_bad_input():
    with pytest.raises(InputError, match="device=cuda"):
        core.resolve_device("cuda")


def test_labels_dtype():
    assert core.labels_dtype([0, 1, 255]) == np.uint8
    assert core.labels_dtype([0, 256]) == np.uint16
    assert core.labels_dtype([0, 65535]) == np.uint16


@pytest.fixture(scope="module")
def small_annotation(sparse_small):
    return L.read_annotation(sparse_small[0])[0]


def test_decide_takes_the_most_probable_class_a_slab_at_a_time(monkeypatch):
    rng = np.random.default_rng(0)
    probabilities = rng.random((3, 7, 5, 4)).astype(np.float32)
    model = core.Model(network=None, classes=np.array([0, 2, 300]), config=Config(), in_channels=1)
    expected = model.classes[probabilities.argmax(0)]
    monkeypatch.setattr(core, "DECIDE_VOXELS", 2 * 5 * 4)  # two planes per slab, the last slab one plane
    labels = core.decide(model, probabilities.copy())
    assert labels.dtype == np.uint16 and labels.shape == (7, 5, 4)
    np.testing.assert_array_equal(labels, expected)


def test_with_overlap_replaces_the_overlap_across_the_planes_only():
    model = core.Model(
        network=None, classes=np.array([0, 1]), config=Config(overlap=0.75, wide_overlap=0.25), in_channels=1
    )
    assert core.with_overlap(model, None) is model
    assert (core.with_overlap(model, 0.5).config.overlap, core.with_overlap(model, 0.5).config.wide_overlap) == (
        0.5,
        0.25,
    )
    with pytest.raises(InputError, match="^overlap=1"):
        core.with_overlap(model, 1.0)


def test_densify_arrays_tiny(blobs_small, small_annotation, tiny_config):
    image = blobs_small[0][None]
    model, log, segmentation = ensemble.densify_arrays(image, small_annotation, tiny_config())
    assert log.iterations == 3 and log.stopped_by == "iterations"
    assert segmentation.labels.shape == image.shape[1:] and segmentation.labels.dtype == np.uint8
    assert set(np.unique(segmentation.labels)) <= {0, 1, 2}
    assert segmentation.probabilities.shape == (3,) + image.shape[1:]
    np.testing.assert_allclose(segmentation.probabilities.sum(0), 1, atol=1e-5)
    np.testing.assert_array_equal(segmentation.labels, np.argmax(segmentation.probabilities, 0))
    np.testing.assert_array_equal(model.classes, [0, 1, 2])
    assert model.config.seed == 0 and model.config.patch == (8, 16, 16) and model.config.base == 4
    assert model.parameters == sum(p.numel() for p in model.network.parameters())


def test_class_values_come_back(blobs_small, tiny_config):
    """Class ids 0, 10, 200 are trained as 0, 1, 2 and written back as 0, 10, 200; above 255, as uint16."""
    image, truth = blobs_small
    for values, dtype in [((0, 10, 200), np.uint8), ((0, 10, 1000), np.uint16)]:
        relabelled = np.array(values, dtype=np.uint16)[truth]
        sparse, _ = synthetic.sparsify(relabelled, 2, unlabeled=255)
        annotation, _ = L.read_annotation(sparse)
        _, _, segmentation = ensemble.densify_arrays(image[None], annotation, tiny_config(iterations=1))
        assert segmentation.labels.dtype == dtype
        assert set(np.unique(segmentation.labels)) <= set(values)


def test_densify_arrays_refuses_shape_mismatch(blobs_small, small_annotation, tiny_config):
    with pytest.raises(InputError, match="shape"):
        ensemble.densify_arrays(blobs_small[0][None, :, :, :-1], small_annotation, tiny_config())


def test_densify_arrays_refuses_patch_not_multiple(blobs_small, small_annotation, tiny_config):
    with pytest.raises(InputError, match="multiple"):
        ensemble.densify_arrays(blobs_small[0][None], small_annotation, tiny_config(patch=(6, 16, 16)))


def test_zero_time_budget_still_segments(blobs_small, small_annotation, tiny_config):
    _, log, segmentation = ensemble.densify_arrays(blobs_small[0][None], small_annotation, tiny_config(time_budget=0.0))
    assert log.iterations == 0 and log.stopped_by == "time"
    assert segmentation.labels.shape == blobs_small[0].shape


def test_same_seed_same_segmentation(blobs_small, small_annotation, tiny_config):
    runs = [ensemble.densify_arrays(blobs_small[0][None], small_annotation, tiny_config())[2] for _ in range(2)]
    np.testing.assert_array_equal(runs[0].labels, runs[1].labels)
    # the CPU kernels' sums may round differently from one run to the next (seen once in a whole suite on a fresh
    # clone: up to 2e-5 on every voxel); another seed or a seed not applied moves them by far more
    np.testing.assert_allclose(runs[0].probabilities, runs[1].probabilities, rtol=0, atol=1e-4)


def test_prior_correction_takes_back_the_class_weights(blobs_small, small_annotation, tiny_config):
    image = blobs_small[0][None]
    # without held-out planes: the network alone, its offsets fitted (or not) on all the annotated voxels
    model, _, corrected = ensemble.densify_arrays(image, small_annotation, tiny_config(calibrate=False, holdout=False))
    assert model.config.prior_correction == 0.5 and model.class_weights.shape == model.classes.shape
    assert model.offsets is None
    raw = core.segment(
        dataclasses.replace(model, config=dataclasses.replace(model.config, prior_correction=0.0)), image
    )
    expected = raw.probabilities / np.sqrt(model.class_weights).reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(corrected.probabilities, expected / expected.sum(axis=0), atol=1e-6)


def test_calibration_fits_the_annotated_voxels_on_top_of_the_prior_correction(
    blobs_small, small_annotation, tiny_config
):
    image, mask = blobs_small[0][None], small_annotation.mask
    uncalibrated, _, before = ensemble.densify_arrays(
        image, small_annotation, tiny_config(calibrate=False, holdout=False)
    )
    model, _, after = ensemble.densify_arrays(image, small_annotation, tiny_config(holdout=False))
    target = small_annotation.classes[small_annotation.target]
    fit = [score(s.labels, target, mask).mean("iou") for s in (before, after)]
    assert fit[1] >= fit[0]
    fitted = model.offsets - uncalibrated.decision_offsets
    expected = C.apply_offsets(before.probabilities.copy(), fitted)
    np.testing.assert_allclose(after.probabilities, expected, atol=1e-6)
    np.testing.assert_array_equal(after.labels, model.classes[after.probabilities.argmax(0)])
    again = core.segment(model, image)  # the offsets are part of the model
    np.testing.assert_allclose(again.probabilities, after.probabilities, atol=1e-6)


def test_saved_model_predicts_the_same(tmp_path, blobs_small, small_annotation, tiny_config, listing):
    image = blobs_small[0][None]
    model, _, segmentation = ensemble.densify_arrays(image, small_annotation, tiny_config())
    folder = modelfolder.save_model(tmp_path / "model", model)
    loaded = modelfolder.load_model(folder)
    np.testing.assert_array_equal(loaded.classes, model.classes)
    assert loaded.config == model.config and loaded.in_channels == 1
    assert loaded.shapes == model.shapes and model.shapes  # the training patch shapes, matched at inference
    np.testing.assert_allclose(loaded.class_weights, model.class_weights)  # for the prior correction
    np.testing.assert_allclose(loaded.offsets, model.offsets)  # fitted on the annotated voxels
    again = core.segment(loaded, image)
    np.testing.assert_allclose(again.probabilities, segmentation.probabilities, atol=1e-6)
    with pytest.raises(InputError, match="--overwrite"):
        modelfolder.save_model(tmp_path / "model", model)
    before = listing(tmp_path)
    with pytest.raises(InputError, match="channel"):
        core.segment(loaded, np.concatenate([image, image]))
    assert listing(tmp_path) == before


def test_load_model_refuses_a_folder_without_model(tmp_path):
    with pytest.raises(InputError):
        modelfolder.load_model(tmp_path)
    with pytest.raises(InputError, match="no such model folder"):
        modelfolder.load_model(tmp_path / "missing")


def test_densify_files(files, tiny_config, listing):
    out = files.folder / "seg.tif"
    weights = files.folder / "weights.tif"
    probabilities = files.folder / "prob.tif"
    report = workflows.densify(
        [files.volume],
        files.sparse,
        out,
        tiny_config(),
        workflows.DensifyOptions(weights_out=weights, outputs=workflows.Outputs(probabilities=probabilities)),
    )
    assert report.written == [out, weights, probabilities]
    written = io.read_labels(out).data
    np.testing.assert_array_equal(written, report.segmentation.labels)
    assert written.dtype == np.uint8
    annotation, _ = L.read_annotation(tifffile.imread(files.sparse))
    np.testing.assert_allclose(io.read_volume(weights).data, L.weight_map(annotation), rtol=1e-6)
    prob = io.read_volume(probabilities).data
    assert prob.shape == (3,) + files.shape and prob.dtype == np.uint8
    assert np.abs(prob.astype(int).sum(0) - 255).max() <= 2
    assert "255" in report.how
    assert set(listing(files.folder)) == {"volume.tif", "sparse.tif", "truth.tif", "seg.tif", "weights.tif", "prob.tif"}


def test_densify_outputs_carry_the_voxel_size_trained_with(files, tiny_config):
    out, picture = files.folder / "seg.tif", files.folder / "seg.png"
    assert io.read_volume(files.volume).spacing is None  # the input says nothing
    workflows.densify(
        [files.volume],
        files.sparse,
        out,
        tiny_config(spacing=(2.0, 1.0, 1.0)),
        workflows.DensifyOptions(outputs=workflows.Outputs(preview=picture)),
    )
    assert io.read_volume(out).spacing == (2.0, 1.0, 1.0)
    planes = [f"{a}={','.join(map(str, v))}" for a, v in files.planes.items() if v]
    flat = workflows.preview([files.volume], out, files.folder / "flat.png", planes=planes)
    to_scale = workflows.preview(
        [files.volume], out, files.folder / "scaled.png", planes=planes, spacing=(2.0, 1.0, 1.0)
    )
    size = {}
    for path in (picture, flat, to_scale):
        with Image.open(path) as image:
            size[path.name] = image.size
    assert size["seg.png"] == size["scaled.png"] != size["flat.png"]  # z drawn twice as tall


def test_densify_files_checks_outputs_before_training(files, tiny_config, listing):
    before = listing(files.folder)
    out = files.folder / "seg.tif"
    with pytest.raises(InputError, match="differ"):
        workflows.densify([files.volume], files.sparse, out, tiny_config(), workflows.DensifyOptions(weights_out=out))
    with pytest.raises(InputError, match="does not exist"):
        options = workflows.DensifyOptions(save_model_to=files.folder / "a" / "b")
        workflows.densify([files.volume], files.sparse, out, tiny_config(), options)
    assert listing(files.folder) == before


def test_evaluate_files(files):
    truth = tifffile.imread(files.truth)
    sparse = tifffile.imread(files.sparse)
    pred = truth.copy()
    pred[pred == 2] = 1  # class 2 missed everywhere
    tifffile.imwrite(files.folder / "pred.tif", pred)
    everywhere = workflows.evaluate(files.folder / "pred.tif", files.truth)
    assert everywhere.voxels == truth.size
    unannotated = workflows.evaluate(files.folder / "pred.tif", files.truth, ignore=files.sparse)
    assert unannotated.voxels == int((sparse == 255).sum())
    expected = score(pred, truth, sparse == 255)
    np.testing.assert_equal(unannotated.as_dict(), expected.as_dict())  # NaN equals NaN here
    assert {c.label: c.iou for c in unannotated.classes}[2] == 0.0


def test_evaluate_refuses(files):
    tifffile.imwrite(files.folder / "small.tif", np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(InputError, match="differs"):
        workflows.evaluate(files.folder / "small.tif", files.truth)
    with pytest.raises(InputError, match="differs"):
        workflows.evaluate(files.truth, files.truth, ignore=files.folder / "small.tif")
    with pytest.raises(InputError, match="--unlabeled"):  # dense labels say nothing about what was annotated
        workflows.evaluate(files.truth, files.truth, ignore=files.truth)


# --- end to end ----------------------------------------------------------------------


@pytest.mark.slow
def test_densify_fills_in_the_missing_planes():
    """Blobs of two kinds, 2 annotated planes per axis (about 20% of the voxels): after a short CPU
    training, the unannotated voxels are segmented well. Measured: mean foreground IoU 0.68-0.76 over
    seeds 0-2 (0.73 for seed 0); an all-background answer scores 0."""
    image, truth = synthetic.blobs((24, 48, 48), seed=1)
    sparse, _ = synthetic.sparsify(truth, 2)
    annotation, _ = L.read_annotation(sparse)
    config = Config(iterations=150, time_budget=3600, base=8, batch_size=2, seed=0, device="cpu", patch=(16, 32, 32))
    _, log, segmentation = ensemble.densify_arrays(image[None], annotation, config)
    assert log.stopped_by == "iterations"
    assert np.mean(log.losses[-20:]) < 0.7 * np.mean(log.losses[:20])
    labels = segmentation.labels
    assert labels.dtype == np.uint8 and labels.shape == truth.shape
    assert set(np.unique(labels)) == {0, 1, 2}
    unannotated = ~annotation.mask
    scores = score(labels, truth, unannotated)
    assert scores.mean("iou") >= 0.55
    assert min(c.iou for c in scores.foreground) >= 0.4
    trivial = score(np.zeros_like(truth), truth, unannotated)
    assert np.nan_to_num(trivial.mean("iou")) == 0.0


@pytest.mark.slow
@pytest.mark.shared
def test_densify_brats_crop(shared_data):
    """A 32x64x64 crop of a BRATS 2013 case (FLAIR + T1c), labels kept on 2 planes per axis.
    Measured whole-tumour IoU on unannotated voxels: 0.77 (seeds 0, 1, 150 steps); calling everything
    tumour would score about 0.37."""
    folder = shared_data / "brats2013_deepmedic" / "crop_pat0005_96x128x128"
    if not folder.is_dir():
        pytest.skip(f"{folder} is not there")
    crop = (slice(32, 64), slice(32, 96), slice(32, 96))
    image = io.read_image([folder / "raw_flair.tif", folder / "raw_t1c.tif"]).data[(slice(None),) + crop]
    truth = io.read_labels(folder / "label.tif").data[crop]
    sparse, _ = synthetic.sparsify(truth, 2)
    annotation, _ = L.read_annotation(sparse)
    config = Config(iterations=150, time_budget=3600, base=8, batch_size=2, seed=0, device="cpu", patch=(16, 32, 32))
    _, _, segmentation = ensemble.densify_arrays(image, annotation, config)
    labels = segmentation.labels
    assert labels.shape == truth.shape and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= set(annotation.classes.tolist())
    assert (labels > 0).any() and (labels == 0).any()
    unannotated = ~annotation.mask
    predicted, actual = labels[unannotated] > 0, truth[unannotated] > 0
    whole_tumour_iou = (predicted & actual).sum() / (predicted | actual).sum()
    everything = actual.sum() / actual.size
    assert whole_tumour_iou >= 0.6
    assert whole_tumour_iou > everything + 0.2


def test_sweep_draws_one_seed_for_all_plane_counts(blobs_small, tiny_config):
    image, truth = blobs_small
    config = dataclasses.replace(tiny_config(iterations=1), seed=None)
    rows = sweep.sweep_arrays(image[None], truth, sweep.SweepPlan([1, 2], "z", repeats=2), config)
    assert [r.k for r in rows] == [1, 1, 2, 2]
    first = rows[0].seed
    assert [r.seed for r in rows] == [first, first + 1, first, first + 1]
    header, means = sweep.sweep_means(rows)
    assert header[:3] == ["planes_per_axis", "runs", "mean_fg_iou"]
    assert [m[:2] for m in means] == [[1, 2], [2, 2]]
    assert means[0][2] == pytest.approx((rows[0].scores.mean("iou") + rows[1].scores.mean("iou")) / 2)


def test_sweep_stagger_shifts_the_planes_from_run_to_run(blobs_small, tiny_config):
    image, truth = blobs_small
    rows = sweep.sweep_arrays(
        image[None], truth, sweep.SweepPlan([1, 2], "z", repeats=2, stagger=True), tiny_config(iterations=1)
    )
    size = truth.shape[0]
    expected = [synthetic.evenly_spaced(size, k, offset) for k in (1, 2) for offset in (0.25, 0.75)]
    assert [r.offset for r in rows] == [0.25, 0.75, 0.25, 0.75]
    assert [r.planes["z"] for r in rows] == expected
    assert [r.annotated_fraction for r in rows] == pytest.approx([len(z) / size for z in expected])


def test_sweep_scores_a_one_class_annotation_as_that_class_everywhere(tiny_config, caplog):
    truth = np.zeros((8, 16, 16), dtype=np.uint8)
    truth[:2, 4:12, 4:12] = 1  # away from the one plane a sweep annotates (z = 4)
    image = truth.astype(np.float32)[None]
    rows = sweep.sweep_arrays(image, truth, sweep.SweepPlan([1], "z"), tiny_config(iterations=1))
    assert rows[0].planes["z"] == [4]
    assert rows[0].scores.mean("iou") == 0.0
    background = rows[0].scores.classes[0]
    assert background.label == 0 and background.iou == pytest.approx(1 - 128 / (7 * 256))
    assert "only class 0 is annotated" in caplog.text
