"""The navigation format registry and a reader that picks the format."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tmstarget.errors import NavigationFormatError
from tmstarget.navigation.ant import read_ant, write_ant
from tmstarget.navigation.bids import read_bids_markers, write_bids_markers
from tmstarget.navigation.brainsight import read_brainsight, write_brainsight
from tmstarget.navigation.fcsv import read_fcsv, write_fcsv
from tmstarget.navigation.localite import read_localite, write_localite
from tmstarget.navigation.plain import (
    read_candidates_csv,
    read_candidates_json,
    write_candidates_csv,
    write_candidates_json,
)
from tmstarget.navigation.simnibs import read_simnibs_csv, write_simnibs_csv
from tmstarget.navigation.slicer import read_slicer_json, write_slicer_json

__all__ = ["FORMATS", "FormatSpec", "detect_format", "read_navigation_file", "normalize_formats"]


@dataclass(frozen=True)
class FormatSpec:
    """One navigation format.

    Attributes
    ----------
    key : str
        Name used on the command line (``--format``).
    writer, reader : callable
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
    writer: Callable
    reader: Callable
    pose_required: bool
    description: str
    cortex: str | None = None


FORMATS = {
    "localite": FormatSpec(
        "localite",
        write_localite,
        read_localite,
        True,
        "Localite TMS Navigator InstrumentMarkerList XML (RAS or LPS)",
        cortex="pose",
    ),
    "brainsight": FormatSpec(
        "brainsight",
        write_brainsight,
        read_brainsight,
        True,
        "Brainsight targets .txt (version 12, or 14 when q/s differ)",
        cortex="pose",
    ),
    "ant": FormatSpec("ant", write_ant, read_ant, True, "ANT Neuro visor2 .mrk (JSON)"),
    "slicer": FormatSpec(
        "slicer",
        write_slicer_json,
        read_slicer_json,
        False,
        "3D Slicer markups .mrk.json (LPS)",
        cortex="point",
    ),
    "fcsv": FormatSpec(
        "fcsv",
        write_fcsv,
        read_fcsv,
        False,
        "3D Slicer legacy .fcsv (positions, CoordinateSystem = 0)",
        cortex="point",
    ),
    "simnibs": FormatSpec(
        "simnibs",
        write_simnibs_csv,
        read_simnibs_csv,
        False,
        "SimNIBS positions CSV (CoilPos rows; the cortical target as a Generic row)",
        cortex="point",
    ),
    "bids": FormatSpec(
        "bids",
        write_bids_markers,
        read_bids_markers,
        False,
        "BIDS NIBS-style *_markers.tsv + .json (draft)",
    ),
    "csv": FormatSpec(
        "csv",
        write_candidates_csv,
        read_candidates_csv,
        False,
        "plain CSV of the target and candidates",
    ),
    "json": FormatSpec(
        "json",
        write_candidates_json,
        read_candidates_json,
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
