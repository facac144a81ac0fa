"""Under a time limit (``Config.time_limit``): when training must end so that what follows it ends in time.

What follows training is foreseen from what was measured before it: the forest's fit and its pass over the volume,
and the pace of the training steps, of which the network's pass over the volume takes a known share.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from sparseseg.config import Config
from sparseseg.method.fitting import plan_training
from sparseseg.method.planning import AXES, patch_shapes, size_multiple, thin_depths
from sparseseg.method.progress import Forward, Progress

#: A network pass over a training patch's voxels takes this share of a training step (the forward half, the windows
#: overlapping); the forest's refit on all planes this many times its first fit (more planes), and the correction's
#: small forests this many.
FORWARD_SHARE = 0.75
REFIT_SHARE = 1.3
CORRECTION_SHARE = 2.5


class Deadline(Forward):
    """A progress that asks training to stop once what follows it would no longer end by ``deadline`` (a
    `time.perf_counter` time): ``after`` seconds, and a network pass of ``pass_steps`` training steps.

    ``reached`` tells afterwards whether it did.
    """

    def __init__(self, inner: Progress, deadline: float, after: float, pass_steps: float):
        super().__init__(inner)
        self.deadline, self.after, self.pass_steps = deadline, after, pass_steps
        self.step_seconds = 0.0
        self.reached = False

    def __call__(self, iteration: int, loss: float, elapsed: float) -> None:
        self.step_seconds = elapsed / max(iteration, 1)
        self.inner(iteration, loss, elapsed)

    @property
    def stop_requested(self) -> bool:
        left = self.deadline - time.perf_counter() - self.after - self.pass_steps * self.step_seconds
        self.reached = self.reached or left <= 0
        return self.reached or self.inner.stop_requested


def pass_steps(config: Config, shape: Sequence[int], planes: dict, init, device: torch.device) -> float:
    """The network's pass over a volume of ``shape`` annotated on ``planes``, foreseen in training steps."""
    config, pools, patch, _ = plan_training(config, shape, init, device)
    thin = thin_depths(config.thin, config.spacing, size_multiple(pools), patch) if config.thin else None
    shapes = patch_shapes(patch, thin, [a for a in AXES if planes.get(a)])
    step = config.batch_size * np.mean([math.prod(s) for s in shapes.values()])
    return FORWARD_SHARE * len(shapes) * math.prod(shape) / step
