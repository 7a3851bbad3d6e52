"""Read one DICOM file's header (never its pixels) into a `FileHeader` record.

Every file is read once with ``stop_before_pixels=True``; the record keeps what
the series assembler needs (geometry of each 2-D frame, acquisition keys,
slice times, where the pixel bytes are) and a whitelist of sidecar fields.
The pydicom dataset itself is dropped, so no patient field is kept.

Three layouts are recognised:

* ``"mosaic"``: Siemens MOSAIC, one file per volume, the slices tiled in a
  grid; the tiles are expanded here into frames with their own positions.
* ``"multiframe"``: enhanced (multi-frame) MR, frames described by the
  per-frame and shared functional groups.
* ``"single"``: classic one-slice-per-file images (Philips, GE, Siemens 3D).

Coordinates here are DICOM patient coordinates (LPS, mm).

Size: the three header layouts (mosaic, multi-frame, single) share one `FileHeader` record
and the same field readers; split, each layout would repeat them.
"""

import datetime as _dt
import os
import re
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from tmstarget.errors import DicomError
from tmstarget.ingest.dicom.csa import parse_csa_header
from tmstarget.ingest.dicom.ge import effective_repetition_time_s, read_recipe
from tmstarget.ingest.dicom.sidecar import fields_from_dataset

UNCOMPRESSED_SYNTAXES = {
    "1.2.840.10008.1.2": ("<", True),  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1": ("<", False),  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2": (">", False),  # Explicit VR Big Endian (retired)
}
PIXEL_DATA_TAG = 0x7FE00010
ACQUISITION_KEYS = ("AcquisitionNumber", "TemporalPositionIdentifier", "InstanceNumber", "AcquisitionTime")
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_UC_IMAGE_NUMB = re.compile(rb"sSliceArray\.ucImageNumb\w*\s*=\s*(0x[0-9a-fA-F]+|\d+)")
_LONG_LENGTH_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"UT", b"SQ", b"UC", b"UR"}


@dataclass(frozen=True)
class SkippedFile:
    """A file that is not part of any image series, and why."""

    path: Path
    reason: str  # "not DICOM" or "no pixel data"


@dataclass(frozen=True)
class PixelLayout:
    """Where and how a file's pixel bytes are stored.

    ``offset`` is the byte offset of the first pixel byte (None for
    compressed data, which goes through pydicom's decoders); ``dtype`` the
    numpy dtype of one stored value; ``frame_shape`` the stored frame
    (rows, columns), which for a mosaic is the whole mosaic image.
    """

    transfer_syntax: str
    offset: int | None
    n_bytes: int | None
    dtype: str
    bits_stored: int
    n_stored_frames: int
    frame_shape: tuple
    problem: str | None = None


@dataclass
class FileHeader:
    """What one image file contributes to a series (see module docstring).

    Per-frame arrays have one row per 2-D frame (mosaic tile, enhanced frame
    or the single slice): ``position_lps_mm`` (n, 3) centre of the first
    pixel; ``orientation`` (n, 6) DICOM ImageOrientationPatient (row cosine
    = direction of increasing column index, then column cosine);
    ``pixel_spacing_mm`` (n, 2) (between rows, between columns);
    ``frame_time_s`` (n,) slice acquisition times (NaN when unknown; GE
    times come from ``ge_recipe``, see `tmstarget.ingest.dicom.ge`);
    ``rescale`` (n, 2) slope and intercept; ``echo_time_ms`` (n,);
    ``keys[name]`` (n,) acquisition keys (NaN when absent).
    ``slice_direction`` (3,) is the LPS unit vector along which the slices
    are stacked in the output (mosaics only, see `_mosaic_frames`); None
    means along row cosine x column cosine.
    """

    path: Path
    series_uid: str
    layout: str
    rows: int
    cols: int
    position_lps_mm: np.ndarray
    orientation: np.ndarray
    pixel_spacing_mm: np.ndarray
    frame_time_s: np.ndarray
    rescale: np.ndarray
    echo_time_ms: np.ndarray
    keys: dict
    pixels: PixelLayout
    image_type: tuple
    slice_spacing_mm: float | None
    pe_positive: int | None
    slice_direction: np.ndarray | None = None
    ge_recipe: object = None
    meta: dict = field(default_factory=dict)
    phi_tokens: frozenset = field(default=frozenset(), repr=False)

    @property
    def n_frames(self):
        return self.position_lps_mm.shape[0]


def read_file_header(path):
    """Read the header of one file.

    Parameters
    ----------
    path : str or os.PathLike
        Any file; non-DICOM and non-image files are reported, not raised.

    Returns
    -------
    FileHeader or SkippedFile

    Raises
    ------
    DicomError
        A DICOM image file that is truncated, malformed or of an
        unsupported kind (colour, unknown pixel layout), naming the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            preamble = handle.read(132)
            handle.seek(0)
            is_dicom = preamble[128:132] == b"DICM"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(handle, stop_before_pixels=True, force=not is_dicom)
            except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, struct.error, OverflowError) as exc:
                if is_dicom:
                    raise DicomError(f"cannot read the DICOM header ({exc})", path=path) from exc
                return SkippedFile(path, "not DICOM")
            pixel_offset = handle.tell()
            file_size = os.fstat(handle.fileno()).st_size
            element_head = handle.read(12)
    except OSError as exc:
        raise DicomError(f"cannot read file ({exc.strerror})", path=path) from exc
    if not is_dicom and ("SeriesInstanceUID" not in ds or "Rows" not in ds):
        return SkippedFile(path, "not DICOM")
    has_pixels = _is_pixel_data_tag(element_head, ds)
    if not has_pixels:
        if "Rows" in ds or "PixelSpacing" in ds or "ImagePositionPatient" in ds:
            raise DicomError(
                "image header but no pixel data: the file is truncated or malformed", path=path
            )
        return SkippedFile(path, "no pixel data")
    if "SeriesInstanceUID" not in ds:
        raise DicomError("image without SeriesInstanceUID (0020,000E)", path=path)
    return _build_header(path, ds, pixel_offset, element_head, file_size)


def _is_pixel_data_tag(element_head, ds):
    if len(element_head) < 8:
        return False
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    fmt = ">HH" if syntax == "1.2.840.10008.1.2.2" else "<HH"
    group, elem = struct.unpack(fmt, element_head[:4])
    return (group << 16 | elem) == PIXEL_DATA_TAG


def _build_header(path, ds, element_offset, element_head, file_size):
    samples = int(ds.get("SamplesPerPixel", 1))
    if samples != 1:
        raise DicomError(
            f"SamplesPerPixel = {samples}: colour images are not supported (expected 1)",
            path=path,
            key="SamplesPerPixel",
        )
    image_type = tuple(str(v).upper() for v in _as_list(ds.get("ImageType", [])))
    sop_class = str(ds.get("SOPClassUID", ""))
    n_stored = int(ds.get("NumberOfFrames", 1) or 1)
    pixels = _pixel_layout(path, ds, element_offset, element_head, file_size, n_stored)
    csa = _csa_image_header(ds, path)
    if "PerFrameFunctionalGroupsSequence" in ds or sop_class == "1.2.840.10008.5.1.4.1.1.4.1":
        frames = _multiframe_frames(path, ds, n_stored)
        layout = "multiframe"
    elif "MOSAIC" in image_type:
        frames = _mosaic_frames(path, ds, csa)
        layout = "mosaic"
    else:
        if n_stored != 1:
            raise DicomError(
                f"NumberOfFrames = {n_stored} without functional groups is not supported",
                path=path,
                key="NumberOfFrames",
            )
        frames = _single_frame(path, ds)
        layout = "single"
    meta = fields_from_dataset(ds, csa)
    ge_recipe = read_recipe(ds)
    if ge_recipe is not None and ge_recipe.repetition_time_s:
        meta["RepetitionTime"] = round(effective_repetition_time_s(ge_recipe), 9)
    return FileHeader(
        path=path,
        series_uid=str(ds.SeriesInstanceUID),
        layout=layout,
        rows=frames["rows"],
        cols=frames["cols"],
        position_lps_mm=frames["position"],
        orientation=frames["orientation"],
        pixel_spacing_mm=frames["spacing"],
        frame_time_s=frames["time"],
        rescale=frames["rescale"],
        echo_time_ms=frames["echo"],
        keys=frames["keys"],
        pixels=pixels,
        image_type=image_type,
        slice_spacing_mm=_slice_spacing(ds),
        pe_positive=_pe_polarity(ds, csa),
        slice_direction=frames.get("slice_direction"),
        ge_recipe=ge_recipe,
        meta=meta,
        phi_tokens=patient_tokens(ds),
    )


def patient_tokens(ds):
    """Patient identifiers of a header, kept in memory only to keep them out of outputs.

    PatientID and PatientBirthDate whole, and each part of PatientName of
    three characters or more (family, given, middle names).
    """
    tokens = set()
    for keyword in ("PatientID", "PatientBirthDate"):
        value = str(ds.get(keyword, "") or "").strip()
        if len(value) >= 3:
            tokens.add(value)
    name = str(ds.get("PatientName", "") or "")
    if len(name.strip()) >= 3:
        tokens.add(name.strip())
    for part in name.replace("^", " ").replace("=", " ").split():
        if len(part) >= 3:
            tokens.add(part)
    return frozenset(tokens)


def _pixel_layout(path, ds, element_offset, element_head, file_size, n_stored):
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    bits_allocated = int(ds.get("BitsAllocated", 16))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    if bits_allocated not in (8, 16, 32):
        raise DicomError(
            f"BitsAllocated = {bits_allocated} is not supported (expected 8, 16 or 32)",
            path=path,
            key="BitsAllocated",
        )
    rows, cols = int(ds.Rows), int(ds.Columns)
    if syntax not in UNCOMPRESSED_SYNTAXES:
        dtype = f"{'i' if signed else 'u'}{bits_allocated // 8}"
        return PixelLayout(
            syntax, None, None, dtype, int(ds.get("BitsStored", bits_allocated)), n_stored, (rows, cols)
        )
    endian, implicit = UNCOMPRESSED_SYNTAXES[syntax]
    if implicit:
        (length,) = struct.unpack(endian + "I", element_head[4:8])
        head_len = 8
    else:
        vr = element_head[4:6]
        if vr in _LONG_LENGTH_VRS:
            (length,) = struct.unpack(endian + "I", element_head[8:12])
            head_len = 12
        else:
            (length,) = struct.unpack(endian + "H", element_head[6:8])
            head_len = 8
    expected = rows * cols * n_stored * bits_allocated // 8
    if length == 0xFFFFFFFF:
        raise DicomError(
            f"encapsulated pixel data in an uncompressed transfer syntax {syntax}", path=path
        )
    available = file_size - element_offset - head_len
    problem = None
    if length < expected or available < expected:
        problem = (
            f"truncated pixel data: expected {expected} bytes ({n_stored} frame(s) of "
            f"{rows}x{cols}x{bits_allocated // 8}), the element declares {length} and the file "
            f"holds {max(available, 0)}"
        )
    dtype = f"{endian}{'i' if signed else 'u'}{bits_allocated // 8}"
    return PixelLayout(
        syntax,
        element_offset + head_len,
        expected,
        dtype,
        int(ds.get("BitsStored", bits_allocated)),
        n_stored,
        (rows, cols),
        problem,
    )


def _csa_image_header(ds, path):
    try:
        elem = ds.get_private_item(0x0029, 0x10, "SIEMENS CSA HEADER")
    except KeyError:
        return None
    raw = elem.value
    if not isinstance(raw, (bytes, bytearray)) or raw[:4] != b"SV10":
        return None
    return parse_csa_header(raw, path=path)


def _siemens_mr_header(ds, offset, dtype):
    """Numbers from the (0019,10xx) ``SIEMENS MR HEADER`` block, or None."""
    try:
        elem = ds.get_private_item(0x0019, offset, "SIEMENS MR HEADER")
    except KeyError:
        return None
    value = elem.value
    if isinstance(value, (bytes, bytearray)):
        return np.frombuffer(value, dtype=dtype).astype(float)
    return np.asarray(_as_list(value), dtype=float)


def _mosaic_frames(path, ds, csa):
    n_images = _siemens_mr_header(ds, 0x0A, "<u2")
    if n_images is None and csa is not None and csa.get("NumberOfImagesInMosaic"):
        n_images = csa["NumberOfImagesInMosaic"]
    if n_images is None or len(n_images) == 0:
        raise DicomError(
            "MOSAIC image without NumberOfImagesInMosaic in (0019,100A) or the CSA image header",
            path=path,
            key="NumberOfImagesInMosaic",
        )
    n_tiles = int(n_images[0])
    grid = int(np.ceil(np.sqrt(n_tiles)))
    mosaic_rows, mosaic_cols = int(ds.Rows), int(ds.Columns)
    if n_tiles < 1 or mosaic_rows % grid or mosaic_cols % grid:
        raise DicomError(
            f"mosaic of {mosaic_rows}x{mosaic_cols} pixels cannot hold {n_tiles} tiles "
            f"on a {grid}x{grid} grid",
            path=path,
            key="NumberOfImagesInMosaic",
        )
    rows, cols = mosaic_rows // grid, mosaic_cols // grid
    orientation, spacing = _plane(path, ds)
    row_cos, col_cos = orientation[:3], orientation[3:]
    normal = np.cross(row_cos, col_cos)
    if csa is not None and len(csa.get("SliceNormalVector", [])) == 3:
        csa_normal = np.asarray(csa["SliceNormalVector"], dtype=float)
        if abs(abs(csa_normal @ normal) - 1.0) > 1e-3:
            raise DicomError(
                f"CSA SliceNormalVector {csa_normal.tolist()} is not normal to the image plane",
                path=path,
                key="SliceNormalVector",
            )
        normal = np.sign(csa_normal @ normal) * normal
    else:
        raise DicomError(
            "MOSAIC image without CSA SliceNormalVector: the order of the tiles along "
            "the slice normal cannot be known",
            path=path,
            key="SliceNormalVector",
        )
    spacing_between = _slice_spacing(ds)
    if spacing_between is None:
        raise DicomError("MOSAIC image without SpacingBetweenSlices or SliceThickness", path=path)
    # ImagePositionPatient of a mosaic is the corner of the whole mosaic image
    # centred on the first tile: move it to the first tile's first pixel.
    corner = _vector(path, ds, "ImagePositionPatient", 3)
    first = (
        corner
        + row_cos * spacing[1] * (mosaic_cols - cols) / 2.0
        + col_cos * spacing[0] * (mosaic_rows - rows) / 2.0
    )
    positions = first + np.outer(np.arange(n_tiles) * spacing_between, normal)
    # dcm2niix's convention: the slices keep the tile order (along the CSA slice
    # normal, so a Siemens sagittal R>>L stack stays R>>L), except when Siemens
    # numbered the images Head>>Feet (reversed): then the tiles are flipped.
    direction = -normal if _mosaic_numbering_reversed(ds, csa) else normal
    times_ms = _siemens_mr_header(ds, 0x29, "<f8")
    if times_ms is None and csa is not None and csa.get("MosaicRefAcqTimes"):
        times_ms = np.asarray(csa["MosaicRefAcqTimes"], dtype=float)
    if times_ms is not None and len(times_ms) >= n_tiles:
        times_s = np.asarray(times_ms[:n_tiles], dtype=float) / 1000.0
    else:
        times_s = np.full(n_tiles, np.nan)
    file_keys = _file_keys(ds)
    return {
        "rows": rows,
        "cols": cols,
        "position": positions,
        "orientation": np.tile(orientation, (n_tiles, 1)),
        "spacing": np.tile(spacing, (n_tiles, 1)),
        "time": times_s,
        "rescale": np.tile(_rescale(ds), (n_tiles, 1)),
        "echo": np.full(n_tiles, _float(ds.get("EchoTime"))),
        "keys": {name: np.full(n_tiles, value) for name, value in file_keys.items()},
        "slice_direction": direction,
    }


def _mosaic_numbering_reversed(ds, csa):
    """True when Siemens stored the mosaic tiles in reversed (e.g. Head>>Feet) image numbering.

    Two signs, the ones dcm2niix documents: the CSA image header's
    ``ProtocolSliceNumber`` of the first tile is above 1, or the protocol
    (``MrPhoenixProtocol`` in the CSA series header) sets a non-zero
    ``sSliceArray.ucImageNumb*`` (Sag/Cor/Tra: "image numbering reversed").
    """
    if csa is not None and csa.get("ProtocolSliceNumber") and csa["ProtocolSliceNumber"][0] > 1:
        return True
    try:
        raw = ds.get_private_item(0x0029, 0x20, "SIEMENS CSA HEADER").value
    except KeyError:
        return False
    if not isinstance(raw, (bytes, bytearray)):
        return False
    begin = raw.find(b"### ASCCONV BEGIN")
    if begin < 0:
        return False
    end = raw.find(b"### ASCCONV END", begin)
    protocol = raw[begin : end if end > 0 else len(raw)]
    for match in _UC_IMAGE_NUMB.finditer(protocol):
        if int(match.group(1), 0) != 0:
            return True
    return False


def _single_frame(path, ds):
    orientation, spacing = _plane(path, ds)
    file_keys = _file_keys(ds)
    return {
        "rows": int(ds.Rows),
        "cols": int(ds.Columns),
        "position": _vector(path, ds, "ImagePositionPatient", 3)[None, :],
        "orientation": orientation[None, :],
        "spacing": spacing[None, :],
        "time": np.array([np.nan]),
        "rescale": _rescale(ds)[None, :],
        "echo": np.array([_float(ds.get("EchoTime"))]),
        "keys": {name: np.array([value]) for name, value in file_keys.items()},
    }


def _multiframe_frames(path, ds, n_frames):
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != n_frames:
        got = 0 if per_frame is None else len(per_frame)
        raise DicomError(
            f"PerFrameFunctionalGroupsSequence has {got} items for NumberOfFrames = {n_frames}",
            path=path,
            key="PerFrameFunctionalGroupsSequence",
        )
    positions = np.empty((n_frames, 3))
    orientation = np.empty((n_frames, 6))
    spacing = np.empty((n_frames, 2))
    times = np.full(n_frames, np.nan)
    rescale = np.tile(_rescale(ds), (n_frames, 1))
    echo = np.full(n_frames, _float(ds.get("EchoTime")))
    file_keys = _file_keys(ds)
    keys = {name: np.full(n_frames, value) for name, value in file_keys.items()}
    for index, frame in enumerate(per_frame):
        where = f"frame {index + 1}"
        plane_pos = _group(frame, shared, "PlanePositionSequence")
        plane_ori = _group(frame, shared, "PlaneOrientationSequence")
        measures = _group(frame, shared, "PixelMeasuresSequence")
        if plane_pos is None or plane_ori is None or measures is None:
            raise DicomError(
                f"{where}: missing PlanePosition/PlaneOrientation/PixelMeasures functional group",
                path=path,
            )
        positions[index] = _vector(path, plane_pos, "ImagePositionPatient", 3)
        orientation[index] = _vector(path, plane_ori, "ImageOrientationPatient", 6)
        spacing[index] = _vector(path, measures, "PixelSpacing", 2)
        content = _group(frame, shared, "FrameContentSequence")
        if content is not None:
            frame_dt = content.get("FrameAcquisitionDateTime")
            if frame_dt:
                times[index] = _datetime_s(str(frame_dt))
                keys["AcquisitionTime"][index] = times[index]
            temporal = content.get("TemporalPositionIndex")
            if temporal is not None:
                keys["TemporalPositionIdentifier"][index] = float(temporal)
        transform = _group(frame, shared, "PixelValueTransformationSequence")
        if transform is not None:
            rescale[index] = _rescale(transform)
        echo_group = _group(frame, shared, "MREchoSequence")
        if echo_group is not None and echo_group.get("EffectiveEchoTime") is not None:
            echo[index] = float(echo_group.EffectiveEchoTime)
    return {
        "rows": int(ds.Rows),
        "cols": int(ds.Columns),
        "position": positions,
        "orientation": orientation,
        "spacing": spacing,
        "time": times,
        "rescale": rescale,
        "echo": echo,
        "keys": keys,
    }


def _first_item(ds, keyword):
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _group(frame, shared, keyword):
    """Item of a functional group, per-frame first, then shared."""
    for source in (frame, shared):
        if source is not None and source.get(keyword):
            return source.get(keyword)[0]
    return None


def _plane(path, ds):
    orientation = _vector(path, ds, "ImageOrientationPatient", 6)
    spacing = _vector(path, ds, "PixelSpacing", 2)
    return orientation, spacing


def _vector(path, ds, keyword, length):
    value = ds.get(keyword)
    try:
        vector = np.asarray([float(v) for v in _as_list(value)], dtype=float)
    except (TypeError, ValueError):
        vector = np.empty(0)
    if vector.shape != (length,) or not np.all(np.isfinite(vector)):
        raise DicomError(
            f"{keyword} must hold {length} numbers, got {value!r}", path=path, key=keyword
        )
    return vector


def _slice_spacing(ds):
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _float(ds.get(keyword))
        if np.isfinite(value) and value > 0:
            return value
    return None


def _rescale(ds):
    """(slope, intercept) to real values; Philips precise (float) scaling when present.

    Philips stores a private scale slope SS (2005,100E); the "precise" value
    is ``(stored * RS + RI) / (RS * SS)``, which dcm2niix uses by default.
    """
    slope = _float(ds.get("RescaleSlope"))
    intercept = _float(ds.get("RescaleIntercept"))
    slope = 1.0 if not np.isfinite(slope) or slope == 0 else slope
    intercept = 0.0 if not np.isfinite(intercept) else intercept
    try:
        scale_slope = ds.get_private_item(0x2005, 0x0E, "Philips MR Imaging DD 001").value
    except KeyError:
        scale_slope = None
    if isinstance(scale_slope, (bytes, bytearray)):
        scale_slope = float(np.frombuffer(scale_slope[:4], "<f4")[0]) if len(scale_slope) >= 4 else None
    if scale_slope is not None and float(scale_slope) not in (0.0,) and np.isfinite(float(scale_slope)):
        scale_slope = float(scale_slope)
        return np.array([1.0 / scale_slope, intercept / (slope * scale_slope)])
    return np.array([slope, intercept])


def _pe_polarity(ds, csa):
    """1 when phase encoding runs toward increasing row/column index, 0 reverse, None unknown."""
    if csa is not None and csa.get("PhaseEncodingDirectionPositive"):
        return int(csa["PhaseEncodingDirectionPositive"][0])
    frames = ds.get("PerFrameFunctionalGroupsSequence")
    if frames:
        for item in frames[0]:
            if item.VR != "SQ" or not item.value:
                continue
            try:
                value = item.value[0].get_private_item(0x0021, 0x1C, "SIEMENS MR SDI 02").value
            except KeyError:
                continue
            return int(value)
    return None


def _file_keys(ds):
    time_s = np.nan
    if ds.get("AcquisitionDateTime"):
        time_s = _datetime_s(str(ds.AcquisitionDateTime))
    elif ds.get("AcquisitionTime"):
        time_s = _time_s(str(ds.AcquisitionTime))
    return {
        "AcquisitionNumber": _float(ds.get("AcquisitionNumber")),
        "TemporalPositionIdentifier": _float(ds.get("TemporalPositionIdentifier")),
        "InstanceNumber": _float(ds.get("InstanceNumber")),
        "AcquisitionTime": time_s,
    }


def _time_s(text):
    """DICOM TM ``HHMMSS.ffffff`` (or ``HH:MM:SS``) -> seconds since midnight."""
    text = text.strip().replace(":", "")
    try:
        hours = int(text[0:2])
        minutes = int(text[2:4]) if len(text) >= 4 else 0
        seconds = float(text[4:]) if len(text) > 4 else 0.0
    except ValueError:
        return np.nan
    return hours * 3600.0 + minutes * 60.0 + seconds


def _datetime_s(text):
    """DICOM DT ``YYYYMMDDHHMMSS.ffffff`` -> seconds since 1970-01-01 (monotonic over midnight)."""
    text = text.strip().split("+")[0].split("-")[0]
    try:
        day = _dt.date(int(text[0:4]), int(text[4:6]), int(text[6:8])).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return np.nan
    return day * 86400.0 + _time_s(text[8:] or "000000")


def _float(value):
    if value is None or value == "":
        return np.nan
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
        if value is None:
            return np.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, (str, bytes, UID)):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]
