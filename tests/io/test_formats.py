"""Tests for the chunked formats and the block path of sparseseg.io: Zarr, OME-Zarr, HDF5, lazy TIFF and NIfTI.

Every format sparseseg writes is read back with its own library's reader (zarr, ome-zarr,
h5py, tifffile's ImageJ metadata) and compared; every source reads blocks equal to the whole
array; outputs stay invisible until they are finished; labels written into an OME-Zarr image
leave the image's own files byte-identical.
"""

import hashlib
import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import tifffile
import zarr

from sparseseg import io
from sparseseg.commands import synthetic
from sparseseg.errors import InputError
from sparseseg.io import paths
from sparseseg.io.blocks import plan_blocks

SHAPE = (6, 70, 52)  # z, y, x: distinct sizes, y and x past 64 so that an OME-Zarr output has two levels
SPACING = (2.0, 0.5, 0.25)


@pytest.fixture(scope="module")
def data():
    """(image float32, labels uint8) of SHAPE: synthetic blobs, deterministic."""
    image, labels = synthetic.blobs(SHAPE, n_blobs=6, seed=3)
    return image, labels


@pytest.fixture(scope="module")
def ome():
    """ome-zarr's writer, reader and formats (its writer warns about its own deprecations while imported)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr import format, reader, writer
        from ome_zarr import io as ome_io
    return format, ome_io, reader, writer


def _reference(spacing=SPACING, unit="um"):
    return io.Volume(np.zeros(SHAPE), spacing, None, None, unit)


def _blocks(shape, block=(4, 32, 24)):
    return plan_blocks(shape, block)


def _read_in_blocks(source):
    out = np.zeros(source.shape, np.float32)
    for zyx in _blocks(source.shape[1:], (4, 33, 20)):
        out[(slice(None),) + zyx] = source.read(zyx)
    return out


def _write_in_blocks(sink, array):
    for zyx in _blocks(array.shape[-3:]):
        sink.write(zyx, array[(slice(None),) * (array.ndim - 3) + zyx])
    return sink.finish()


def _digest(folder, skip=None):
    """Every file under ``folder`` (but those under ``skip``) with the hash of its bytes."""
    found = {}
    for root, _dirs, files in os.walk(folder):
        if skip is not None and os.path.abspath(root).startswith(os.path.abspath(skip)):
            continue
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


def _visible(folder):
    return sorted(p for p in os.listdir(folder) if not p.startswith("."))


# --- sources: every one reads blocks equal to the whole --------------------------------------------


@pytest.mark.parametrize(
    "how, mode",
    [
        (dict(), "memmap"),
        (dict(compression="zlib"), "pages"),
        (dict(tile=(16, 16), compression="zlib"), "zarr"),
    ],
)
def test_tiff_source_reads_lazily_and_blocks_equal_the_whole(tmp_path, data, how, mode):
    image = data[0]
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, image, photometric="minisblack", **how)
    with io.open_source([path]) as source:
        assert source.shape == (1,) + SHAPE and source.dtype == np.float32
        np.testing.assert_array_equal(_read_in_blocks(source), image[None])
        assert source.mode == mode


def test_tiff_source_last_resort_reads_whole(tmp_path, data):
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, data[1], tile=(16, 16), compression="zlib")
    source = io.open_source(path)
    source.mode = "full"  # as where zarr is missing
    np.testing.assert_array_equal(_read_in_blocks(source)[0], data[1])
    assert isinstance(source.array, np.ndarray)


def test_tiff_source_4d_imagej_hyperstack_channels_first(tmp_path, data):
    image = np.stack([data[0], data[0] * 2])
    path = tmp_path / "h.tif"
    tifffile.imwrite(
        path,
        np.ascontiguousarray(image.transpose(1, 0, 2, 3)),
        imagej=True,
        metadata={"axes": "ZCYX"},
        compression="zlib",
    )
    with io.open_source(path) as source:
        assert source.shape == (2,) + SHAPE
        np.testing.assert_array_equal(_read_in_blocks(source), image)


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_nifti_source_reads_blocks_through_the_proxy(tmp_path, data, name):
    affine = np.diag([0.25, 0.5, 2.0, 1.0])
    nib.save(nib.Nifti1Image(data[0].transpose(2, 1, 0), affine), str(tmp_path / name))
    source = io.open_source(tmp_path / name)
    assert source.spacing == pytest.approx(SPACING) and source.nifti is not None
    np.testing.assert_array_equal(_read_in_blocks(source)[0], data[0])
    xyzc = np.stack([data[0], data[0] + 1], -1).transpose(2, 1, 0, 3)
    nib.save(nib.Nifti1Image(xyzc, affine), str(tmp_path / ("c" + name)))
    np.testing.assert_array_equal(_read_in_blocks(io.open_source(tmp_path / ("c" + name))), xyzc.transpose(3, 2, 1, 0))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_plain_zarr_array_and_array_in_a_group(tmp_path, data, zarr_format):
    z = zarr.create_array(
        store=str(tmp_path / "v.zarr"), shape=SHAPE, chunks=(2, 32, 32), dtype="float32", zarr_format=zarr_format
    )
    z[:] = data[0]
    z.attrs["element_size_um"] = list(SPACING)
    source = io.open_source(tmp_path / "v.zarr")
    np.testing.assert_array_equal(_read_in_blocks(source)[0], data[0])
    assert source.spacing == SPACING and source.unit == "um"
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=zarr_format)
    raw = group.create_array("raw/data", shape=SHAPE, chunks=(3, 16, 16), dtype="uint8")
    raw[:] = data[1]
    np.testing.assert_array_equal(io.read_volume(tmp_path / "g.zarr/raw/data").data, data[1])
    with pytest.raises(InputError, match="name an array"):
        io.open_source(tmp_path / "g.zarr")
    with pytest.raises(InputError, match="no array or group"):
        io.open_source(tmp_path / "g.zarr/missing")


def test_zarr_dimension_names_place_the_channel_axis(tmp_path, data):
    zyxc = np.stack([data[0], -data[0]], -1)
    z = zarr.create_array(
        store=str(tmp_path / "c.zarr"),
        shape=zyxc.shape,
        chunks=(3, 32, 32, 2),
        dtype="float32",
        dimension_names=["z", "y", "x", "c"],
    )
    z[:] = zyxc
    source = io.open_source(tmp_path / "c.zarr")
    assert source.shape == (2,) + SHAPE
    np.testing.assert_array_equal(_read_in_blocks(source), np.moveaxis(zyxc, -1, 0))


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_written_by_ome_zarr_is_read_at_level_0_with_axes_and_voxel_size(tmp_path, data, ome, version):
    format, _, _, writer = ome
    tczyx = np.stack([data[0], data[0] * 3])[None]
    fmt = format.FormatV04() if version == "0.4" else format.FormatV05()
    group = zarr.open_group(str(tmp_path / "i.ome.zarr"), mode="w", zarr_format=fmt.zarr_format)
    writer.write_image(
        tczyx,
        group,
        scale_factors=(2,),
        axes="tczyx",
        fmt=fmt,
        scale={"t": 1.0, "c": 1.0, "z": 2.0, "y": 0.5, "x": 0.25},
        axes_units={"z": "micrometer", "y": "micrometer", "x": "micrometer"},
        storage_options={"chunks": (1, 1, 3, 32, 32)},
    )
    source = io.open_source(tmp_path / "i.ome.zarr")
    assert source.format == "ome-zarr" and source.version == version
    assert source.shape == (2,) + SHAPE  # the t axis of one point is dropped, c is the channel axis
    assert source.spacing == SPACING and source.unit == "um"
    np.testing.assert_array_equal(_read_in_blocks(source), tczyx[0])


def test_ome_zarr_time_series_is_refused(tmp_path, data, ome):
    format, _, _, writer = ome
    group = zarr.open_group(str(tmp_path / "t.ome.zarr"), mode="w", zarr_format=2)
    writer.write_image(
        np.stack([data[1]] * 2),
        group,
        scale_factors=(),
        axes="tzyx",
        fmt=format.FormatV04(),
        scale={"t": 1.0, "z": 1.0, "y": 1.0, "x": 1.0},
    )
    with pytest.raises(InputError, match="2 points"):
        io.open_source(tmp_path / "t.ome.zarr")


def test_hdf5_dataset_with_and_without_its_path(tmp_path, data):
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("volumes/raw", data=data[0], chunks=(2, 32, 32))
        f["volumes/raw"].attrs["element_size_um"] = SPACING
    source = io.open_source(f"{path}:/volumes/raw")
    np.testing.assert_array_equal(_read_in_blocks(source)[0], data[0])
    assert source.spacing == SPACING and source.unit == "um"
    assert source.path == Path(f"{path}:/volumes/raw")
    source.close()  # HDF5 will not open a file for writing while it is open for reading
    np.testing.assert_array_equal(io.read_volume(path).data, data[0])  # the file's only dataset
    with h5py.File(path, "a") as f:
        f["other"] = np.zeros(3)
    with pytest.raises(InputError, match="name the dataset") as info:
        io.read_volume(path)
    assert "/volumes/raw" in str(info.value)
    with pytest.raises(InputError, match="no dataset /nope"):
        io.open_source(f"{path}:/nope")
    with pytest.raises(InputError, match="is a group"):
        io.open_source(f"{path}:/volumes")


def test_several_paths_are_channels_of_one_source(tmp_path, data):
    tifffile.imwrite(tmp_path / "a.tif", data[0])
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f["b"] = data[1]
    source = io.open_source([tmp_path / "a.tif", f"{tmp_path / 'b.h5'}:/b"])
    assert source.shape == (2,) + SHAPE and source.path == tmp_path / "a.tif"
    np.testing.assert_array_equal(_read_in_blocks(source), np.stack([data[0], data[1]]))
    tifffile.imwrite(tmp_path / "small.tif", data[0][:, :10])
    with pytest.raises(InputError, match="differs"):
        io.open_source([tmp_path / "a.tif", tmp_path / "small.tif"])


def test_source_refuses_nan_in_the_block_it_reads(tmp_path, data):
    image = data[0].copy()
    image[5, 60, 40] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", image)
    source = io.open_source(tmp_path / "nan.tif")
    source.read((slice(0, 4), slice(0, 70), slice(0, 52)))  # no NaN there
    with pytest.raises(InputError, match="NaN"):
        source.read((slice(4, 6), slice(0, 70), slice(0, 52)))


def test_sources_pickle_and_reopen(tmp_path, data):
    io.write_volume(tmp_path / "v.zarr", data[0])
    tifffile.imwrite(tmp_path / "v.tif", data[0])
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["v"] = data[0]
    for name in ["v.zarr", "v.tif", "v.h5:/v"]:
        source = io.open_source(f"{tmp_path}/{name}")
        source.read((slice(0, 1),) * 3)
        copy = pickle.loads(pickle.dumps(source))
        np.testing.assert_array_equal(copy.read((slice(1, 3), slice(5, 9), slice(0, 52))), data[0][None, 1:3, 5:9])
        source.close()
        copy.close()


# --- TIFF: ImageJ hyperstacks that Fiji calibrates ------------------------------------------------


def test_written_tiff_is_an_imagej_hyperstack_with_voxel_size_and_unit(tmp_path, data):
    for name, write in [
        ("whole.tif", lambda p: io.write_volume(p, data[1], reference=_reference())),
        ("blocks.tif", lambda p: _write_in_blocks(io.create_sink(p, SHAPE, np.uint8, reference=_reference()), data[1])),
    ]:
        path = write(tmp_path / name)
        with tifffile.TiffFile(path) as tif:
            assert tif.is_imagej
            meta = tif.imagej_metadata
            assert meta["spacing"] == 2.0 and meta["unit"] == "um" and meta["slices"] == SHAPE[0]
            page = tif.pages[0]
            assert page.tags["XResolution"].value == (4, 1) and page.tags["YResolution"].value == (2, 1)
            np.testing.assert_array_equal(tif.asarray(), data[1])
        back = io.read_volume(path)
        assert back.spacing == SPACING and back.unit == "um"


def test_4d_tiff_is_a_zcyx_hyperstack(tmp_path, data):
    probabilities = np.stack([data[1] * 10, data[1] * 20, data[1] * 30]).astype(np.uint8)
    sink = io.create_sink(tmp_path / "p.tif", probabilities.shape, np.uint8, spacing=SPACING)
    path = _write_in_blocks(sink, probabilities)
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == "ZCYX" and tif.imagej_metadata["channels"] == 3
        np.testing.assert_array_equal(tif.asarray(), probabilities.transpose(1, 0, 2, 3))
    np.testing.assert_array_equal(io.read_volume(path).data, probabilities)


def test_large_tiff_is_bigtiff_and_keeps_its_voxel_size(tmp_path, data, monkeypatch):
    monkeypatch.setattr(io.tiff, "BIGTIFF_BYTES", 1000)  # where _tiff_layout reads it
    for name in ["big.tif", "bigsink.tif"]:
        if name == "big.tif":
            path = io.write_volume(tmp_path / name, data[1], reference=_reference())
        else:
            path = _write_in_blocks(io.create_sink(tmp_path / name, SHAPE, np.uint8, reference=_reference()), data[1])
        with tifffile.TiffFile(path) as tif:
            assert tif.is_bigtiff and not tif.is_imagej
            assert tif.shaped_metadata[0]["spacing"] == 2.0
        assert io.read_volume(path).spacing == SPACING
        np.testing.assert_array_equal(io.read_volume(path).data, data[1])


def test_tiff_of_a_dtype_imagej_lacks_is_a_plain_tiff(tmp_path, data):
    path = io.write_volume(tmp_path / "i32.tif", data[1].astype(np.int32), reference=_reference())
    with tifffile.TiffFile(path) as tif:
        assert not tif.is_imagej and tif.shaped_metadata[0]["unit"] == "um"
    assert io.read_volume(path).spacing == SPACING


def test_tiff_sink_is_invisible_until_finished_and_abort_keeps_the_earlier_file(tmp_path, data):
    out = tmp_path / "seg.tif"
    out.write_bytes(b"earlier")
    sink = io.create_sink(out, SHAPE, np.uint8, overwrite=True)
    sink.write((slice(0, 2), slice(0, 70), slice(0, 52)), data[1][:2])
    assert out.read_bytes() == b"earlier" and len(os.listdir(tmp_path)) == 2  # the file and a hidden temporary
    sink.abort()
    assert os.listdir(tmp_path) == ["seg.tif"] and out.read_bytes() == b"earlier"


# --- Zarr -------------------------------------------------------------------------------------


def test_zarr_output_read_by_zarr(tmp_path, data):
    sink = io.create_sink(tmp_path / "seg.zarr", SHAPE, np.uint8, reference=_reference(), chunks=(4, 32, 24))
    assert sink.chunks == (4, 32, 24)
    for zyx in _blocks(SHAPE):
        sink.write(zyx, data[1][zyx])
        assert _visible(tmp_path) == []  # invisible until finished
    path = sink.finish()
    array = zarr.open_array(str(path), mode="r")
    np.testing.assert_array_equal(array[:], data[1])
    assert array.chunks == (4, 32, 24) and array.compressors  # compressed
    assert array.attrs["spacing"] == list(SPACING) and array.metadata.dimension_names == ("z", "y", "x")
    assert os.listdir(tmp_path) == ["seg.zarr"]
    volume = io.read_volume(path)
    np.testing.assert_array_equal(volume.data, data[1])
    assert volume.spacing == SPACING


def test_zarr_4d_output_and_an_array_in_an_existing_group(tmp_path, data):
    probabilities = np.stack([data[0], -data[0]])
    path = io.write_volume(tmp_path / "p.zarr", probabilities)
    np.testing.assert_array_equal(zarr.open_array(str(path), mode="r")[:], probabilities)
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=2).create_array("raw", shape=(2,), dtype="f4")
    inner = io.write_volume(tmp_path / "g.zarr/seg", data[1])
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="r")
    np.testing.assert_array_equal(group["seg"][:], data[1])
    assert group["seg"].metadata.zarr_format == 2 and sorted(os.listdir(tmp_path / "g.zarr"))[-2:] == ["raw", "seg"]
    np.testing.assert_array_equal(io.read_volume(inner).data, data[1])


def test_zarr_abort_and_overwrite(tmp_path, data):
    sink = io.create_sink(tmp_path / "seg.zarr", SHAPE, np.uint8)
    sink.write((slice(0, 2), slice(0, 70), slice(0, 52)), data[1][:2])
    sink.abort()
    assert os.listdir(tmp_path) == []
    io.write_volume(tmp_path / "seg.zarr", data[1])
    with pytest.raises(InputError, match="exists already"):
        io.create_sink(tmp_path / "seg.zarr", SHAPE, np.uint8)
    with io.create_sink(tmp_path / "seg.zarr", SHAPE, np.uint8, overwrite=True) as sink:
        sink.write((slice(0, 6), slice(0, 70), slice(0, 52)), np.zeros(SHAPE, np.uint8))
    # left without finish(): aborted, the earlier output stays
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "seg.zarr"), mode="r")[:], data[1])
    io.write_volume(tmp_path / "seg.zarr", 1 - data[1] % 2, overwrite=True)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "seg.zarr"), mode="r")[:], 1 - data[1] % 2)
    assert os.listdir(tmp_path) == ["seg.zarr"]


def test_zarr_sink_pickles_for_workers(tmp_path, data):
    sink = io.create_sink(tmp_path / "seg.zarr", SHAPE, np.uint8, chunks=(3, 70, 52))
    halves = [pickle.loads(pickle.dumps(sink)) for _ in range(2)]  # as two workers would get it
    halves[0].write((slice(0, 3), slice(0, 70), slice(0, 52)), data[1][:3])
    halves[1].write((slice(3, 6), slice(0, 70), slice(0, 52)), data[1][3:])
    np.testing.assert_array_equal(zarr.open_array(str(sink.finish()), mode="r")[:], data[1])


# --- OME-Zarr ---------------------------------------------------------------------------------


def test_new_ome_zarr_is_a_valid_ngff_image_with_a_nearest_pyramid(tmp_path, data, ome):
    _, ome_io, reader, _ = ome
    sink = io.create_sink(tmp_path / "seg.ome.zarr", SHAPE, np.uint8, reference=_reference())
    path = _write_in_blocks(sink, data[1])
    attrs = json.loads((path / ".zattrs").read_text())
    multiscale = attrs["multiscales"][0]
    assert multiscale["version"] == "0.4"
    assert [a["name"] for a in multiscale["axes"]] == ["z", "y", "x"]
    assert {a["unit"] for a in multiscale["axes"]} == {"micrometer"}
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
    assert scales == [[2.0, 0.5, 0.25], [2.0, 1.0, 0.5]]  # z is already coarser than y: only y and x halve
    node = next(iter(reader.Reader(ome_io.parse_url(str(path)))()))
    levels = [np.asarray(level) for level in node.data]
    np.testing.assert_array_equal(levels[0], data[1])
    np.testing.assert_array_equal(levels[1], data[1][:, ::2, ::2])  # every other voxel: never interpolated
    assert io.open_source(path).spacing == SPACING


def test_new_ome_zarr_of_probabilities_has_a_channel_axis(tmp_path, data):
    probabilities = np.stack([data[1] * 100, data[1] * 50]).astype(np.uint8)
    path = io.write_volume(tmp_path / "p.ome.zarr", probabilities)
    multiscale = json.loads((path / ".zattrs").read_text())["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["c", "z", "y", "x"]
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 1.0, 1.0, 1.0]
    np.testing.assert_array_equal(zarr.open_array(str(path / "0"), mode="r")[:], probabilities)
    assert zarr.open_array(str(path / "1"), mode="r").shape == (2, 3, 35, 26)  # isotropic: z halves too


@pytest.fixture(params=["0.4", "0.5"])
def image(request, tmp_path, data, ome):
    """An OME-Zarr image written by ome-zarr itself (t, c, z, y, x with a pyramid of three levels)."""
    format, _, _, writer = ome
    fmt = format.FormatV04() if request.param == "0.4" else format.FormatV05()
    path = tmp_path / "image.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    writer.write_image(
        np.stack([data[0], data[0] / 2])[None],
        group,
        scale_factors=(2, 4),
        axes="tczyx",
        fmt=fmt,
        scale={"t": 1.0, "c": 1.0, "z": 2.0, "y": 0.5, "x": 0.25},
        storage_options={"chunks": (1, 1, 3, 32, 32)},
    )
    return path, request.param


def _ome_attrs(folder):
    if (folder / "zarr.json").is_file():
        return json.loads((folder / "zarr.json").read_text())["attributes"]["ome"]
    return json.loads((folder / ".zattrs").read_text())


def test_labels_into_an_image_leave_the_image_untouched_and_are_listed(image, data, ome):
    path, version = image
    _, ome_io, reader, _ = ome
    before = _digest(path)
    source = io.open_source(path)
    sink = io.create_sink(path / "labels" / "seg", SHAPE, np.uint8, reference=source)
    for zyx in _blocks(SHAPE):
        sink.write(zyx, data[1][zyx])
    assert not (path / "labels" / "seg").exists()  # nothing under labels/seg yet
    sink.finish()
    assert _digest(path, skip=path / "labels") == before  # the image's own arrays and metadata: byte-identical
    assert _ome_attrs(path / "labels")["labels"] == ["seg"]
    label = _ome_attrs(path / "labels" / "seg")
    assert label["image-label"]["version"] == version and label["image-label"]["source"] == {"image": "../../"}
    assert [a["name"] for a in label["multiscales"][0]["axes"]] == ["t", "c", "z", "y", "x"]
    levels = [
        zarr.open_array(str(path / "labels" / "seg" / d["path"]), mode="r") for d in label["multiscales"][0]["datasets"]
    ]
    image_levels = [
        zarr.open_array(str(path / d["path"]), mode="r") for d in _ome_attrs(path)["multiscales"][0]["datasets"]
    ]
    assert [a.shape[2:] for a in levels] == [a.shape[2:] for a in image_levels]  # the labels lie on every level
    np.testing.assert_array_equal(levels[0][0, 0], data[1])
    np.testing.assert_array_equal(levels[2][0, 0], data[1][:, ::4, ::4][:, :17])  # ome-zarr's levels: 70, 35, 17
    scales = [d["coordinateTransformations"][0]["scale"] for d in label["multiscales"][0]["datasets"]]
    assert scales[2] == [1.0, 1.0, 2.0, 2.0, 1.0]
    np.testing.assert_array_equal(io.read_labels(path / "labels" / "seg").data, data[1])
    # ome-zarr's reader (napari's) finds the labels from the image and reads them as a label image over it
    nodes = [n for n in reader.Reader(ome_io.parse_url(str(path)))() if n.load(reader.Label)]
    assert [n.metadata["name"] for n in nodes] == ["seg"]
    np.testing.assert_array_equal(np.asarray(nodes[0].data[0])[0, 0], data[1])
    # a second labels image joins the list; writing one again replaces it and lists it once
    io.write_volume(path / "labels" / "other", data[1] * 2)
    io.write_volume(path / "labels" / "seg", 1 - data[1] % 2, overwrite=True)
    assert _ome_attrs(path / "labels")["labels"] == ["seg", "other"]
    np.testing.assert_array_equal(io.read_labels(path / "labels" / "seg").data, 1 - data[1] % 2)
    assert _digest(path, skip=path / "labels") == before


def test_aborted_labels_leave_no_labels_group(image, data):
    path, _ = image
    before = _digest(path)
    sink = io.create_sink(path / "labels" / "seg", SHAPE, np.uint8)
    sink.write((slice(0, 2), slice(0, 70), slice(0, 52)), data[1][:2])
    sink.abort()
    assert _digest(path) == before and not (path / "labels").exists()


def test_labels_refused_before_any_work(image, tmp_path, data):
    path, _ = image
    with pytest.raises(InputError, match="do not fit"):
        io.create_sink(path / "labels" / "seg", (6, 70, 51), np.uint8)
    with pytest.raises(InputError, match="integers"):
        io.create_sink(path / "labels" / "seg", SHAPE, np.float32)
    io.write_volume(tmp_path / "plain.zarr", data[1])
    with pytest.raises(InputError, match="not an OME-Zarr image"):
        io.check_output(tmp_path / "plain.zarr" / "labels" / "seg")
    with pytest.raises(InputError, match="does not exist"):
        io.check_output(tmp_path / "missing.ome.zarr" / "labels" / "seg")
    assert not (path / "labels").exists()


# --- HDF5 -------------------------------------------------------------------------------------


def test_hdf5_new_file_read_by_h5py(tmp_path, data):
    sink = io.create_sink(f"{tmp_path}/seg.h5:/results/seg", SHAPE, np.uint8, reference=_reference())
    for zyx in _blocks(SHAPE):
        sink.write(zyx, data[1][zyx])
    assert _visible(tmp_path) == []
    sink.finish()
    assert os.listdir(tmp_path) == ["seg.h5"]
    with h5py.File(tmp_path / "seg.h5", "r") as f:
        dataset = f["results/seg"]
        np.testing.assert_array_equal(dataset[()], data[1])
        assert dataset.compression == "gzip" and dataset.chunks is not None
        assert tuple(dataset.attrs["element_size_um"]) == SPACING
    assert io.read_volume(f"{tmp_path}/seg.h5:/results/seg").spacing == SPACING


def test_hdf5_dataset_added_to_an_existing_file_keeps_the_others(tmp_path, data):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = data[0]
    io.write_volume(f"{path}:/seg", data[1])
    with pytest.raises(InputError, match="exists already"):
        io.write_volume(f"{path}:/seg", data[1])
    with pytest.raises(InputError, match="is a dataset"):
        io.check_output(f"{path}:/raw/inside")
    sink = io.create_sink(f"{path}:/seg", SHAPE, np.uint8, overwrite=True)
    sink.write((slice(0, 6), slice(0, 70), slice(0, 52)), np.zeros(SHAPE, np.uint8))
    sink.abort()  # the earlier dataset stays, the temporary one goes
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["raw", "seg"]
        np.testing.assert_array_equal(f["seg"][()], data[1])
    io.write_volume(f"{path}:/seg", 1 - data[1] % 2, overwrite=True)
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["raw", "seg"]
        np.testing.assert_array_equal(f["raw"][()], data[0])
        np.testing.assert_array_equal(f["seg"][()], 1 - data[1] % 2)
    with pytest.raises(TypeError, match="one process"):
        pickle.dumps(io.create_sink(f"{tmp_path}/x.h5:/seg", SHAPE, np.uint8))


# --- checks before any work -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, message",
    [
        ("nowhere/seg.zarr", "does not exist"),
        ("nowhere/seg.h5:/seg", "does not exist"),
        ("seg.h5", "name the dataset"),
        ("missing.zarr/seg", "does not exist"),
        ("folder.zarr", "not a Zarr array"),
        ("not.h5:/seg", "not an HDF5 file"),
        ("seg.n5", "unsupported output type"),
    ],
)
def test_check_output_refuses_new_forms(tmp_path, name, message):
    (tmp_path / "folder.zarr").mkdir()
    (tmp_path / "not.h5").write_bytes(b"text")
    with pytest.raises(InputError, match=message) as info:
        io.check_output(tmp_path / name, overwrite=True)
    assert len(str(info.value).splitlines()) == 1 and str(tmp_path / name) in str(info.value)


def test_check_output_of_a_png_refuses_a_zarr(tmp_path):
    with pytest.raises(InputError, match="unsupported output type"):
        io.check_output(tmp_path / "x.zarr", suffixes=(".png",))


def test_missing_optional_library_says_what_to_install(tmp_path, monkeypatch, data):
    io.write_volume(tmp_path / "v.zarr", data[1])
    for module in ["zarr", "h5py"]:
        monkeypatch.setitem(sys.modules, module, None)
    for call in [
        lambda: io.read_volume(tmp_path / "v.zarr"),
        lambda: io.check_output(tmp_path / "new.zarr"),
        lambda: io.check_output(f"{tmp_path}/x.h5:/seg"),
        lambda: io.open_source(f"{tmp_path}/x.h5:/seg"),
    ]:
        with pytest.raises(InputError, match=r'pip install "sparseseg\[formats\]"') as info:
            call()
        assert len(str(info.value).splitlines()) == 1


def test_io_imports_without_the_optional_libraries():
    code = (
        "import sys\nfor m in ['torch', 'zarr', 'h5py', 'ome_zarr', 'dask']: sys.modules[m] = None\n"
        "import sparseseg.io, sparseseg.io.paths\nsparseseg.io.check_output('x.tif')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_check_distinct_allows_only_labels_into_an_input_image(tmp_path):
    image = tmp_path / "image.ome.zarr"
    paths.check_distinct([image], [image / "labels" / "seg"])
    paths.check_distinct([image, image / "labels" / "old"], [image / "labels" / "seg", image / "labels" / "other"])
    refused = [
        ([image], [image]),
        ([image], [image / "seg"]),
        ([image], [image / "labels" / "seg" / "0"]),
        ([image / "labels" / "seg"], [image / "labels" / "seg"]),
        ([image / "0"], [image]),
        ([tmp_path / "v.zarr/raw"], [tmp_path / "v.zarr/seg"]),
        ([tmp_path / "v.zarr/raw"], [tmp_path / "v.zarr"]),
        ([f"{tmp_path}/d.h5:/raw"], [f"{tmp_path}/d.h5:/seg"]),
        ([f"{tmp_path}/d.h5:/raw"], [f"{tmp_path}/d.h5:/raw"]),
        ([tmp_path / "v.zarr"], [tmp_path / "v.zarr" / "seg.tif"]),
    ]
    for inputs, outputs in refused:
        with pytest.raises(InputError, match="input") as info:
            paths.check_distinct(inputs, outputs)
        assert len(str(info.value).splitlines()) == 1
        with pytest.raises(InputError, match="input") as located:  # the inputs' locations, as an opened Source gives
            paths.check_distinct([io.locate(p) for p in inputs], outputs)
        assert str(located.value) == str(info.value)
    with pytest.raises(InputError, match="two outputs"):
        paths.check_distinct([], [f"{tmp_path}/o.h5:/seg", f"{tmp_path}/o.h5:/prob"])
    with pytest.raises(InputError, match="two outputs"):
        paths.check_distinct([], [tmp_path / "o.zarr", tmp_path / "o.zarr/x"])
    paths.check_distinct([f"{tmp_path}/d.h5:/raw"], [f"{tmp_path}/e.h5:/seg", tmp_path / "seg.zarr"])
