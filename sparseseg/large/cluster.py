"""Predict past one machine: the blocks of a volume mapped over a dask.distributed cluster.

The driver plans the blocks once (`sparseseg.method.core.plan_of`, blocks aligned to the
output's chunks); each worker loads the model folder once, predicts the blocks it is given
with the same function a single process uses (`block_probabilities`), decides them and
writes them into the shared chunked output (Zarr or OME-Zarr). Blocks never share a chunk,
so no chunk is written twice; the driver finishes the output when every block is in.
Needs the optional `distributed` extra.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sparseseg.errors import InputError
from sparseseg.io.blocks import all_or_nothing, blocks_to_write
from sparseseg.method.core import Model, plan_of, resolve_device, write_decided
from sparseseg.method.modelfolder import load_model
from sparseseg.method.streaming import BlockProgress, block_probabilities, voxels

_MODELS: dict[str, Model] = {}  # per worker process: each model folder is loaded once


def _model(folder: str) -> Model:
    if folder not in _MODELS:
        _MODELS[folder] = load_model(folder)
    return _MODELS[folder]


def _predict_block(folder, source, labels, probabilities, zyx, plan, device, tta) -> int:
    """One block, on a worker: predict, decide, write; the voxels done."""
    model = _model(folder)
    p = block_probabilities(
        model.network, source, zyx, plan, device=resolve_device(device), tta=model.config.tta if tta is None else tta
    )
    write_decided(model, labels, probabilities, source)(zyx, p)
    return voxels(zyx)


#: A scheduler's address: tcp:// or tls://, a host name or address, and a port.
ADDRESS = re.compile(r"(tcp|tls)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})")
#: Most worker processes of a local cluster: far more than a workstation's cores.
MAX_WORKERS = 1024


def check_cluster(workers: int | None = None, scheduler: str | None = None) -> None:
    """Refuse a worker count outside 1..`MAX_WORKERS`, a scheduler address that is not ``tcp://host:port`` (or
    ``tls://``), and either where dask.distributed is not installed: before any work."""
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise InputError(f"must be a number of worker processes in 1..{MAX_WORKERS}", param="workers", value=workers)
    if scheduler is not None:
        match = ADDRESS.fullmatch(scheduler)
        if match is None or not 1 <= int(match.group(3)) <= 65535:
            raise InputError(
                "must be a scheduler address tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786",
                param="scheduler",
                value=scheduler,
            )
    if workers is not None or scheduler is not None:
        need_dask()


@dataclass(frozen=True)
class Cluster:
    """Where the dense inference runs: in this process (neither given), on a local dask cluster of ``workers``
    processes, or on the cluster whose scheduler is at ``scheduler`` (``tcp://host:port``)."""

    workers: int | None = None
    scheduler: str | None = None

    @property
    def used(self) -> bool:
        return self.workers is not None or self.scheduler is not None

    def check(self) -> None:
        """`check_cluster`, where a cluster is asked for."""
        if self.used:
            check_cluster(self.workers, self.scheduler)

    def client(self):
        """`client` of this cluster."""
        return client(self.workers, self.scheduler)


def need_dask() -> None:
    """Refuse workers and scheduler where dask.distributed is not installed (before any work)."""
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        raise InputError('workers and scheduler need dask.distributed: pip install "sparseseg[distributed]"') from None


def client(workers: int | None = None, scheduler: str | None = None):
    """A dask.distributed client: on ``scheduler`` (an address), else on a local cluster of ``workers`` processes."""
    need_dask()
    from dask.distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            return Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the scheduler ({exc})", param="scheduler", value=scheduler) from None
    threads = max(1, (os.cpu_count() or 1) // workers)
    return Client(LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True, dashboard_address=":0"))


def check_shared(labels, probabilities=None) -> None:
    """Refuse an output that workers cannot write together: anything but Zarr or OME-Zarr
    (`sparseseg.io.partial.PartialSink`)."""
    for param, sink in (("out", labels), ("probabilities", probabilities)):
        if sink is not None and not getattr(sink, "shared", False):
            raise InputError(
                "several workers need a chunked output that they can share: a .zarr or .ome.zarr path",
                param=param,
                value=str(getattr(sink, "path", "")),
            )


def segment_on_cluster(
    model: Model,
    folder,
    source,
    sinks: tuple,
    *,
    dask_client,
    device: str = "auto",
    tta: bool | None = None,
    progress: BlockProgress | None = None,
) -> list[tuple[int, int, int]]:
    """Segment ``source`` block by block on ``dask_client``'s workers with ``model``, saved in ``folder``.

    ``model`` plans the blocks and windows here (with the overlap it holds, e.g. from
    `sparseseg.method.core.with_overlap`); each worker loads ``folder`` once and follows that plan.

    ``sinks``: the labels sink and the probabilities sink (or None), chunked sinks that workers can share (Zarr,
    OME-Zarr). They are finished here when every block is written, and aborted if one fails
    (kept on Ctrl-C where they are resumable, as in `sparseseg.method.core.segment_source`; a resumed
    output's blocks are not submitted again). Returns the sliding windows.
    """
    from dask.distributed import as_completed

    labels, probabilities = sinks
    check_shared(labels)
    plan = plan_of(model, source, chunks=labels.chunks)
    folder = str(Path(folder).resolve())
    with all_or_nothing(labels, probabilities):
        todo = blocks_to_write(plan.blocks, plan.layout, labels, probabilities)  # a resumed output's are not submitted
        total = sum(voxels(b) for b in plan.blocks)
        done = total - sum(voxels(b) for b in todo)
        futures = [
            dask_client.submit(
                _predict_block, folder, source, labels, probabilities, zyx, plan, device, tta, pure=False
            )
            for zyx in todo
        ]
        for future in as_completed(futures):
            done += future.result()
            if progress:
                progress(done, total)
    return plan.windows


def _probabilities_block(folder, source, store, zyx, plan, device, annotated):
    """One block, on a worker: its probabilities into the float32 Zarr array at ``store``; those of the ``annotated``
    voxels."""
    import zarr

    model = _model(folder)
    p = block_probabilities(model.network, source, zyx, plan, device=resolve_device(device), tta=model.config.tta)
    zarr.open_array(store, mode="r+")[(slice(None),) + tuple(zyx)] = p
    return p[:, annotated] if annotated is not None else None


def probabilities_on_cluster(folder, source, plan, store, *, dask_client, device: str = "auto", mask=None):
    """The network's probabilities of every block of ``plan`` on ``dask_client``'s workers, before any decision.

    Each worker writes its blocks into ``store``, a float32 (K, Z, Y, X) Zarr array whose
    chunks are the plan's blocks (so no two workers write one chunk). With ``mask`` (Z, Y, X)
    returns the probabilities (K, N) of its voxels in the order of ``probabilities[:, mask]``
    (what `sparseseg.method.core.calibrate` takes), else None.
    """
    import numpy as np
    from dask.distributed import as_completed

    folder = str(Path(folder).resolve())
    futures = {
        dask_client.submit(
            _probabilities_block,
            folder,
            source,
            str(store),
            zyx,
            plan,
            device,
            None if mask is None else mask[zyx],
            pure=False,
        ): zyx
        for zyx in plan.blocks
    }
    if mask is None:
        for future in as_completed(futures):
            future.result()
        return None
    flat = np.flatnonzero(mask)
    annotated = None
    for future in as_completed(futures):
        piece, zyx = future.result(), futures[future]
        if annotated is None:
            annotated = np.empty((piece.shape[0], flat.size), dtype=piece.dtype)
        local = np.nonzero(mask[zyx])
        where = np.ravel_multi_index(tuple(i + s.start for i, s in zip(local, zyx)), mask.shape)
        annotated[:, np.searchsorted(flat, where)] = piece
    return annotated
