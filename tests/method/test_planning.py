"""Tests for sparseseg.method.planning: axes, pooling, patch and window shapes."""

import numpy as np
import pytest

from sparseseg.errors import InputError
from sparseseg.method import planning
from sparseseg.method.tiling import tile_starts


def test_anisotropy():
    assert planning.anisotropy(None) == (1.0, 1.0, 1.0)
    assert planning.anisotropy((50, 4, 4)) == (12.5, 1.0, 1.0)
    assert planning.anisotropy((1, 2, 4)) == (1.0, 2.0, 4.0)


def test_default_patch_follows_spacing_and_volume():
    # isotropic: a 64^3 cube
    assert planning.default_patch((100, 300, 300), None, (8, 8, 8)) == (64, 64, 64)
    # 50x4x4 nm: the same number of voxels as a cube in physical space, 12 sections of 152x152
    patch = planning.default_patch((40, 500, 500), (50, 4, 4), (1, 8, 8))
    assert patch == (12, 152, 152)
    assert abs(np.prod(patch) / 64**3 - 1) < 0.1
    # a volume smaller than the patch: the patch shrinks to it, rounded up to the multiple
    patch = planning.default_patch((12, 24, 20), None, (8, 8, 8))
    assert patch == (16, 24, 24)
    for p, m in zip(planning.default_patch((30, 70, 90), (3, 1, 1), (2, 8, 8)), (2, 8, 8)):
        assert p % m == 0


def test_thin_depths_are_equal_in_physical_space():
    assert planning.thin_depths(16, None, (8, 8, 8), (64, 64, 64)) == (16, 16, 16)
    # 12.5x thicker sections: 16 pixels of 4 nm are 1.3 sections, raised to the plane and its neighbours
    assert planning.thin_depths(16, (50, 4, 4), (1, 8, 8), (12, 152, 152)) == (3, 16, 16)
    # 3x thicker sections pooled by 2: 16 / 3 = 5.3 -> the nearest multiple of 2
    assert planning.thin_depths(16, (3, 1, 1), (2, 8, 8), (22, 64, 64)) == (6, 16, 16)
    # rounded to the network's multiple, never deeper than the patch
    assert planning.thin_depths(12, None, (8, 8, 8), (64, 64, 64)) == (16, 16, 16)
    assert planning.thin_depths(32, None, (8, 8, 8), (64, 24, 64)) == (32, 24, 32)


def test_inference_patch():
    assert planning.inference_patch((16, 64, 64), (100, 300, 300), (8, 8, 8)) == (32, 128, 128)
    assert planning.inference_patch((16, 64, 64), (20, 100, 300), (8, 8, 8)) == (24, 104, 128)


def test_inference_windows_keep_the_training_depth_across_thin_axes():
    # as deep as training across z; as many voxels as twice the 12x152x152 patch: 4x wider, within the volume
    assert planning.inference_windows({"z": (3, 152, 152)}, (12, 152, 152), (30, 512, 512), (1, 8, 8)) == [
        (3, 512, 512)
    ]
    assert planning.inference_windows({"z": (3, 152, 152)}, (12, 152, 152), (30, 900, 900), (1, 8, 8)) == [
        (3, 608, 608)
    ]
    # one pass per annotated axis; z: the volume needs no more than 104
    windows = planning.inference_windows(
        {"z": (16, 64, 64), "x": (64, 64, 16)}, (64, 64, 64), (100, 300, 300), (8, 8, 8)
    )
    assert windows == [(16, 256, 256), (104, 256, 16)]
    # cube patches: twice the patch, no larger than the volume needs
    assert planning.inference_windows({None: (16, 64, 64)}, (16, 64, 64), (20, 100, 300), (8, 8, 8)) == [(24, 104, 128)]


def test_window_overlaps_keep_the_overlap_across_the_planes_and_take_the_wide_one_elsewhere():
    shapes = {"z": (3, 152, 152), "x": (64, 64, 16)}
    assert planning.window_overlaps(shapes, 0.5, 0.25) == [(0.5, 0.25, 0.25), (0.25, 0.25, 0.5)]
    assert planning.window_overlaps({None: (16, 64, 64)}, 0.5, 0.125) == [
        (0.125, 0.125, 0.125)
    ]  # a cube: wide axes only


@pytest.mark.parametrize("overlap, wide_overlap, bad", [(1.0, 0.25, "overlap"), (0.5, -0.1, "wide_overlap")])
def test_window_overlaps_reject(overlap, wide_overlap, bad):
    with pytest.raises(InputError, match=f"^{bad}="):
        planning.window_overlaps({"z": (3, 8, 8)}, overlap, wide_overlap)


def test_window_halo_is_the_margin_the_tiling_itself_leaves():
    # a 3-section window stepping by one section needs one more section; a 600-wide one stepping by 450, 75 voxels
    assert planning.window_halo([(3, 600, 600)], [(0.5, 0.25, 0.25)]) == (1, 75, 75)
    # the most over the passes
    assert planning.window_halo([(16, 224, 224), (64, 16, 256)], [(0.5, 0.25, 0.25), (0.25, 0.5, 0.25)]) == (8, 28, 32)
    # so every voxel away from the volume's ends lies at least halo - 1 voxels inside some window over it
    for size, window, overlap in [(100, 16, 0.5), (300, 64, 0.25), (97, 24, 0.125), (50, 3, 0.5)]:
        starts = tile_starts(size, window, overlap)
        halo = planning.window_halo([(window,) * 3], [(overlap,) * 3])[0]
        for p in range(halo, size - halo):
            margin = max(min(p - a, a + window - 1 - p) for a in starts if a <= p < a + window)
            assert margin >= halo - 1, (size, window, overlap, p)


def test_pooling_kernels_isotropic():
    assert planning.pooling_kernels(None, 3) == [(2, 2, 2)] * 3
    assert planning.pooling_kernels((1.0, 1.0, 1.0), 2) == [(2, 2, 2)] * 2
    assert planning.pooling_kernels((0.3, 0.3, 0.3), 0) == []


def test_pooling_kernels_anisotropic_em():
    # 50 nm sections, 4 nm pixels: z stays coarser than 2x the in-plane size for 3 levels (4 -> 8 -> 16 -> 32 nm)
    assert planning.pooling_kernels((50, 4, 4), 3) == [(1, 2, 2)] * 3
    # after 3 in-plane poolings y, x are 32 nm > 50 / 2, so z is pooled from the fourth level on
    assert planning.pooling_kernels((50, 4, 4), 5)[3:] == [(2, 2, 2), (2, 2, 2)]


def test_pooling_kernels_catch_up():
    # z twice as coarse: pooled only once y, x have caught up
    assert planning.pooling_kernels((2, 1, 1), 3) == [(1, 2, 2), (2, 2, 2), (2, 2, 2)]
    # slightly coarse z (< ratio 2) is pooled from the start
    assert planning.pooling_kernels((1.5, 1, 1), 2) == [(2, 2, 2), (2, 2, 2)]
    # coarse x works as well as coarse z
    assert planning.pooling_kernels((1, 1, 4), 2) == [(2, 2, 1), (2, 2, 1)]


@pytest.mark.parametrize("spacing, depth", [((1, 1), 3), ((0, 1, 1), 3), ((-1, 1, 1), 3), ((1, 1, 1), -1)])
def test_pooling_kernels_reject(spacing, depth):
    with pytest.raises(ValueError):
        planning.pooling_kernels(spacing, depth)


def test_size_multiple():
    assert planning.size_multiple([]) == (1, 1, 1)
    assert planning.size_multiple([(2, 2, 2)] * 3) == (8, 8, 8)
    assert planning.size_multiple([(1, 2, 2), (1, 2, 2), (2, 2, 2)]) == (2, 8, 8)


def test_patch_shapes_are_thin_across_each_annotated_axis():
    assert planning.patch_shapes((32, 64, 64), (16, 8, 4), ["z", "x"]) == {"z": (16, 64, 64), "x": (32, 64, 4)}
    assert planning.patch_shapes((8, 64, 64), (16, 16, 16), ["z"]) == {"z": (8, 64, 64)}  # never deeper than the patch
    assert planning.patch_shapes((32, 64, 64), None, ["z"]) == {None: (32, 64, 64)}
    assert planning.patch_shapes((32, 64, 64), (16, 16, 16), []) == {None: (32, 64, 64)}


def test_block_for_windows_is_the_whole_volume_when_it_fits():
    assert planning.block_for_windows((8, 64, 64), [(8, 32, 32)], [(0.5, 0.5, 0.5)], 8 * 64 * 64) == (8, 64, 64)


def _window_voxels_of_blocks(shape, block, window, overlap, halo):
    """What the blocks really run: the windows tiling each block read with its halo."""
    from sparseseg.io.blocks import plan_blocks, with_halo
    from sparseseg.method.tiling import tile_slices

    total = 0
    for zyx in plan_blocks(shape, block):
        read = [
            s.stop - s.start
            for s in with_halo(zyx, [h if b < n else 0 for h, b, n in zip(halo, block, shape)], shape, window)[0]
        ]
        w = [min(a, b) for a, b in zip(window, read)]
        total += len(tile_slices(read, w, overlap)) * np.prod(w)
    return total


def test_block_for_windows_runs_fewer_windows_than_other_cuts_of_the_same_budget():
    shape, window, overlap = (4, 1000, 1000), (4, 200, 200), (0.5, 0.5, 0.5)  # steps of 100, a halo of 50
    halo = planning.window_halo([window], [overlap])
    budget = 4 * 400 * 400
    block = planning.block_for_windows(shape, [window], [overlap], budget)
    assert block[0] == 4 and block[1] % 100 == 0 and block[2] % 100 == 0
    assert np.prod([min(n, b + 2 * h) if b < n else n for b, h, n in zip(block, halo, shape)]) <= budget  # the read
    chosen = _window_voxels_of_blocks(shape, block, window, overlap, halo)
    for other in [(4, 300, 300), (4, 200, 400), (4, 100, 600)]:  # others whose reads fit the budget
        assert chosen <= _window_voxels_of_blocks(shape, other, window, overlap, halo)
    # within a few windows of the whole volume's (each block reads its halo's windows too: 10 x 10 against 9 x 9)
    assert chosen <= 1.25 * _window_voxels_of_blocks(shape, shape, window, overlap, (0, 0, 0))


def test_block_for_windows_cuts_whole_chunks_within_the_budget():
    windows, overlaps = [(16, 224, 224)], [(0.5, 0.25, 0.25)]
    block = planning.block_for_windows((64, 2000, 2000), windows, overlaps, 12e6, chunks=(32, 128, 128))
    assert np.prod(block) <= 12e6
    assert all(b % c == 0 or b == n for b, c, n in zip(block, (32, 128, 128), (64, 2000, 2000)))
    chosen = _window_voxels_of_blocks(
        (64, 2000, 2000), block, windows[0], overlaps[0], planning.block_halo(block, windows, overlaps)
    )
    for other in [(32, 512, 640), (64, 256, 640), (32, 256, 1280)]:
        assert chosen <= _window_voxels_of_blocks(
            (64, 2000, 2000), other, windows[0], overlaps[0], planning.block_halo(other, windows, overlaps)
        )


def test_block_halo_widens_for_a_block_shorter_than_a_step_so_that_the_window_fits():
    windows, overlaps = [(16, 224, 224)], [(0.5, 0.25, 0.25)]
    assert (
        planning.block_halo((64, 512, 512), windows, overlaps) == planning.window_halo(windows, overlaps) == (4, 28, 28)
    )
    assert planning.block_halo((8, 128, 512), windows, overlaps) == (4, 48, 28)  # 128 + 2 x 48 = 224


def test_window_chunks_are_whole_steps_near_the_default():
    windows, overlaps = [(16, 224, 224)], [(0.5, 0.25, 0.25)]  # steps of 8, 168 and 168
    assert planning.window_chunks((64, 2000, 2000), windows, overlaps) == (32, 168, 168)
    assert planning.window_chunks((20, 100, 2000), windows, overlaps) == (20, 100, 168)  # never longer than the axis
    # passes thin along different axes: the least common multiple of their steps
    windows, overlaps = [(4, 64, 64), (64, 4, 64)], [(0.5, 0.5, 0.5), (0.5, 0.5, 0.5)]  # steps 2 and 32
    assert planning.window_chunks((256, 256, 256), windows, overlaps) == (32, 128, 128)


def test_window_chunks_are_one_step_where_windows_meet_edge_to_edge():
    windows = [(16, 224, 224)]
    assert planning.window_chunks((64, 2000, 2000), windows, [(0.0, 0.25, 0.25)]) == (16, 168, 168)
    assert planning.window_chunks((20, 2000, 2000), [(3, 600, 600)], [(0.0, 0.25, 0.25)]) == (3, 450, 450)
    assert planning.window_chunks((64, 2000, 2000), windows, [(0.5, 0.25, 0.25)])[0] == 32  # they overlap: halo


def test_edge_to_edge_chunks_let_whole_planes_fill_a_block():
    shape, windows, overlaps = (64, 704, 704), [(16, 224, 224)], [(0.0, 0.25, 0.25)]
    chunks = planning.window_chunks(shape, windows, overlaps)
    block = planning.block_for_windows(shape, windows, overlaps, 10e6, chunks=chunks)
    assert block == (16, 704, 704)  # no halo along z: four blocks hold the whole volume's own 64 windows
    # the Drosophila stack's shape and windows: thin blocks of whole planes, as a TIFF output (no chunks) gets
    shape, windows = (20, 1024, 1024), [(3, 600, 600)]
    chunks = planning.window_chunks(shape, windows, overlaps)
    block = planning.block_for_windows(shape, windows, overlaps, 8e6, chunks=chunks)
    assert block == planning.block_for_windows(shape, windows, overlaps, 8e6) == (6, 1024, 1024)


def test_window_chunks_keep_the_default_where_a_window_spans_the_axis():
    assert planning.window_chunks((40, 64, 1000), [(40, 64, 200)], [(0.5, 0.5, 0.5)]) == (32, 64, 100)


def test_whole_step_chunks_need_fewer_windows_than_the_default_chunks():
    shape, windows, overlaps = (64, 2000, 2000), [(16, 224, 224)], [(0.5, 0.25, 0.25)]

    def cost(chunks):
        block = planning.block_for_windows(shape, windows, overlaps, 12e6, chunks=chunks)
        return _window_voxels_of_blocks(
            shape, block, windows[0], overlaps[0], planning.block_halo(block, windows, overlaps)
        )

    stepped, default = cost(planning.window_chunks(shape, windows, overlaps)), cost(planning.OUTPUT_CHUNKS)
    assert stepped < 0.9 * default
