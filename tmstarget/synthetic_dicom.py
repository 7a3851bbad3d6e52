"""Write a NIfTI image as a synthetic one-slice-per-file DICOM MR series.

For tests and demos (real-time replay, privacy checks, converter checks):
`write_dicom_series` turns a 3-D or 4-D nibabel image into classic MR Image
Storage files, one 2-D slice per file, that any DICOM converter reads back
to the same voxels and affine.

Geometry (DICOM patient frame LPS, mm; the image affine is RAS+):

* ``affine_lps = diag(-1, -1, 1, 1) @ affine_ras``;
* the DICOM row cosine is the image i axis, the column cosine is minus the
  j axis, so pixel ``(row r, column c)`` of slice k is voxel
  ``(c, n_j - 1 - r, k)`` and ImagePositionPatient is the LPS centre of voxel
  ``(0, n_j - 1, k)``.  This is the voxel order of dcm2niix and
  `tmstarget.ingest.dicom.load_series`, so an image whose affine has a
  negative determinant (e.g. LAS) is read back voxel for voxel; a positive
  one (e.g. RAS) comes back with its k axis reversed, same world geometry.

Values: integer data in 0..65535 (or -32768..32767) are stored exactly;
anything else is quantised to uint16 with one RescaleSlope/RescaleIntercept
for the whole series, so a value is reproduced within half a rescale step,
``(max - min) / 65535 / 2``, plus the float32 rounding of NIfTI's
scl_slope/scl_inter (1e-6 of the largest |value|): see `rescale_tolerance`.

The files carry a fake PatientName / PatientBirthDate / PatientID on
purpose, so privacy tests have something to look for.
"""

import io
import logging
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DSfloat

from tmstarget.errors import InputError, OrientationError
from tmstarget.fileio import write_bytes_atomic

logger = logging.getLogger(__name__)

__all__ = ["file_name", "rescale_tolerance", "write_dicom_series"]

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
SHEAR_TOLERANCE = 1e-6  # |cos| between voxel axes accepted as orthogonal
_UINT16_MAX = 65535
_START_TIME_S = 10 * 3600.0  # AcquisitionTime of the first volume: 10:00:00
_DATE = "20240101"


def file_name(series_number, volume_number, slice_rank):
    """File name of one slice: ``IM_<series 4>_<volume 6>_<slice 4>.dcm``.

    ``slice_rank`` is the 1-based position of the slice in acquisition order,
    so sorting the names sorts the files in acquisition order.
    """
    return f"IM_{series_number:04d}_{volume_number:06d}_{slice_rank:04d}.dcm"


def rescale_tolerance(img):
    """Largest |difference| between the image values and what the DICOM files give back.

    0 for integer data stored exactly; otherwise half a rescale step plus
    1e-6 of the largest |value| (float32 scale factors of a NIfTI image).
    """
    data = _float_data(img)
    _, slope, _ = _quantise(data)
    return 0.0 if slope is None else slope / 2.0 + 1e-6 * float(np.abs(data).max())


def write_dicom_series(
    img,
    folder,
    *,
    series_number=1,
    series_description="synthetic",
    t_r_s=None,
    slice_times_s=None,
    first_volume=1,
    participant_name="DOE^JANE",
    birth_date="19700101",
    seed=0,
):
    """Write an image as a one-slice-per-file MR Image Storage series.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        3-D or 4-D image; RAS+ affine in mm, no shear.
    folder : str or os.PathLike
        Created if needed; files of the same names are replaced (atomically),
        other files are left alone (so several series can share a folder).
    series_number : int
        SeriesNumber, also in the file names.
    series_description : str
        SeriesDescription and ProtocolName.
    t_r_s : float, optional
        Repetition time (s); by default the image's 4th zoom (4-D images
        with a non-zero one), else RepetitionTime is not written.
    slice_times_s : sequence of float, optional
        Acquisition time of each slice (s, image k order, in [0, TR)).  It
        sets the order of the slices (files, InstanceNumber) within a volume
        and each file's AcquisitionTime (volume start + slice time).
    first_volume : int
        Number of the first volume (AcquisitionNumber and
        TemporalPositionIdentifier; the next volumes count up from it).
    participant_name, birth_date : str
        Fake PatientName (DICOM PN) and PatientBirthDate (YYYYMMDD).
    seed : int
        Makes every UID deterministic (same seed and series number, same UIDs).

    Returns
    -------
    list of Path
        The files in acquisition order (volume by volume, slices in
        acquisition order).

    Raises
    ------
    InputError
        Not a 3-D/4-D image, non-finite values, bad slice times.
    OrientationError
        An affine with shear (DICOM cannot store it) or a zero voxel size.
    """
    data = _float_data(img)
    if data.ndim == 3:
        data = data[..., None]
    _, n_j, n_k, n_volumes = data.shape
    stored, slope, intercept = _quantise(data)
    geometry = _geometry(np.asarray(img.affine, dtype=float), n_j)
    repetition_time_s = _repetition_time(img, t_r_s)
    times_s = _slice_times(slice_times_s, n_k, repetition_time_s)
    order = np.argsort(times_s, kind="stable") if times_s is not None else np.arange(n_k)
    uids = _series_uids(seed, series_number)
    folder = Path(folder)
    written = []
    for t in range(n_volumes):
        volume_number = first_volume + t
        volume_start_s = _START_TIME_S + (t * repetition_time_s if repetition_time_s else 0.0)
        for rank, k in enumerate(order):
            ds = _slice_dataset(
                pixels=stored[:, ::-1, k, t].T,
                position_lps_mm=geometry["affine_lps"] @ np.array([0.0, n_j - 1.0, k, 1.0]),
                geometry=geometry,
                instance_number=(volume_number - 1) * n_k + rank + 1,
                volume_number=volume_number,
                n_volumes=n_volumes,
                n_slices=n_k,
                acquisition_time_s=volume_start_s + (times_s[k] if times_s is not None else 0.0),
                repetition_time_s=repetition_time_s,
                slope=slope,
                intercept=intercept,
                sop_uid=generate_uid(entropy_srcs=[uids["series"], str(volume_number), str(k)]),
                uids=uids,
                series_number=series_number,
                series_description=series_description,
                participant_name=participant_name,
                birth_date=birth_date,
                seed=seed,
            )
            buffer = io.BytesIO()
            pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
            path = folder / file_name(series_number, volume_number, rank + 1)
            written.append(write_bytes_atomic(path, buffer.getvalue()))
    logger.debug("wrote %d synthetic DICOM file(s) of series %d to %s", len(written), series_number, folder)
    return written


def _float_data(img):
    if len(img.shape) not in (3, 4):
        raise InputError(f"expected a 3-D or 4-D image, got shape {tuple(img.shape)}")
    data = np.asarray(img.get_fdata(dtype=np.float64))
    if not np.all(np.isfinite(data)):
        raise InputError("the image holds NaN or infinite values; DICOM stores finite numbers only")
    return data


def _quantise(data):
    """Stored values, slope, intercept (slope None: integers stored exactly)."""
    low, high = float(data.min()), float(data.max())
    if np.array_equal(data, np.round(data)):
        if low >= 0 and high <= _UINT16_MAX:
            return data.astype(np.uint16), None, 0.0
        if low >= -32768 and high <= 32767:
            return data.astype(np.int16), None, 0.0
    # The DS strings hold ~11 significant digits: quantise with the values as written.
    slope = float(DSfloat((high - low) / _UINT16_MAX if high > low else 1.0, auto_format=True))
    intercept = float(DSfloat(low, auto_format=True))
    stored = np.clip(np.round((data - intercept) / slope), 0, _UINT16_MAX).astype(np.uint16)
    return stored, slope, intercept


def _geometry(affine_ras, n_j):
    columns = affine_ras[:3, :3]
    sizes_mm = np.linalg.norm(columns, axis=0)
    if np.any(sizes_mm < 1e-9):
        raise OrientationError(f"the affine has a zero voxel size: {np.round(sizes_mm, 6).tolist()} mm")
    cosines = (columns / sizes_mm).T @ (columns / sizes_mm)
    off_diagonal = np.abs(cosines - np.eye(3)).max()
    if off_diagonal > SHEAR_TOLERANCE:
        raise OrientationError(
            f"the affine has shear (voxel axes not orthogonal, |cos| up to {off_diagonal:.2e}); "
            "DICOM cannot store it: resample the image first"
        )
    affine_lps = RAS_TO_LPS @ affine_ras
    row_cosine = affine_lps[:3, 0] / sizes_mm[0]
    column_cosine = -affine_lps[:3, 1] / sizes_mm[1]
    return {
        "affine_lps": affine_lps,
        "orientation": np.concatenate([row_cosine, column_cosine]),
        "pixel_spacing_mm": (sizes_mm[1], sizes_mm[0]),  # (between rows, between columns)
        "slice_spacing_mm": sizes_mm[2],
        "normal": np.cross(row_cosine, column_cosine),
    }


def _repetition_time(img, t_r_s):
    if t_r_s is not None:
        if not np.isfinite(t_r_s) or t_r_s <= 0:
            raise InputError(f"t_r_s must be a positive number of seconds, got {t_r_s!r}", key="t_r_s")
        return float(t_r_s)
    zooms = img.header.get_zooms()
    if len(img.shape) == 4 and len(zooms) > 3 and zooms[3] > 0:
        time_unit = img.header.get_xyzt_units()[1]
        return float(zooms[3]) / (1000.0 if time_unit == "msec" else 1.0)
    return None


def _slice_times(slice_times_s, n_slices, repetition_time_s):
    if slice_times_s is None:
        return None
    times = np.asarray(slice_times_s, dtype=float)
    if times.shape != (n_slices,) or not np.all(np.isfinite(times)) or times.min() < 0:
        raise InputError(
            f"slice_times_s must hold {n_slices} finite times >= 0 (one per slice), got {list(slice_times_s)!r}",
            key="slice_times_s",
        )
    if repetition_time_s and times.max() >= repetition_time_s:
        raise InputError(
            f"slice times must be below the repetition time {repetition_time_s} s, got up to {times.max()} s",
            key="slice_times_s",
        )
    return times


def _series_uids(seed, series_number):
    def uid(*parts):
        return generate_uid(entropy_srcs=["tmstarget-synthetic", str(seed), *parts])

    return {
        "study": uid("study"),
        "frame_of_reference": uid("frame-of-reference"),
        "series": uid("series", str(series_number)),
    }


def _ds(value):
    return DSfloat(float(value), auto_format=True)


def _tm(seconds):
    """Seconds since midnight -> DICOM TM ``HHMMSS.ffffff``."""
    seconds = seconds % 86400.0
    hours, rest = divmod(seconds, 3600.0)
    minutes, rest = divmod(rest, 60.0)
    return f"{int(hours):02d}{int(minutes):02d}{rest:09.6f}"


def _slice_dataset(
    *,
    pixels,
    position_lps_mm,
    geometry,
    instance_number,
    volume_number,
    n_volumes,
    n_slices,
    acquisition_time_s,
    repetition_time_s,
    slope,
    intercept,
    sop_uid,
    uids,
    series_number,
    series_description,
    participant_name,
    birth_date,
    seed,
):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame_of_reference"]
    ds.PatientName = participant_name
    ds.PatientID = f"SYNTH{seed:04d}"
    ds.PatientBirthDate = birth_date
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = _DATE
    ds.StudyTime = ds.SeriesTime = _tm(_START_TIME_S)
    ds.AcquisitionTime = ds.ContentTime = _tm(acquisition_time_s)
    ds.StudyID = "1"
    ds.Modality = "MR"
    ds.Manufacturer = "tmstarget"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.ProtocolName = series_description
    ds.ScanningSequence = "EP"
    ds.SequenceVariant = "NONE"
    ds.MRAcquisitionType = "2D"
    ds.MagneticFieldStrength = 3
    ds.EchoTime = 30
    if repetition_time_s:
        ds.RepetitionTime = _ds(repetition_time_s * 1000.0)
    ds.PatientPosition = "HFS"
    ds.InstanceNumber = instance_number
    ds.AcquisitionNumber = volume_number
    ds.TemporalPositionIdentifier = volume_number
    ds.NumberOfTemporalPositions = n_volumes
    ds.ImagesInAcquisition = n_slices
    ds.ImagePositionPatient = [_ds(v) for v in position_lps_mm[:3]]
    ds.ImageOrientationPatient = [_ds(v) for v in geometry["orientation"]]
    ds.PixelSpacing = [_ds(v) for v in geometry["pixel_spacing_mm"]]
    ds.SliceThickness = _ds(geometry["slice_spacing_mm"])
    ds.SpacingBetweenSlices = _ds(geometry["slice_spacing_mm"])
    ds.SliceLocation = _ds(position_lps_mm[:3] @ geometry["normal"])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    if slope is not None:
        ds.RescaleSlope = _ds(slope)
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleType = "US"
    ds.PixelData = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OW"
    return ds
