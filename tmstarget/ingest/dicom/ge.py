"""GE slice timing from the headers, the way dcm2niix derives it.

GE EPI files carry no per-slice time that can be trusted (the RTIA timer
(0021,105E) is absent on DV26 and wrong in the first volume where present),
so dcm2niix computes the slice times from the acquisition recipe: the number
of slices, the repetition time, interleaved or sequential order and the
multiband factor.  The recipe sits in the gzip-compressed *Protocol Data
Block* (0025,101B): text lines ``KEY "value"`` (``SLICEORDER`` 0 =
sequential, 1 = interleaved; ``MBACCEL``; ``IOPT`` imaging options, e.g.
``FMRI`` for epiRT or ``MPh`` for multi-phase epi; ``DELACQ``).  The pulse
sequence name (0019,109C) tells epiRT from multi-phase epi and diffusion.

Rules (dcm2niix's documented behaviour, GE/README.md of its repository):

* epiRT (BrainWave fMRI, or IOPT ``FMRI``): interleaved unless SLICEORDER is 0;
* multi-phase epi (or IOPT ``MPh``): interleaved; variable phase delays
  (``MPhVar``) cannot be timed;
* pepolar research sequences: interleaved (dcm2niix calls this experimental);
* diffusion (epi2), anything else: not timed;
* multiband ``m`` on software before 26: not timed; ``ceil(n / m)``
  excitations, one more when that is even before release 27.0 R03; from
  27.0 R03 an even interleaved count swaps its last and third-last times;
* the excitations fill the repetition time (0018,0080, which excludes any
  group delay): slice time = rank in the excitation order x TR / excitations.
  The first prescribed slice (lowest InstanceNumber of a volume) is
  excitation 0.

`slice_times` returns the times or, when they cannot be known, the reason.
"""

import gzip
import math
import re
import zlib
from dataclasses import dataclass

import numpy as np

_LINE = re.compile(r'^\s*([A-Z0-9_]+)\s+"([^"]*)"', re.MULTILINE)
_VERSION = re.compile(r"^[A-Za-z]{2}(\d+)\.(\d+)_(?:R(\d+)|EA)")


@dataclass(frozen=True)
class GeRecipe:
    """What one GE file says about its slice timing (no patient fields).

    Attributes
    ----------
    protocol : dict or None
        Protocol Data Block keys (text values); None when the block is
        missing or cannot be decoded.
    problem : str or None
        Why the block could not be read.
    sequence : str
        Pulse sequence name (0019,109C), e.g. ``epiRT``, ``epi``, ``epi2``.
    internal_sequence : str
        Internal pulse sequence name (0019,109E), ``EPI`` or ``EPI2``.
    group_delay_s : float or None
        epiRT group delay (0043,107C), s; its presence marks epiRT.
    software : str
        SoftwareVersions (0018,1020), backslash-joined.
    repetition_time_s : float or None
        RepetitionTime (0018,0080), s (without the group delay).
    """

    protocol: dict | None
    problem: str | None
    sequence: str
    internal_sequence: str
    group_delay_s: float | None
    software: str
    repetition_time_s: float | None


def read_recipe(ds):
    """The slice-timing recipe of a GE header (`GeRecipe`), or None for other manufacturers."""
    if not str(ds.get("Manufacturer", "")).upper().startswith("GE"):
        return None
    protocol, problem = _protocol_block(ds)
    group_delay = _private(ds, 0x0043, 0x107C)
    try:
        group_delay = float(group_delay) if group_delay is not None else None
    except (TypeError, ValueError):
        group_delay = None
    software = ds.get("SoftwareVersions", "")
    software = "\\".join(str(v) for v in software) if type(software).__name__ == "MultiValue" else str(software)
    return GeRecipe(
        protocol=protocol,
        problem=problem,
        sequence=str(_private(ds, 0x0019, 0x109C) or "").strip(),
        internal_sequence=str(_private(ds, 0x0019, 0x109E) or "").strip(),
        group_delay_s=group_delay,
        software=software.strip(),
        repetition_time_s=_seconds(ds.get("RepetitionTime")),
    )


def slice_times(recipe, n_slices, *, is_3d=False):
    """Slice times in prescription order (first prescribed slice first), or the reason they are unknown.

    Parameters
    ----------
    recipe : GeRecipe
    n_slices : int
    is_3d : bool
        3-D acquisition (no slice times).

    Returns
    -------
    times_s : numpy.ndarray or None
    reason : str or None
        Set when ``times_s`` is None.
    """
    if is_3d:
        return None, "3-D acquisition"
    if recipe.protocol is None:
        return None, f"GE: {recipe.problem}"
    if not recipe.repetition_time_s:
        return None, "GE: no RepetitionTime (0018,0080)"
    version = _software_version(recipe.software)
    if version is None:
        return None, f"GE: SoftwareVersions (0018,1020) {recipe.software!r} cannot be read"
    major_minor, release = version
    is_27r3 = major_minor >= 27.1 or (int(major_minor) == 27 and release >= 3)
    kind = _kind(recipe)
    if kind == "multiphase-variable":
        return None, "GE: multi-phase EPI with variable delays"
    if kind == "diffusion":
        return None, "GE: diffusion (epi2) slice times cannot be derived"
    if kind is None:
        return None, f"GE: pulse sequence {recipe.sequence or '(none)'!r} is neither epiRT nor multi-phase epi"
    interleaved = kind != "epiRT" or _int(recipe.protocol.get("SLICEORDER"), default=-1) != 0
    multiband = max(_int(recipe.protocol.get("MBACCEL"), default=0), 1)
    if multiband > 1 and major_minor < 26.0:
        return None, "GE: HyperBand (multiband) before software 26 does not record its slice order"
    n_excitations = math.ceil(n_slices / multiband)
    if multiband > 1 and not is_27r3 and n_excitations % 2 == 0:
        n_excitations += 1
    step_s = recipe.repetition_time_s / n_excitations
    rank = np.arange(n_excitations)
    if interleaved:
        n_odd = (n_excitations - 1) // 2
        rank = np.where(rank % 2 == 0, rank // 2, n_odd + (rank + 1) // 2)
        if multiband > 1 and is_27r3 and n_excitations > 2 and n_excitations % 2 == 0:
            rank[[-1, -3]] = rank[[-3, -1]]
    times = rank * step_s
    return times[np.arange(n_slices) % n_excitations], None


def effective_repetition_time_s(recipe):
    """The time between volumes: RepetitionTime plus any GE group delay (dcm2niix adds it).

    epiRT records the group delay in (0043,107C), multi-phase epi as
    ``DELACQNOAV`` (s) in the protocol block (none when ``DELACQ`` is "Minimum").
    """
    repetition_time_s = recipe.repetition_time_s
    if not repetition_time_s:
        return repetition_time_s
    delay_s = recipe.group_delay_s or 0.0
    protocol = recipe.protocol or {}
    if _kind(recipe) == "multiphase" and protocol.get("DELACQ") != "Minimum":
        try:
            delay_s = float(protocol.get("DELACQNOAV", 0) or 0)
        except ValueError:
            delay_s = 0.0
    return repetition_time_s + delay_s if delay_s > 0 else repetition_time_s


def _kind(recipe):
    """epiRT, multiphase, multiphase-variable, pepolar, diffusion or None (dcm2niix's order of tests)."""
    name, internal = recipe.sequence, recipe.internal_sequence
    options = (recipe.protocol or {}).get("IOPT", "")
    code = None
    if "epi_pepolar" in name:
        code = "pepolar"
    elif "epi2" in name:
        code = "epi2"
    elif "epiRT" in name:
        code = "epiRT"
    elif "epi" in name:
        code = "epi"
    if internal == "EPI" and code != "pepolar" and code != "epiRT":
        code = "epi"
    if recipe.group_delay_s is not None:
        code = "epiRT"  # (0043,107C) exists only for epiRT
    if code == "pepolar":
        return "pepolar"
    if code == "epiRT" or "FMRI" in options:
        return "epiRT"
    if code == "epi" or "MPh" in options:
        return "multiphase-variable" if "MPhVar" in options else "multiphase"
    if code == "epi2" or internal == "EPI2" or "DIFF" in options:
        return "diffusion"
    return None


def _protocol_block(ds):
    raw = _private(ds, 0x0025, 0x101B)
    if raw is None:
        return None, "no Protocol Data Block (0025,101B), slice times cannot be derived"
    if not isinstance(raw, (bytes, bytearray)) or len(raw) < 24:
        return None, "Protocol Data Block (0025,101B) too short"
    start = raw.find(b"\x1f\x8b\x08")
    if start < 0:
        return None, "Protocol Data Block (0025,101B) is not gzip data"
    try:
        text = gzip.decompress(bytes(raw[start:])).decode("latin-1")
    except (OSError, EOFError, zlib.error) as exc:
        return None, f"Protocol Data Block (0025,101B) cannot be decompressed ({exc})"
    if text.lstrip().startswith("<?xml"):
        return None, "XML Protocol Data Block (0025,101B) is not supported"
    return {key: value for key, value in _LINE.findall(text)}, None


def _software_version(software):
    """(major.minor, release) from e.g. ``27\\LX\\MR Software release:RX27.0_R02_1831.a``; None when unreadable."""
    if len(software) < 10:
        return None
    for marker in ("SIGNA_LX1", "MR Software release"):
        at = software.find(marker)
        if at >= 0:
            tail = software[at + len(marker) + 1 :]
            break
    else:
        tail = software.rsplit("\\", 1)[-1]
    match = _VERSION.match(tail)
    if match is None:
        return None
    major, minor, release = match.groups()
    return int(major) + 0.1 * int(minor), int(release or 0)


def _private(ds, group, element):
    elem = ds.get((group, element))
    return None if elem is None else elem.value


def _seconds(milliseconds):
    try:
        value = float(milliseconds) / 1000.0
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def _int(text, default):
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return default
