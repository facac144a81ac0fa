"""Tests for sparseseg.large.cluster: predict on a local dask.distributed cluster gives the single-process labels
exactly."""

import numpy as np
import pytest
import zarr

from sparseseg import io
from sparseseg.commands import workflows
from sparseseg.large import bounded, cluster
from sparseseg.method import core, streaming
from sparseseg.method.modelfolder import load_model

pytest.importorskip("dask.distributed")


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_two_workers_give_the_single_process_labels(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "BLOCK_BUDGET", 1.0)  # blocks as small as the output's chunks: 8 of them
    source = io.open_source([trained.volume])
    shape = source.shape[1:]
    model = load_model(trained.model)
    k = len(model.classes)
    sinks = {}
    for name in ("one", "two"):
        sinks[name] = (
            io.create_sink(tmp_path / f"{name}.zarr", shape, np.uint8, chunks=(8, 16, 16)),
            io.create_sink(tmp_path / f"{name}_p.zarr", (k,) + shape, np.uint8, chunks=(8, 16, 16)),
        )
    core.segment_source(model, source, *sinks["one"])
    with cluster.client(workers=2) as dask_client:
        cluster.segment_on_cluster(model, trained.model, source, sinks["two"], dask_client=dask_client)
    assert len(core.plan_of(model, source, chunks=(8, 16, 16)).blocks) == 8
    for name in ("", "_p"):
        single = zarr.open(tmp_path / f"one{name}.zarr", mode="r")[...]
        several = zarr.open(tmp_path / f"two{name}.zarr", mode="r")[...]
        np.testing.assert_array_equal(several, single)
    assert single.shape == (k,) + shape and single.std() > 1  # probabilities that vary: the equality means something


def test_workers_need_a_chunked_output(trained, tmp_path, listing):
    before = listing(tmp_path)
    with pytest.raises(workflows.InputError, match="zarr"):
        workflows.predict(
            trained.model,
            [trained.volume],
            tmp_path / "seg.tif",
            workflows.PredictOptions(cluster=workflows.Cluster(workers=1)),
        )
    assert listing(tmp_path) == before


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("slabs", [False, True], ids=["whole", "slabs"])
def test_densify_on_two_workers_gives_the_single_process_labels(files, tiny_config, monkeypatch, slabs):
    monkeypatch.setattr(streaming, "BLOCK_BUDGET", 1.0)  # several blocks, so that both workers have some
    if slabs:  # a volume past the threshold: trained on its slabs, with holdout and forest, on workers too
        monkeypatch.setattr(bounded, "SLAB_THRESHOLD", 0)
        monkeypatch.setattr(io, "read_image", lambda *a: pytest.fail("the slab path read the volume whole"))
    reports = {}
    for name, workers in (("one", None), ("two", 2)):
        outputs = workflows.Outputs(probabilities=files.folder / f"{name}_p.tif")
        reports[name] = workflows.densify(
            [files.volume],
            files.sparse,
            files.folder / f"{name}.zarr",
            tiny_config(),
            workflows.DensifyOptions(outputs=outputs, cluster=workflows.Cluster(workers)),
        )
    one = zarr.open(files.folder / "one.zarr", mode="r")[...]
    np.testing.assert_array_equal(zarr.open(files.folder / "two.zarr", mode="r")[...], one)
    assert (reports["one"].segmentation.labels is None) == slabs and len(np.unique(one)) > 1
    assert reports["two"].model.estimate is not None  # held-out planes at every size
    np.testing.assert_array_equal(
        io.read_volume(files.folder / "two_p.tif").data, io.read_volume(files.folder / "one_p.tif").data
    )
    np.testing.assert_array_equal(reports["two"].model.offsets, reports["one"].model.offsets)  # calibrated alike
    assert not [p for p in files.folder.iterdir() if p.name.startswith(".")]  # no temporary model or probabilities left


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_resume_on_workers_submits_only_the_blocks_not_done(trained, tmp_path, monkeypatch):
    from sparseseg.errors import Interrupted

    monkeypatch.setattr(streaming, "BLOCK_BUDGET", 1.0)
    monkeypatch.setattr("sparseseg.commands.outputs.output_chunks", lambda model, shape: (8, 16, 16))  # 8 blocks

    def stop(done, total):
        raise KeyboardInterrupt

    out = tmp_path / "seg.zarr"
    with pytest.raises(Interrupted):
        workflows.predict(trained.model, [trained.volume], out, workflows.PredictOptions(device="cpu"), stop)
    real, left = cluster.blocks_to_write, []
    monkeypatch.setattr(cluster, "blocks_to_write", lambda *args: left.extend(real(*args)) or left)
    options = workflows.PredictOptions(device="cpu", cluster=workflows.Cluster(workers=2), resume=True)
    workflows.predict(trained.model, [trained.volume], out, options)
    assert len(left) == 7
    workflows.predict(
        trained.model, [trained.volume], tmp_path / "ref.zarr", workflows.PredictOptions(device="cpu")
    )  # uninterrupted, same blocks
    np.testing.assert_array_equal(zarr.open(out, mode="r")[...], zarr.open(tmp_path / "ref.zarr", mode="r")[...])


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_workers_follow_the_overlap_given_to_predict(trained, tmp_path):
    def probabilities(name, workers=None, overlap=None):
        options = workflows.PredictOptions(
            outputs=workflows.Outputs(probabilities=tmp_path / f"{name}_p.zarr"),
            device="cpu",
            cluster=workflows.Cluster(workers),
            overlap=overlap,
        )
        workflows.predict(trained.model, [trained.volume], tmp_path / f"{name}.zarr", options)
        return zarr.open(tmp_path / f"{name}_p.zarr", mode="r")[...]

    one = probabilities("one", overlap=0.75)
    np.testing.assert_array_equal(probabilities("two", overlap=0.75, workers=2), one)
    assert not np.array_equal(
        probabilities("default"), one
    )  # the overlap changed the windows: the equality means something
