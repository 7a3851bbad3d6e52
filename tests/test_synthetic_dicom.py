"""Synthetic DICOM writer checked against dcm2niix, nibabel reorientation and pydicom.

The MOSAIC writer's geometry is checked end to end (three readers, a real
scanner file) in test_mosaic_geometry.py; here its headers, CSA values and
tile layout, read with pydicom and nibabel's CSA reader.
"""

import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

from tmstarget.errors import InputError, OrientationError
from tmstarget.ingest.dicom.series import load_series
from tmstarget.testing.dicom import (
    DISTINCTIVE_PATIENT_FIELDS,
    rescale_tolerance,
    write_dicom_series,
    write_mosaic_series,
)

AFFINE_ATOL_MM = 1e-4
SHAPE = (7, 8, 9, 4)  # unequal sides: swapped axes fail


def _rotation(angles_deg):
    x, y, z = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _image(codes, rng, integer=False):
    """Oblique 4-D image stored LAS or RAS (voxel sizes all different)."""
    affine = np.diag([3.0, 3.2, 3.5, 1.0])
    if codes == "LAS":
        affine[0, 0] = -3.0
    affine[:3, 3] = [91.5, -102.25, -48.0]
    turn = np.eye(4)
    turn[:3, :3] = _rotation([6.0, -8.0, 11.0])
    data = rng.normal(500.0, 120.0, SHAPE)
    if integer:
        data = np.round(np.abs(data))
    img = nib.Nifti1Image(data.astype(np.float32), turn @ affine)
    img.header.set_zooms((3.0, 3.2, 3.5, 2.0))
    return img


def _reoriented(img, affine_wanted):
    """Data and affine of ``img`` brought to the voxel axes of ``affine_wanted`` (nibabel)."""
    transform = ornt_transform(io_orientation(img.affine), io_orientation(affine_wanted))
    data = apply_orientation(np.asarray(img.get_fdata()), transform)
    return data, img.affine @ inv_ornt_aff(transform, img.shape[:3])


def _dcm2niix(folder, out):
    import dcm2niix

    binary = Path(dcm2niix.__file__).parent / "dcm2niix"
    out.mkdir()
    result = subprocess.run(
        [str(binary), "-o", str(out), "-f", "ref", "-z", "n", "-b", "n", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return nib.load(out / "ref.nii")


@pytest.mark.parametrize("codes", ["LAS", "RAS"])
def test_load_series_and_dcm2niix_reproduce_the_image(codes, rng, tmp_path):
    img = _image(codes, rng)
    folder = tmp_path / "dicom"
    files = write_dicom_series(img, folder, series_number=3, t_r_s=2.0)
    assert len(files) == SHAPE[2] * SHAPE[3]
    tolerance = rescale_tolerance(img)
    assert 0 < tolerance < 0.02
    expected = img.get_fdata()
    for name, converted in (("ours", load_series(folder)[0]), ("dcm2niix", _dcm2niix(folder, tmp_path / "ref"))):
        assert converted.shape == SHAPE, name
        data, affine = _reoriented(converted, img.affine)
        np.testing.assert_allclose(affine, img.affine, atol=AFFINE_ATOL_MM, err_msg=name)
        np.testing.assert_allclose(data, expected, rtol=0, atol=tolerance, err_msg=name)
        assert converted.header.get_zooms()[3] == pytest.approx(2.0), name
    if codes == "LAS":  # negative determinant: same voxel order as the readers, no reorientation
        ours = load_series(folder)[0]
        np.testing.assert_allclose(ours.affine, img.affine, atol=AFFINE_ATOL_MM)
        np.testing.assert_allclose(ours.get_fdata(), expected, rtol=0, atol=tolerance)


def test_integer_data_are_stored_exactly(rng, tmp_path):
    img = _image("LAS", rng, integer=True)
    write_dicom_series(img, tmp_path)
    assert rescale_tolerance(img) == 0
    ref = _dcm2niix(tmp_path, tmp_path / "ref")
    data, _ = _reoriented(ref, img.affine)
    np.testing.assert_array_equal(data, img.get_fdata())


def test_three_d_image(rng, tmp_path):
    img = _image("LAS", rng)
    img3 = nib.Nifti1Image(img.get_fdata()[..., 0], img.affine)
    files = write_dicom_series(img3, tmp_path)
    assert len(files) == SHAPE[2]
    ds = pydicom.dcmread(files[0])
    assert "RepetitionTime" not in ds
    out, _ = load_series(tmp_path)
    assert out.shape == SHAPE[:3]
    np.testing.assert_allclose(out.get_fdata(), img3.get_fdata(), atol=rescale_tolerance(img3))


def test_header_fields_names_and_order(rng, tmp_path):
    img = _image("RAS", rng)
    times_s = np.array([0.0, 1.0, 0.25, 1.25, 0.5, 1.5, 0.75, 1.75, 0.1])  # interleaved-like
    files = write_dicom_series(
        img, tmp_path, series_number=7, series_description="rest", t_r_s=2.0, slice_times_s=times_s, first_volume=11
    )
    assert [f.name for f in files] == sorted(f.name for f in files)
    assert files[0].name == "IM_0007_000011_0001.dcm"
    assert files[-1].name == "IM_0007_000014_0009.dcm"
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    first = headers[0]
    assert first.SOPClassUID == pydicom.uid.MRImageStorage
    assert float(first.RepetitionTime) == 2000.0
    assert str(first.PatientName) == "DOE^JANE" and first.PatientBirthDate == "19700101"
    assert first.SeriesNumber == 7 and first.SeriesDescription == "rest"
    assert [int(h.AcquisitionNumber) for h in headers[:: SHAPE[2]]] == [11, 12, 13, 14]
    assert [int(h.TemporalPositionIdentifier) for h in headers[:: SHAPE[2]]] == [11, 12, 13, 14]
    assert int(first.ImagesInAcquisition) == SHAPE[2]
    instances = [int(h.InstanceNumber) for h in headers]
    assert instances == list(range(instances[0], instances[0] + len(files)))
    # Files of a volume follow the slice times; AcquisitionTime = volume start + slice time.
    volume = headers[: SHAPE[2]]
    seconds = [float(h.AcquisitionTime[4:]) + 60 * int(h.AcquisitionTime[2:4]) for h in volume]
    np.testing.assert_allclose(np.diff(seconds), np.diff(np.sort(times_s)), atol=1e-6)
    normal = np.cross(np.asarray(first.ImageOrientationPatient[:3], float), first.ImageOrientationPatient[3:])
    positions_mm = [np.asarray(h.ImagePositionPatient, float) @ normal for h in volume]
    order = np.argsort(times_s, kind="stable")
    # RAS storage: the slice axis runs against the DICOM normal (see module docstring).
    np.testing.assert_allclose(np.diff(positions_mm), -3.5 * np.diff(order), atol=1e-6)
    assert len({h.SOPInstanceUID for h in headers}) == len(headers)
    assert len({h.SeriesInstanceUID for h in headers}) == 1


def test_uids_are_deterministic(rng, tmp_path):
    img = _image("LAS", rng)
    uids = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        files = write_dicom_series(img, tmp_path / name, seed=seed)
        uids.append([pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files])
    assert uids[0] == uids[1]
    assert not set(uids[0]) & set(uids[2])


def test_bad_inputs(rng, tmp_path):
    img = _image("LAS", rng)
    sheared = img.affine.copy()
    sheared[0, 1] = 0.5
    with pytest.raises(OrientationError, match="shear"):
        write_dicom_series(nib.Nifti1Image(img.get_fdata(), sheared), tmp_path / "a")
    data = img.get_fdata().copy()  # get_fdata caches: do not spoil img
    data[0, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        write_dicom_series(nib.Nifti1Image(data, img.affine), tmp_path / "b")
    with pytest.raises(InputError, match="slice_times_s"):
        write_dicom_series(img, tmp_path / "c", t_r_s=2.0, slice_times_s=[0.0] * 8 + [2.5])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_patient_fields_are_written_when_asked(rng, tmp_path):
    img = _image("LAS", rng)
    plain = pydicom.dcmread(write_dicom_series(img, tmp_path / "plain")[0], stop_before_pixels=True)
    assert plain.PatientID == "SYNTH0000" and "InstitutionName" not in plain and "AccessionNumber" not in plain
    for writer in (write_dicom_series, write_mosaic_series):
        files = writer(img, tmp_path / writer.__name__, patient_fields=DISTINCTIVE_PATIENT_FIELDS)
        for path in (files[0], files[-1]):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            for keyword, value in DISTINCTIVE_PATIENT_FIELDS.items():
                assert str(ds[keyword].value) == value, (writer.__name__, keyword)
    with pytest.raises(InputError, match="patient_fields"):
        write_mosaic_series(img, tmp_path / "bad", patient_fields={"ImagePositionPatient": "0\\0\\0"})
    with pytest.raises(InputError, match="phase_encoding"):
        write_mosaic_series(img, tmp_path / "bad", phase_encoding="SLICE")
    assert not (tmp_path / "bad").exists()


@pytest.mark.filterwarnings("ignore:The DICOM readers are highly experimental")
def test_mosaic_headers_csa_and_tile_layout(rng, tmp_path):
    """One file per volume; tile k at (k // n, k % n) holds voxel (c, n_j - 1 - r, k); CSA read by nibabel."""
    from nibabel.nicom import csareader
    from nibabel.nicom.dicomwrappers import wrapper_from_data

    affine = np.diag([-2.5, 3.5, 4.0, 1.0])  # LAS, non-square pixels
    affine[:3, 3] = [40.0, -30.0, 12.0]
    turn = np.eye(4)
    turn[:3, :3] = _rotation([10.0, 5.0, -15.0])
    affine = turn @ affine
    n_i, n_j, n_k, n_t = 6, 4, 5, 2  # tiles of 6 columns x 4 rows on a 3 x 3 grid, 4 tiles empty
    data = rng.integers(1, 30000, (n_i, n_j, n_k, n_t)).astype(np.int16)
    times_s = [0.0, 0.8, 0.2, 1.0, 0.4]
    files = write_mosaic_series(nib.Nifti1Image(data, affine), tmp_path, series_number=3, t_r_s=1.2,
                                slice_times_s=times_s, phase_encoding="ROW", phase_encoding_positive=False)
    assert [f.name for f in files] == ["001_000003_000001.dcm", "001_000003_000002.dcm"]
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    for t, path in enumerate(files):
        ds = pydicom.dcmread(path)
        assert list(ds.ImageType)[-1] == "MOSAIC" and ds.Manufacturer == "SIEMENS"
        assert int(ds.AcquisitionNumber) == int(ds.InstanceNumber) == t + 1
        assert ds.InPlanePhaseEncodingDirection == "ROW"
        assert (ds.Rows, ds.Columns) == (3 * n_j, 3 * n_i)
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [3.5, 2.5])
        np.testing.assert_allclose(float(ds.SpacingBetweenSlices), 4.0)
        mosaic = ds.pixel_array
        for k in range(9):
            tile = mosaic[(k // 3) * n_j:(k // 3 + 1) * n_j, (k % 3) * n_i:(k % 3 + 1) * n_i]
            if k >= n_k:
                assert not tile.any()
                continue
            for r in range(n_j):
                for c in range(n_i):
                    assert tile[r, c] == data[c, n_j - 1 - r, k, t]
        csa = csareader.get_csa_header(ds)
        assert csareader.get_n_mosaic(csa) == n_k
        np.testing.assert_allclose(csareader.get_slice_normal(csa), lps[:3, 2] / 4.0, atol=1e-8)
        np.testing.assert_allclose(csa["tags"]["MosaicRefAcqTimes"]["items"], np.multiply(times_s, 1000.0))
        assert csa["tags"]["PhaseEncodingDirectionPositive"]["items"] == [0]
        assert csareader.get_acq_mat_txt(csa) == f"{n_i}*{n_j}"  # ROW: phase lines = columns first
        # nibabel's Siemens convention: the mosaic corner in ImagePositionPatient -> the first tile's first pixel
        wrapper = wrapper_from_data(ds)
        np.testing.assert_allclose(wrapper.image_position, (lps @ [0.0, n_j - 1.0, 0.0, 1.0])[:3], atol=1e-6)
    first, second = (pydicom.dcmread(f, stop_before_pixels=True) for f in files)
    seconds = [float(h.AcquisitionTime[4:]) + 60 * int(h.AcquisitionTime[2:4]) for h in (first, second)]
    assert seconds[1] - seconds[0] == pytest.approx(1.2)


def test_mosaic_float_data_within_rescale_tolerance(rng, tmp_path):
    """Non-integer data go through one RescaleSlope/Intercept in the mosaic too (dcm2niix and load_series)."""
    img = _image("LAS", rng)  # float data, 9 slices: a full 3 x 3 mosaic
    write_mosaic_series(img, tmp_path / "dicom", t_r_s=2.0)
    tolerance = rescale_tolerance(img)
    assert 0 < tolerance < 0.02
    for name, converted in (("ours", load_series(tmp_path / "dicom")[0]),
                            ("dcm2niix", _dcm2niix(tmp_path / "dicom", tmp_path / "ref"))):
        assert converted.shape == SHAPE, name
        np.testing.assert_allclose(converted.affine, img.affine, atol=AFFINE_ATOL_MM, err_msg=name)
        np.testing.assert_allclose(converted.get_fdata(), img.get_fdata(), rtol=0, atol=tolerance, err_msg=name)
