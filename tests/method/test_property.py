"""Property: whatever small label volume, unlabeled value, planes and options it is given, `densify`
either succeeds with a valid output or refuses with exit 2 and one error line, writing nothing;
it never exits 1 (an internal error) (issue 13).

Hypothesis draws the volume's shape, the classes and the planes annotated with them, the value
that fills the unannotated voxels and the --unlabeled value given (the two may differ), an
optional --planes spec (its indices may lie outside the volume) and the training options
(patch, base, batch size, iterations 0..2, time budget), some of them out of range. The
networks are tiny (base <= 4, at most 2 steps), so 25 examples take a few seconds.
"""

import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.usefixtures("one_torch_thread")

AXES = "zyx"
#: Class ids to draw from: small ones, the default unlabeled value 255, and one that needs uint16.
CLASS_IDS = [0, 1, 2, 3, 7, 254, 255, 1000]
#: Option values that are fine; the first is --unlabeled's (the value the unannotated voxels hold is drawn apart).
GOOD = {
    "--patch": ["8,8,8", "8,16,16", "16,8,8", "16,16,16"],
    "--base": [2, 3, 4],
    "--batch-size": [1, 2],
    "--iterations": [0, 1, 2, 2],
    "--time-budget": ["5", "0.5m", "1h", "0"],
}
#: Values that are wrong, or may be wrong for the labels drawn (an --unlabeled value that is a class).
BAD = {
    "--unlabeled": [0, 1, 7, 65535, 65536, -1],
    "--patch": ["4,8,8", "6,8,8", "0,8,8", "2000,8,8", "8,8", "a,b,c"],
    "--base": [0, 100000],
    "--batch-size": [0, 1000],
    "--iterations": [-1],
    "--time-budget": ["-1", "soon"],
}


@st.composite
def cases(draw):
    shape = (draw(st.integers(3, 10)), draw(st.integers(6, 16)), draw(st.integers(6, 16)))
    n_classes = draw(st.sampled_from([1, 2, 2, 3, 3]))
    classes = draw(st.lists(st.sampled_from(CLASS_IDS), min_size=n_classes, max_size=n_classes, unique=True))
    fill = draw(st.sampled_from([255, 255, 255, 0, 65535]))  # what unannotated voxels hold
    annotated = {}
    for axis in draw(st.lists(st.sampled_from(AXES), min_size=1, max_size=3, unique=True)):
        size = shape[AXES.index(axis)]
        annotated[axis] = draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=min(3, size), unique=True))
    planes = None
    if draw(
        st.sampled_from([False, False, True])
    ):  # name planes, maybe not the annotated ones, maybe outside the volume

        def indices(axis):  # up to two planes past the volume's end
            return st.lists(st.integers(0, shape[AXES.index(axis)] + 2), min_size=1, max_size=2)

        planes = [
            f"{axis}={','.join(map(str, draw(indices(axis))))}"
            for axis in draw(st.lists(st.sampled_from(AXES), min_size=1, max_size=2, unique=True))
        ]
    options = {flag: draw(st.sampled_from(values)) for flag, values in GOOD.items()}
    options["--unlabeled"] = 255
    broken = draw(st.sampled_from([None, None, None, None, *BAD]))  # at most one option out of range
    if broken is not None:
        options[broken] = draw(st.sampled_from(BAD[broken]))
    return dict(
        shape=shape,
        classes=classes,
        fill=fill,
        annotated=annotated,
        planes=planes,
        options=options,
        seed=draw(st.integers(0, 2**16)),
    )


def _write_inputs(folder: Path, case: dict) -> tuple[Path, Path]:
    rng = np.random.default_rng(case["seed"])
    shape = case["shape"]
    values = case["classes"] + [case["fill"]]
    labels = np.full(shape, case["fill"], np.uint8 if max(values) <= 255 else np.uint16)
    for axis, indices in case["annotated"].items():
        where = [slice(None)] * 3
        where[AXES.index(axis)] = indices
        plane = labels[tuple(where)]
        labels[tuple(where)] = rng.choice(case["classes"], size=plane.shape)
    volume = (rng.normal(size=shape) + labels.astype(np.float32) / 100).astype(np.float32)
    tifffile.imwrite(folder / "volume.tif", volume, photometric="minisblack")  # 3 planes are not RGB
    tifffile.imwrite(folder / "sparse.tif", labels, photometric="minisblack")
    return folder / "volume.tif", folder / "sparse.tif"


def _found(shape, patch, batch_size, iterations):
    """A case Hypothesis found (two classes on plane z=0), run first on every run."""
    options = {
        "--patch": patch,
        "--base": 2,
        "--batch-size": batch_size,
        "--iterations": iterations,
        "--time-budget": "5",
        "--unlabeled": 255,
    }
    return dict(shape=shape, classes=[0, 1], fill=255, annotated={"z": [0]}, planes=None, options=options, seed=0)


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
@example(case=_found((3, 6, 6), "8,8,8", 2, 0))  # a 3-plane output written as one RGB page
@example(case=_found((5, 6, 6), "8,8,8", 1, 1))  # the deepest level 1x1x1 with one patch per step
def test_densify_succeeds_or_refuses_cleanly(case, run, bad_input, listing, strict_json):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        volume, sparse = _write_inputs(folder, case)
        out = folder / "seg.tif"
        args = ["densify", volume, "--slices", sparse, "-o", out, "--seed", "0", "--device", "cpu", "--json"]
        for flag, value in case["options"].items():
            args += [flag, value]
        if case["planes"]:
            args += ["--planes", *case["planes"]]
        before = listing(folder)
        result = run(*args)
        assert result.exit_code in (0, 2), result.output  # never 1 (an internal error), never killed
        event(f"exit {result.exit_code}")  # pytest --hypothesis-show-statistics: how many succeeded
        if result.exit_code == 2:
            event(result.stderr.strip().splitlines()[-1].replace(tmp, "")[:60])
            bad_input(result)  # one 'error: ' line, nothing on stdout, no traceback
            assert listing(folder) == before  # nothing written on failure
            return
        summary = strict_json(result.stdout)
        assert summary["output"] == [str(out)]
        after = listing(folder)
        assert set(after) == set(before) | {"seg.tif"}
        assert all(after[name] == before[name] for name in before)  # the inputs untouched
        seg = tifffile.imread(out)
        assert seg.shape == case["shape"] and np.issubdtype(seg.dtype, np.integer)
        assert set(np.unique(seg).tolist()) <= set(summary["classes"])


# --- what Hypothesis found, kept as plain cases ------------------------------------------------


@pytest.mark.parametrize("planes", [3, 4])
def test_a_volume_of_three_or_four_planes_is_written_as_planes_not_rgb(planes, files, run, train_args):
    """tifffile stores a (3 or 4, Y, X) array as one RGB(A) page unless told otherwise (with a DeprecationWarning)."""
    volume, sparse = files.folder / "thin.tif", files.folder / "thin_sparse.tif"
    tifffile.imwrite(volume, tifffile.imread(files.volume)[:planes], photometric="minisblack")
    tifffile.imwrite(sparse, tifffile.imread(files.sparse)[:planes], photometric="minisblack")
    out = files.folder / "seg.tif"
    result = run("densify", volume, "--slices", sparse, "-o", out, *train_args, "--iterations", "1", "-q")
    assert result.exit_code == 0, result.output
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].shape == (planes,) + files.shape[1:]
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK, tif.pages[0].photometric
        assert len(tif.pages) == planes


@pytest.mark.parametrize(
    "patch",
    [
        "8,8,8",
        "16,8,8",
    ],
)
def test_a_patch_whose_deepest_level_is_one_voxel_with_batch_size_1(patch, files, run, train_args, bad_input, listing):
    """8,8,8 pooled three times is 1x1x1: with one patch per step the batch norm there has one value per channel."""
    out = files.folder / "seg.tif"
    before = listing(files.folder)
    result = run(
        "densify",
        files.volume,
        "--slices",
        files.sparse,
        "-o",
        out,
        *train_args,
        "--patch",
        patch,
        "--batch-size",
        "1",
        "--iterations",
        "2",
    )
    assert result.exit_code in (0, 2), result.output  # never an internal error
    if result.exit_code == 2:
        line = bad_input(result, alone=True)
        assert "--patch" in line or "--batch-size" in line, line
        assert listing(files.folder) == before
    else:
        assert tifffile.imread(out).shape == files.shape
