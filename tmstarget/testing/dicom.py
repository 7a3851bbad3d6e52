"""Write a NIfTI image as a synthetic DICOM MR series (one slice per file, or Siemens MOSAIC).

For tests and demos (real-time replay, privacy checks, converter checks):
`write_dicom_series` turns a 3-D or 4-D nibabel image into classic MR Image
Storage files, one 2-D slice per file, and `write_mosaic_series` into Siemens
MOSAIC files, one file per volume; any DICOM converter reads them back to the
same voxels and affine.

Geometry (DICOM patient frame LPS, mm; the image affine is RAS+):

* ``affine_lps = diag(-1, -1, 1, 1) @ affine_ras``;
* the DICOM row cosine is the image i axis, the column cosine is minus the
  j axis, so pixel ``(row r, column c)`` of slice k is voxel
  ``(c, n_j - 1 - r, k)`` and ImagePositionPatient is the LPS centre of voxel
  ``(0, n_j - 1, k)``.  This is the voxel order of dcm2niix and
  `tmstarget.ingest.dicom.series.load_series`, so an image whose affine has a
  negative determinant (e.g. LAS) is read back voxel for voxel; a positive
  one (e.g. RAS) comes back with its k axis reversed, same world geometry.

Values: integer data in 0..65535 (or -32768..32767) are stored exactly;
anything else is quantised to uint16 with one RescaleSlope/RescaleIntercept
for the whole series, so a value is reproduced within half a rescale step,
``(max - min) / 65535 / 2``, plus the float32 rounding of NIfTI's
scl_slope/scl_inter (1e-6 of the largest |value|): see `rescale_tolerance`.

Siemens MOSAIC (`write_mosaic_series`): the slices of a volume are tiles
of one image, ``n = ceil(sqrt(n_slices))`` tiles across and down, tile ``k``
(slice k of the image, 0-based) in tile row ``k // n`` and tile column
``k % n``, unused tiles zero.  Each tile is laid out as a one-slice file
above (rows along minus the j axis, columns along i), so tiles need not be
square and PixelSpacing need not be either.  ImageType ends in ``MOSAIC``;
the Siemens CSA image header (0029,1010), CSA2 ``SV10`` layout, holds
AcquisitionMatrixText, NumberOfImagesInMosaic, SliceNormalVector (the
direction of the image k axis, which is minus ``row x column`` cosine for a
positive-determinant affine: tiles stored "descending", as Siemens does for
Head>>Feet), MosaicRefAcqTimes (ms, one per tile) and
PhaseEncodingDirectionPositive.  ImagePositionPatient follows the Siemens
convention: it is not the first tile's first pixel but the corner of a
slice-sized image centred on the whole mosaic, i.e. the first tile's first
pixel moved back by half the extra mosaic size, ``row_cos * col_spacing *
(mosaic_cols - cols) / 2 + col_cos * row_spacing * (mosaic_rows - rows) / 2``
(as nibabel's ``MosaicWrapper`` and dcm2niix undo it; checked against a
real Siemens Prisma file in tests/test_mosaic_geometry.py).

The files carry a fake PatientName / PatientBirthDate / PatientID on
purpose, so privacy tests have something to look for; ``patient_fields``
(e.g. `DISTINCTIVE_PATIENT_FIELDS`) sets those and other identifying fields
(institution, referring physician, accession number ...) to chosen values.

Size: the classic and MOSAIC writers share the geometry, the quantisation and the identifying
fields written on purpose; one module keeps them consistent.
"""

import io
import logging
import struct
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DSfloat

from tmstarget._fileio import write_bytes_atomic
from tmstarget.errors import InputError, OrientationError
from tmstarget.spaces import D

logger = logging.getLogger(__name__)

__all__ = [
    "DISTINCTIVE_PATIENT_FIELDS",
    "PATIENT_KEYWORDS",
    "file_name",
    "mosaic_file_name",
    "rescale_tolerance",
    "write_dicom_series",
    "write_mosaic_series",
]

SHEAR_TOLERANCE = 1e-6  # |cos| between voxel axes accepted as orthogonal
_UINT16_MAX = 65535
_START_TIME_S = 10 * 3600.0  # AcquisitionTime of the first volume: 10:00:00
_DATE = "20240101"

# Identifying (patient and site) fields `patient_fields` may set.
PATIENT_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientAddress",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "AccessionNumber",
    "StationName",
    "DeviceSerialNumber",
    "StudyDescription",
)
# Values no real header or output would hold by chance, for privacy tests.
DISTINCTIVE_PATIENT_FIELDS = {
    "PatientName": "QUIXWORTH^ZEPHYRINA^BELLAMAR",
    "PatientID": "PIDQX7350912",
    "PatientBirthDate": "19580317",
    "OtherPatientIDs": "OPIDZK4481907",
    "InstitutionName": "Vexhollow Quarry Infirmary",
    "ReferringPhysicianName": "DRUMMELSBY^HYACINTHUS",
    "AccessionNumber": "ACCZV9021774",
}
_CSA_MARKER = 77  # item/tag marker of a CSA2 header
_CSA_EMPTY_MARKER = 205  # marker of an empty item


def file_name(series_number, volume_number, slice_rank):
    """File name of one slice: ``IM_<series 4>_<volume 6>_<slice 4>.dcm``.

    ``slice_rank`` is the 1-based position of the slice in acquisition order,
    so sorting the names sorts the files in acquisition order.
    """
    return f"IM_{series_number:04d}_{volume_number:06d}_{slice_rank:04d}.dcm"


def mosaic_file_name(series_number, volume_number):
    """File name of one mosaic volume, as a Siemens real-time export: ``001_<series 6>_<volume 6>.dcm``."""
    return f"001_{series_number:06d}_{volume_number:06d}.dcm"


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
    patient_fields=None,
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
    patient_fields : mapping, optional
        Identifying fields written into every file, keyword -> text, any of
        `PATIENT_KEYWORDS` (e.g. `DISTINCTIVE_PATIENT_FIELDS`); they
        override ``participant_name``/``birth_date`` and the default
        PatientID ``SYNTH<seed>``.
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
        Not a 3-D/4-D image, non-finite values, bad slice times, a
        ``patient_fields`` keyword not in `PATIENT_KEYWORDS`.
    OrientationError
        An affine with shear (DICOM cannot store it) or a zero voxel size.
    """
    identity = _identity(patient_fields, participant_name, birth_date, seed)
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
                identity=identity,
            )
            buffer = io.BytesIO()
            pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
            path = folder / file_name(series_number, volume_number, rank + 1)
            written.append(write_bytes_atomic(path, buffer.getvalue()))
    logger.debug("wrote %d synthetic DICOM file(s) of series %d to %s", len(written), series_number, folder)
    return written


def write_mosaic_series(
    img,
    folder,
    *,
    series_number=1,
    series_description="synthetic",
    t_r_s=None,
    slice_times_s=None,
    first_volume=1,
    phase_encoding="COL",
    phase_encoding_positive=True,
    participant_name="DOE^JANE",
    birth_date="19700101",
    patient_fields=None,
    seed=0,
):
    """Write an image as a Siemens MOSAIC series: one MR Image Storage file per volume.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        3-D or 4-D image; RAS+ affine in mm, no shear.  Its i and j sizes
        become the tile columns and rows (``(64, 52, ...)``: 64 columns x
        52 rows a tile), its i and j voxel sizes the column and row pixel
        spacing (PixelSpacing = [j size, i size]).
    folder : str or os.PathLike
        Created if needed; files of the same names are replaced (atomically).
    series_number, series_description, t_r_s, first_volume, participant_name, birth_date, patient_fields, seed
        As for `write_dicom_series`.
    slice_times_s : sequence of float, optional
        Acquisition time of each slice (s, image k order, in [0, TR)),
        written as the CSA MosaicRefAcqTimes (ms, tile order = k order).
        Without it every tile gets time 0.
    phase_encoding : {"COL", "ROW"}
        InPlanePhaseEncodingDirection (COL: along the tile rows, image j).
    phase_encoding_positive : bool
        CSA PhaseEncodingDirectionPositive.

    Returns
    -------
    list of Path
        One file per volume, in acquisition order, named `mosaic_file_name`.

    Raises
    ------
    InputError
        As `write_dicom_series`, or an unknown ``phase_encoding``.
    OrientationError
        An affine with shear or a zero voxel size.
    """
    identity = _identity(patient_fields, participant_name, birth_date, seed)
    if phase_encoding not in ("COL", "ROW"):
        raise InputError(f"phase_encoding must be 'COL' or 'ROW', got {phase_encoding!r}", key="phase_encoding")
    data = _float_data(img)
    if data.ndim == 3:
        data = data[..., None]
    n_i, n_j, n_k, n_volumes = data.shape
    stored, slope, intercept = _quantise(data)
    affine_ras = np.asarray(img.affine, dtype=float)
    geometry = _geometry(affine_ras, n_j)
    repetition_time_s = _repetition_time(img, t_r_s)
    times_s = _slice_times(slice_times_s, n_k, repetition_time_s)
    if times_s is None:
        times_s = np.zeros(n_k)
    grid = int(np.ceil(np.sqrt(n_k)))
    rows, cols = n_j, n_i
    mosaic_rows, mosaic_cols = grid * rows, grid * cols
    spacing_rows_mm, spacing_cols_mm = geometry["pixel_spacing_mm"]
    row_cosine, column_cosine = geometry["orientation"][:3], geometry["orientation"][3:]
    # Slice k of the image is tile k; the CSA slice normal is the image k axis (LPS).
    slice_axis_lps = geometry["affine_lps"][:3, 2]
    slice_normal = slice_axis_lps / np.linalg.norm(slice_axis_lps)
    first_pixel_lps = geometry["affine_lps"] @ np.array([0.0, n_j - 1.0, 0.0, 1.0])
    corner_lps = (
        first_pixel_lps[:3]
        - row_cosine * spacing_cols_mm * (mosaic_cols - cols) / 2.0
        - column_cosine * spacing_rows_mm * (mosaic_rows - rows) / 2.0
    )
    phase_lines, readout = (rows, cols) if phase_encoding == "COL" else (cols, rows)
    csa = _csa2_header(
        [
            # "<phase-encoding lines>*<readout samples>"; nibabel needs it to call a file a mosaic
            ("AcquisitionMatrixText", "SH", 22, 1, [f"{phase_lines}*{readout}"]),
            ("NumberOfImagesInMosaic", "US", 10, 1, [f"{n_k:<8d}"]),
            ("SliceNormalVector", "FD", 4, 3, [f"{v:.8f}" for v in slice_normal]),
            ("MosaicRefAcqTimes", "FD", 4, 0, [f"{t * 1000.0:.8f}" for t in times_s]),
            ("PhaseEncodingDirectionPositive", "IS", 6, 1, [f"{int(bool(phase_encoding_positive)):<8d}"]),
            ("ProtocolSliceNumber", "IS", 6, 1, ["0       "]),
        ]
    )
    uids = _series_uids(seed, series_number)
    folder = Path(folder)
    written = []
    for t in range(n_volumes):
        volume_number = first_volume + t
        mosaic = np.zeros((mosaic_rows, mosaic_cols), dtype=stored.dtype)
        for k in range(n_k):
            top, left = (k // grid) * rows, (k % grid) * cols
            mosaic[top : top + rows, left : left + cols] = stored[:, ::-1, k, t].T
        ds = _base_dataset(
            sop_uid=generate_uid(entropy_srcs=[uids["series"], str(volume_number), "mosaic"]),
            uids=uids,
            identity=identity,
            acquisition_time_s=_START_TIME_S + (t * repetition_time_s if repetition_time_s else 0.0),
            series_number=series_number,
            series_description=series_description,
            repetition_time_s=repetition_time_s,
        )
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.Manufacturer = "SIEMENS"
        ds.ManufacturerModelName = "Synthetic"
        ds.SoftwareVersions = "syngo MR E11"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
        ds.SequenceVariant = "SK"
        ds.SequenceName = "*epfid2d1_64"
        ds.InPlanePhaseEncodingDirection = phase_encoding
        ds.NumberOfPhaseEncodingSteps = phase_lines
        # (frequency rows, frequency columns, phase rows, phase columns), as Siemens writes it
        ds.AcquisitionMatrix = [cols, 0, 0, rows] if phase_encoding == "COL" else [0, rows, cols, 0]
        ds.InstanceNumber = volume_number
        ds.AcquisitionNumber = volume_number
        _set_plane(ds, np.append(corner_lps, 1.0), geometry)
        ds.SliceLocation = _ds(first_pixel_lps[:3] @ slice_normal)
        block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
        block.add_new(0x08, "CS", "IMAGE NUM 4")
        block.add_new(0x09, "LO", "20240101")
        block.add_new(0x10, "OB", csa)
        _set_pixels(ds, mosaic, slope, intercept)
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        written.append(write_bytes_atomic(folder / mosaic_file_name(series_number, volume_number), buffer.getvalue()))
    logger.debug("wrote %d synthetic MOSAIC file(s) of series %d to %s", len(written), series_number, folder)
    return written


def _csa2_header(tags):
    """A Siemens CSA2 (``SV10``) header from (name, vr, syngo type, vm, item texts) tuples.

    Layout: see `tmstarget.ingest.dicom.csa`.  Items are NUL-terminated text
    padded to 4 bytes; as Siemens does, a tag holds at least 6 items (empty
    ones marked 205), and a list (vm 0) two empty items more than values.
    """
    out = bytearray(b"SV10" + bytes([4, 3, 2, 1]) + struct.pack("<II", len(tags), _CSA_MARKER))
    for name, vr, syngo_type, vm, texts in tags:
        n_items = max(6, len(texts) + (2 if vm == 0 else 0))
        out += struct.pack(
            "<64si4siii", name.encode("latin-1"), vm, vr.encode("latin-1"), syngo_type, n_items,
            _CSA_MARKER if texts else _CSA_EMPTY_MARKER,
        )
        for index in range(n_items):
            if index < len(texts):
                item = texts[index].encode("latin-1") + b"\x00"
                out += struct.pack("<4i", len(item), len(item), _CSA_MARKER, len(item))
                out += item + bytes(-len(item) % 4)
            else:
                out += struct.pack("<4i", 0, 0, _CSA_EMPTY_MARKER, 0)
    out += bytes(4)
    return bytes(out)


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
    affine_lps = D @ affine_ras
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
    identity,
):
    ds = _base_dataset(
        sop_uid=sop_uid,
        uids=uids,
        identity=identity,
        acquisition_time_s=acquisition_time_s,
        series_number=series_number,
        series_description=series_description,
        repetition_time_s=repetition_time_s,
    )
    ds.Manufacturer = "tmstarget"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.SequenceVariant = "NONE"
    ds.InstanceNumber = instance_number
    ds.AcquisitionNumber = volume_number
    ds.TemporalPositionIdentifier = volume_number
    ds.NumberOfTemporalPositions = n_volumes
    ds.ImagesInAcquisition = n_slices
    _set_plane(ds, position_lps_mm, geometry)
    _set_pixels(ds, pixels, slope, intercept)
    return ds


def _identity(patient_fields, participant_name, birth_date, seed):
    """The identifying fields of every file, keyword -> text (validated)."""
    identity = {"PatientName": participant_name, "PatientID": f"SYNTH{seed:04d}", "PatientBirthDate": birth_date}
    for keyword, value in dict(patient_fields or {}).items():
        if keyword not in PATIENT_KEYWORDS:
            raise InputError(
                f"patient_fields: {keyword!r} is not one of {', '.join(PATIENT_KEYWORDS)}", key="patient_fields"
            )
        identity[keyword] = str(value)
    return identity


def _base_dataset(
    *, sop_uid, uids, identity, acquisition_time_s, series_number, series_description, repetition_time_s
):
    """Fields shared by both layouts: file meta, UIDs, identity, dates, sequence basics."""
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
    ds.PatientSex = "O"
    for keyword, value in identity.items():
        setattr(ds, keyword, value)
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = _DATE
    ds.StudyTime = ds.SeriesTime = _tm(_START_TIME_S)
    ds.AcquisitionTime = ds.ContentTime = _tm(acquisition_time_s)
    ds.StudyID = "1"
    ds.Modality = "MR"
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.ProtocolName = series_description
    ds.ScanningSequence = "EP"
    ds.MRAcquisitionType = "2D"
    ds.MagneticFieldStrength = 3
    ds.EchoTime = 30
    if repetition_time_s:
        ds.RepetitionTime = _ds(repetition_time_s * 1000.0)
    ds.PatientPosition = "HFS"
    return ds


def _set_plane(ds, position_lps_mm, geometry):
    ds.ImagePositionPatient = [_ds(v) for v in position_lps_mm[:3]]
    ds.ImageOrientationPatient = [_ds(v) for v in geometry["orientation"]]
    ds.PixelSpacing = [_ds(v) for v in geometry["pixel_spacing_mm"]]
    ds.SliceThickness = _ds(geometry["slice_spacing_mm"])
    ds.SpacingBetweenSlices = _ds(geometry["slice_spacing_mm"])
    ds.SliceLocation = _ds(position_lps_mm[:3] @ geometry["normal"])


def _set_pixels(ds, pixels, slope, intercept):
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
