"""Tests for sparseseg.method.streaming and sparseseg.io.blocks: a volume of any size, block by block."""

import platform

import numpy as np
import pytest
import torch

from sparseseg.commands import synthetic
from sparseseg.io import blocks
from sparseseg.method import core, fitting, streaming
from sparseseg.method.annotation import read_annotation
from sparseseg.method.preprocess import source_stats
from sparseseg.method.streaming import WindowSpec, plan_volume, release_freed_memory, run_blocks


def test_plan_blocks_tiles_the_volume_once():
    shape = (5, 7, 9)
    cover = np.zeros(shape, dtype=int)
    for zyx in blocks.plan_blocks(shape, (2, 7, 4)):
        cover[zyx] += 1
    assert (cover == 1).all()


def test_with_halo_stays_inside_and_crops_back():
    read, crop = blocks.with_halo((slice(2, 4), slice(0, 3), slice(5, 9)), (1, 2, 3), (5, 3, 9))
    assert read == (slice(1, 5), slice(0, 3), slice(2, 9))
    data = np.arange(5 * 3 * 9).reshape(5, 3, 9)
    np.testing.assert_array_equal(data[read][crop], data[2:4, 0:3, 5:9])


def test_with_halo_reads_a_short_block_at_the_edge_further_in():
    read, crop = blocks.with_halo((slice(0, 2), slice(7, 9), slice(3, 6)), (1, 1, 1), (5, 9, 9), least=(4, 4, 20))
    assert read == (slice(0, 4), slice(5, 9), slice(0, 9))  # at least 4 long, the whole axis where it is shorter
    data = np.arange(5 * 9 * 9).reshape(5, 9, 9)
    np.testing.assert_array_equal(data[read][crop], data[0:2, 7:9, 3:6])


def test_block_shape_keeps_within_the_budget_in_whole_windows():
    block = blocks.block_shape((256, 2048, 2048), (16, 256, 256), bytes_per_voxel=40, budget=2**30)
    assert np.prod(block) * 40 <= 2**30 and block[0] % 16 == 0 and block[1] % 256 == 0 and block[2] == 2048
    assert blocks.block_shape((256, 2048, 2048), (16, 256, 256), 40, 2**32) == (16, 2048, 2048)  # whole planes
    assert blocks.block_shape((10, 20, 30), (8, 8, 8), 40, 2**30) == (10, 20, 30)  # small: one block


class Recording(blocks.ArraySource):
    """An array source that remembers the shape of every read."""

    def __post_init__(self):
        super().__post_init__()
        self.reads = []

    def read(self, zyx):
        out = super().read(zyx)
        self.reads.append(out.shape[1:])
        return out


@pytest.fixture(scope="module")
def model(blobs_small, sparse_small):
    image, _ = blobs_small
    annotation, _ = read_annotation(sparse_small[0])
    from sparseseg.config import Config

    config = Config(
        iterations=10, time_budget=60.0, base=4, batch_size=2, seed=0, device="cpu", patch=(8, 16, 16), filters=False
    )
    return fitting.fit([image[None].astype(np.float32)], [annotation], config)[0]


@pytest.fixture(scope="module")
def filter_model(blobs_small, sparse_small):
    """The same, with a network that reads the filter features beside the raw channel."""
    image, _ = blobs_small
    annotation, _ = read_annotation(sparse_small[0])
    from sparseseg.config import Config

    config = Config(iterations=10, time_budget=60.0, base=4, batch_size=2, seed=0, device="cpu", patch=(8, 16, 16))
    return fitting.fit([image[None].astype(np.float32)], [annotation], config)[0]


def _probabilities(model, image, budget, wide_overlap=None):
    sink = blocks.ArraySink((len(model.classes),) + image.shape[1:], np.float32)
    source = Recording(image)
    spec = WindowSpec(model.windows, model.config.patch, wide_overlap=wide_overlap)
    plan = plan_volume(model.network, source.shape, spec, source_stats(source), budget, inputs=model.network_inputs)
    run_blocks(model.network, source, plan, sink.write, device=torch.device("cpu"))
    return sink.finish(), source.reads


def test_blocks_give_the_whole_volume_result(model):
    image, _ = synthetic.blobs((24, 64, 64), seed=3)
    image = image[None].astype(np.float32)
    whole, reads = _probabilities(model, image, budget=2**30)
    assert reads == [image.shape[1:]] * 2  # the sample for the statistics (all of it), then one block: the volume
    split, reads = _probabilities(model, image, budget=np.prod(image.shape) * 4 * 6 / 8)  # an eighth of the volume
    blocks_read = reads[1:]
    assert len(blocks_read) > 4 and max(np.prod(r) for r in blocks_read) < 0.75 * np.prod(
        image.shape[1:]
    )  # block + halo, never all
    # the halo gives each block's border voxels the context the whole volume's tiling gives any voxel, but not the same
    # windows: the barely trained test network's probabilities differ by up to 0.03-0.08 at a few voxels (seeds 0-2)
    assert np.abs(split - whole).mean() < 0.005
    assert np.mean(split.argmax(0) == whole.argmax(0)) > 0.99


def test_blocks_of_a_network_reading_filter_features_give_the_whole_volume_result(filter_model):
    image, _ = synthetic.blobs((24, 64, 64), seed=3)
    image = image[None].astype(np.float32)
    assert filter_model.inputs.filters
    whole, _ = _probabilities(filter_model, image, budget=2**34)
    split, reads = _probabilities(filter_model, image, budget=np.prod(image.shape) * 4 * 60 / 8)
    assert len(reads) > 3  # the sample, then several blocks, each read with the features' context
    # the features' context makes each block's features those of the whole volume (tests/method/test_inputs.py); the
    # windows differ as above, and this network's probabilities are flatter after 10 steps (98.8 % of argmax agree)
    assert np.abs(split - whole).mean() < 0.005
    assert np.mean(split.argmax(0) == whole.argmax(0)) > 0.98


def test_network_probabilities_on_needed_voxels_equal_the_whole_run_there_with_fewer_windows(model):
    image, _ = synthetic.blobs((16, 160, 160), seed=4)
    image = image[None].astype(np.float32)
    needed = np.zeros(image.shape[1:], bool)
    needed[:, 40, :] = True  # one y plane
    calls = []
    hook = model.network.register_forward_hook(lambda *_: calls.append(1))
    try:
        whole = core.network_probabilities(model, image, "cpu")[0]
        all_windows, calls[:] = len(calls), []
        some = core.network_probabilities(model, image, "cpu", needed=needed)[0]
    finally:
        hook.remove()
    assert len(calls) < 0.5 * all_windows
    np.testing.assert_allclose(some[:, needed], whole[:, needed], rtol=1e-5, atol=1e-6)
    assert (some.sum(0) == 0).any()  # voxels far from the plane: no window ran there
    with pytest.raises(core.InputError, match="needed"):
        core.network_probabilities(model, image, "cpu", needed=needed[1:])


def test_less_overlap_along_the_wide_axes_runs_fewer_windows_for_nearly_the_same_result(model):
    image, _ = synthetic.blobs((16, 160, 160), seed=4)  # wider than a window along y and x
    image = image[None].astype(np.float32)
    calls = []
    hook = model.network.register_forward_hook(lambda *_: calls.append(1))
    try:
        half, _ = _probabilities(model, image, budget=2**30)
        windows_half, calls[:] = len(calls), []
        quarter, _ = _probabilities(model, image, budget=2**30, wide_overlap=0.25)
        windows_quarter = len(calls)
    finally:
        hook.remove()
    assert windows_quarter < 0.75 * windows_half
    assert np.mean(quarter.argmax(0) == half.argmax(0)) > 0.98


def test_segment_source_writes_labels_and_probabilities_to_sinks(model):
    image, _ = synthetic.blobs((24, 48, 48), seed=3)
    image = image[None].astype(np.float32)
    labels = blocks.ArraySink(image.shape[1:], np.uint8)
    probabilities = blocks.ArraySink((len(model.classes),) + image.shape[1:], np.uint8)
    core.segment_source(model, blocks.ArraySource(image), labels, probabilities)
    expected = core.segment(model, image)
    np.testing.assert_array_equal(labels.data, expected.labels)
    assert np.abs(probabilities.data.astype(int) - np.round(expected.probabilities * 255)).max() <= 1


def test_segment_source_aborts_its_sinks_on_failure(model):
    class Failing(blocks.ArraySink):
        aborted = False

        def write(self, zyx, block):
            raise OSError("No space left on device")

        def abort(self):
            self.aborted = True

    sink = Failing((12, 24, 24), np.uint8)
    with pytest.raises(OSError):
        core.segment_source(model, blocks.ArraySource(np.zeros((1, 12, 24, 24), np.float32)), sink)
    assert sink.aborted


def test_nan_in_a_block_is_bad_input(model):
    image = np.zeros((1, 12, 24, 24), np.float32)
    image[0, 5, 5, 5] = np.nan
    with pytest.raises(core.InputError, match="NaN"):
        core.network_probabilities(model, image)


def test_freed_memory_is_handed_back_through_glibc_only(monkeypatch):
    streaming._malloc_trim.cache_clear()
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    try:
        assert release_freed_memory() is False
    finally:
        streaming._malloc_trim.cache_clear()
    monkeypatch.undo()
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert release_freed_memory() is expected
