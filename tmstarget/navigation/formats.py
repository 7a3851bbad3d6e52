"""The navigation format registry and a reader that picks the format.

The registry names each format's writer and reader (``module:function``) and
imports them on first use, so ``tmstarget --help`` lists the formats without
loading numpy, nibabel or the writers (issue 19).
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from pathlib import Path

from tmstarget.errors import NavigationFormatError

__all__ = ["FORMATS", "FormatSpec", "detect_format", "read_navigation_file", "normalize_formats"]


@dataclass(frozen=True)
class FormatSpec:
    """One navigation format.

    Attributes
    ----------
    key : str
        Name used on the command line (``--format``).
    writer_name, reader_name : str
        ``"module:function"`` of the writer and the reader, imported on first use
        (:attr:`writer`, :attr:`reader`).
    pose_required : bool
        True when the format cannot hold a position without an orientation.
    description : str
    cortex : {None, "pose", "point"}
        How a plan export adds the cortical target beside each coil pose
        (markers ``"<name> coil"`` and ``"<name> cortex"``): ``"pose"`` = a
        second marker with the coil's orientation at the cortical target (the
        format holds poses only), ``"point"`` = a position-only point; None =
        no second marker (ANT visor2 holds coil targets only and gets the point
        in its ``SourceInfo``; BIDS and the plain tables carry it in the same
        row as ``target_*``).
    """

    key: str
    writer_name: str
    reader_name: str
    pose_required: bool
    description: str
    cortex: str | None = None

    @property
    def writer(self):
        """The writer, ``writer(path, markers, *, t1, ...) -> Path``."""
        return _resolve(self.writer_name)

    @property
    def reader(self):
        """The reader, ``reader(path, ...) -> NavFile``."""
        return _resolve(self.reader_name)


def _resolve(name):
    module, function = name.split(":")
    return getattr(importlib.import_module(f"tmstarget.navigation.{module}"), function)


FORMATS = {
    "localite": FormatSpec(
        "localite",
        "localite:write_localite",
        "localite:read_localite",
        True,
        "Localite TMS Navigator InstrumentMarkerList XML (RAS or LPS)",
        cortex="pose",
    ),
    "brainsight": FormatSpec(
        "brainsight",
        "brainsight:write_brainsight",
        "brainsight:read_brainsight",
        True,
        "Brainsight targets .txt (version 12, or 14 when q/s differ)",
        cortex="pose",
    ),
    "ant": FormatSpec("ant", "ant:write_ant", "ant:read_ant", True, "ANT Neuro visor2 .mrk (JSON)"),
    "slicer": FormatSpec(
        "slicer",
        "slicer:write_slicer_json",
        "slicer:read_slicer_json",
        False,
        "3D Slicer markups .mrk.json (LPS)",
        cortex="point",
    ),
    "fcsv": FormatSpec(
        "fcsv",
        "fcsv:write_fcsv",
        "fcsv:read_fcsv",
        False,
        "3D Slicer legacy .fcsv (positions, CoordinateSystem = 0)",
        cortex="point",
    ),
    "simnibs": FormatSpec(
        "simnibs",
        "simnibs:write_simnibs_csv",
        "simnibs:read_simnibs_csv",
        False,
        "SimNIBS positions CSV (CoilPos rows; the cortical target as a Generic row)",
        cortex="point",
    ),
    "bids": FormatSpec(
        "bids",
        "bids:write_bids_markers",
        "bids:read_bids_markers",
        False,
        "BIDS NIBS-style *_markers.tsv + .json (draft)",
    ),
    "csv": FormatSpec(
        "csv",
        "plain:write_candidates_csv",
        "plain:read_candidates_csv",
        False,
        "plain CSV of the target and candidates",
    ),
    "json": FormatSpec(
        "json",
        "plain:write_candidates_json",
        "plain:read_candidates_json",
        False,
        "plain JSON of the target and candidates",
    ),
}


def normalize_formats(formats):
    """Expand ``"all"``, check names; return (list of keys, expanded_from_all)."""
    if isinstance(formats, str):
        formats = [formats]
    formats = [f.strip().lower() for f in formats or []]
    if not formats:
        raise NavigationFormatError(
            f"no export format given; choose from {', '.join(FORMATS)} or 'all'"
        )
    if "all" in formats:
        return list(FORMATS), True
    out = []
    for fmt in formats:
        if fmt not in FORMATS:
            guess = difflib.get_close_matches(fmt, list(FORMATS) + ["all"], n=1)
            hint = f" Did you mean {guess[0]!r}?" if guess else ""
            raise NavigationFormatError(
                f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)} or 'all'.{hint}"
            )
        if fmt not in out:
            out.append(fmt)
    return out, False


def detect_format(path):
    """Guess the format of a navigation file from its name and first bytes."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".mrk.json"):
        return "slicer"
    suffix = path.suffix.lower()
    simple = {
        ".xml": "localite",
        ".txt": "brainsight",
        ".mrk": "ant",
        ".fcsv": "fcsv",
        ".tsv": "bids",
    }
    if suffix in simple:
        return simple[suffix]
    try:
        head = path.read_bytes()[:4096].decode("utf-8-sig", errors="replace")
    except OSError as exc:
        raise NavigationFormatError(f"cannot read file: {exc}", path=path) from exc
    if suffix == ".csv":
        first = head.splitlines()[0] if head else ""
        if "coil_convention" in first and "has_pose" in first:
            return "csv"
        return "simnibs"
    if suffix == ".json":
        if '"@schema"' in head:
            return "slicer"
        if '"markers"' in head or '"tmstarget"' in head:
            return "json"
    raise NavigationFormatError(
        f"cannot tell the navigation format of {path.name!r}; pass it explicitly "
        f"(one of {', '.join(FORMATS)})",
        path=path,
    )


def read_navigation_file(path, fmt=None, *, t1=None, assume=None, assume_tmstarget=False):
    """Read any supported navigation file into a :class:`NavFile`.

    Parameters
    ----------
    path : str or Path
    fmt : str, optional
        Format key; detected from the name/content when omitted.
    t1 : str, Path or T1Reference, optional
        Lets Brainsight and ANT files be checked against the T1.
    assume : {None, "LPS", "RAS"}
        Frame for Slicer ``.mrk.json`` markups without ``coordinateSystem``.
    assume_tmstarget : bool
        Read a BIDS markers file without tmstarget's sidecar declaration.
    """
    path = Path(path)
    if not path.is_file():
        raise NavigationFormatError("file not found", path=path)
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise NavigationFormatError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    reader = FORMATS[fmt].reader
    if fmt in ("brainsight", "ant"):
        return reader(path, t1=t1)
    if fmt == "slicer":
        return reader(path, assume=assume)
    if fmt == "bids":
        return reader(path, assume_tmstarget=assume_tmstarget)
    return reader(path)
