"""Tests for sparseseg.method.training: the weighted loss, the patch sampler and short training runs."""

import os
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparseseg.method import annotation as L
from sparseseg.method.augment import AugmentParams
from sparseseg.method.network import UNet3D
from sparseseg.method.preprocess import normalise
from sparseseg.method.progress import Quiet, Steps
from sparseseg.method.training import (
    PatchSampler,
    TrainData,
    TrainPlan,
    ctrl_c_stops_training,
    poly_lr,
    train,
    weighted_loss,
)

CPU = torch.device("cpu")


def _logits_target_weight(seed=0, shape=(2, 3, 4, 6, 6)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, requires_grad=True)
    target = torch.randint(0, shape[1], (shape[0],) + shape[2:], generator=g)
    weight = torch.rand((shape[0],) + shape[2:], generator=g) + 0.5
    weight[:, :2] = 0  # unlabeled voxels
    return logits, target, weight


@pytest.mark.parametrize("dice", [0.0, 1.0])
def test_unlabeled_voxels_get_no_gradient(dice):
    logits, target, weight = _logits_target_weight()
    weighted_loss(logits, target, weight, dice=dice).backward()
    grad = logits.grad.movedim(1, -1)  # (B, Z, Y, X, K)
    assert torch.all(grad[weight == 0] == 0)
    assert torch.all(grad[weight > 0].abs().sum(-1) > 0)


@pytest.mark.parametrize("dice", [0.0, 1.0])
def test_loss_ignores_what_unlabeled_voxels_hold(dice):
    logits, target, weight = _logits_target_weight()
    other_logits = logits.detach().clone()
    other_target = target.clone()
    unlabeled = weight == 0
    other_logits.movedim(1, -1)[unlabeled] = 100.0 * torch.randn(int(unlabeled.sum()), logits.shape[1])
    other_target[unlabeled] = (target[unlabeled] + 1) % logits.shape[1]
    torch.testing.assert_close(
        weighted_loss(logits, target, weight, dice), weighted_loss(other_logits, other_target, weight, dice)
    )


def test_equals_cross_entropy_with_unit_weights():
    logits, target, _ = _logits_target_weight()
    ones = torch.ones(target.shape)
    torch.testing.assert_close(weighted_loss(logits, target, ones), F.cross_entropy(logits, target))


def test_weighted_mean_of_cross_entropy():
    logits, target, weight = _logits_target_weight()
    ce = F.cross_entropy(logits, target, reduction="none")
    expected = (ce * weight).sum() / weight.sum()
    torch.testing.assert_close(weighted_loss(logits, target, weight), expected)


def test_dice_term_is_zero_for_a_perfect_prediction():
    _, target, weight = _logits_target_weight()
    perfect = 50.0 * F.one_hot(target, 3).movedim(-1, 1).float()
    assert weighted_loss(perfect, target, weight, dice=1.0) < 1e-4
    wrong = 50.0 * F.one_hot((target + 1) % 3, 3).movedim(-1, 1).float()
    assert weighted_loss(wrong, target, weight, dice=1.0) > 1.0


def test_all_unlabeled_gives_zero_loss():
    logits, target, _ = _logits_target_weight()
    loss = weighted_loss(logits, target, torch.zeros(target.shape))
    assert loss.item() == 0.0


def test_poly_lr():
    assert poly_lr(0.01, 0.0) == 0.01
    assert poly_lr(0.01, 1.0) == 0.0
    assert poly_lr(0.01, 2.0) == 0.0 and poly_lr(0.01, -1.0) == 0.01
    values = [poly_lr(1.0, p) for p in np.linspace(0, 1, 11)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert poly_lr(1.0, 0.5) == pytest.approx(0.5**0.9)


@pytest.fixture(scope="module")
def data(blobs_small, sparse_small):
    image, _ = blobs_small
    annotation, _ = L.read_annotation(sparse_small[0])
    return TrainData(normalise(image[None]), annotation.target, L.weight_map(annotation))


def test_sampler_crops_hold_annotated_voxels_of_every_class(data):
    rng = np.random.default_rng(0)
    sampler = PatchSampler([data], {None: (8, 16, 16)}, CPU, rng)
    axis, image, target, weight = sampler.sample(64)
    assert axis is None
    assert image.shape == (64, 1, 8, 16, 16)
    assert target.shape == weight.shape == (64, 8, 16, 16)
    # every crop is centred near an annotated voxel, so it holds some
    assert bool(((weight > 0).flatten(1).any(1)).all())
    # each class is drawn equally often: rarer classes show up in many crops
    for k in range(3):
        holds = ((target == k) & (weight > 0)).flatten(1).any(1).float().mean()
        assert holds > 0.25


def _train(data, iterations=3, time_budget=60.0, seed=0, params=None, progress=None, lr=3e-3):
    torch.manual_seed(seed)
    model = UNet3D(1, 3, 4, [(2, 2, 2)] * 3)
    plan = TrainPlan((8, 16, 16), 2, iterations, time_budget, lr, CPU, seed, params=params)
    log = train(model, data, plan, progress)
    return model, log


def test_training_lowers_the_loss(data):
    model, log = _train(data, iterations=40, lr=1e-2)
    assert log.iterations == 40 and len(log.losses) == 40
    assert np.mean(log.losses[-5:]) < 0.8 * np.mean(log.losses[:5])
    assert log.final_loss == pytest.approx(np.mean(log.losses[-20:]))
    assert not model.training


def test_stops_by_iterations(data):
    calls = []
    _, log = _train(data, iterations=4, progress=lambda i, loss, t: calls.append((i, loss, t)))
    assert log.stopped_by == "iterations"
    assert log.iterations == 4
    assert [c[0] for c in calls] == [1, 2, 3, 4]
    assert [c[1] for c in calls] == log.losses
    assert all(np.isfinite(c[1]) for c in calls)
    assert log.seconds >= calls[-1][2] > 0


def test_zero_time_budget_trains_nothing(data):
    _, log = _train(data, iterations=100, time_budget=0.0)
    assert log.stopped_by == "time"
    assert log.iterations == 0 and log.losses == []
    assert np.isnan(log.final_loss)


def test_stops_by_time(data):
    _, log = _train(data, iterations=10**9, time_budget=0.5)
    assert log.stopped_by == "time"
    assert log.iterations >= 1
    assert 0.5 <= log.seconds < 30


def test_ctrl_c_keeps_the_model(data):
    def interrupt(iteration, loss, elapsed):
        if iteration == 2:
            raise KeyboardInterrupt

    model, log = _train(data, iterations=10, progress=interrupt)
    assert log.stopped_by == "interrupt"
    assert log.iterations == 2
    assert not model.training


def test_a_progress_object_can_stop_the_run(data):
    class Cancel(Quiet):
        """Asks to stop after the second step, as a Cancel button does."""

        stop_requested = False

        def __call__(self, iteration, loss, elapsed):
            self.stop_requested = iteration >= 2

    model, log = _train(data, iterations=10, progress=Cancel())
    assert log.stopped_by == "stop"
    assert log.iterations == 2 and len(log.losses) == 2
    assert not model.training


def _ctrl_c():
    """Press Ctrl-C: SIGINT to this process (its handler runs before the next line)."""
    os.kill(os.getpid(), signal.SIGINT)


def test_first_ctrl_c_asks_training_to_stop_and_the_second_quits(sigint_default):
    with ctrl_c_stops_training(None) as progress:
        assert not progress.stop_requested and not progress.pressed
        _ctrl_c()
        assert progress.stop_requested and progress.pressed
        with pytest.raises(KeyboardInterrupt):
            _ctrl_c()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_ends_training_before_its_next_step(data, sigint_default):
    with ctrl_c_stops_training(None) as progress:
        progress.inner = Steps(lambda iteration, loss, elapsed: _ctrl_c() if iteration == 2 else None)
        model, log = _train(data, iterations=10, progress=progress)
    assert log.stopped_by == "stop" and progress.told(log).stopped_by == "interrupt"
    assert log.iterations == 2
    assert not model.training


@pytest.mark.parametrize("params", [None, AugmentParams()], ids=["plain", "augmented"])
def test_same_seed_same_weights(data, params):
    a, log_a = _train(data, iterations=3, seed=0, params=params)
    b, log_b = _train(data, iterations=3, seed=0, params=params)
    c, _ = _train(data, iterations=3, seed=1, params=params)
    assert log_a.losses == log_b.losses
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def test_divergence_is_reported(data):
    broken = TrainData(np.full_like(data.image, np.nan), data.target, data.weight)
    with pytest.raises(FloatingPointError, match="lr"):
        _train(broken, iterations=3)


def test_several_volumes_are_all_drawn_from(data):
    # two volumes told apart by their intensity: 10 everywhere in one, -10 in the other
    first = TrainData(np.full_like(data.image, 10.0), data.target, data.weight)
    second = TrainData(np.full_like(data.image, -10.0), data.target, data.weight)
    sampler = PatchSampler([first, second], {None: (8, 16, 16)}, CPU, np.random.default_rng(0))
    seen = {float(v) for _ in range(20) for v in torch.unique(sampler.sample(2)[1])} - {0.0}  # 0: padding
    assert seen == {10.0, -10.0}
    _, log = _train([first, second], iterations=3)
    assert log.iterations == 3 and len(log.losses) == 3 and all(np.isfinite(log.losses))


def test_sampler_draws_batches_around_the_planes_of_one_axis():
    from sparseseg.method.training import PatchSampler

    shape = (20, 30, 40)
    target = np.zeros(shape, dtype=np.int64)
    target[:, :, 20:] = 1
    weight = np.zeros(shape, dtype=np.float32)
    weight[5] = 1  # z plane 5
    weight[:, :, 7] = 1  # x plane 7
    data = TrainData(np.zeros((1,) + shape, np.float32), target, weight, {"z": [5], "y": [], "x": [7]})
    crops = {"z": (3, 8, 8), "x": (8, 8, 3)}
    sampler = PatchSampler([data], crops, torch.device("cpu"), np.random.default_rng(0))
    seen, depths = set(), set()
    for _ in range(40):
        axis, image, tgt, w = sampler.sample(3)
        seen.add(axis)
        assert image.shape[2:] == crops[axis] and w.shape[1:] == crops[axis]
        per_depth = w.sum(dim=(2, 3) if axis == "z" else (1, 2))  # (crop, depth across the thin axis)
        # the weight lies at one depth of each crop: the annotated plane (its border may be padding), not the
        # crossing plane of the other axis, which would reach every depth ...
        assert bool(((per_depth > 0).sum(1) == 1).all())
        depths |= {(axis, int(d)) for d in per_depth.argmax(1)}
    assert seen == {"z", "x"}
    # ... at any depth, not only the middle: every plane of a thin window is trained
    assert depths == {(a, d) for a in "zx" for d in range(3)}
