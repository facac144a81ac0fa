"""Tests for `sparseseg train` in bounded memory: the pair of a large volume is trained on the slabs around its planes.

The slab path (forced here on small volumes by lowering `bounded.SLAB_THRESHOLD`) must train
the model the whole-read path trains: the same classes, class weights, normalised training
voxels, losses and offsets, so the same predictions.
"""

import numpy as np
import pytest
import tifffile

from sparseseg import io
from sparseseg.commands import synthetic, workflows
from sparseseg.errors import InputError
from sparseseg.large import bounded, slabs
from sparseseg.method import core, fitting
from sparseseg.method.modelfolder import load_model
from sparseseg.method.training import WholeVolume, class_weights_of


@pytest.fixture
def recorded(monkeypatch):
    """What `fit` hands to the training loop, call by call: the list of `TrainData` of each run."""
    runs = []
    train = fitting.train

    def record(network, data, plan, progress=None):
        runs.append(list(data))
        return train(network, data, plan, progress)

    monkeypatch.setattr(fitting, "train", record)
    return runs


def _slabs_only(monkeypatch, big):
    """The volumes whose path contains ``big`` are never read whole; returns the stacks read, as (path, stack)."""
    stacks = []
    read_image, read_stack = io.read_image, slabs.read_stack

    def whole(volumes, *args, **kwargs):
        if any(big in str(v) for v in volumes):
            pytest.fail(f"{volumes} was read whole")
        return read_image(volumes, *args, **kwargs)

    def stack(image, *args):
        stacks.append((str(image.path), read_stack(image, *args)[0]))
        return read_stack(image, *args)

    monkeypatch.setattr(io, "read_image", whole)
    monkeypatch.setattr(bounded, "read_stack", stack)
    return stacks


def _same_model(a, b):
    np.testing.assert_array_equal(a.classes, b.classes)
    np.testing.assert_array_equal(a.class_weights, b.class_weights)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    assert a.shapes == b.shapes and a.config == b.config


def test_train_reads_a_large_volume_in_slabs_and_trains_what_the_whole_read_trains(
    files, tiny_config, monkeypatch, recorded, one_torch_thread
):
    config = tiny_config(iterations=3, seed=3, filters=False)  # slabs: the raw channels alone
    pairs = [([files.volume], files.sparse)]
    whole, whole_log, _ = workflows.train_files(pairs, files.folder / "whole_model", config)
    monkeypatch.setattr(bounded, "SLAB_THRESHOLD", 0)
    stacks = _slabs_only(monkeypatch, "volume.tif")
    sliced, sliced_log, folder = workflows.train_files(pairs, files.folder / "slab_model", config)
    assert len(stacks) == 3  # one stack per annotated axis, and nothing read whole
    _same_model(sliced, whole)
    np.testing.assert_array_equal(sliced_log.losses, whole_log.losses)
    (volume,), stacked = recorded  # normalised by the whole volume's statistics: the planes hold the same values
    for data in stacked:
        ((axis, places),) = [(a, v) for a, v in data.planes.items() if v]
        i = "zyx".index(axis)
        for v, at in zip(files.planes[axis], places):
            np.testing.assert_array_equal(np.take(data.image, at, axis=i + 1), np.take(volume.image, v, axis=i + 1))
            np.testing.assert_array_equal(np.take(data.weight, at, axis=i), np.take(volume.weight, v, axis=i))
    out = workflows.predict(folder, [files.volume], files.folder / "seg.tif", workflows.PredictOptions(device="cpu"))
    assert out.written == [files.folder / "seg.tif"]
    image = tifffile.imread(files.volume)[None].astype(np.float32)
    reference = core.segment(load_model(files.folder / "whole_model"), image)
    np.testing.assert_array_equal(io.read_volume(files.folder / "seg.tif").data, reference.labels)


def test_a_small_volume_beside_a_large_one_is_read_whole(files, tiny_config, monkeypatch, one_torch_thread, caplog):
    big = files.folder / "big"
    big.mkdir()
    image, truth = synthetic.blobs((24, 48, 48), seed=2)
    tifffile.imwrite(big / "volume.tif", image)
    tifffile.imwrite(big / "sparse.tif", synthetic.sparsify(truth, 2)[0])
    pairs = [([files.volume], files.sparse), ([big / "volume.tif"], big / "sparse.tif")]
    config = tiny_config(iterations=3, seed=1, thin=4, filters=False)  # slabs: the raw channels alone
    whole, whole_log, _ = workflows.train_files(pairs, files.folder / "whole_model", config)
    monkeypatch.setattr(bounded, "SLAB_THRESHOLD", int(np.prod(files.shape)))  # the first is small, the second large
    stacks = _slabs_only(monkeypatch, "big")
    caplog.set_level("INFO", "sparseseg")
    mixed, mixed_log, _ = workflows.train_files(pairs, files.folder / "mixed_model", config)
    assert {path for path, _ in stacks} == {str(big / "volume.tif")}
    assert all(stack.size < image.size for _, stack in stacks)  # thin crops: the slabs hold less than the volume
    assert "training on the slabs" in caplog.text
    _same_model(mixed, whole)
    np.testing.assert_array_equal(mixed_log.losses, whole_log.losses)


def test_an_annotation_without_whole_planes_is_read_whole(files, tiny_config, monkeypatch, one_torch_thread, caplog):
    sparse = tifffile.imread(files.sparse)
    sparse[np.random.default_rng(0).random(sparse.shape) < 0.1] = 255  # no whole plane: cube crops need the volume
    tifffile.imwrite(files.sparse, sparse)
    monkeypatch.setattr(bounded, "SLAB_THRESHOLD", 0)
    monkeypatch.setattr(
        bounded, "read_stack", lambda *a: pytest.fail("read slabs of an annotation with no whole plane")
    )
    model, _, _ = workflows.train_files([([files.volume], files.sparse)], files.folder / "model", tiny_config())
    assert "read whole" in caplog.text and model.offsets is not None


def test_the_cli_trains_an_hdf5_pair_in_slabs(files, run, train_args, monkeypatch, one_torch_thread):
    h5py = pytest.importorskip("h5py")
    with h5py.File(files.folder / "em.h5", "w") as f:
        f["raw"] = tifffile.imread(files.volume)
        f["sparse"] = tifffile.imread(files.sparse)
    monkeypatch.setattr(bounded, "SLAB_THRESHOLD", 0)
    stacks = _slabs_only(monkeypatch, "em.h5")
    em = str(files.folder / "em.h5")
    result = run("train", "--pair", f"{em}:/raw:{em}:/sparse", "-o", str(files.folder / "model"), *train_args)
    assert result.exit_code == 0, result.output
    assert len(stacks) == 3 and (files.folder / "model").is_dir()


def test_class_weights_count_each_whole_volume_once():
    from sparseseg.method.annotation import Annotation

    classes = np.array([0, 1])
    volume = WholeVolume((4, 4, 4), np.zeros((1, 4)), classes, np.array([30, 10]))
    few = Annotation(classes, np.array([[[0, 1, 1]]]), np.ones((1, 1, 3), bool), {})
    counted = Annotation(classes, np.array([[[0] * 31 + [1] * 12]]), np.ones((1, 1, 43), bool), {})  # 30 + 1, 10 + 2
    np.testing.assert_array_equal(
        class_weights_of([few, few, few], classes, 1.0, [volume, volume, None]),
        class_weights_of([counted], classes, 1.0),
    )
    np.testing.assert_array_equal(
        class_weights_of([few, few], classes, 1.0, volume), class_weights_of([few], classes, 1.0, volume)
    )
    with pytest.raises(InputError, match="one whole-volume entry"):
        class_weights_of([few, few], classes, 1.0, [volume])
