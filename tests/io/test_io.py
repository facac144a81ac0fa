"""Tests for sparseseg.io: TIFF and NIfTI volumes, checks on inputs and outputs, atomic writes."""

import os
import stat

import nibabel as nib
import numpy as np
import pytest
import tifffile

from sparseseg import io
from sparseseg.errors import InputError

SHAPE = (5, 6, 7)  # distinct sizes, so that a transposed axis shows


def _ramp(dtype=np.uint16, shape=SHAPE):
    return np.arange(np.prod(shape)).reshape(shape).astype(dtype)


def _reference(spacing):
    return io.Volume(np.zeros(SHAPE), spacing, None)


# --- TIFF -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_tiff_round_trip_keeps_data_and_spacing(tmp_path, dtype):
    data = _ramp(dtype) % 200
    path = io.write_volume(tmp_path / "a.tif", data, reference=_reference((2.0, 0.5, 0.5)))
    volume = io.read_volume(path)
    assert volume.data.dtype == data.dtype
    np.testing.assert_array_equal(volume.data, data)
    assert volume.spacing == pytest.approx((2.0, 0.5, 0.5))
    assert volume.path == path and volume.nifti is None


def test_tiff_round_trip_keeps_distinct_y_and_x_spacing(tmp_path):
    path = io.write_volume(tmp_path / "a.tif", _ramp(), reference=_reference((2.0, 0.5, 0.25)))
    assert io.read_volume(path).spacing == pytest.approx((2.0, 0.5, 0.25))


def test_tiff_spacing_from_imagej_metadata(tmp_path):
    path = tmp_path / "imagej.tif"
    # tifffile: resolution = (X, Y) pixels per unit; ImageJ keeps the z step as 'spacing'
    tifffile.imwrite(
        path, _ramp(), imagej=True, resolution=(1 / 0.25, 1 / 0.5), metadata={"spacing": 3.0, "axes": "ZYX"}
    )
    volume = io.read_volume(path)
    assert volume.spacing == pytest.approx((3.0, 0.5, 0.25))


def test_tiff_unit_round_trip(tmp_path):
    reference = io.Volume(np.zeros(SHAPE), (2.0, 0.5, 0.25), None, None, "nm")
    path = io.write_volume(tmp_path / "a.tif", _ramp(), reference=reference)
    with tifffile.TiffFile(path) as tif:
        assert tif.imagej_metadata["unit"] == "nm"
    assert io.read_volume(path).unit == "nm"
    assert (
        io.read_volume(io.write_volume(tmp_path / "b.tif", _ramp(), reference=_reference((2.0, 0.5, 0.25)))).unit
        == "um"
    )


def test_tiff_unit_from_imagej_metadata(tmp_path):
    path = tmp_path / "imagej.tif"
    tifffile.imwrite(path, _ramp(), imagej=True, resolution=(4.0, 2.0), metadata={"spacing": 3.0, "unit": "micron"})
    assert io.read_volume(path).unit == "um"


def test_tiff_without_calibration_has_no_spacing(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, _ramp())
    volume = io.read_volume(path)
    assert volume.spacing is None
    np.testing.assert_array_equal(volume.data, _ramp())


def test_tiff_written_without_reference(tmp_path):
    path = io.write_volume(tmp_path / "a.tiff", _ramp())
    volume = io.read_volume(path)
    np.testing.assert_array_equal(volume.data, _ramp())
    assert volume.spacing is None


def test_4d_tiff_channels_first(tmp_path):
    data = np.random.default_rng(0).random((2,) + SHAPE, dtype=np.float32)
    path = io.write_volume(tmp_path / "c.tif", data)
    volume = io.read_volume(path)
    assert volume.data.shape == (2,) + SHAPE
    np.testing.assert_array_equal(volume.data, data)


def test_4d_imagej_hyperstack_channel_axis_moves_first(tmp_path):
    data = np.random.default_rng(0).random((2,) + SHAPE, dtype=np.float32)
    path = tmp_path / "hyperstack.tif"
    tifffile.imwrite(path, np.ascontiguousarray(data.transpose(1, 0, 2, 3)), imagej=True, metadata={"axes": "ZCYX"})
    volume = io.read_volume(path)
    np.testing.assert_array_equal(volume.data, data)


def test_4d_tiff_without_axes_and_no_small_axis_is_refused(tmp_path):
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.zeros((20, 18, 17, 19), dtype=np.uint8))
    with pytest.raises(InputError, match="channels"):
        io.read_volume(path)


# --- NIfTI ------------------------------------------------------------------------


@pytest.fixture
def nifti_in(tmp_path):
    """A NIfTI file of an (X, Y, Z) = (7, 6, 5) array with a non-trivial affine."""
    xyz = np.random.default_rng(0).random(SHAPE[::-1]).astype(np.float32)
    affine = np.diag([0.25, 0.5, 2.0, 1.0])
    affine[:3, 3] = [10.0, -5.0, 3.0]
    path = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(xyz, affine), str(path))
    return path, xyz, affine


def test_nifti_is_read_as_zyx(nifti_in):
    path, xyz, _ = nifti_in
    volume = io.read_volume(path)
    assert volume.data.shape == SHAPE
    np.testing.assert_array_equal(volume.data, xyz.transpose(2, 1, 0))
    assert volume.data[1, 2, 3] == xyz[3, 2, 1]
    assert volume.spacing == pytest.approx((2.0, 0.5, 0.25))
    assert volume.nifti is not None


@pytest.mark.parametrize("name", ["out.nii.gz", "out.nii"])
def test_nifti_round_trip_keeps_affine_zooms_and_axes(nifti_in, tmp_path, name):
    path, xyz, affine = nifti_in
    volume = io.read_volume(path)
    labels = (volume.data > 0.5).astype(np.uint8)
    out = io.write_volume(tmp_path / name, labels, reference=volume)
    written = nib.load(str(out))
    np.testing.assert_allclose(written.affine, affine)
    assert written.header.get_zooms()[:3] == pytest.approx((0.25, 0.5, 2.0))
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), (xyz > 0.5).astype(np.uint8))
    assert written.get_data_dtype() == np.uint8
    back = io.read_volume(out)
    np.testing.assert_array_equal(back.data, labels)
    assert back.spacing == pytest.approx(volume.spacing)


def test_nifti_unit_from_its_header(nifti_in, tmp_path):
    path, xyz, affine = nifti_in
    image = nib.load(str(path))
    image.header.set_xyzt_units(xyz="micron")
    nib.save(image, str(tmp_path / "um.nii.gz"))
    assert io.read_volume(tmp_path / "um.nii.gz").unit == "um"
    assert io.read_volume(path).unit is None  # nibabel's default: unknown


def test_nifti_written_without_reference(tmp_path):
    data = _ramp(np.int16)
    out = io.write_volume(tmp_path / "plain.nii.gz", data)
    np.testing.assert_array_equal(io.read_volume(out).data, data)
    np.testing.assert_array_equal(nib.load(str(out)).affine, np.eye(4))


def test_4d_nifti_channels(tmp_path):
    xyzc = np.random.default_rng(0).random(SHAPE[::-1] + (2,)).astype(np.float32)
    path = tmp_path / "c.nii.gz"
    nib.save(nib.Nifti1Image(xyzc, np.eye(4)), str(path))
    volume = io.read_volume(path)
    np.testing.assert_array_equal(volume.data, xyzc.transpose(3, 2, 1, 0))
    out = io.write_volume(tmp_path / "c_out.nii.gz", volume.data, reference=volume)
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(out)).dataobj), xyzc)


# --- reading: what is refused -------------------------------------------------------


def test_read_image_stacks_channels(tmp_path):
    a, b = _ramp(np.uint8) % 50, (_ramp(np.float32) / 3)
    tifffile.imwrite(tmp_path / "a.tif", a)
    tifffile.imwrite(tmp_path / "b.tif", b)
    image = io.read_image([tmp_path / "a.tif", tmp_path / "b.tif"])
    assert image.data.shape == (2,) + SHAPE and image.data.dtype == np.float32
    np.testing.assert_array_equal(image.data[0], a)
    np.testing.assert_array_equal(image.data[1], b)
    assert image.path == tmp_path / "a.tif"


def test_read_image_of_one_file_adds_a_channel_axis(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _ramp())
    assert io.read_image([tmp_path / "a.tif"]).data.shape == (1,) + SHAPE


def _write(tmp_path, name, data):
    path = tmp_path / name
    if name.endswith((".nii", ".nii.gz")):
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    else:
        tifffile.imwrite(path, data)
    return path


@pytest.mark.parametrize(
    "second, message",
    [
        (np.zeros((5, 6, 8), np.float32), "differs"),
        (np.zeros((5, 7, 6), np.float32), "differs"),
        (np.where(np.arange(210).reshape(SHAPE) == 7, np.nan, 0).astype(np.float32), "NaN or Inf"),
        (np.where(np.arange(210).reshape(SHAPE) == 7, np.inf, 0).astype(np.float32), "NaN or Inf"),
        (np.where(np.arange(210).reshape(SHAPE) == 7, -np.inf, 0).astype(np.float32), "NaN or Inf"),
        (np.zeros((6, 7), np.float32), "3D"),
    ],
    ids=["shape-x", "shape-yx", "nan", "inf", "-inf", "2d"],
)
def test_read_image_refuses(tmp_path, second, message):
    first = _write(tmp_path, "first.tif", np.zeros(SHAPE, np.float32))
    bad = _write(tmp_path, "second.tif", second)
    with pytest.raises(InputError, match=message) as info:
        io.read_image([first, bad])
    assert "second.tif" in str(info.value)


def test_read_image_refuses_no_input():
    with pytest.raises(InputError):
        io.read_image([])


@pytest.mark.parametrize("name", ["volume.png", "volume.npy", "volume", "volume.nii.zip"])
def test_unsupported_suffix(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"not a volume")
    with pytest.raises(InputError, match="unsupported file type") as info:
        io.read_volume(path)
    assert name in str(info.value)


@pytest.mark.parametrize("name", ["missing.tif", "missing.nii.gz"])
def test_missing_file(tmp_path, name):
    with pytest.raises(InputError, match="no such file") as info:
        io.read_volume(tmp_path / name)
    assert name in str(info.value)


@pytest.mark.parametrize("name", ["corrupt.tif", "corrupt.nii.gz", "corrupt.nii"])
def test_corrupt_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match="cannot read") as info:
        io.read_volume(path)
    assert name in str(info.value)


def test_read_labels_refuses_4d(tmp_path):
    path = _write(tmp_path, "labels.tif", np.zeros((2,) + SHAPE, np.uint8))
    with pytest.raises(InputError, match="3D"):
        io.read_labels(path)


def test_directory_is_not_a_file(tmp_path):
    (tmp_path / "folder.tif").mkdir()
    with pytest.raises(InputError, match="is a folder, not a file"):
        io.read_volume(tmp_path / "folder.tif")


# --- writing -------------------------------------------------------------------------


def test_check_output_refuses_an_existing_file(tmp_path):
    path = tmp_path / "out.tif"
    path.write_bytes(b"old")
    with pytest.raises(InputError, match="--overwrite"):
        io.check_output(path)
    assert io.check_output(path, overwrite=True) == path


def test_write_volume_does_not_replace_without_overwrite(tmp_path):
    path = tmp_path / "out.tif"
    path.write_bytes(b"old")
    with pytest.raises(InputError, match="exists"):
        io.write_volume(path, _ramp())
    assert path.read_bytes() == b"old"
    io.write_volume(path, _ramp(), overwrite=True)
    np.testing.assert_array_equal(io.read_volume(path).data, _ramp())


@pytest.mark.parametrize(
    "name, message", [("nowhere/out.tif", "does not exist"), ("out.png", "unsupported output type")]
)
def test_check_output_refuses(tmp_path, name, message):
    with pytest.raises(InputError, match=message) as info:
        io.check_output(tmp_path / name)
    assert name.split("/")[-1] in str(info.value)


@pytest.mark.parametrize("name", ["out.tif", "OUT.TIFF", "out.nii", "out.nii.gz"])
def test_atomic_write_leaves_only_the_file(tmp_path, name):
    io.write_volume(tmp_path / name, _ramp(np.uint8))
    assert sorted(os.listdir(tmp_path)) == [name]


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(KeyError):  # tifffile knows no TIFF type for Python objects
        io.write_volume(tmp_path / "out.tif", np.empty(SHAPE, dtype=object))
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.tif"
    path.write_bytes(b"old")
    with pytest.raises(KeyError):
        io.write_volume(path, np.empty(SHAPE, dtype=object), overwrite=True)
    assert os.listdir(tmp_path) == ["out.tif"] and path.read_bytes() == b"old"


def test_written_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = io.write_volume(tmp_path / "out.tif", _ramp(np.uint8))
        plain = tmp_path / "plain.bin"
        plain.write_bytes(b"")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644


def test_write_png(tmp_path):
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 255, (6, 9, 3), dtype=np.uint8)
    path = io.write_png(tmp_path / "p.png", rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), rgb)
    with pytest.raises(InputError, match="unsupported output type"):
        io.write_png(tmp_path / "p.tif", rgb)


def test_json_round_trip_and_errors(tmp_path):
    path = io.write_json(tmp_path / "a.json", {"x": [1, 2], "y": "z"})
    assert io.read_json(path) == {"x": [1, 2], "y": "z"}
    with pytest.raises(InputError, match="no such file"):
        io.read_json(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InputError, match="cannot read JSON"):
        io.read_json(tmp_path / "broken.json")


def test_suffix_of():
    assert io.suffix_of("a/b/Seg.NII.GZ") == ".nii.gz"
    assert io.suffix_of("x.tiff") == ".tiff"
    with pytest.raises(InputError):
        io.suffix_of("x.gz")


def test_an_opened_source_says_where_its_volumes_lie(tmp_path):
    for name in ("a.tif", "b.tif"):
        io.write_volume(tmp_path / name, np.zeros((2, 4, 4), np.uint8))
    with io.open_source(tmp_path / "a.tif") as one:
        assert one.locations == (io.locate(tmp_path / "a.tif"),)
    with io.open_source([tmp_path / "a.tif", tmp_path / "b.tif"]) as both:
        assert both.locations == (io.locate(tmp_path / "a.tif"), io.locate(tmp_path / "b.tif"))
