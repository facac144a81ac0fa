"""The channel between a long run and whoever watches it: steps, phases, early results, and the requests to stop or to
cancel.

A run (`sparseseg.method.ensemble.densify_arrays`, `sparseseg.method.fitting.fit`) reports to a `Progress`:
the command line's progress bar, the napari widget, or `Quiet`. ``stop_requested`` asks it to finish now with what it
has (Ctrl-C, a Stop button); ``cancelled`` asks it to give up: the next `checkpoint` raises `Cancelled`, and nothing
is returned. Checkpoints sit between training steps, between the phases of a run, between the sliding windows of a
network pass, between the tree batches of a forest and between the filter scales of the features, so that a
cancelled run ends within about a second of work.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import numpy as np

#: The phases of a densify run, in the order they come, as `Progress.phase` names them.
PHASES = ("features", "forest", "network", "estimate", "segmenting")


class Cancelled(Exception):
    """The run was cancelled (`Progress.cancelled`): it ends without a result."""


@runtime_checkable
class Progress(Protocol):
    """What a run tells its watcher, and how the watcher ends it.

    Attributes
    ----------
    stop_requested : bool
        True: finish now with what was trained so far (training ends before its next step).
    cancelled : bool
        True: give up; the next `checkpoint` raises `Cancelled`.
    """

    stop_requested: bool
    cancelled: bool

    def __call__(self, iteration: int, loss: float, elapsed: float) -> None:
        """After each training step: the steps so far, the step's loss and the training's seconds so far."""

    def phase(self, name: str) -> None:
        """A phase of `PHASES` begins."""

    def estimated(self, iou: float, spread: float) -> None:
        """An estimate of the IoU on the unannotated voxels (± its spread over the held-out planes) is known."""

    def preview(self, labels: np.ndarray, source: str) -> None:
        """A segmentation of the whole volume (Z, Y, X class ids) exists before the final one; ``source`` says whose
        ('forest')."""


class Quiet:
    """A `Progress` that shows nothing and never stops the run; subclass it to hear only some of what a run says."""

    stop_requested = False
    cancelled = False

    def __call__(self, iteration: int, loss: float, elapsed: float) -> None:
        pass

    def phase(self, name: str) -> None:
        pass

    def estimated(self, iou: float, spread: float) -> None:
        pass

    def preview(self, labels: np.ndarray, source: str) -> None:
        pass


class Steps(Quiet):
    """A `Progress` that hands each training step to a plain function ``steps(iteration, loss, elapsed)``."""

    def __init__(self, steps: Callable[[int, float, float], None]):
        self.steps = steps

    def __call__(self, iteration: int, loss: float, elapsed: float) -> None:
        self.steps(iteration, loss, elapsed)


class Forward(Quiet):
    """A `Progress` that passes everything on to ``inner``; subclasses change a part of it."""

    def __init__(self, inner: Progress):
        self.inner = inner

    @property
    def stop_requested(self) -> bool:
        return self.inner.stop_requested

    @property
    def cancelled(self) -> bool:
        return self.inner.cancelled

    def __call__(self, iteration: int, loss: float, elapsed: float) -> None:
        self.inner(iteration, loss, elapsed)

    def phase(self, name: str) -> None:
        self.inner.phase(name)

    def estimated(self, iou: float, spread: float) -> None:
        self.inner.estimated(iou, spread)

    def preview(self, labels: np.ndarray, source: str) -> None:
        self.inner.preview(labels, source)


class Shifted(Forward):
    """A progress that counts on from an earlier training phase: ``steps`` and ``seconds`` are added to what it is
    told."""

    def __init__(self, inner: Progress, steps: int, seconds: float):
        super().__init__(inner)
        self.steps, self.seconds = steps, seconds

    def __call__(self, iteration: int, loss: float, elapsed: float) -> None:
        self.inner(iteration + self.steps, loss, elapsed + self.seconds)


def as_progress(progress: Progress | Callable[[int, float, float], None] | None) -> Progress:
    """``progress`` as a `Progress`: None is `Quiet`, a plain function hears the training steps (`Steps`)."""
    if progress is None:
        return Quiet()
    if isinstance(progress, Progress):
        return progress
    if callable(progress):
        return Steps(progress)
    raise TypeError(f"progress must be a sparseseg.method.progress.Progress or a function, not {type(progress)}")


_current: contextvars.ContextVar[Progress | None] = contextvars.ContextVar("sparseseg_progress", default=None)


@contextlib.contextmanager
def watched(progress: Progress) -> Iterator[Progress]:
    """While the block runs (in this thread), `checkpoint` without an argument checks ``progress``."""
    token = _current.set(progress)
    try:
        yield progress
    finally:
        _current.reset(token)


def current() -> Progress | None:
    """The progress of the run under way in this thread (`watched`), or None."""
    return _current.get()


def checkpoint(progress: Progress | None = None) -> None:
    """Raise `Cancelled` where ``progress`` (by default the `current` one) was cancelled."""
    progress = progress if progress is not None else _current.get()
    if progress is not None and progress.cancelled:
        raise Cancelled("the run was cancelled")


def begin(progress: Progress, phase: str) -> None:
    """Begin phase ``phase`` of a run: raise `Cancelled` where ``progress`` was cancelled, else tell it the phase."""
    checkpoint(progress)
    progress.phase(phase)
