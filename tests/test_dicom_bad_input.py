"""Bad DICOM input gives a clear DicomError (or a counted skip), never a wrong image.

Every case is built in tmp_path from copies of real files of ../shared/data.
"""

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLSLossless

from tmstarget.errors import DicomError
from tmstarget.ingest.dicom.series import convert, find_series, load_series

FUNC = "pydecnef-sub1/dicom/func-run1"
GE = "dcm-qa-other/ge_epirt_singleframe/dicom"
MOSAIC_QA = "dcm-qa-mosaic/ax_asc_35sl/dicom"


def _copy(shared_data, relative, tmp_path, names=None, count=None):
    source = sorted((shared_data / relative).iterdir())
    if count is not None:
        source = source[:count]
    if names is not None:
        source = [source[i] for i in names]
    folder = tmp_path / "dicom"
    folder.mkdir(exist_ok=True)
    for path in source:
        shutil.copy(path, folder / path.name)
    return folder, [folder / p.name for p in source]


def test_truncated_pixel_data_names_the_file(shared_data, tmp_path):
    folder, files = _copy(shared_data, FUNC, tmp_path, count=5)
    size = files[2].stat().st_size
    with open(files[2], "r+b") as handle:
        handle.truncate(size - 1000)
    with pytest.raises(DicomError, match="truncated pixel data") as info:
        load_series(folder)
    assert files[2].name in str(info.value)
    assert "truncated" in find_series(folder)[0].problem


def test_truncated_header_is_an_error(shared_data, tmp_path):
    folder, files = _copy(shared_data, FUNC, tmp_path, count=4)
    with open(files[1], "r+b") as handle:
        handle.truncate(3000)
    with pytest.raises(DicomError) as info:
        load_series(folder)
    assert files[1].name in str(info.value)


def test_missing_volume_names_the_gap(shared_data, tmp_path):
    folder, _ = _copy(shared_data, FUNC, tmp_path, names=[0, 1, 2, 4, 5])
    with pytest.raises(DicomError, match="missing volume.*AcquisitionNumber jumps from 3 to 5") as info:
        load_series(folder)
    assert info.value.volume == 3


def test_missing_slice_in_one_slice_per_file_series(shared_data, tmp_path):
    folder, files = _copy(shared_data, GE, tmp_path)
    files[10].unlink()
    with pytest.raises(DicomError, match="missing slice"):
        load_series(folder)


def test_non_dicom_files_are_skipped_and_counted(shared_data, tmp_path):
    folder, _ = _copy(shared_data, MOSAIC_QA, tmp_path)
    (folder / "notes.txt").write_text("scanner notes, not DICOM\n")
    (folder / "empty.dcm").write_bytes(b"")
    series = find_series(folder)
    assert series.n_skipped_non_dicom == 2
    assert len(series) == 1 and series[0].n_volumes == 2
    image, _ = load_series(folder)
    reference, _ = load_series(shared_data / MOSAIC_QA)
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), np.asanyarray(reference.dataobj))


def test_several_series_are_listed_unless_one_is_picked(shared_data, tmp_path):
    folder, _ = _copy(shared_data, FUNC, tmp_path, count=3)
    _copy(shared_data, MOSAIC_QA, tmp_path)
    with pytest.raises(DicomError, match="2 series found") as info:
        load_series(folder)
    message = str(info.value)
    assert "series 5 'PERCEPTION': 3 volume(s)" in message
    assert "series 6 'ax_asc_35sl': 2 volume(s)" in message
    image, sidecar = load_series(folder, series=6)
    assert image.shape == (64, 64, 35, 2) and sidecar["SeriesNumber"] == 6
    with pytest.raises(DicomError, match="series 99 not found"):
        load_series(folder, series=99)


def test_orientation_change_in_one_volume(shared_data, tmp_path):
    """One volume rotated 1 degree in plane (a re-planned slab): refused, naming the file."""
    folder, files = _copy(shared_data, FUNC, tmp_path, count=4)
    ds = pydicom.dcmread(files[2])
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
    angle = np.deg2rad(1.0)  # in-plane rotation: the slice normal (and CSA normal) stay valid
    row = np.cos(angle) * orientation[:3] + np.sin(angle) * orientation[3:]
    col = -np.sin(angle) * orientation[:3] + np.cos(angle) * orientation[3:]
    ds.ImageOrientationPatient = [round(float(v), 6) for v in np.concatenate([row, col])]
    ds.save_as(files[2])
    with pytest.raises(DicomError, match="geometry changes between volumes.*ImageOrientationPatient") as info:
        load_series(folder)
    assert files[2].name in str(info.value)


def test_position_change_in_one_volume(shared_data, tmp_path):
    folder, files = _copy(shared_data, FUNC, tmp_path, count=4)
    ds = pydicom.dcmread(files[1])
    ds.ImagePositionPatient = [float(v) + 2.0 for v in ds.ImagePositionPatient]
    ds.save_as(files[1])
    with pytest.raises(DicomError, match="geometry changes between volumes") as info:
        load_series(folder)
    assert files[1].name in str(info.value)


def test_compressed_transfer_syntax_without_decoder(shared_data, tmp_path):
    folder, files = _copy(shared_data, GE, tmp_path, names=[0])
    ds = pydicom.dcmread(files[0])
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7not a real JPEG-LS stream\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(files[0], enforce_file_format=True)
    with pytest.raises(DicomError, match="cannot decode pixel data in transfer syntax 'JPEG-LS Lossless"):
        load_series(folder)


def test_failed_convert_writes_nothing(shared_data, tmp_path):
    folder, _ = _copy(shared_data, FUNC, tmp_path, names=[0, 2])
    out = tmp_path / "out"
    with pytest.raises(DicomError, match="missing volume"):
        convert(folder, out, "01")
    assert not out.exists() or not any(out.iterdir())


def test_orientation_inconsistent_with_csa_normal(shared_data, tmp_path):
    folder, files = _copy(shared_data, FUNC, tmp_path, count=3)
    ds = pydicom.dcmread(files[1])
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]  # coronal, CSA normal still axial
    ds.save_as(files[1])
    with pytest.raises(DicomError, match="SliceNormalVector.*not normal to the image plane") as info:
        load_series(folder)
    assert files[1].name in str(info.value)
