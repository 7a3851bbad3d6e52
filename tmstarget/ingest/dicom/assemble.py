"""Assemble the 2-D frames of one series into a 3-D/4-D NIfTI volume.

`plan_series` works on headers only (no pixels): it checks the geometry,
assigns every frame a (volume, slice) slot and computes the RAS affine and
the slice timing.  `assemble_image` then reads the pixels into those slots.

Voxel axes of the result (same convention as dcm2niix):

* i: DICOM column index (along the row cosine),
* j: DICOM row index reversed (so j grows opposite to the column cosine),
* k: slices sorted by position along ``row_cosine x column_cosine``; for a
  Siemens mosaic, the tile order (along the CSA slice normal), reversed when
  the scanner numbered the images Head>>Feet (``FileHeader.slice_direction``),
* t: volumes in acquisition order.

The affine maps these voxel indices to RAS+ mm: DICOM LPS coordinates are
turned into RAS by :data:`tmstarget.spaces.D` ``= diag(-1, -1, 1, 1)``.
"""

import logging
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

from tmstarget.errors import DicomError
from tmstarget.ingest.dicom.ge import slice_times as ge_slice_times
from tmstarget.ingest.dicom.headers import ACQUISITION_KEYS
from tmstarget.ingest.dicom.pixels import read_frames
from tmstarget.ingest.dicom.sidecar import build_sidecar
from tmstarget.spaces import D

logger = logging.getLogger(__name__)

ORIENTATION_TOLERANCE = 1e-4  # direction cosines
POSITION_TOLERANCE_MM = 0.01
SPACING_TOLERANCE_MM = 1e-3


@dataclass
class SeriesPlan:
    """Where each frame goes and the geometry of a series (see module docstring).

    ``frame_file``/``frame_in_file``/``volume``/``slice`` are per-frame
    arrays (n_frames,); ``affine_ras`` maps (i, j, k) to RAS mm;
    ``slice_timing_reason`` says why ``slice_timing_s`` is None for a
    multi-slice time series (None otherwise).
    """

    headers: list
    frame_file: np.ndarray
    frame_in_file: np.ndarray
    volume: np.ndarray
    slice: np.ndarray
    n_volumes: int
    n_slices: int
    rows: int
    cols: int
    affine_ras: np.ndarray
    slice_timing_s: np.ndarray | None
    slice_timing_reason: str | None
    volume_key: str | None
    rescale: np.ndarray
    first_header: object

    @property
    def shape(self):
        spatial = (self.cols, self.rows, self.n_slices)
        return spatial + ((self.n_volumes,) if self.n_volumes > 1 else ())


def plan_series(headers):
    """Check the geometry of a series and plan its assembly (headers only).

    Parameters
    ----------
    headers : list of FileHeader
        All files of one SeriesInstanceUID.

    Returns
    -------
    SeriesPlan

    Raises
    ------
    DicomError
        Mixed layouts or frame sizes, orientation or pixel spacing changing
        between files, slice positions changing between volumes, a missing
        slice or volume (naming the gap), several echo times or image types,
        or frames that no acquisition key can order.
    """
    _check_uniform_files(headers)
    frames = _concatenate(headers)
    _check_orientation(headers, frames)
    _check_per_file_volumes(headers)
    row_cos, col_cos = frames["orientation"][0, :3], frames["orientation"][0, 3:]
    normal = headers[0].slice_direction
    if normal is None:
        normal = np.cross(row_cos, col_cos)
    distance_mm = frames["position"] @ normal
    location, centres_mm = _cluster_locations(distance_mm)
    n_slices = len(centres_mm)
    counts = np.bincount(location, minlength=n_slices)
    if np.any(counts != counts.max()):
        short = np.flatnonzero(counts != counts.max())
        raise DicomError(
            f"missing slice(s) or slice positions changing between volumes: {n_slices} slice "
            f"locations, most hold {counts.max()} frames but the location(s) at "
            f"{np.round(centres_mm[short], 3).tolist()} mm along the slice normal hold "
            f"{counts[short].tolist()}",
            path=headers[0].path.parent,
        )
    _check_in_plane_positions(headers, frames, location)
    n_volumes = int(counts.max())
    _check_single_echo_and_type(headers, frames)
    volume, key_name = _assign_volumes(headers, frames, location, n_volumes)
    if n_volumes > 1:
        _check_no_volume_gap(headers, frames, volume, key_name, n_volumes)
    _check_slice_spacing(headers, centres_mm)
    affine_ras = _affine_ras(headers, frames, location, volume, normal, centres_mm)
    first_file = frames["file"][np.flatnonzero(volume == 0)[0]]
    first = headers[first_file]
    timing, timing_reason = _slice_timing(first, frames, location, volume, n_slices)
    return SeriesPlan(
        headers=headers,
        frame_file=frames["file"],
        frame_in_file=frames["in_file"],
        volume=volume,
        slice=location,
        n_volumes=n_volumes,
        n_slices=n_slices,
        rows=headers[0].rows,
        cols=headers[0].cols,
        affine_ras=affine_ras,
        slice_timing_s=timing,
        slice_timing_reason=timing_reason,
        volume_key=key_name,
        rescale=frames["rescale"],
        first_header=first,
    )


def assemble_image(plan, progress=None):
    """Read the pixels of a planned series into a NIfTI image and its sidecar.

    Parameters
    ----------
    plan : SeriesPlan
    progress : callable, optional
        Called as ``progress(volumes_done, n_volumes)`` as volumes complete.

    Returns
    -------
    image : nibabel.Nifti1Image
        3-D (one volume) or 4-D; qform = sform = ``plan.affine_ras``, codes 1
        (scanner); the stored integers with ``scl_slope``/``scl_inter`` when
        the DICOM rescale is the same for every frame (Philips: the precise
        floating-point scale, as dcm2niix), float32 otherwise.  A single 3-D
        non-EPI volume (T1) is stored with its axes closest to RAS (dcm2niix).
    sidecar : dict
        BIDS-style fields (see `tmstarget.ingest.dicom.sidecar`).
    """
    uniform = bool(np.all(plan.rescale == plan.rescale[0]))
    blocks = None
    order = np.argsort(plan.frame_file, kind="stable")
    bounds = np.searchsorted(plan.frame_file[order], np.arange(len(plan.headers) + 1))
    frames_left = np.bincount(plan.volume, minlength=plan.n_volumes)
    done = 0
    for index, header in enumerate(plan.headers):
        sel = order[bounds[index] : bounds[index + 1]]
        frames = read_frames(header)[plan.frame_in_file[sel]]
        if not uniform:
            scale = plan.rescale[sel]
            frames = frames.astype(np.float32) * scale[:, 0, None, None].astype(np.float32) + scale[
                :, 1, None, None
            ].astype(np.float32)
        if blocks is None:
            blocks = np.empty((plan.n_volumes, plan.n_slices, plan.rows, plan.cols), dtype=frames.dtype)
        blocks[plan.volume[sel], plan.slice[sel]] = frames
        if progress is not None:
            np.subtract.at(frames_left, plan.volume[sel], 1)
            now = int(np.count_nonzero(frames_left == 0))
            if now != done:
                done = now
                progress(done, plan.n_volumes)
    blocks = _narrow_dtype(blocks)
    data = blocks.transpose(3, 2, 1, 0)[:, ::-1, :, :]
    if plan.n_volumes == 1:
        data = data[..., 0]
    affine = plan.affine_ras
    ornt = np.array([[0, 1], [1, 1], [2, 1]])  # new axis and flip of each assembled axis i, j, k
    if _is_3d_anatomical(plan):
        ornt = io_orientation(affine)
        affine = affine @ inv_ornt_aff(ornt, data.shape[:3])
        data = np.ascontiguousarray(apply_orientation(data, ornt))
    phase = _phase_encoding(plan.first_header)
    image = nib.Nifti1Image(data, affine)
    header = image.header
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm", "sec")
    repetition_time_s = plan.first_header.meta.get("RepetitionTime")
    if plan.n_volumes > 1 and repetition_time_s:
        header.set_zooms(header.get_zooms()[:3] + (float(repetition_time_s),))
    scaled = uniform and (plan.rescale[0, 0] != 1.0 or plan.rescale[0, 1] != 0.0)
    if scaled:
        header.set_slope_inter(float(plan.rescale[0, 0]), float(plan.rescale[0, 1]))
    if phase is not None:
        pe_axis = "ij".index(phase[0][0])
        header.set_dim_info(freq=int(ornt[1 - pe_axis, 0]), phase=int(ornt[pe_axis, 0]), slice=int(ornt[2, 0]))
        sign = (-1 if phase[0].endswith("-") else 1) * int(ornt[pe_axis, 1])
        phase = ("ijk"[int(ornt[pe_axis, 0])] + ("-" if sign < 0 else ""), phase[1])
    echo_s = plan.first_header.meta.get("EchoTime")
    header["descrip"] = f"tmstarget TE={echo_s * 1000:g}ms" if echo_s else "tmstarget"
    if scaled:
        # An in-memory image ignores scl_slope: round-trip through bytes so that
        # get_fdata() applies the scaling exactly as after saving and loading.
        image = nib.Nifti1Image.from_bytes(image.to_bytes())
    sidecar = build_sidecar(
        plan.first_header.meta,
        slice_timing_s=plan.slice_timing_s,
        slice_timing_reason=plan.slice_timing_reason,
        phase_encoding=phase,
        phi_tokens=plan.first_header.phi_tokens,
    )
    return image, sidecar


def _is_3d_anatomical(plan):
    """A single 3-D (not EPI) volume of several slices: stored closest to RAS, as dcm2niix does."""
    meta = plan.first_header.meta
    return (
        plan.n_volumes == 1
        and plan.n_slices > 1
        and str(meta.get("MRAcquisitionType", "")).upper() == "3D"
        and "EP" not in str(meta.get("ScanningSequence", "")).upper().replace("\\", " ").split()
    )


def _narrow_dtype(blocks):
    """uint16 data that fit int16 are stored as int16 (as dcm2niix does, FSL-friendly)."""
    if blocks.dtype == np.uint16 and blocks.max(initial=0) <= np.iinfo(np.int16).max:
        return blocks.astype(np.int16)
    return blocks


def _check_uniform_files(headers):
    first = headers[0]
    for header in headers[1:]:
        if header.layout != first.layout:
            raise DicomError(
                f"layout '{header.layout}' differs from '{first.layout}' of {first.path.name} "
                "in the same series",
                path=header.path,
            )
        if (header.rows, header.cols) != (first.rows, first.cols):
            raise DicomError(
                f"geometry changes between volumes: frame size {header.rows}x{header.cols}, "
                f"expected {first.rows}x{first.cols} as in {first.path.name}",
                path=header.path,
            )


def _concatenate(headers):
    n_per_file = np.array([h.n_frames for h in headers])
    frames = {
        "file": np.repeat(np.arange(len(headers)), n_per_file),
        "in_file": np.concatenate([np.arange(n) for n in n_per_file]),
        "position": np.concatenate([h.position_lps_mm for h in headers]),
        "orientation": np.concatenate([h.orientation for h in headers]),
        "spacing": np.concatenate([h.pixel_spacing_mm for h in headers]),
        "time": np.concatenate([h.frame_time_s for h in headers]),
        "rescale": np.concatenate([h.rescale for h in headers]),
        "echo": np.concatenate([h.echo_time_ms for h in headers]),
    }
    frames["keys"] = {name: np.concatenate([h.keys[name] for h in headers]) for name in ACQUISITION_KEYS}
    return frames


def _file_label(header):
    number = header.keys["AcquisitionNumber"][0]
    return f"AcquisitionNumber {int(number)}" if np.isfinite(number) else "no AcquisitionNumber"


def _check_orientation(headers, frames):
    for name, tolerance, what in (
        ("orientation", ORIENTATION_TOLERANCE, "ImageOrientationPatient"),
        ("spacing", SPACING_TOLERANCE_MM, "PixelSpacing"),
    ):
        values = frames[name]
        bad = np.flatnonzero(np.abs(values - values[0]).max(axis=1) > tolerance)
        if bad.size:
            header = headers[frames["file"][bad[0]]]
            raise DicomError(
                f"geometry changes between volumes: {what} {np.round(values[bad[0]], 6).tolist()} "
                f"({_file_label(header)}) differs from {np.round(values[0], 6).tolist()} "
                f"in {headers[0].path.name}",
                path=header.path,
                key=what,
            )


def _cluster_locations(distance_mm):
    """Group frames whose positions along the normal agree within POSITION_TOLERANCE_MM."""
    order = np.argsort(distance_mm, kind="stable")
    sorted_mm = distance_mm[order]
    new_cluster = np.concatenate([[True], np.diff(sorted_mm) > POSITION_TOLERANCE_MM])
    cluster_sorted = np.cumsum(new_cluster) - 1
    location = np.empty_like(cluster_sorted)
    location[order] = cluster_sorted
    centres = np.array([sorted_mm[cluster_sorted == c].mean() for c in range(cluster_sorted[-1] + 1)])
    return location, centres


def _check_per_file_volumes(headers):
    """For one-file-per-volume layouts, every file must repeat the first file's slice positions."""
    if headers[0].layout == "single" or any(h.n_frames != headers[0].n_frames for h in headers):
        return
    reference = headers[0].position_lps_mm
    for header in headers[1:]:
        shift = np.abs(header.position_lps_mm - reference).max()
        if shift > POSITION_TOLERANCE_MM:
            raise DicomError(
                f"geometry changes between volumes: slice positions differ by up to {shift:.3f} mm "
                f"from {headers[0].path.name} ({_file_label(header)})",
                path=header.path,
                key="ImagePositionPatient",
            )


def _check_in_plane_positions(headers, frames, location):
    first_of = np.full(location.max() + 1, -1)
    for index in range(len(location) - 1, -1, -1):
        first_of[location[index]] = index
    shift = np.abs(frames["position"] - frames["position"][first_of[location]]).max(axis=1)
    bad = np.flatnonzero(shift > POSITION_TOLERANCE_MM)
    if bad.size:
        header = headers[frames["file"][bad[0]]]
        raise DicomError(
            f"geometry changes between volumes: a slice is shifted by {shift[bad[0]]:.3f} mm "
            f"within its plane ({_file_label(header)})",
            path=header.path,
            key="ImagePositionPatient",
        )


def _check_single_echo_and_type(headers, frames):
    echo = frames["echo"][np.isfinite(frames["echo"])]
    if echo.size and np.ptp(echo) > 1e-3:
        raise DicomError(
            f"several echo times in one series ({sorted(set(np.round(echo, 3).tolist()))} ms): "
            "multi-echo series are not supported",
            path=headers[0].path.parent,
            key="EchoTime",
        )
    types = {h.image_type for h in headers}
    if len(types) > 1:
        raise DicomError(
            f"several image types in one series ({sorted('/'.join(t) for t in types)}): "
            "e.g. magnitude and phase must be converted separately",
            path=headers[0].path.parent,
            key="ImageType",
        )


def _assign_volumes(headers, frames, location, n_volumes):
    """Rank the frames of each slice location by the first key that tells them apart."""
    n_frames = len(location)
    if n_volumes == 1:
        return np.zeros(n_frames, dtype=int), None
    for name in ACQUISITION_KEYS:
        values = frames["keys"][name]
        if not np.all(np.isfinite(values)):
            continue
        order = np.lexsort((values, location))
        sorted_values = values[order].reshape(-1, n_volumes)
        if np.all(np.diff(sorted_values, axis=1) > 0):
            volume = np.empty(n_frames, dtype=int)
            volume[order] = np.tile(np.arange(n_volumes), n_frames // n_volumes)
            logger.debug("volumes ordered by %s", name)
            return volume, name
    raise DicomError(
        f"cannot order the {n_volumes} frames found at each slice location into volumes: none of "
        f"{', '.join(ACQUISITION_KEYS)} is present and different between them",
        path=headers[0].path.parent,
    )


def _check_no_volume_gap(headers, frames, volume, key_name, n_volumes):
    values = frames["keys"][key_name]
    per_volume = np.full(n_volumes, np.inf)
    np.minimum.at(per_volume, volume, values)
    steps = np.diff(per_volume)
    if key_name == "AcquisitionTime":
        repetition_time_s = headers[0].meta.get("RepetitionTime")
        expected = repetition_time_s if repetition_time_s else float(np.median(steps))
        gaps = np.flatnonzero(steps > 1.5 * expected)
    elif key_name == "InstanceNumber":
        expected = len(headers) / n_volumes
        gaps = np.flatnonzero(steps > expected + 0.5)
    else:
        expected = 1
        gaps = np.flatnonzero(steps > 1.5)
    if gaps.size:
        gap = int(gaps[0])
        before = headers[frames["file"][np.flatnonzero(volume == gap)[0]]]
        raise DicomError(
            f"missing volume(s): {key_name} jumps from {per_volume[gap]:g} to "
            f"{per_volume[gap + 1]:g} after volume {gap} (expected a step of {expected:g}; "
            f"last file before the gap: {before.path.name})",
            path=before.path.parent,
            key=key_name,
            volume=gap + 1,
        )


def _check_slice_spacing(headers, centres_mm):
    if len(centres_mm) < 3:
        return
    steps = np.diff(centres_mm)
    typical = float(np.median(steps))
    tolerance = max(POSITION_TOLERANCE_MM, 0.01 * typical)
    bad = np.flatnonzero(np.abs(steps - typical) > tolerance)
    if bad.size:
        index = int(bad[0])
        ratio = steps[index] / typical
        what = "missing slice(s)" if abs(ratio - round(ratio)) < 0.05 and round(ratio) >= 2 else "uneven slice spacing"
        raise DicomError(
            f"{what}: slices {index} and {index + 1} are {steps[index]:.3f} mm apart, the "
            f"others {typical:.3f} mm",
            path=headers[0].path.parent,
            key="ImagePositionPatient",
        )


def _affine_ras(headers, frames, location, volume, normal, centres_mm):
    row_cos, col_cos = frames["orientation"][0, :3], frames["orientation"][0, 3:]
    spacing_rows_mm, spacing_cols_mm = frames["spacing"][0]
    first_volume = volume == 0
    positions = np.empty((len(centres_mm), 3))
    positions[location[first_volume]] = frames["position"][first_volume]
    if len(centres_mm) > 1:
        slice_vector = (positions[-1] - positions[0]) / (len(centres_mm) - 1)
    else:
        slice_spacing = headers[0].slice_spacing_mm or 1.0
        slice_vector = normal * slice_spacing
    rows = headers[0].rows
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_cos * spacing_cols_mm
    affine_lps[:3, 1] = -col_cos * spacing_rows_mm  # j runs against the DICOM rows
    affine_lps[:3, 2] = slice_vector
    affine_lps[:3, 3] = positions[0] + col_cos * spacing_rows_mm * (rows - 1)
    return D @ affine_lps


def _slice_timing(first, frames, location, volume, n_slices):
    """Slice times (s, NIfTI slice order) of the first volume relative to its first slice, or why they are unknown.

    Returns ``(times, None)``, or ``(None, reason)`` for a time series of
    several 2-D slices whose times cannot be known (``(None, None)`` when
    slice times do not apply: one slice, one volume, a 3-D acquisition).

    Per-frame times (Siemens MosaicRefAcqTimes, enhanced frame times) are
    used as recorded.  Exception (dcm2niix issues 870/875; CMRR-C2P/MB issue
    29): the first file of a Siemens mosaic run can carry other times than
    the rest (single-band timing of a multiband run, a clock 2.5 ms off);
    when the first two volumes' time spans differ, the second volume's times
    are used, as dcm2niix does.
    GE slice times come from the acquisition recipe (`tmstarget.ingest.dicom.ge`),
    counted from the first prescribed slice (lowest InstanceNumber).
    """
    n_volumes = int(volume.max()) + 1
    is_3d = str(first.meta.get("MRAcquisitionType", "")).upper() == "3D"
    if n_slices < 2 or is_3d:
        return None, None
    if first.ge_recipe is not None:
        if n_volumes < 2:
            return None, None
        times, reason = ge_slice_times(first.ge_recipe, n_slices)
        if times is None:
            return None, reason
        in_first = volume == 0
        prescribed = location[in_first][np.argsort(frames["keys"]["InstanceNumber"][in_first], kind="stable")]
        return (times[::-1] if prescribed[0] > prescribed[-1] else times), None
    per_volume = []
    for index in range(min(2, n_volumes)):
        chosen = volume == index
        times = np.full(n_slices, np.nan)
        times[location[chosen]] = frames["time"][chosen]
        per_volume.append(times)
    times = per_volume[0]
    if first.layout == "mosaic" and len(per_volume) == 2 and _second_volume_times_apply(*per_volume,
                                                                                      first.meta.get("RepetitionTime")):
        logger.info("the first volume's slice times span differently from the second's: using the second volume's")
        times = per_volume[1]
    unknown = (None, "the DICOM headers hold no slice times") if n_volumes > 1 else (None, None)
    if not np.all(np.isfinite(times)):
        return unknown
    relative = times - times.min()
    if np.all(relative == 0):
        return unknown
    repetition_time_s = first.meta.get("RepetitionTime")
    if repetition_time_s and relative.max() >= repetition_time_s:
        logger.warning(
            "slice times span %.3f s, not below the repetition time %.3f s: SliceTiming omitted",
            relative.max(),
            repetition_time_s,
        )
        return None, f"the recorded slice times span {relative.max():.3f} s, not below the repetition time"
    return relative, None


def _second_volume_times_apply(first_s, second_s, repetition_time_s):
    """True when the second volume's slice times are valid and span differently from the first's (> 0.1 us)."""
    if not (np.all(np.isfinite(first_s)) and np.all(np.isfinite(second_s))):
        return False
    span_first, span_second = np.ptp(first_s), np.ptp(second_s)
    valid = span_second > 0 and (not repetition_time_s or span_second < repetition_time_s)
    return bool(valid and abs(span_first - span_second) > 1e-7)


def _phase_encoding(header):
    """BIDS PhaseEncodingDirection in this module's voxel axes, and whether the sign is known."""
    direction = header.meta.get("InPlanePhaseEncodingDirectionDICOM")
    if direction not in ("ROW", "COL"):
        return None
    # ROW: phase encoding along the columns index -> voxel axis i (same sense).
    # COL: along the row index -> voxel axis j, whose sense is reversed here.
    axis = "i" if direction == "ROW" else "j"
    if header.pe_positive is None:
        return axis, False
    toward_increasing_index = header.pe_positive == 1
    if axis == "j":
        toward_increasing_index = not toward_increasing_index
    return (axis if toward_increasing_index else axis + "-"), True
