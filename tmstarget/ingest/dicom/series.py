"""DICOM -> NIfTI ingest: find series, load one as a NIfTI image, convert a folder.

Public API::

    find_series(folder, recursive=True) -> SeriesList[SeriesInfo]
    load_series(folder_or_files, series=None, recursive=True) -> (Nifti1Image, sidecar)
    convert(dicom_dir, output_dir, subject, task=None, series=None, force=False, progress=None) -> list[Path]

Files are grouped by SeriesInstanceUID and never mixed.  Non-DICOM files and
DICOM files without pixel data are skipped and counted; anything that would
give a wrong image (truncated file, missing volume or slice, geometry changing
between volumes, undecodable transfer syntax, several series when one is
asked for) raises `tmstarget.errors.DicomError` naming the file or series.

Supported layouts: Siemens MOSAIC (one file per volume; NumberOfImagesInMosaic
and slice times from (0019,xxxx) or the CSA image header), one slice per
file (Philips, GE, Siemens), and enhanced multi-frame MR (Siemens XA).  See
`tmstarget.ingest.dicom.assemble` for the voxel axes and affine convention.

No patient field (name, ID, birth date) is ever written, logged or used in a
file name: outputs are named from the subject label the user gives (BIDS
layout, see `convert`).
"""

import logging
import os
import re
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import tmstarget
from tmstarget._fileio import write_json_atomic, write_nifti_atomic
from tmstarget.errors import DicomError, InputError, OutputError
from tmstarget.ingest.dicom.assemble import assemble_image, plan_series
from tmstarget.ingest.dicom.headers import SkippedFile, read_file_header
from tmstarget.ingest.dicom.sidecar import REDACTED

logger = logging.getLogger(__name__)

__all__ = ["SeriesInfo", "SeriesList", "find_series", "load_series", "convert", "DicomError"]


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series found in a folder (no patient fields).

    Attributes
    ----------
    uid : str
        SeriesInstanceUID.
    number : int or None
        SeriesNumber.
    description : str
        SeriesDescription (or ProtocolName when empty).
    modality, manufacturer : str
    layout : str
        "mosaic", "single" (one slice per file) or "multiframe".
    n_files, n_volumes, n_slices : int
        n_volumes/n_slices are 0 when the series cannot be assembled.
    shape : tuple of int
        NIfTI shape the series converts to (empty when it cannot).
    problem : str or None
        Why `load_series` would refuse this series, if it would.
    files : tuple of Path
    """

    uid: str
    number: int | None
    description: str
    modality: str
    manufacturer: str
    layout: str
    n_files: int
    n_volumes: int
    n_slices: int
    shape: tuple
    problem: str | None
    files: tuple

    def __str__(self):
        count = f"{self.n_volumes} volume(s) of {self.n_slices} slice(s)" if self.n_volumes else "not convertible"
        text = f"series {self.number} '{self.description}': {count}, {self.n_files} file(s), {self.layout}"
        return f"{text} [{self.problem}]" if self.problem else text


class SeriesList(list):
    """A list of `SeriesInfo` plus what was skipped while scanning.

    Attributes
    ----------
    n_skipped_non_dicom : int
        Files that are not DICOM.
    n_skipped_non_image : int
        DICOM files without pixel data (reports, DICOMDIR, ...).
    unreadable : list of (Path, str)
        DICOM files whose header cannot be read, with the reason.
    """

    def __init__(self, items=(), *, n_skipped_non_dicom=0, n_skipped_non_image=0, unreadable=()):
        super().__init__(items)
        self.n_skipped_non_dicom = n_skipped_non_dicom
        self.n_skipped_non_image = n_skipped_non_image
        self.unreadable = list(unreadable)


@dataclass
class _Scan:
    groups: dict
    infos: SeriesList


def find_series(folder, recursive=True):
    """List the image series of a folder.

    Parameters
    ----------
    folder : str or os.PathLike or sequence of paths
        Folder to scan (or explicit files).
    recursive : bool
        Also scan sub-folders.

    Returns
    -------
    SeriesList of SeriesInfo
        Sorted by series number then description; skipped and unreadable
        files are counted on the list.

    Raises
    ------
    InputError
        If the folder does not exist or holds no file.
    """
    return _scan(folder, recursive).infos


def load_series(folder_or_files, series=None, recursive=True):
    """Load one DICOM series as a NIfTI image and a BIDS-style sidecar.

    Parameters
    ----------
    folder_or_files : str or os.PathLike or sequence of paths
        A folder (scanned recursively by default) or a list of files.
    series : int or str or SeriesInfo, optional
        SeriesNumber, SeriesInstanceUID or a `SeriesInfo`; required when the
        input holds several series.
    recursive : bool
        Scan sub-folders when a folder is given.

    Returns
    -------
    image : nibabel.Nifti1Image
        3-D or 4-D, RAS+ affine in mm (scanner frame), qform == sform, codes 1.
        Axes: i = DICOM columns, j = DICOM rows reversed, k = slices along
        row x column cosines, t = volumes in acquisition order.
    sidecar : dict
        RepetitionTime, EchoTime (s), SliceTiming (s, NIfTI slice order),
        PhaseEncodingDirection (or PhaseEncodingAxis when the sign is not
        known), Manufacturer, SeriesDescription, SeriesNumber, ... No patient
        fields.

    Raises
    ------
    DicomError
        No image series, several series without ``series``, an unknown
        ``series``, unreadable files, or a series that cannot be assembled
        faithfully (see `tmstarget.ingest.dicom.assemble.plan_series`).
    """
    scan = _scan(folder_or_files, recursive)
    info = _pick_one(scan.infos, series, folder_or_files)
    return _load(scan, info)


def convert(dicom_dir, output_dir, subject, *, task=None, series=None, force=False, progress=None):
    """Convert DICOM series to a BIDS-style tree of ``*.nii.gz`` + ``*.json`` pairs.

    Parameters
    ----------
    dicom_dir : str or os.PathLike
        Folder scanned recursively.
    output_dir : str or os.PathLike
        BIDS root, created if needed.  ``sub-<subject>/`` must not exist in it
        unless ``force``; ``dataset_description.json`` is written when absent.
    subject : str
        Subject label (letters and digits; a leading ``sub-`` is dropped),
        given by the user.  Patient fields (name, ID) are never used.
    task : str, optional
        BIDS task label of every functional series; by default each
        series' description reduced to letters and digits.
    series : int or str or sequence, optional
        Series number(s)/UID(s) to convert; all image series by default.
    force : bool
        Write into an existing ``sub-<subject>/`` (files of the same name are
        replaced).
    progress : callable, optional
        Called as ``progress(stage, done, total)`` while header files are read
        (stage ``"reading DICOM headers"``), volumes assembled (stage
        ``"series N: assembling volumes"``) and each NIfTI written.

    Returns
    -------
    list of Path
        The written files: NIfTI then JSON for each series, then
        ``dataset_description.json`` when it was written.

    Raises
    ------
    InputError
        Invalid subject or task label.
    OutputError
        ``sub-<subject>/`` exists without ``force``, or the folder is not writable.
    DicomError
        Any selected series cannot be converted; nothing is written then.

    Notes
    -----
    Names (BIDS where a convention exists):

    * a time series (two volumes or more, not diffusion):
      ``sub-<s>/func/sub-<s>_task-<task>[_run-<n>]_bold`` (``TaskName`` in its JSON);
    * one volume named like a T1 (t1, mprage, mp2rage, spgr, bravo, tfl) or a
      3-D inversion-recovery non-EPI volume: ``sub-<s>/anat/sub-<s>[_run-<n>]_T1w``;
    * anything else: ``sub-<s>/misc/sub-<s>_series-<NNN>_<description>`` (not BIDS).

    ``_run-<n>`` numbers series that would share a name, in series order.  A
    description holding a patient identifier is never used (the task label
    falls back to ``series<NNN>``).  Every series is written to a staging
    folder first and moved into place only when all succeeded.
    """
    label = _label(subject, "subject")
    task_label = None if task is None else _label(task, "task")
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError("exists and is not a folder", path=output_dir)
    subject_dir = output_dir / f"sub-{label}"
    if subject_dir.exists() and not force:
        raise OutputError(f"sub-{label} already exists in the output folder; use force=True (--force) to write into "
                          "it", path=subject_dir)
    scan = _scan(dicom_dir, True, progress)
    infos = _pick_many(scan.infos, series, dicom_dir)
    names = _bids_names(label, task_label, infos, scan)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmstarget-convert-", dir=output_dir))
    except OSError as exc:
        raise OutputError(f"cannot create the output folder ({exc.strerror})", path=output_dir) from exc
    try:
        staged = []
        for info in infos:
            image, sidecar = _load(scan, info, progress)
            stem, task_name = names[info.uid]
            if task_name is not None:
                sidecar["TaskName"] = task_name
            if progress is not None:
                progress(f"series {info.number}: writing {Path(stem).name}.nii.gz", 0, 1)
            write_nifti_atomic(staging / f"{stem}.nii.gz", image)
            write_json_atomic(staging / f"{stem}.json", sidecar)
            if progress is not None:
                progress(f"series {info.number}: writing {Path(stem).name}.nii.gz", 1, 1)
            staged += [f"{stem}.nii.gz", f"{stem}.json"]
            logger.info("series %s converted: shape %s -> %s", info.number, image.shape, stem)
        description = output_dir / "dataset_description.json"
        if not description.exists():
            write_json_atomic(staging / description.name, _dataset_description())
            staged.append(description.name)
        written = []
        for name in staged:
            (output_dir / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, output_dir / name)
            written.append(output_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def _scan(folder_or_files, recursive, progress=None):
    paths = _input_files(folder_or_files, recursive)
    groups = defaultdict(list)
    n_non_dicom = n_non_image = 0
    unreadable = []
    for index, path in enumerate(paths):
        if progress is not None:
            progress("reading DICOM headers", index, len(paths))
        try:
            result = read_file_header(path)
        except DicomError as exc:
            unreadable.append((path, exc.message))
            continue
        if isinstance(result, SkippedFile):
            if result.reason == "not DICOM":
                n_non_dicom += 1
            else:
                n_non_image += 1
            continue
        groups[result.series_uid].append(result)
    if progress is not None:
        progress("reading DICOM headers", len(paths), len(paths))
    if n_non_dicom or n_non_image:
        logger.info("skipped %d non-DICOM file(s) and %d DICOM file(s) without pixel data", n_non_dicom, n_non_image)
    for path, message in unreadable:
        logger.warning("%s: %s", path, message)
    infos = [_series_info(uid, headers) for uid, headers in groups.items()]
    infos.sort(key=lambda i: (i.number if i.number is not None else -1, i.description, i.uid))
    series_list = SeriesList(
        infos, n_skipped_non_dicom=n_non_dicom, n_skipped_non_image=n_non_image, unreadable=unreadable
    )
    return _Scan(dict(groups), series_list)


def _input_files(folder_or_files, recursive):
    if isinstance(folder_or_files, (str, os.PathLike)):
        root = Path(folder_or_files)
        if root.is_file():
            return [root]
        if not root.is_dir():
            raise InputError("no such DICOM folder or file", path=root)
        pattern = root.rglob("*") if recursive else root.glob("*")
        paths = sorted(p for p in pattern if p.is_file())
        if not paths:
            raise InputError("the DICOM folder holds no file", path=root)
        return paths
    paths = [Path(p) for p in folder_or_files]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{len(missing)} of the given files do not exist (first: {missing[0]})", path=missing[0])
    if not paths:
        raise InputError("no DICOM file given")
    return sorted(paths)


def _series_info(uid, headers):
    headers.sort(key=lambda h: str(h.path))
    first = headers[0]
    problem = next((f"{h.path.name}: {h.pixels.problem}" for h in headers if h.pixels.problem), None)
    n_volumes = n_slices = 0
    shape = ()
    if problem is None:
        try:
            plan = plan_series(headers)
            n_volumes, n_slices, shape = plan.n_volumes, plan.n_slices, plan.shape
        except DicomError as exc:
            problem = str(exc)
    meta = first.meta
    number = meta.get("SeriesNumber")
    return SeriesInfo(
        uid=uid,
        number=number,
        description=meta.get("SeriesDescription") or meta.get("ProtocolName") or "",
        modality=meta.get("Modality", ""),
        manufacturer=meta.get("Manufacturer", ""),
        layout=first.layout,
        n_files=len(headers),
        n_volumes=n_volumes,
        n_slices=n_slices,
        shape=shape,
        problem=problem,
        files=tuple(h.path for h in headers),
    )


def _load(scan, info, progress=None):
    if scan.infos.unreadable:
        path, message = scan.infos.unreadable[0]
        raise DicomError(
            f"{len(scan.infos.unreadable)} unreadable or inconsistent DICOM file(s) in the input, which may belong to "
            f"series {info.number}; remove them or fix them (first: {message})",
            path=path,
        )
    headers = scan.groups[info.uid]
    for header in headers:
        if header.pixels.problem:
            raise DicomError(f"series {info.number} '{info.description}': {header.pixels.problem}", path=header.path)
    plan = plan_series(headers)
    stage = f"series {info.number}: assembling volumes"
    image, sidecar = assemble_image(plan, progress=None if progress is None else lambda d, t: progress(stage, d, t))
    if sidecar.get("SliceTimingUnknownReason"):
        logger.warning("series %s: slice times unknown (%s)", info.number, sidecar["SliceTimingUnknownReason"])
    return image, sidecar


def _describe(infos):
    return "; ".join(str(i) for i in infos)


def _pick_one(infos, series, source):
    if not infos:
        raise DicomError(
            f"no DICOM image series found ({infos.n_skipped_non_dicom} non-DICOM and "
            f"{infos.n_skipped_non_image} non-image file(s) skipped)",
            path=source if isinstance(source, (str, os.PathLike)) else None,
        )
    if series is None:
        if len(infos) > 1:
            raise DicomError(
                f"{len(infos)} series found, pick one with series= (--series N): {_describe(infos)}",
                path=source if isinstance(source, (str, os.PathLike)) else None,
            )
        return infos[0]
    return _match(infos, series, source)


def _pick_many(infos, series, source):
    if series is None:
        if not infos:
            return _pick_one(infos, None, source)
        return list(infos)
    if isinstance(series, (list, tuple, set)):
        return [_match(infos, s, source) for s in series]
    return [_pick_one(infos, series, source)]


def _match(infos, series, source):
    if isinstance(series, SeriesInfo):
        series = series.uid
    if isinstance(series, str) and not series.isdigit():
        found = [i for i in infos if i.uid == series]
    else:
        found = [i for i in infos if i.number == int(series)]
    if len(found) == 1:
        return found[0]
    where = source if isinstance(source, (str, os.PathLike)) else None
    if not found:
        raise DicomError(f"series {series!r} not found; available: {_describe(infos)}", path=where)
    raise DicomError(
        f"series number {series} is ambiguous ({len(found)} series), give its SeriesInstanceUID: "
        + "; ".join(f"{i.uid} ({i})" for i in found),
        path=where,
    )


def _label(value, what):
    label = str(value)
    label = label[4:] if what == "subject" and label.startswith("sub-") else label
    if not re.fullmatch(r"[A-Za-z0-9]+", label):
        raise InputError(f"{what} label must be letters and digits only (BIDS), got {value!r}", key=what)
    return label


_T1_NAME = re.compile(r"t1|mprage|mp2rage|spgr|bravo|tfl", re.IGNORECASE)
_DIFFUSION_NAME = re.compile(r"dwi|dti|diff", re.IGNORECASE)


def _kind(info, header):
    """"func", "anat" or "misc" (see `convert`)."""
    meta = header.meta
    names = " ".join(str(meta.get(k, "")) for k in ("SeriesDescription", "ProtocolName", "SequenceName"))
    image_type = " ".join(meta.get("ImageType", [])).upper()
    if info.n_volumes >= 2:
        return "misc" if "DIFFUSION" in image_type or _DIFFUSION_NAME.search(names) else "func"
    epi = "EP" in str(meta.get("ScanningSequence", "")).split("\\")
    inversion_3d = str(meta.get("MRAcquisitionType", "")).upper() == "3D" and "InversionTime" in meta and not epi
    return "anat" if info.n_volumes == 1 and (_T1_NAME.search(names) or inversion_3d) else "misc"


def _bids_names(label, task, infos, scan):
    """{series uid: (relative stem, TaskName or None)}, with run numbers where names would clash."""
    base = {}
    for info in infos:
        header = scan.groups[info.uid][0]
        description = _safe_description(info, header.phi_tokens)
        kind = _kind(info, header)
        number = f"{info.number:03d}" if info.number is not None else "000"
        if kind == "func":
            name = task or description or f"series{number}"
            if task is None and not description:
                logger.warning("series %s: no usable description for the task label: task-%s (give --task)",
                               info.number, name)
            base[info.uid] = (f"sub-{label}/func/sub-{label}_task-{name}", "_bold", name)
        elif kind == "anat":
            base[info.uid] = (f"sub-{label}/anat/sub-{label}", "_T1w", None)
        else:
            base[info.uid] = (f"sub-{label}/misc/sub-{label}_series-{number}_{description or 'series'}", "", None)
    counts = defaultdict(int)
    for prefix, suffix, _ in base.values():
        counts[prefix + suffix] += 1
    runs = defaultdict(int)
    names, used = {}, set()
    for info in infos:
        prefix, suffix, task_name = base[info.uid]
        if counts[prefix + suffix] > 1:
            runs[prefix + suffix] += 1
            prefix = f"{prefix}_run-{runs[prefix + suffix]}"
        names[info.uid] = (_unique(prefix + suffix, used), task_name)
    return names


def _safe_description(info, phi_tokens):
    """The series description reduced to letters and digits, or "" when it holds a patient identifier."""
    description = re.sub(r"[^A-Za-z0-9]+", "", info.description)
    tokens = {re.sub(r"[^A-Za-z0-9]+", "", t).lower() for t in phi_tokens}
    if any(len(t) >= 3 and t in description.lower() for t in tokens):
        logger.warning("series %s: description not used in the file name (%s)", info.number, REDACTED)
        return ""
    return description


def _dataset_description():
    return {
        "Name": "tmstarget convert",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "GeneratedBy": [{"Name": "tmstarget", "Version": tmstarget.__version__}],
    }


def _unique(stem, used):
    candidate = stem
    index = 2
    while candidate in used:
        candidate = f"{stem}_{index}"
        index += 1
    used.add(candidate)
    return candidate
