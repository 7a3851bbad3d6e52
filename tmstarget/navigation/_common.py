"""Shared pieces of the navigation writers and readers.

* :class:`NavTarget`: the canonical in-memory marker (SimNIBS axes, RAS mm).
* :class:`NavFile`: what every reader returns.
* :class:`T1Reference`: the T1 a file refers to (name, sha256, chosen xform).
* :func:`write_verified`: temp file → re-read with our reader → compare →
  rename, plus ``<out>.provenance.json`` (spec §5.1, §5.5).
* :func:`begin_write` / :class:`MarkerWrite`: the checks every writer makes
  (markers, names, poses, T1, navigator xform) and its verified write.
* Reader pieces: :meth:`WarningCollector.nav_file`, :func:`read_marker`,
  :func:`read_pose`; text pieces: :func:`fmt_num`,
  :func:`xyz_cells`, :func:`tmstarget_declaration`, :func:`read_text_lines`.

Each format module keeps only its own layout, frame and axis rules.

Size: everything the ten formats share (the marker record, the T1 reference, the writer checks,
the verified write of spec §5, the text helpers), in one place so no format repeats any of it.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from tmstarget import __version__
from tmstarget._fileio import sha256_file, write_temp
from tmstarget.errors import NavigationFormatError, OutputError
from tmstarget.spaces import (
    XFORM_NAMES,
    XformCheck,
    check_qform_sform,
    grid_corners,
    itk_nifti_xform,
    orthonormalize_pose,
    rotation_angle_deg,
    validate_pose,
)

#: Round-trip tolerances of spec §5.5 / §7.2.
VERIFY_MM = 0.01
VERIFY_DEG = 0.01

SIMNIBS_AXES_TEXT = (
    "simnibs (z = coil normal into the head, y away from the handle, handle = -y, x = y cross z)"
)


# --------------------------------------------------------------------------
# canonical marker


def _freeze(arr):
    arr = np.array(arr, dtype=float)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class NavTarget:
    """One marker: a coil pose or, when no orientation is known, a position.

    Parameters
    ----------
    name : str
        Marker name as it appears in the navigator.
    pose_ras : array-like (4, 4) or None
        Coil pose in SimNIBS axes (z into the head, y away from the handle),
        RAS world, mm.  Validated as a rigid transform (tolerance 1e-6).
    position_ras_mm : array-like (3,) or None
        Marker position, RAS mm.  Derived from ``pose_ras`` when a pose is
        given (and must then agree with it).
    kind : str
        ``"target"``, ``"candidate"``, ``"sample"``, ``"marker"``, ``"entry"``...
    info : mapping
        JSON-friendly extras (di/dt, onset, cortical target, rank...).
    """

    name: str
    pose_ras: Any = None
    position_ras_mm: Any = None
    kind: str = "target"
    info: Mapping = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise NavigationFormatError(f"marker name must be a string; got {self.name!r}")
        if self.pose_ras is not None:
            pose = _freeze(validate_pose(self.pose_ras, what=f"marker {self.name!r}"))
            object.__setattr__(self, "pose_ras", pose)
            if self.position_ras_mm is not None:
                pos = np.asarray(self.position_ras_mm, dtype=float)
                if pos.shape != (3,) or np.max(np.abs(pos - pose[:3, 3])) > 1e-6:
                    raise NavigationFormatError(
                        f"marker {self.name!r}: position {pos.tolist()} disagrees with the pose "
                        f"centre {pose[:3, 3].tolist()}"
                    )
            object.__setattr__(self, "position_ras_mm", _freeze(pose[:3, 3]))
        else:
            if self.position_ras_mm is None:
                raise NavigationFormatError(
                    f"marker {self.name!r} has neither a pose nor a position"
                )
            pos = np.asarray(self.position_ras_mm, dtype=float)
            if pos.shape != (3,) or not np.all(np.isfinite(pos)):
                raise NavigationFormatError(
                    f"marker {self.name!r}: position must be 3 finite numbers; got {pos.tolist()}"
                )
            object.__setattr__(self, "position_ras_mm", _freeze(pos))
        # a plain dict copy (picklable, for research mode); treat it as read-only
        object.__setattr__(self, "info", dict(self.info))

    @property
    def has_pose(self):
        return self.pose_ras is not None

    @property
    def handle_ras(self):
        """Handle direction ``-y`` (RAS), or None without a pose."""
        return None if self.pose_ras is None else -self.pose_ras[:3, 1]

    @property
    def normal_ras(self):
        """Coil normal ``z`` (into the head, RAS), or None without a pose."""
        return None if self.pose_ras is None else self.pose_ras[:3, 2].copy()

    def to_dict(self):
        out = {
            "name": self.name,
            "kind": self.kind,
            "position_ras_mm": [float(v) for v in self.position_ras_mm],
            "pose_ras": None if self.pose_ras is None else self.pose_ras.tolist(),
            "handle_ras": None if self.pose_ras is None else self.handle_ras.tolist(),
            "normal_ras": None if self.pose_ras is None else self.normal_ras.tolist(),
        }
        if self.info:
            out["info"] = dict(self.info)
        return out


def as_nav_targets(targets):
    """Accept NavTargets, ``(name, pose)`` pairs or bare 4×4 arrays; return a list."""
    if isinstance(targets, NavTarget):
        return [targets]
    arr = None
    try:
        arr = np.asarray(targets, dtype=float)
    except (TypeError, ValueError):
        arr = None
    if arr is not None and arr.ndim in (2, 3) and arr.shape[-2:] == (4, 4):
        arr = arr.reshape(-1, 4, 4)
        return [NavTarget(f"{i + 1:03d}", pose) for i, pose in enumerate(arr)]
    out = []
    for item in targets:
        if isinstance(item, NavTarget):
            out.append(item)
        elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str):
            out.append(NavTarget(item[0], item[1]))
        else:
            raise NavigationFormatError(
                "targets must be NavTarget objects, (name, pose_ras) pairs or 4x4 arrays; "
                f"got {type(item).__name__}"
            )
    if not out:
        raise NavigationFormatError("no markers to write")
    return out


def check_names(targets, fmt, forbidden="", reserved=()):
    """Refuse empty, duplicate, unsafe or ``reserved`` marker names for format ``fmt``."""
    seen = set()
    for tgt in targets:
        name = tgt.name
        if not name or not name.strip():
            raise NavigationFormatError(f"{fmt}: every marker needs a non-empty name")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
            raise NavigationFormatError(
                f"{fmt}: marker name {name!r} contains control characters (tab/newline)"
            )
        bad = sorted({ch for ch in name if ch in forbidden})
        if bad:
            raise NavigationFormatError(
                f"{fmt}: marker name {name!r} contains {''.join(bad)!r}, which this format "
                "cannot hold safely; rename the target"
            )
        if name in seen:
            raise NavigationFormatError(f"{fmt}: duplicate marker name {name!r}")
        seen.add(name)
    for name in reserved:
        if name in seen:
            raise NavigationFormatError(f"{fmt}: a marker cannot be named {name!r}")


def require_poses(targets, fmt):
    for tgt in targets:
        if not tgt.has_pose:
            raise NavigationFormatError(
                f"{fmt}: marker {tgt.name!r} has no coil pose (only a position); this format "
                "stores a full coil orientation and tmstarget does not invent one. Compute a "
                "scalp coil pose in the plan, or export a position-only format "
                "(fcsv, slicer, simnibs, bids, csv, json)"
            )


@dataclass(frozen=True)
class NavFile:
    """What a reader returns.

    Attributes
    ----------
    path : str
    format : str
        Format key (see :data:`tmstarget.navigation.FORMATS`).
    targets : tuple of NavTarget
        Markers in file order, converted to SimNIBS axes, RAS mm.
    source_frame : str
        The frame declared in the file (``"RAS"``, ``"LPS"``,
        ``"NIfTI:Q:Scanner"``...).
    coil_convention : str or None
        The file's coil-axis convention (``"localite"``, ``"brainsight"``,
        ``"simnibs"``), None for position-only formats.
    version : str or None
    t1_name, t1_sha256 : str or None
        T1 identity found in the file (tmstarget-written files carry it).
    warnings : tuple of str
    skipped : int
        Rows/markers skipped (unset, null, undefined...).
    metadata : dict
    """

    path: str
    format: str
    targets: tuple
    source_frame: str | None = None
    coil_convention: str | None = None
    version: str | None = None
    t1_name: str | None = None
    t1_sha256: str | None = None
    warnings: tuple = ()
    skipped: int = 0
    metadata: Mapping = field(default_factory=dict)

    def by_kind(self, kind):
        return [t for t in self.targets if t.kind == kind]

    def to_dict(self):
        return {
            "path": self.path,
            "format": self.format,
            "source_frame": self.source_frame,
            "coil_convention": self.coil_convention,
            "version": self.version,
            "t1_name": self.t1_name,
            "t1_sha256": self.t1_sha256,
            "canonical_frame": "RAS mm, SimNIBS coil axes (handle = -y)",
            "skipped": self.skipped,
            "warnings": list(self.warnings),
            "metadata": dict(self.metadata),
            "markers": [t.to_dict() for t in self.targets],
        }


class WarningCollector:
    """Collect reader warnings; emitted as Python warnings and kept on the NavFile."""

    def __init__(self, path):
        self.path = str(path)
        self.messages = []

    def warn(self, message):
        self.messages.append(message)
        warnings.warn(f"{self.path}: {message}", stacklevel=3)

    def nav_file(self, fmt, targets, **fields):
        """The reader's :class:`NavFile`: ``targets`` in file order plus these warnings."""
        return NavFile(
            path=self.path,
            format=fmt,
            targets=tuple(targets),
            warnings=tuple(self.messages),
            **fields,
        )


def read_marker(name, pose, position_ras_mm, *, kind="target", info=None):
    """A read marker: the coil pose when the file has one, else the position (RAS mm)."""
    return NavTarget(
        name,
        pose,
        position_ras_mm=None if pose is not None else position_ras_mm,
        kind=kind,
        info=info or {},
    )


def read_pose(matrix, *, what, collector=None):
    """Reader-side pose check: tolerant orthonormality, then nearest rotation."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pose = orthonormalize_pose(matrix, what=what)
    for w in caught:
        if collector is not None:
            collector.warn(str(w.message))
    return pose


# --------------------------------------------------------------------------
# the T1 a file refers to


@dataclass(frozen=True, eq=False)
class T1Reference:
    """The T1 loaded in the navigator: identity and world transform.

    Attributes
    ----------
    path : str or None
    name : str
        File name (no folders: those may hold patient names).
    sha256 : str
    xform : XformCheck
        qform/sform decision (spec §5.2).
    shape : tuple of int
    quatern : tuple (b, c, d)
    qoffset : tuple (x, y, z)
    pixdim : tuple (qfac, dx, dy, dz)
    """

    path: str | None
    name: str
    sha256: str
    xform: XformCheck
    shape: tuple
    quatern: tuple
    qoffset: tuple
    pixdim: tuple

    @property
    def affine(self):
        return self.xform.affine

    @property
    def agree(self):
        """True when qform and sform agree within 0.1 mm over the field of view (or only one is present)."""
        return self.xform.agree

    def as_dict(self):
        out = {"file": self.name, "sha256": self.sha256}
        out.update(self.xform.as_dict())
        return out

    def fov_bounds_ras(self):
        """Axis-aligned RAS bounds (min, max) of the voxel grid corners."""
        world = (grid_corners(self.shape) @ self.affine.T)[:, :3]
        return world.min(axis=0), world.max(axis=0)


def load_t1_reference(t1, xform=None, expected_sha256=None):
    """Load the T1's identity and check qform/sform.

    Parameters
    ----------
    t1 : str, Path or T1Reference
    xform : {None, "qform", "sform"}
        User choice when qform and sform differ.
    expected_sha256 : str, optional
        Refuse when the file's sha256 differs (the plan was made on another file).
    """
    if isinstance(t1, T1Reference):
        if xform is not None and t1.xform.xform != xform and not t1.agree:
            raise NavigationFormatError(
                f"T1 reference was loaded with xform {t1.xform.xform!r} but xform={xform!r} "
                "was requested; load it again with that choice"
            )
        if expected_sha256 and expected_sha256.lower() != t1.sha256:
            raise NavigationFormatError(
                f"T1 sha256 {t1.sha256} does not match the expected {expected_sha256}"
            )
        return t1
    import nibabel as nib

    path = Path(t1)
    if not path.is_file():
        raise NavigationFormatError("T1 file not found", path=path)
    sha = sha256_file(path)
    if expected_sha256 and expected_sha256.lower() != sha:
        raise NavigationFormatError(
            f"the T1's sha256 is {sha} but the plan expects {expected_sha256}: the file "
            "changed since planning or is a different image; coordinates would not match",
            path=path,
        )
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types
        raise NavigationFormatError(f"cannot read the T1 as NIfTI: {exc}", path=path) from exc
    if not hasattr(img.header, "get_qform"):
        raise NavigationFormatError("the T1 must be a NIfTI image", path=path)
    check = check_qform_sform(img, choose=xform)
    hdr = img.header
    return T1Reference(
        path=str(path),
        name=path.name,
        sha256=sha,
        xform=check,
        shape=tuple(int(n) for n in img.shape[:3]),
        quatern=tuple(float(hdr[k]) for k in ("quatern_b", "quatern_c", "quatern_d")),
        qoffset=tuple(float(hdr[k]) for k in ("qoffset_x", "qoffset_y", "qoffset_z")),
        pixdim=tuple(float(v) for v in hdr["pixdim"][:4]),
    )


#: Which transform each navigator reads from the NIfTI (spec §1.3).  None =
#: unknown or not a navigator (the choice is recorded, not enforced).
NAVIGATOR_XFORM = {
    "localite": None,
    "brainsight12": "qform",
    "brainsight14": "either",
    "ant": "qform",
    "slicer": "itk",
    "fcsv": "itk",
    "simnibs": "qform",  # charm refuses q != s; --forceqform keeps the qform
    "bids": None,
    "csv": None,
    "json": None,
}


def check_navigator_xform(t1ref, fmt):
    """Refuse when the chosen xform is not the one this navigator would use."""
    rule = NAVIGATOR_XFORM.get(fmt)
    x = t1ref.xform
    if fmt == "ant" and x.qform_code <= 0:
        raise NavigationFormatError(
            "ant: ANT visor2 places .mrk coordinates with the T1's qform, but this T1 has "
            "qform_code = 0; the exported coordinates (sform world) would be misplaced"
        )
    if rule in (None, "either") or t1ref.agree:
        return
    if rule == "itk":
        rule = itk_nifti_xform(x.qform_code, x.sform_code)
    if x.xform != rule:
        raise NavigationFormatError(
            f"{fmt}: the T1's qform and sform differ and the plan's coordinates refer to the "
            f"{x.xform}, but this navigator uses the {rule} (qform_code={x.qform_code}, "
            f"sform_code={x.sform_code}); the target would be misplaced by up to "
            f"{x.max_difference_mm:.2f} mm. Fix the T1 header"
            + (" or export Brainsight version 14" if fmt == "brainsight12" else "")
        )


# --------------------------------------------------------------------------
# provenance and verified atomic writes


def build_provenance(fmt, path, t1ref, *, world, coil_axes, targets, extra=None):
    prov = {
        "generated_by": {"name": "tmstarget", "version": __version__},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "file": Path(path).name,
        "format": fmt,
        "t1": t1ref.as_dict(),
        "t1_file": t1ref.name,
        "t1_sha256": t1ref.sha256,
        "xform": t1ref.xform.xform,
        "affine_used": t1ref.xform.affine_used,
        "qform_sform_max_difference_mm": t1ref.xform.max_difference_mm,
        "world": world,
        "coil_axes": coil_axes,
        "canonical_pose": "SimNIBS axes, RAS mm: " + SIMNIBS_AXES_TEXT,
        "markers": [t.name for t in targets],
    }
    if extra:
        prov["plan"] = dict(extra)
    return prov


def provenance_comment(t1ref, *, world, axes):
    """One-line provenance text for in-file comments (no '--', no newlines)."""
    text = (
        f"tmstarget {__version__}; T1={t1ref.name} sha256={t1ref.sha256}; world={world}; "
        f"xform={t1ref.xform.xform}; affine={t1ref.xform.affine_used}; axes={axes}"
    )
    return text.replace("--", "-\u2010").replace("\n", " ")


def _compare(expected, got, fmt, position_only=False):
    if len(expected) != len(got):
        raise NavigationFormatError(
            f"{fmt}: verification read back {len(got)} markers instead of {len(expected)}"
        )
    for exp, act in zip(expected, got):
        if exp.name != act.name:
            raise NavigationFormatError(
                f"{fmt}: verification read back name {act.name!r} instead of {exp.name!r}"
            )
        dist = float(np.linalg.norm(exp.position_ras_mm - act.position_ras_mm))
        if not dist <= VERIFY_MM:
            raise NavigationFormatError(
                f"{fmt}: marker {exp.name!r} read back {dist:.4f} mm away from what was written"
            )
        if position_only or not exp.has_pose:
            continue
        if not act.has_pose:
            raise NavigationFormatError(f"{fmt}: marker {exp.name!r} lost its orientation")
        ang = rotation_angle_deg(exp.pose_ras, act.pose_ras)
        if not ang <= VERIFY_DEG:
            raise NavigationFormatError(
                f"{fmt}: marker {exp.name!r} read back rotated by {ang:.4f} deg"
            )


#: Navigation files are shared with the navigator's users (mkstemp makes 0600).
_NAV_FILE_MODE = 0o644


def write_verified(
    path,
    text,
    *,
    fmt,
    targets,
    reader,
    t1ref,
    world,
    coil_axes,
    overwrite=False,
    provenance=None,
    position_only=False,
    companions=None,
):
    """Write ``text`` to ``path`` only after our reader gives back ``targets``.

    Steps: refuse an existing file unless ``overwrite``; write a temporary
    file in the same folder (fsync); read it with ``reader(tmp_path,
    companions={name: tmp})``; compare names, positions (≤ 0.01 mm) and
    rotations (≤ 0.01°); then ``os.replace`` every file into place and write
    ``<path>.provenance.json``.  Any failure removes the temporary files.

    ``companions`` maps extra final paths (sidecars) to their text; they are
    written and renamed together with the main file.

    Returns
    -------
    Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    companions = dict(companions or {})
    prov_path = path.with_name(path.name + ".provenance.json")
    finals = [path, prov_path] + [Path(p) for p in companions]
    if not overwrite:
        existing = [str(p) for p in finals if p.exists()]
        if existing:
            raise OutputError(
                f"refusing to overwrite existing file(s) {', '.join(existing)}; use --force "
                "(overwrite=True) to replace them"
            )
    prov = build_provenance(
        fmt, path, t1ref, world=world, coil_axes=coil_axes, targets=targets, extra=provenance
    )
    prov_text = json.dumps(prov, indent=2, allow_nan=False) + "\n"
    temps = {}
    try:
        tmp = temps[path] = write_temp(path, text.encode("utf-8"), mode=_NAV_FILE_MODE)
        comp_tmps = {}
        for comp_path, comp_text in companions.items():
            comp_path = Path(comp_path)
            ctmp = write_temp(comp_path, comp_text.encode("utf-8"), mode=_NAV_FILE_MODE)
            temps[comp_path] = comp_tmps[comp_path.name] = ctmp
        temps[prov_path] = write_temp(prov_path, prov_text.encode("utf-8"), mode=_NAV_FILE_MODE)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = reader(tmp, companions=comp_tmps) if companions else reader(tmp)
        _compare(targets, list(result.targets), fmt, position_only=position_only)
        if t1ref.sha256 not in text:
            raise NavigationFormatError(f"{fmt}: written file does not state the T1 sha256")
        for final, tmpf in temps.items():
            os.replace(tmpf, final)
        temps = {}
    finally:
        for tmpf in temps.values():
            if tmpf.exists():
                tmpf.unlink()
    return path


@dataclass(frozen=True, eq=False)
class MarkerWrite:
    """The checked markers and T1 of one writer call (made by :func:`begin_write`).

    Attributes
    ----------
    fmt : str
        Format key, used in messages and the provenance.
    targets : list of NavTarget
    t1ref : T1Reference
    overwrite : bool
    provenance : mapping or None
        Extra plan provenance for ``<path>.provenance.json``.
    """

    fmt: str
    targets: list
    t1ref: T1Reference
    overwrite: bool
    provenance: Mapping | None

    def write(self, path, text, reader, *, world="RAS", coil_axes="simnibs", **options):
        """:func:`write_verified` for these markers; ``options`` as there."""
        return write_verified(
            path,
            text,
            fmt=self.fmt,
            targets=self.targets,
            reader=reader,
            t1ref=self.t1ref,
            world=world,
            coil_axes=coil_axes,
            overwrite=self.overwrite,
            provenance=self.provenance,
            **options,
        )


def begin_write(
    fmt,
    targets,
    *,
    t1,
    xform,
    overwrite,
    provenance,
    forbidden="",
    reserved=(),
    need_pose=False,
    navigator=None,
):
    """The checks every writer makes before rendering its file.

    In order: :func:`as_nav_targets`; :func:`require_poses` when
    ``need_pose``; :func:`check_names` (``forbidden`` characters,
    ``reserved`` names); :func:`load_t1_reference`; and
    :func:`check_navigator_xform` for ``navigator`` (default ``fmt``).

    Returns
    -------
    MarkerWrite
    """
    targets = as_nav_targets(targets)
    if need_pose:
        require_poses(targets, fmt)
    check_names(targets, fmt, forbidden=forbidden, reserved=reserved)
    t1ref = load_t1_reference(t1, xform)
    check_navigator_xform(t1ref, navigator or fmt)
    return MarkerWrite(fmt, targets, t1ref, overwrite, provenance)


def tmstarget_declaration(t1ref, **fields):
    """The ``"tmstarget"`` JSON block: version and T1 identity, then ``fields`` in order."""
    return {
        "version": __version__,
        "t1": t1ref.name,
        "t1_sha256": t1ref.sha256,
        "xform": t1ref.xform.xform,
        "affine_used": t1ref.xform.affine_used,
        **fields,
    }


# --------------------------------------------------------------------------
# text helpers


def fmt_num(value, decimals):
    """Fixed-point number with ``decimals`` digits and no negative zero."""
    value = float(value)
    if not math.isfinite(value):
        raise NavigationFormatError(f"cannot write non-finite value {value!r}")
    text = f"{value:.{decimals}f}"
    if text.startswith("-") and float(text) == 0.0:
        text = text[1:]
    return text


def xyz_cells(prefix, values, decimals):
    """``{prefix_x, prefix_y, prefix_z}`` cells of a table row, as :func:`fmt_num` text.

    >>> xyz_cells("coil", [1, -0.0, 2.5], 2)
    {'coil_x': '1.00', 'coil_y': '0.00', 'coil_z': '2.50'}
    """
    return {f"{prefix}_{axis}": fmt_num(v, decimals) for axis, v in zip("xyz", values)}


def read_text_lines(path, *, strip=" \t", skip_blank=False):
    """Read a text file as UTF-8 (leading BOM removed), split on LF/CRLF/CR.

    Trailing characters in ``strip`` are removed from each line; blank lines
    are kept as "" (so line numbers stay right) unless ``skip_blank``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NavigationFormatError(f"cannot read file: {exc}", path=path) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NavigationFormatError(
            f"file is not UTF-8 (byte {exc.start}); export it as UTF-8", path=path
        ) from exc
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = [line.rstrip(strip) if strip else line for line in re.split(r"\r\n|\r|\n", text)]
    return [line for line in lines if line.strip()] if skip_blank else lines


_DECIMAL_COMMA = re.compile(r"^-?\d+,\d+$")


def is_decimal_comma(cell):
    return bool(_DECIMAL_COMMA.match(cell.strip()))


def parse_float(text, *, path, key, allow_nan=False):
    """Strict float: no decimal comma, no empty cell; NaN only if allowed."""
    raw = text.strip() if isinstance(text, str) else text
    if isinstance(raw, str) and is_decimal_comma(raw):
        raise NavigationFormatError(
            f"value {raw!r} uses a decimal comma; tmstarget never guesses the decimal mark "
            "(export with '.' as decimal mark)",
            path=path,
            key=key,
        )
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise NavigationFormatError(f"expected a number, got {raw!r}", path=path, key=key) from None
    if not math.isfinite(value) and not allow_nan:
        raise NavigationFormatError(f"expected a finite number, got {raw!r}", path=path, key=key)
    return value


def xform_name(code):
    try:
        return XFORM_NAMES[int(code)]
    except (KeyError, ValueError):
        raise NavigationFormatError(f"unknown NIfTI xform code {code!r}") from None


def _no_json_constant(name):
    raise ValueError(f"JSON constant {name} (NaN/Infinity) is not allowed")


def load_json_strict(path):
    """Parse a UTF-8 JSON file (BOM tolerated); NaN/Infinity refused."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise NavigationFormatError(f"cannot read file: {exc}", path=path) from exc
    except UnicodeDecodeError as exc:
        raise NavigationFormatError(f"file is not UTF-8: {exc}", path=path) from exc
    try:
        return json.loads(text, parse_constant=_no_json_constant)
    except ValueError as exc:
        raise NavigationFormatError(f"not valid JSON: {exc}", path=path) from exc
