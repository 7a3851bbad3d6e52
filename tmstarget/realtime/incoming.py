"""Poll a scanner's real-time export folder and release its volumes in acquisition order.

`IncomingSeries.poll()` is non-blocking: it lists the folder (``os.scandir``,
no file events, so it works on network shares), reads the files that became
complete since the last call and returns the volumes (and gaps) that are now
ready, strictly in acquisition order.

Rules
-----
* **Complete file.**  A file is read once its size and modification time
  are unchanged since an earlier poll and for at least ``settle_s``, and it
  must then parse with all its pixel bytes present.  A file that fails to
  parse is retried (every ``max(settle_s, poll_s)`` while unchanged; any
  change of size restarts the count), and skipped for good after
  ``retries`` failures, logged once with its name.  A file still being
  written is therefore never an error.  Names starting with ``.`` (temporary
  files) and sub-folders are ignored.
* **Series.**  Files are grouped by SeriesInstanceUID.  The series selected
  by ``series`` (SeriesNumber or SeriesInstanceUID), else the first series
  seen, is followed; files of any other series are skipped (logged once per
  series).
* **Volume number.**  TemporalPositionIdentifier when the series' first file
  has one (Philips), else AcquisitionNumber (Siemens), else, for one-file-
  per-volume layouts only, InstanceNumber.  The volume index is
  ``number - first_number``: timing is never shifted.
* **Volumes.**  Siemens MOSAIC and enhanced multi-frame files hold one volume
  each.  For one slice per file, the slice count is learnt from the first
  volume: it is complete when it holds ImagesInAcquisition (0020,1002)
  slices, or when a file of a later volume arrives (scanners and
  `tmstarget.realtime.replay` write a volume's slices before the next
  volume's); later volumes are complete when they hold that many slices.
  A series of a single slice-per-file volume without ImagesInAcquisition is
  therefore never released.
* **Geometry.**  Each volume is planned and assembled by
  `tmstarget.ingest.dicom.assemble` (the same code as `load_series`), so
  its voxels are oriented as the whole-series image; every volume carries the
  affine of the first volume released and a volume whose geometry differs
  from it by more than 0.01 mm is skipped.
* **Order, duplicates, gaps.**  Volumes are released in number order.  A file
  repeating a volume (mosaic) or a slice position of a volume (slice per
  file) already received is ignored and counted in ``duplicates``.  When a
  volume is missing and a later one is complete, the missing one is waited
  for ``gap_timeout_s`` (from the time the earliest later volume was
  complete), then a `Gap` is released in its place; its files arriving
  afterwards are skipped as late.
* **Restart.**  Volumes with ``index < first_index`` are read (header only)
  and dropped without being released.

Privacy: patient identifiers parsed with a header are dropped at once; the
series description is redacted when it contains one.  Log lines name files,
series numbers and volume numbers only.
"""

import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pydicom

from tmstarget.errors import DicomError, InputError
from tmstarget.ingest.dicom.assemble import POSITION_TOLERANCE_MM, assemble_image, plan_series
from tmstarget.ingest.dicom.headers import SkippedFile, read_file_header
from tmstarget.ingest.dicom.sidecar import redact

__all__ = ["Gap", "IncomingSeries", "Volume"]

_PER_FILE_LAYOUTS = ("mosaic", "multiframe")
_VOLUME_KEYS = {
    "single": ("TemporalPositionIdentifier", "AcquisitionNumber"),
    "mosaic": ("TemporalPositionIdentifier", "AcquisitionNumber", "InstanceNumber"),
    "multiframe": ("TemporalPositionIdentifier", "AcquisitionNumber", "InstanceNumber"),
}


@dataclass
class Volume:
    """One complete volume of the followed series.

    Attributes
    ----------
    index : int
        0-based acquisition index (volume number - first volume number).
    number : int
        The scanner's volume number (see module docstring).
    data : numpy.ndarray
        float32, shape (i, j, k): rescaled values, voxel axes of
        `tmstarget.ingest.dicom.series.load_series` for the whole series.
    affine : numpy.ndarray
        (4, 4) voxel -> RAS+ mm, that of the first volume released.
    t_r_s : float or None
        RepetitionTime (s).
    series_uid, series_number, description
        The series (description redacted if it holds a patient identifier).
    files : tuple of Path
        The file(s) the volume was assembled from, sorted by name.
    completed_s : float
        ``time.monotonic()`` when its last file was found complete (parsed).
    seen_s : float
        ``time.monotonic()`` when its last file was first seen at its final
        size (``completed_s - seen_s`` is the settle wait).  Added field.
    """

    index: int
    number: int
    data: np.ndarray
    affine: np.ndarray
    t_r_s: float | None
    series_uid: str
    series_number: int | None
    description: str
    files: tuple
    completed_s: float
    seen_s: float


@dataclass
class Gap:
    """A volume given up after ``gap_timeout_s``: nothing was released for this index."""

    index: int
    number: int
    waited_s: float


@dataclass
class _PendingFile:
    signature: tuple  # (size, mtime_ns)
    changed_s: float
    last_attempt_s: float | None = None
    failures: int = 0


@dataclass
class _PartialVolume:
    number: int
    headers: list = field(default_factory=list)
    seen_s: float = 0.0
    completed_s: float = 0.0


class IncomingSeries:
    """Polling reader of a real-time export folder (see module docstring for the rules).

    Parameters
    ----------
    folder : str or os.PathLike
        The export folder; it may not exist yet (polls return nothing until it does).
    series : int or str, optional
        SeriesNumber or SeriesInstanceUID to follow; the first series seen otherwise.
    first_index : int
        Volumes before this index are dropped (a restarted watcher).
    settle_s : float
        A file's size must be unchanged for this long before it is read (s).
    retries : int
        Failed parses of an unchanged file before it is skipped.
    gap_timeout_s : float
        How long a missing volume is waited for once a later one is complete (s).
    poll_s : float
        Sleep between polls in `wait`, and the shortest interval between two
        parse attempts of the same unchanged file (s).
    first_number : int
        Number of the series' first volume (index 0); scanners count from 1.
    max_files_per_poll : int, optional
        Read at most this many files per poll (default: all that are ready),
        so a backlog waits on disk rather than in memory.
    log : logging.Logger, optional
        Where to log (this module's logger by default).

    Attributes
    ----------
    skipped : list of (Path, str)
        Files not used and why: corrupt, not DICOM, other series, late, ...
    duplicates : list of Path
        Files repeating a volume or slice already received.
    gaps : list of Gap
    n_released : int
        Volumes released so far.
    n_file_events : int
        Files first seen (or seen changed) plus reads attempted, so far: a
        caller that polls again at once while it grows loses no time.
    n_before_first_index : int
        Files dropped because their volume index is below ``first_index``.
    series_uid, series_number, description
        The followed series, once selected (None before).
    """

    def __init__(
        self,
        folder,
        series=None,
        first_index=0,
        settle_s=0.05,
        retries=5,
        gap_timeout_s=10.0,
        poll_s=0.02,
        first_number=1,
        max_files_per_poll=None,
        log=None,
    ):
        for name, value in (("settle_s", settle_s), ("gap_timeout_s", gap_timeout_s), ("poll_s", poll_s)):
            if not value >= 0:
                raise InputError(f"{name} must be >= 0 seconds, got {value!r}", key=name)
        for name, value, lowest in (("first_index", first_index, 0), ("retries", retries, 1)):
            if not isinstance(value, (int, np.integer)) or value < lowest:
                raise InputError(f"{name} must be an integer >= {lowest}, got {value!r}", key=name)
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError("the incoming folder is a file, expected a folder", path=self.folder)
        self.wanted_series = series
        self.first_index = int(first_index)
        self.settle_s = float(settle_s)
        self.retries = int(retries)
        self.gap_timeout_s = float(gap_timeout_s)
        self.poll_s = float(poll_s)
        self.first_number = int(first_number)
        self.max_files_per_poll = max_files_per_poll
        self.log = log or logging.getLogger(__name__)
        self.skipped = []
        self.duplicates = []
        self.gaps = []
        self.n_released = 0
        self.n_file_events = 0
        self.n_before_first_index = 0
        self.series_uid = None
        self.series_number = None
        self.description = None
        self._layout = None
        self._volume_key = None
        self._slices_hint = None  # ImagesInAcquisition of a slice-per-file series
        self._n_slices = None
        self._highest_number = None
        self._affine = None
        self._shape = None
        self._done = set()  # names consumed for good (used or skipped)
        self._pending = {}  # name -> _PendingFile
        self._partial = {}  # number -> _PartialVolume (slice per file)
        self._ready = {}  # number -> Volume, not yet released
        self._ignored_series = set()
        self._next_number = self.first_number + self.first_index

    # ----------------------------------------------------------------- public

    def poll(self):
        """Read what became complete and return what is ready, in acquisition order.

        Returns
        -------
        list of Volume or Gap
            Possibly empty; never blocks (beyond reading the new files).
        """
        now = time.monotonic()
        self._scan(now)
        return self._release(time.monotonic())

    def wait(self, timeout_s):
        """Poll every ``poll_s`` until something is ready or ``timeout_s`` has passed.

        Returns
        -------
        list of Volume or Gap
            Empty only when the timeout passed.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            items = self.poll()
            if items or time.monotonic() >= deadline:
                return items
            time.sleep(self.poll_s)

    @property
    def next_index(self):
        """Index of the next volume to be released."""
        return self._next_number - self.first_number

    # ------------------------------------------------------------- file level

    def _scan(self, now):
        try:
            entries = os.scandir(self.folder)
        except FileNotFoundError:
            return
        ready = []
        retry_s = max(self.settle_s, self.poll_s)
        with entries:
            fresh = [entry for entry in entries if entry.name not in self._done and not entry.name.startswith(".")]
        if self.max_files_per_poll is not None and len(fresh) > 2 * self.max_files_per_poll:
            # with a backlog only the earliest names are looked at (names sort in acquisition order)
            fresh = sorted(fresh, key=lambda entry: entry.name)[:2 * self.max_files_per_poll]
        for entry in fresh:
            name = entry.name
            try:
                if not entry.is_file():
                    continue
                stat = entry.stat()
            except FileNotFoundError:
                continue
            signature = (stat.st_size, stat.st_mtime_ns)
            pending = self._pending.get(name)
            if pending is None or pending.signature != signature:
                self._pending[name] = _PendingFile(signature, now)
                self.n_file_events += 1
                continue
            if signature[0] == 0 or now - pending.changed_s < self.settle_s:
                continue
            if pending.last_attempt_s is not None and now - pending.last_attempt_s < retry_s:
                continue
            ready.append((name, entry.path, pending))
        # a cap keeps a backlog on disk instead of in memory (the rest is read at the next polls)
        for name, path, pending in sorted(ready, key=lambda item: item[0])[:self.max_files_per_poll]:
            self._attempt(name, Path(path), pending, now)
        if self._partial:
            self._close_slice_volumes()

    def _attempt(self, name, path, pending, now):
        pending.last_attempt_s = now
        self.n_file_events += 1
        try:
            header = read_file_header(path)
        except DicomError as exc:
            return self._failed(name, path, pending, exc.message)
        if isinstance(header, SkippedFile):
            return self._failed(name, path, pending, header.reason)
        if header.pixels.problem:
            return self._failed(name, path, pending, header.pixels.problem)
        del self._pending[name]
        self._done.add(name)
        self._accept(header, pending.changed_s, time.monotonic())

    def _failed(self, name, path, pending, reason):
        pending.failures += 1
        self.log.debug("%s: not readable yet (attempt %d of %d): %s", name, pending.failures, self.retries, reason)
        if pending.failures >= self.retries:
            del self._pending[name]
            self._skip(path, f"unreadable after {self.retries} attempts: {reason}")

    def _skip(self, path, reason, level=logging.WARNING):
        self._done.add(path.name)
        self.skipped.append((path, reason))
        self.log.log(level, "%s: skipped (%s)", path.name, reason)

    # ----------------------------------------------------------- series level

    def _accept(self, header, seen_s, completed_s):
        if self.series_uid is None and self._wanted(header):
            self._select(header)
        if header.series_uid != self.series_uid:
            return self._other_series(header)
        header = replace(header, phi_tokens=frozenset())
        if header.layout != self._layout:
            return self._skip(header.path, f"layout '{header.layout}' differs from the series' '{self._layout}'")
        number = self._volume_number(header)
        if number is None:
            return self._skip(header.path, f"no {self._volume_key}: the file cannot be placed in the series")
        if number - self.first_number < self.first_index:
            self.n_before_first_index += 1
            return self.log.debug("%s: volume %d already processed (before first_index)", header.path.name, number)
        if number < self._next_number:
            if any(gap.number == number for gap in self.gaps):
                return self._skip(header.path, f"volume {number} arrived after it was recorded as a gap")
            return self._duplicate(header, number)
        if number in self._ready:
            return self._duplicate(header, number)
        self._highest_number = number if self._highest_number is None else max(self._highest_number, number)
        if self._layout in _PER_FILE_LAYOUTS:
            return self._assemble(number, [header], seen_s, completed_s)
        partial = self._partial.setdefault(number, _PartialVolume(number))
        position_lps_mm = header.position_lps_mm
        if any(np.abs(h.position_lps_mm - position_lps_mm).max() <= POSITION_TOLERANCE_MM for h in partial.headers):
            return self._duplicate(header, number)
        partial.headers.append(header)
        partial.seen_s = max(partial.seen_s, seen_s)
        partial.completed_s = max(partial.completed_s, completed_s)

    def _wanted(self, header):
        wanted = self.wanted_series
        if wanted is None:
            return True
        if isinstance(wanted, str) and not wanted.isdigit():
            return header.series_uid == wanted
        return header.meta.get("SeriesNumber") == int(wanted)

    def _select(self, header):
        self.series_uid = header.series_uid
        self.series_number = header.meta.get("SeriesNumber")
        description = header.meta.get("SeriesDescription") or header.meta.get("ProtocolName") or ""
        self.description = redact(description, header.phi_tokens)
        self._layout = header.layout
        keys = _VOLUME_KEYS[header.layout]
        self._volume_key = next((k for k in keys if np.isfinite(header.keys[k][0])), keys[-1])
        if header.layout == "single":
            self._slices_hint = _images_in_acquisition(header.path)
        self.log.info(
            "following series %s (%s, %s layout, volumes numbered by %s)",
            self.series_number,
            self.description,
            self._layout,
            self._volume_key,
        )

    def _other_series(self, header):
        reason = f"series {header.meta.get('SeriesNumber')} is not the one followed ({self.series_number})"
        if self.series_uid is None:
            reason = f"series {header.meta.get('SeriesNumber')} is not the selected series {self.wanted_series!r}"
        first = header.series_uid not in self._ignored_series
        self._ignored_series.add(header.series_uid)
        if first:
            self.log.warning("ignoring the files of another %s", reason)
        self._skip(header.path, reason, level=logging.DEBUG)

    def _volume_number(self, header):
        value = header.keys[self._volume_key][0]
        return int(value) if np.isfinite(value) else None

    def _duplicate(self, header, number):
        self._done.add(header.path.name)
        self.duplicates.append(header.path)
        self.log.info("%s: duplicate of volume %d, ignored", header.path.name, number)

    # ----------------------------------------------------------- volume level

    def _close_slice_volumes(self):
        if self._n_slices is None:
            for number in sorted(self._partial):
                count = len(self._partial[number].headers)
                if count == self._slices_hint or number < self._highest_number:
                    self._n_slices = count
                    self.log.info("slice-per-file series: %d slices per volume (from volume %d)", count, number)
                    break
            if self._n_slices is None:
                return
        for number in sorted(self._partial):
            partial = self._partial[number]
            if len(partial.headers) >= self._n_slices:
                del self._partial[number]
                if len(partial.headers) > self._n_slices:
                    for header in partial.headers:
                        self._skip(header.path, f"volume {number} has {len(partial.headers)} slices, "
                                   f"the series {self._n_slices}")
                    continue
                self._assemble(number, partial.headers, partial.seen_s, partial.completed_s)

    def _assemble(self, number, headers, seen_s, completed_s):
        try:
            plan = plan_series(headers)
            if plan.n_volumes != 1:
                raise DicomError(f"the file(s) hold {plan.n_volumes} volumes, expected one")
            image, _ = assemble_image(plan)
        except DicomError as exc:
            for header in headers:
                self._skip(header.path, f"volume {number} cannot be assembled: {exc.message}")
            return
        if self._affine is None:
            self._affine, self._shape = image.affine.copy(), image.shape
        elif image.shape != self._shape or np.abs(image.affine - self._affine).max() > POSITION_TOLERANCE_MM:
            moved = np.abs(image.affine - self._affine).max() if image.shape == self._shape else np.nan
            for header in headers:
                self._skip(header.path, f"volume {number}: geometry differs from the first volume released "
                           f"(shape {image.shape} vs {self._shape}, affine moved by {moved:.3g} mm)")
            return
        self._ready[number] = Volume(
            index=number - self.first_number,
            number=number,
            data=image.get_fdata(dtype=np.float32),
            affine=self._affine.copy(),
            t_r_s=plan.first_header.meta.get("RepetitionTime"),
            series_uid=self.series_uid,
            series_number=self.series_number,
            description=self.description,
            files=tuple(sorted(h.path for h in headers)),
            completed_s=completed_s,
            seen_s=seen_s,
        )

    def _release(self, now):
        released = []
        while True:
            volume = self._ready.pop(self._next_number, None)
            if volume is not None:
                released.append(volume)
                self.n_released += 1
                self._next_number += 1
                continue
            later = [v.completed_s for v in self._ready.values()]
            if not later or now - min(later) < self.gap_timeout_s:
                return released
            gap = Gap(self._next_number - self.first_number, self._next_number, now - min(later))
            self.log.warning(
                "volume %d (index %d) missing after waiting %.1f s: recorded as a gap",
                gap.number,
                gap.index,
                gap.waited_s,
            )
            for header in self._partial.pop(self._next_number, _PartialVolume(0)).headers:
                self._skip(header.path, f"volume {gap.number} incomplete when recorded as a gap")
            self.gaps.append(gap)
            released.append(gap)
            self._next_number += 1


def _images_in_acquisition(path):
    """ImagesInAcquisition (0020,1002) of one file, or None (one extra header read per series)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[(0x0020, 0x1002)])
        value = ds.get("ImagesInAcquisition")
        return int(value) if value is not None else None
    except (OSError, ValueError, TypeError, pydicom.errors.InvalidDicomError):
        return None
