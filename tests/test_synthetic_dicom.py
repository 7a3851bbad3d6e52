"""Synthetic DICOM writer checked against dcm2niix, nibabel reorientation and pydicom."""

import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

from tmstarget.errors import InputError, OrientationError
from tmstarget.ingest.dicom import load_series
from tmstarget.synthetic_dicom import rescale_tolerance, write_dicom_series

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
