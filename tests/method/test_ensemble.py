"""Tests for sparseseg.method.ensemble: training with held-out planes, the estimate, the blend with the forest."""

import numpy as np
import pytest
import torch

from sparseseg.commands import synthetic
from sparseseg.config import Config
from sparseseg.method import core, ensemble, estimating, features, fitting, segmenting, volume
from sparseseg.method.annotation import plane_index, read_annotation
from sparseseg.method.metrics import score
from sparseseg.method.progress import Quiet
from sparseseg.method.training import weighted_loss


def _case(planes=2, axes="zyx", shape=(24, 48, 48), seed=3):
    image, truth = synthetic.blobs(shape, n_blobs=8, seed=seed)
    sparse, _ = synthetic.sparsify(truth, planes, axes)
    annotation, _ = read_annotation(sparse, 255)
    return image[None], truth, annotation


def _config(**overrides):
    values = dict(iterations=30, time_budget=600.0, base=4, batch_size=2, seed=0, device="cpu", patch=(16, 32, 32))
    return Config(**{**values, **overrides})


def test_held_out_planes_get_no_gradient_in_the_first_phase(monkeypatch):
    image, _, annotation = _case()
    seen = []
    real = fitting.train

    def spy(network, data, plan, progress=None):
        seen.append(data)
        return real(network, data, plan, progress)

    monkeypatch.setattr(fitting, "train", spy)
    estimated = ensemble.fit_estimated(image, annotation, _config(iterations=4, forest=False))
    held = estimated.estimate.planes
    assert set(held) == {"z", "y", "x"}
    first = seen[0][0]
    logits = torch.randn((1, 3) + first.target.shape, requires_grad=True)
    loss = weighted_loss(
        logits, torch.from_numpy(first.target[None].astype(np.int64)), torch.from_numpy(first.weight[None])
    )
    loss.backward()
    grad = logits.grad[0].abs().sum(0).numpy()
    for axis, (index,) in held.items():
        plane = np.take(grad, index, axis="zyx".index(axis))
        assert plane.max() == 0, f"held-out plane {axis}={index} got a gradient"
        assert index not in first.planes[axis]
    assert grad[annotation.mask & (first.weight > 0)].min() > 0
    second = seen[1][0]  # then all planes are trained on
    assert all(index in second.planes[axis] for axis, (index,) in held.items())


def test_the_estimate_lands_near_the_true_iou():
    image, truth, annotation = _case()
    model, _, segmentation = ensemble.densify_arrays(image, annotation, _config(iterations=60))
    true_iou = score(segmentation.labels, truth, ~annotation.mask).mean("iou")
    assert model.estimate is not None
    assert abs(model.estimate["iou"] - true_iou) < 0.1, (model.estimate, true_iou)
    assert true_iou > 0.5


def test_the_estimate_is_corrected_by_the_forest_fitted_without_each_plane_in_turn():
    from sparseseg.method.forest import annotated_sample, plane_folds
    from sparseseg.method.holdout import plane_correction

    image, _, annotation = _case()
    estimate = ensemble.fit_estimated(image, annotation, _config(iterations=4, forest=True)).estimate
    sample = annotated_sample(image, annotation, seed=0)
    folds = [estimate.planes] + [{a: [i]} for a, v in annotation.planes.items() for i in v]
    first, *each = plane_folds(sample, annotation, folds, seed=0)
    correction = plane_correction(first, each, annotation.classes != 0)
    assert correction != 0 and estimate.correction == pytest.approx(correction)
    assert estimate.as_dict()["held_out_iou"] == pytest.approx(estimate.iou - correction, abs=1e-4)


def test_the_blend_uses_the_forest_where_the_network_learnt_nothing():
    image, truth, annotation = _case()
    model, _, segmentation = ensemble.densify_arrays(image, annotation, _config(iterations=2))
    assert model.forest is not None and model.blend < 1
    forest_only = score(segmentation.labels, truth, ~annotation.mask).mean("iou")
    assert forest_only > 0.5


def test_nothing_is_held_out_with_one_plane_per_axis(caplog):
    image, _, annotation = _case(planes=1)
    with caplog.at_level("WARNING", logger="sparseseg"):
        model, train_log, _ = ensemble.densify_arrays(image, annotation, _config(iterations=2))
    assert model.estimate is None and model.forest is None
    assert "no estimate" in caplog.text
    assert train_log.iterations == 2


def test_holdout_off_trains_on_everything_as_before():
    image, _, annotation = _case()
    model, train_log, _ = ensemble.densify_arrays(image, annotation, _config(iterations=3, holdout=False))
    reference, reference_log = fitting.fit([image], [annotation], _config(iterations=3, holdout=False))
    assert model.estimate is None and model.forest is None
    assert train_log.losses == reference_log.losses


class _StopAfterTwo(Quiet):
    stop_requested = False

    def __call__(self, iteration, loss, elapsed):
        self.stop_requested = iteration >= 2


def test_a_stop_in_the_first_phase_keeps_the_estimate_and_skips_the_fine_tuning():
    image, _, annotation = _case()
    estimated = ensemble.fit_estimated(image, annotation, _config(iterations=20, forest=False), _StopAfterTwo())
    assert estimated.train_log.stopped_by == "stop"
    assert estimated.train_log.iterations == 2
    assert estimated.estimate is not None
    # no fine-tuning: the model is the one the offsets were fitted for, so they are applied
    np.testing.assert_allclose(estimated.model.offsets, core.prior_of(estimated.model) + estimated.estimate.offsets)


def test_after_a_stop_the_held_out_offsets_are_not_applied_to_a_forest_fitted_anew():
    image, _, annotation = _case()
    estimated = ensemble.fit_estimated(image, annotation, _config(iterations=20, forest=True), _StopAfterTwo())
    model = estimated.model
    assert estimated.train_log.iterations == 2
    assert model.blend < 1 and model.forest is not None  # two steps of the network: the forest weighs in
    assert np.any(estimated.estimate.offsets != 0)  # offsets were fitted for the first forest ...
    np.testing.assert_allclose(model.offsets, 0)  # ... and are not applied to the one fitted on all planes


class _StopAtOnce(Quiet):
    stop_requested = True

    def __call__(self, iteration, loss, elapsed):
        pass


def test_a_stop_before_the_first_step_segments_with_the_forest_alone_without_running_the_network(monkeypatch):
    image, _, annotation = _case()
    runs = []
    real = volume.network_probabilities
    for module in (volume, core):
        monkeypatch.setattr(module, "network_probabilities", lambda *a, **k: runs.append(1) or real(*a, **k))
    estimated = ensemble.fit_estimated(image, annotation, _config(iterations=20, forest=True), _StopAtOnce())
    model, estimate = estimated.model, estimated.estimate
    assert estimated.train_log.iterations == 0 and runs == []
    assert model.blend == 0 and model.forest is not None and estimated.network is None
    assert np.isnan(estimate.network_iou) and estimate.forest_iou == estimate.iou > 0.3
    assert estimate.correction == 0  # after a stop the small forests are not fitted
    np.testing.assert_allclose(model.offsets, 0)
    labels = segmenting.segment_estimated(estimated, "cpu")[1].labels
    assert runs == []
    forest = np.argmax(core.forest_part(model, image), axis=0)
    np.testing.assert_array_equal(labels, model.classes[forest])
    # without a forest the network, untrained as it is, still decides
    assert ensemble.fit_estimated(image, annotation, _config(iterations=20, forest=False), _StopAtOnce()).network


@pytest.mark.parametrize("forest", [False, True])
def test_after_the_fine_tuning_the_held_out_offsets_are_not_applied(forest):
    image, _, annotation = _case()
    estimated = ensemble.fit_estimated(image, annotation, _config(iterations=6, forest=forest))
    model = estimated.model
    assert estimated.train_log.iterations == 6  # both phases ran
    prior = core.prior_of(model) if model.blend == 1 else np.zeros(len(model.classes))  # a blend corrects inside
    np.testing.assert_allclose(model.offsets, prior)


def test_the_progress_counts_on_over_both_phases_and_hears_the_estimate():
    image, _, annotation = _case()

    class Recorder(Quiet):
        def __init__(self):
            self.steps, self.estimates = [], []

        def __call__(self, iteration, loss, elapsed):
            self.steps.append(iteration)

        def estimated(self, iou, spread):
            self.estimates.append(iou)

    recorder = Recorder()
    ensemble.fit_estimated(image, annotation, _config(iterations=5, forest=False), recorder)
    assert recorder.steps == [1, 2, 3, 4, 5]
    assert len(recorder.estimates) == 1


def test_the_same_seed_repeats_the_run():
    image, _, annotation = _case()
    runs = [ensemble.densify_arrays(image, annotation, _config(iterations=3))[2].labels for _ in range(2)]
    np.testing.assert_array_equal(*runs)


def test_a_model_with_a_forest_needs_the_raw_volume_to_decide_blocks():
    image, _, annotation = _case()
    model, _, _ = ensemble.densify_arrays(image, annotation, _config(iterations=2))
    with pytest.raises(core.InputError, match="source"):
        core.write_decided(model, None)


def _network_runs(monkeypatch):
    """Patch the network_probabilities of the estimate and of the segmentation to record the ``needed`` of each run
    (None: the whole volume)."""
    runs = []
    real = volume.network_probabilities

    def recorded(*args, needed=None, **kwargs):
        runs.append(needed)
        return real(*args, needed=needed, **kwargs)

    for module in (volume, core):
        monkeypatch.setattr(module, "network_probabilities", recorded)
    return runs


def test_the_estimate_runs_the_network_on_the_held_out_planes_only(monkeypatch):
    image, _, annotation = _case()
    calls = _network_runs(monkeypatch)
    estimated = ensemble.fit_estimated(image, annotation, _config(iterations=4, forest=False))
    (needed,) = calls
    expected = np.zeros(annotation.mask.shape, bool)
    for axis, (index,) in estimated.estimate.planes.items():
        expected[plane_index(axis, index)] = annotation.plane(axis, index)[1]
    np.testing.assert_array_equal(needed, expected)
    segmenting.segment_estimated(estimated, "cpu")
    assert len(calls) == 2 and calls[1] is None  # the segmentation runs it over the whole volume


def test_after_a_stop_the_segmentation_reuses_the_estimate_s_network_run(monkeypatch):
    image, _, annotation = _case()
    runs = _network_runs(monkeypatch)
    estimated = ensemble.fit_estimated(image, annotation, _config(iterations=20, forest=False), _StopAfterTwo())
    assert estimated.network is not None and len(runs) == 1
    kept = estimated.network[0].copy()
    _, reused = segmenting.segment_estimated(estimated, "cpu")
    assert len(runs) == 1 and estimated.network is None  # handed over, not run again
    _, again = segmenting.segment_estimated(estimated, "cpu")  # nothing kept now: run it
    assert len(runs) == 2
    np.testing.assert_allclose(core.network_probabilities(estimated.model, image, "cpu")[0], kept, atol=1e-6)
    np.testing.assert_array_equal(reused.labels, again.labels)


@pytest.mark.parametrize(
    "shape, held",
    [
        ((12, 24, 160), {"x": [70]}),  # one thin slab: plane by plane
        ((24, 48, 48), {"z": [5], "y": [20], "x": [30]}),
    ],
)  # the whole volume once
def test_the_forest_on_held_out_planes_equals_the_whole_volume_s(shape, held):
    from sparseseg.method.forest import fit_forest
    from sparseseg.method.forest_apply import forest_probabilities

    image, _, annotation = _case(shape=shape)
    forest = fit_forest(image, annotation, seed=0, n_estimators=10)
    classes = np.arange(3)
    whole = forest_probabilities(forest, image, classes)
    from_features = estimating.forest_on_planes(forest, image, classes, held, features.volume_features(image))
    for planes in (estimating.forest_on_planes(forest, image, classes, held), from_features):
        assert set(planes) == {(axis, i) for axis, indices in held.items() for i in indices}
        for (axis, index), plane in planes.items():
            np.testing.assert_allclose(plane, np.take(whole, index, axis=1 + "zyx".index(axis)), atol=1e-6)


def test_the_volume_s_features_are_computed_once_and_change_nothing(monkeypatch):
    image, _, annotation = _case()
    config = _config(iterations=3)
    filtered = []
    real = features.filter_features
    monkeypatch.setattr(
        features, "filter_features", lambda image, spacing=None: filtered.append(image.shape) or real(image, spacing)
    )
    once = ensemble.densify_arrays(image, annotation, config)
    assert once[0].forest is not None and once[0].blend < 1 and filtered == [image.shape]
    monkeypatch.setattr(
        features, "volume_features", lambda image, spacing=None: None
    )  # block by block, as for a large volume
    blockwise = ensemble.densify_arrays(image, annotation, config)
    assert len(filtered) > 1
    np.testing.assert_array_equal(once[2].labels, blockwise[2].labels)
    np.testing.assert_allclose(once[2].probabilities, blockwise[2].probabilities, atol=1e-6)


def test_the_forest_s_filters_follow_the_voxel_size():
    image, _, annotation = _case()
    model = ensemble.densify_arrays(image, annotation, _config(iterations=2, spacing=(4.0, 1.0, 1.0)))[0]
    assert model.forest is not None and model.forest.spacing == (4.0, 1.0, 1.0)


class _Watcher(Quiet):
    """Records what a run tells it, in order; cancels the run at step ``cancel_at``."""

    def __init__(self, cancel_at=None):
        self.told, self.cancel_at = [], cancel_at

    def __call__(self, iteration, loss, elapsed):
        self.told.append(("step", iteration))
        self.cancelled = self.cancel_at is not None and iteration >= self.cancel_at

    def phase(self, name):
        self.told.append(("phase", name))

    def estimated(self, iou, spread):
        self.told.append(("estimate", round(iou, 6)))

    def preview(self, labels, source):
        self.told.append(("preview", source, labels.shape, labels.dtype))


def test_the_forests_segmentation_and_score_come_before_the_network_and_the_phases_are_told():
    image, truth, annotation = _case()
    watcher = _Watcher()
    model, _, _ = ensemble.densify_arrays(image, annotation, _config(iterations=4), watcher)
    kinds = [t[0] for t in watcher.told]
    assert kinds.index("estimate") < kinds.index("preview") < kinds.index("step")  # the score needs only the planes
    assert ("preview", "forest", truth.shape, np.uint8) in watcher.told
    phases = [t[1] for t in watcher.told if t[0] == "phase"]
    assert phases == ["features", "forest", "network", "estimate", "forest", "network", "segmenting"]
    first_estimate = next(t[1] for t in watcher.told if t[0] == "estimate")
    assert abs(first_estimate - model.estimate["forest_iou"]) < 1e-4  # the forest's own score on the held-out planes


def test_a_cancelled_run_raises_cancelled_and_returns_nothing():
    from sparseseg.method.progress import Cancelled

    image, _, annotation = _case()
    watcher = _Watcher(cancel_at=2)
    with pytest.raises(Cancelled):
        ensemble.densify_arrays(image, annotation, _config(iterations=50), watcher)
    assert ("step", 2) in watcher.told and ("step", 3) not in watcher.told
    assert "estimate" not in [t[1] for t in watcher.told if t[0] == "phase"]


def test_a_time_limit_ends_the_whole_run_in_time_without_fine_tuning(monkeypatch):
    """With steps to spare, a time limit ends training in time for what follows it: no fine-tuning, and the run, the
    segmentation included, ends near the limit."""
    import time

    image, _, annotation = _case()
    fits = []
    real = volume.fit
    monkeypatch.setattr(volume, "fit", lambda *a, **k: fits.append(1) or real(*a, **k))
    started = time.perf_counter()
    model, log, segmentation = ensemble.densify_arrays(
        image, annotation, _config(iterations=10**6, time_limit=12.0, seed=1)
    )
    took = time.perf_counter() - started
    assert len(fits) == 1 and log.stopped_by == "time" and log.iterations > 0
    assert took < 12.0 * 1.5, took
    assert segmentation.labels.shape == image.shape[1:] and model.estimate is not None


def test_the_estimated_keeps_the_volume_it_segments_and_refuses_slabs():
    image, _, annotation = _case()
    estimated = ensemble.fit_estimated(image, annotation, _config(iterations=2, forest=True, device="auto"))
    assert estimated.volume.image is image and estimated.volume.annotation is annotation
    here = "cuda" if torch.cuda.is_available() else "cpu"  # 'auto' decided once; the model records the decision
    assert estimated.device == torch.device(here) and estimated.model.config.device == here
    _, segmentation = segmenting.segment_estimated(estimated)
    assert segmentation.labels.shape == image.shape[1:]
    estimated.volume = None
    with pytest.raises(core.InputError, match="held whole"):
        segmenting.segment_estimated(estimated, "cpu")
