"""Scanner simulator: replay a DICOM series into a folder as a real-time export would.

``tmstarget replay SOURCE_DIR INCOMING_DIR --tr 2.0 [--speed N | --fast]
[--drop K] [--duplicate K] [--corrupt K] [--delay K:SECONDS] [--repeat N]``

The files of one series are copied in acquisition order, one volume every
``tr_s / speed`` seconds (no waiting with ``--fast``), all files of a volume
before the next.  Each file is written **in place** in ``chunks`` pieces
with a flush and a short pause between them, so readers really meet
partially written files (on purpose: this is the one writer of the project
that is not atomic).

Faults (K is the 1-based volume number within the replay):

* ``drop K``: volume K is never written;
* ``duplicate K``: volume K's files are written a second time, right after,
  under another name (``<stem>_dup<suffix>``);
* ``corrupt K``: volume K's files are written truncated to 40 % of their
  bytes, permanently;
* ``delay K:S``: volume K is written as if acquired S seconds late, i.e.
  after the volumes acquired within those S seconds (the order is the same
  with ``--fast``).

``repeat N`` plays the series N times back to back as one long series: from
the second pass on, InstanceNumber, AcquisitionNumber (and
TemporalPositionIdentifier) are shifted with pydicom so that volume numbers
keep increasing, SOPInstanceUIDs are new (deterministic), and file names are
renumbered (``001_000005_000121.dcm`` for Siemens exports,
``IM_0001_000121_0001.dcm`` for `tmstarget.testing.dicom`, else a
``_rep<N>`` suffix).  AcquisitionTime is left as is.
"""

import argparse
import io
import logging
import math
import numbers
import re
import time
from pathlib import Path

from tmstarget.errors import InputError

# numpy, pydicom and the DICOM readers load on first use: `tmstarget --help` registers this parser (issue 19)

__all__ = ["add_parser", "replay", "run"]

logger = logging.getLogger(__name__)

CORRUPT_FRACTION = 0.4
DEFAULT_CHUNK_PAUSE_S = 0.005
_NUMBERED_NAME = re.compile(r"^(?P<head>.*?_)(?P<number>\d{6})(?P<tail>(_\d{4})?\.dcm)$")


def replay(
    source_dir,
    incoming_dir,
    tr_s=2.0,
    speed=1.0,
    drop=(),
    duplicate=(),
    corrupt=(),
    delay=None,
    repeat=1,
    chunks=4,
    series=None,
    log=None,
    chunk_pause_s=DEFAULT_CHUNK_PAUSE_S,
):
    """Write a DICOM series into ``incoming_dir`` at scanner pace, with optional faults.

    Parameters
    ----------
    source_dir : str or os.PathLike
        Folder holding the series (scanned recursively).
    incoming_dir : str or os.PathLike
        Destination (created); must not already hold any of the names written.
    tr_s : float
        Repetition time of the replay (s).
    speed : float
        Time factor (2.0: twice as fast); ``math.inf`` = no waiting (``--fast``).
    drop, duplicate, corrupt : iterable of int
        1-based volume numbers within the replay (see module docstring).
    delay : dict {int: float} or iterable of (int, float) or "K:S" strings, optional
        Volumes written S seconds (scanner time) late.
    repeat : int
        Play the series this many times as one long series.
    chunks : int
        Pieces each file is written in.
    series : int or str, optional
        SeriesNumber or SeriesInstanceUID when the source holds several series.
    log : logging.Logger, optional
    chunk_pause_s : float
        Pause between two pieces of a file (s), also with ``--fast``.

    Returns
    -------
    list of Path
        The files written, in writing order.

    Raises
    ------
    InputError
        Missing source, no or several series without ``series``, a series
        that cannot be assembled, bad parameters, a fault volume out of range,
        or a destination that already holds one of the file names.
    """
    log = log or logger
    _check_positive(tr_s=tr_s, speed=speed)
    for name, value in (("repeat", repeat), ("chunks", chunks)):
        if not isinstance(value, numbers.Integral) or value < 1:
            raise InputError(f"{name} must be an integer >= 1, got {value!r}", key=name)
    if not chunk_pause_s >= 0:
        raise InputError(f"chunk_pause_s must be >= 0, got {chunk_pause_s!r}", key="chunk_pause_s")
    volumes = _source_volumes(source_dir, series)
    n_source = len(volumes)
    n_total = n_source * repeat
    delays_s = _delays(delay)
    faults = {"drop": set(drop), "duplicate": set(duplicate), "corrupt": set(corrupt), "delay": set(delays_s)}
    for name, fault_volumes in faults.items():
        bad = sorted(k for k in fault_volumes if not 1 <= int(k) <= n_total)
        if bad:
            raise InputError(
                f"--{name} {bad[0]}: volumes are numbered 1 to {n_total} in this replay "
                f"({n_source} volume(s) x {repeat})",
                key=name,
            )
    plan = []  # (due scanner time s, K, [(name, source path, pass index)])
    for k in range(1, n_total + 1):
        if k in faults["drop"]:
            continue
        pass_index, source_index = divmod(k - 1, n_source)
        names = [_renamed(p.name, pass_index, n_source) for p in volumes[source_index]]
        plan.append(((k - 1) * tr_s + delays_s.get(k, 0.0), k, list(zip(names, volumes[source_index]))))
    plan.sort(key=lambda item: (item[0], item[1]))
    incoming_dir = Path(incoming_dir)
    _check_free(incoming_dir, plan, faults["duplicate"])
    incoming_dir.mkdir(parents=True, exist_ok=True)
    n_files = sum(len(files) for files in volumes)
    log.info(
        "replaying %d volume(s) (%d file(s) each) into %s, TR %.3f s, speed %s",
        len(plan), len(volumes[0]), incoming_dir, tr_s, "fast" if math.isinf(speed) else f"x{speed:g}",
    )
    written = []
    start = time.monotonic()
    for due_s, k, files in plan:
        if not math.isinf(speed):
            time.sleep(max(0.0, start + due_s / speed - time.monotonic()))
        pass_index = (k - 1) // n_source
        for name, source in files:
            data = _pass_bytes(source, pass_index, n_source, n_files)
            if k in faults["corrupt"]:
                data = data[: int(len(data) * CORRUPT_FRACTION)]
            written.append(_write_in_chunks(incoming_dir / name, data, chunks, chunk_pause_s))
            if k in faults["duplicate"]:
                written.append(_write_in_chunks(incoming_dir / _duplicate_name(name), data, chunks, chunk_pause_s))
        log.debug("volume %d written%s", k, " (corrupt)" if k in faults["corrupt"] else "")
    log.info("replay done: %d file(s) written in %.1f s", len(written), time.monotonic() - start)
    return written


def add_parser(subparsers):
    """Register ``replay``; its handler is ``args.handler(args) -> int`` (`run`)."""
    parser = subparsers.add_parser(
        "replay",
        help="scanner simulator: copy a DICOM series into a folder at TR pace, with optional faults",
        description=(
            "Copy the DICOM series of SOURCE_DIR into INCOMING_DIR in acquisition order, one volume per TR, "
            "each file written in pieces (so partial files occur), like a scanner's real-time export. "
            "K is the 1-based volume number within the replay."
        ),
        epilog="example: tmstarget replay ../shared/data/pydecnef-sub1/dicom/func-run1 /tmp/incoming --tr 2 --speed 4",
    )
    parser.add_argument("source_dir", metavar="SOURCE_DIR", type=Path, help="folder holding the DICOM series")
    parser.add_argument("incoming_dir", metavar="INCOMING_DIR", type=Path, help="folder to write into (created)")
    parser.add_argument("--tr", type=float, default=2.0, metavar="SECONDS", help="repetition time (default: 2.0)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, metavar="N", help="play N times faster than real time")
    pace.add_argument("--fast", action="store_true", help="no waiting between volumes")
    parser.add_argument("--drop", type=int, action="append", default=[], metavar="K", help="never write volume K")
    parser.add_argument("--duplicate", type=int, action="append", default=[], metavar="K",
                        help="write volume K twice (second copy under another name)")
    parser.add_argument("--corrupt", type=int, action="append", default=[], metavar="K",
                        help="write volume K truncated (permanently corrupt)")
    parser.add_argument("--delay", type=_delay_argument, action="append", default=[], metavar="K:SECONDS",
                        help="write volume K SECONDS late (after later volumes)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="play the series N times as one series")
    parser.add_argument("--chunks", type=int, default=4, metavar="N", help="pieces each file is written in (default 4)")
    parser.add_argument("--series", metavar="N", help="series number or SeriesInstanceUID (source with several series)")
    parser.set_defaults(handler=run)
    return parser


def run(args):
    """Run a replay for parsed arguments; prints one summary line.

    Returns
    -------
    int
        0 on success (errors raise `InputError`, printed by `tmstarget.cli.main.main`).
    """
    written = replay(
        args.source_dir,
        args.incoming_dir,
        tr_s=args.tr,
        speed=math.inf if args.fast else args.speed,
        drop=args.drop,
        duplicate=args.duplicate,
        corrupt=args.corrupt,
        delay=args.delay,
        repeat=args.repeat,
        chunks=args.chunks,
        series=args.series,
    )
    print(f"{len(written)} file(s) written to {args.incoming_dir}")
    return 0


def _check_positive(**values):
    for name, value in values.items():
        if not (isinstance(value, numbers.Real) and value > 0):
            raise InputError(f"{name} must be a positive number, got {value!r}", key=name)


def _delay_argument(text):
    try:
        return _parse_delay(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _parse_delay(text):
    number, _, seconds = str(text).partition(":")
    try:
        k, delay_s = int(number), float(seconds)
    except ValueError:
        raise InputError(f"a delay is K:SECONDS (e.g. 5:3.0), got {text!r}", key="delay") from None
    if not delay_s >= 0:
        raise InputError(f"a delay must be >= 0 seconds, got {text!r}", key="delay")
    return k, delay_s


def _delays(delay):
    if delay is None:
        return {}
    items = delay.items() if isinstance(delay, dict) else delay
    delays_s = {}
    for item in items:
        k, delay_s = _parse_delay(item) if isinstance(item, str) else _parse_delay(f"{item[0]}:{item[1]}")
        delays_s[k] = delay_s
    return delays_s


def _source_volumes(source_dir, series):
    """Files of the chosen series grouped by volume, in acquisition order."""
    import numpy as np

    from tmstarget.ingest.dicom.assemble import plan_series
    from tmstarget.ingest.dicom.headers import read_file_header
    from tmstarget.ingest.dicom.series import find_series

    infos = find_series(source_dir)
    if series is not None:
        wanted = str(series)
        infos = [i for i in infos if i.uid == wanted or (wanted.isdigit() and i.number == int(wanted))]
    listing = "; ".join(str(i) for i in infos)
    if len(infos) != 1:
        what = "no DICOM image series" if not infos else f"{len(infos)} series"
        hint = "" if not infos else f" (pick one with --series): {listing}"
        selected = "" if series is None else f" matching series {series!r}"
        raise InputError(f"{what}{selected} in the source{hint}", path=source_dir)
    info = infos[0]
    if info.problem:
        raise InputError(f"series {info.number} cannot be replayed: {info.problem}", path=source_dir)
    headers = [read_file_header(path) for path in info.files]
    plan = plan_series(headers)
    lowest = np.full(len(headers), plan.n_volumes)
    highest = np.full(len(headers), -1)
    np.minimum.at(lowest, plan.frame_file, plan.volume)
    np.maximum.at(highest, plan.frame_file, plan.volume)
    if np.any(lowest != highest):
        raise InputError(
            f"series {info.number}: a file holds several volumes, it cannot be replayed volume by volume",
            path=headers[int(np.flatnonzero(lowest != highest)[0])].path,
        )
    volumes = [[] for _ in range(plan.n_volumes)]
    instance = [h.keys["InstanceNumber"][0] for h in headers]
    for index in sorted(range(len(headers)), key=lambda i: (np.nan_to_num(instance[i]), headers[i].path.name)):
        volumes[lowest[index]].append(headers[index].path)
    return volumes


def _renamed(name, pass_index, n_source):
    if pass_index == 0:
        return name
    match = _NUMBERED_NAME.match(name)
    if match:
        number = int(match["number"]) + pass_index * n_source
        return f"{match['head']}{number:06d}{match['tail']}"
    stem, dot, suffix = name.partition(".")
    return f"{stem}_rep{pass_index}{dot}{suffix}"


def _duplicate_name(name):
    stem, dot, suffix = name.partition(".")
    return f"{stem}_dup{dot}{suffix}"


def _pass_bytes(source, pass_index, n_source, n_files):
    """The file's bytes; from the second pass on, renumbered with pydicom."""
    if pass_index == 0:
        return Path(source).read_bytes()
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(source)
    for keyword in ("AcquisitionNumber", "TemporalPositionIdentifier"):
        if ds.get(keyword) not in (None, ""):
            setattr(ds, keyword, int(ds.get(keyword)) + pass_index * n_source)
    if ds.get("InstanceNumber") not in (None, ""):
        ds.InstanceNumber = int(ds.InstanceNumber) + pass_index * n_files
    uid = generate_uid(entropy_srcs=["tmstarget-replay", str(ds.SOPInstanceUID), str(pass_index)])
    ds.SOPInstanceUID = uid
    if getattr(ds, "file_meta", None) is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = uid
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def _check_free(incoming_dir, plan, duplicated):
    if not incoming_dir.is_dir():
        return
    for _, k, files in plan:
        for name, _ in files:
            for candidate in (name, _duplicate_name(name)) if k in duplicated else (name,):
                if (incoming_dir / candidate).exists():
                    raise InputError(
                        f"already holds {candidate}: replay into an empty folder (or remove the old files)",
                        path=incoming_dir,
                    )


def _write_in_chunks(path, data, chunks, pause_s):
    """Write ``data`` in place in ``chunks`` flushed pieces with a pause between them."""
    import numpy as np

    bounds = np.linspace(0, len(data), chunks + 1).astype(int)
    with open(path, "wb") as handle:
        for index in range(chunks):
            handle.write(data[bounds[index] : bounds[index + 1]])
            handle.flush()
            if index < chunks - 1 and pause_s:
                time.sleep(pause_s)
    return path
