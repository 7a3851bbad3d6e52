"""Targeting protocols: declarative TOML files, validated on load.

A protocol names one targeting strategy and every parameter it uses.  The
schema is the dataclasses below, one per TOML table: each field has a type
(its annotation), a default and a check.  Unknown keys, wrong types and impossible values raise
:class:`~tmstarget.errors.ProtocolError` naming the file, the key and the
problem.  The resolved protocol (defaults filled, overrides applied) is what
the pipeline uses and what the outputs record.

Size: the whole schema (one dataclass per TOML table, with its checks and
documentation) and its loader in one place, so a key is defined, checked and
documented exactly once.
"""

import dataclasses
import difflib
import hashlib
import math
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Self

from tmstarget.analysis.rois import load_atlas
from tmstarget.errors import ProtocolError

PROTOCOL_PACKAGE = "tmstarget.protocols"


def _one_of(*allowed):
    def check(value):
        if value not in allowed:
            return f"must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}"
        return None

    return check


def _range(lo=None, hi=None, lo_open=False):
    def check(value):
        if lo is not None and (value <= lo if lo_open else value < lo):
            return f"must be {'>' if lo_open else '>='} {lo}; got {value}"
        if hi is not None and value > hi:
            return f"must be <= {hi}; got {value}"
        return None

    return check


def _names_in(section):
    def check(value):
        known = load_atlas()[section]
        if value not in known:
            return f"unknown name {value!r}; known: {', '.join(sorted(known))}"
        return None

    return check


def _mni_point(value):
    if len(value) != 3:
        return f"must be 3 numbers [x, y, z] in MNI mm; got {len(value)}"
    if any(abs(v) > 150 for v in value):
        return f"coordinates must lie within +-150 mm of the MNI origin; got {value}"
    return None


def _state_pair(value):
    if len(value) != 2 or value[0] == value[1]:
        return f"must name two different states [first, second] (delta = first - second); got {value}"
    return None


_FLOAT = (int, float)


def _key(default=None, check=None):
    """A section field: its default (None: optional, "not set") and its value check."""
    return field(default=default, metadata={"check": check})


@dataclass(frozen=True)
class _Section:
    """One TOML table: the fields' annotations give the types, their metadata the checks.

    A field whose default is None is optional: absent from the file means "not
    set", and it is left out of :meth:`to_dict` (and of the recorded protocol).
    ``_given`` keeps the order the keys were given in: :meth:`to_dict` lists
    them first, as the recorded protocol always has.
    """

    _given: tuple[str, ...] = field(default=(), repr=False, compare=False, kw_only=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "<protocol>") -> Self:
        """Validate one table's keys and values and fill the defaults.

        Parameters
        ----------
        values : mapping
            The table as parsed from TOML (lists as lists).
        source : str
            File named in errors.

        Returns
        -------
        Self
            The section, lists stored as tuples and numbers as float where the
            field is a float.

        Raises
        ------
        ProtocolError
            Naming the file, the ``section.key`` and the problem.
        """
        section = cls.section
        if not isinstance(values, Mapping):
            raise ProtocolError(f"[{section}] must be a table; got {type(values).__name__}", path=source, key=section)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "_given"}
        kwargs = {}
        for key, value in values.items():
            if key not in fields:
                _unknown(f"[{section}]", key, list(fields), source)
            kwargs[key] = _checked(fields[key], value, f"{section}.{key}", source)
        return cls(**kwargs, _given=tuple(kwargs))

    def to_dict(self) -> dict:
        """The table as recorded in provenance: given keys first, unset keys left out, tuples as lists."""
        names = [f.name for f in dataclasses.fields(self) if f.name != "_given"]
        ordered = list(self._given) + [n for n in names if n not in self._given]
        return {n: list(v) if isinstance(v, tuple) else v for n in ordered if (v := getattr(self, n)) is not None}


def _expected_type(hint):
    """The TOML value type behind a field annotation (``float | None`` -> numbers, ``tuple[...]`` -> list)."""
    if isinstance(hint, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    hint = typing.get_origin(hint) or hint
    return {float: _FLOAT, tuple: list}.get(hint, hint)


def _type_ok(value, expected):
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == _FLOAT:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, expected)


def _type_name(expected):
    return {bool: "true/false", int: "an integer", str: "a string", list: "a list"}.get(expected, "a number")


def _checked(spec, value, dotted, source):
    """One value checked against its field: type, list items, then the field's check."""
    expected = _expected_type(spec.type)
    if not _type_ok(value, expected):
        raise ProtocolError(
            f"must be {_type_name(expected)}; got {value!r} ({type(value).__name__})", path=source, key=dotted
        )
    if expected == _FLOAT:
        value = float(value)
    if expected is list and any(not isinstance(v, (int, float, str)) or isinstance(v, bool) for v in value):
        raise ProtocolError(f"list items must be numbers or strings; got {value!r}", path=source, key=dotted)
    check = spec.metadata.get("check")
    problem = check(value) if check else None
    if problem:
        raise ProtocolError(problem, path=source, key=dotted)
    return tuple(value) if expected is list else value


def _unknown(where, key, known, source):
    hint = difflib.get_close_matches(key, known, n=1)
    did_you_mean = f"; did you mean '{hint[0]}'?" if hint else ""
    raise ProtocolError(
        f"unknown key '{key}' in {where}{did_you_mean} (allowed: {', '.join(sorted(known))})",
        path=source,
        key=key,
    )


@dataclass(frozen=True)
class CleanParams(_Section):
    """``[clean]``: denoising of each run (confounds, filtering, scrubbing, smoothing)."""

    section: ClassVar[str] = "clean"
    dummy_volumes: int = _key(5, _range(0, 1000))
    motion: str = _key("friston24", _one_of("friston24", "6p", "none"))
    wm_csf: bool = True
    global_signal: bool = False
    detrend: bool = True
    high_pass_hz: float = _key(0.01, _range(0.0, 1.0))
    low_pass_hz: float = _key(0.1, _range(0.0, 10.0))
    filter: str = _key("butterworth", _one_of("butterworth", "cosine"))
    scrub: bool = True
    fd_threshold_mm: float = _key(0.5, _range(0.0, 10.0, lo_open=True))
    # neighbours of a high-motion frame censored with it (Power 2012; Chen 2020 config: 1 before, 2 after)
    frames_before: int = _key(0, _range(0, 10))
    frames_after: int = _key(0, _range(0, 10))
    task_regressors: str = _key("hrf", _one_of("hrf", "boxcar", "none"))
    smoothing_fwhm_mm: float = _key(6.0, _range(0.0, 20.0))
    min_volumes: int = _key(50, _range(10, 100000))


@dataclass(frozen=True)
class RoisParams(_Section):
    """``[rois]``: the ROI set (DMN subsystems) and the grey-matter mask; ``radius_mm`` None = the set's own."""

    section: ClassVar[str] = "rois"
    set: str = _key("dixon24", _names_in("roi_sets"))
    radius_mm: float | None = _key(None, _range(1.0, 30.0))
    gm_threshold: float = _key(0.2, _range(0.0, 1.0))


@dataclass(frozen=True)
class SeedParams(_Section):
    """``[seed]``: exactly one of a DMN ``subsystem`` of the ROI set or an atlas ``sphere``."""

    section: ClassVar[str] = "seed"
    subsystem: str | None = _key(None, _one_of("core", "dmpfc", "mtl"))
    sphere: str | None = _key(None, _names_in("spheres"))


@dataclass(frozen=True)
class SearchParams(_Section):
    """``[search]``: the atlas region the target is picked in."""

    section: ClassVar[str] = "search"
    region: str | None = _key(None, _names_in("regions"))


@dataclass(frozen=True)
class ConnectivityParams(_Section):
    """``[connectivity]``: one state's FC map (``state``) or a delta (``contrast`` = first - second)."""

    section: ClassVar[str] = "connectivity"
    state: str | None = None
    contrast: tuple[str, str] | None = _key(None, _state_pair)
    hrf_delay_s: float = _key(4.0, _range(0.0, 20.0))
    transition_s: float = _key(4.0, _range(0.0, 60.0))


@dataclass(frozen=True)
class TargetParams(_Section):
    """``[target]``: the picker, the sign of the score sought, candidates and the target sphere."""

    section: ClassVar[str] = "target"
    picker: str = _key("peak", _one_of("peak", "cluster"))
    direction: str = _key("negative", _one_of("negative", "positive"))
    n_candidates: int = _key(5, _range(1, 50))
    candidate_spacing_mm: float = _key(10.0, _range(0.0, 100.0))
    cluster_fraction: float = _key(0.10, _range(0.0, 0.5, lo_open=True))
    sphere_radius_mm: float = _key(5.0, _range(1.0, 30.0))


@dataclass(frozen=True)
class FixedParams(_Section):
    """``[fixed]``: a fixed protocol's point, an atlas ``site`` or an MNI ``mni_mm`` (exactly one)."""

    section: ClassVar[str] = "fixed"
    site: str | None = _key(None, _names_in("fixed"))
    mni_mm: tuple[float, float, float] | None = _key(None, _mni_point)


@dataclass(frozen=True)
class CoilParams(_Section):
    """``[coil]``: the handle rule (or a fixed ``handle_angle_deg``), how the scalp point is found, and depth.

    ``max_depth_mm``: a candidate whose cortex lies deeper than this below the
    scalp (along the coil axis, on the T1) is flagged and warned about
    (issue 13 item 3; a figure-8 coil's field falls off steeply with depth).
    ``max_cortical_shift_mm``: how far along the coil axis a target outside
    this T1's grey matter may be moved to the nearest grey matter.
    """

    section: ClassVar[str] = "coil"
    handle: str = _key("auto", _one_of("auto", "dlpfc-45", "midline-posterior", "angle"))
    handle_angle_deg: float = _key(45.0, _range(-180.0, 180.0))
    scalp_method: str = _key("normal", _one_of("closest", "normal"))
    max_depth_mm: float = _key(30.0, _range(5.0, 80.0))
    max_cortical_shift_mm: float = _key(10.0, _range(0.0, 30.0))


@dataclass(frozen=True)
class PrescriptionParams(_Section):
    """``[prescription]``: the stimulation course, reported as given (every key optional).

    Sources: ../shared/science.md section 7. ``intensity_percent_rmt`` is the
    intensity as a percentage of the resting motor threshold; ``depth_adjusted``
    says whether the course adjusts that threshold for the target's
    scalp-to-cortex depth relative to the motor cortex (SAINT/SNT: yes; the
    FDA-cleared 10 Hz course: no). The plan report computes both intensities
    when the motor threshold is given (:func:`tmstarget.outputs.evidence.prescribed_intensity`).
    """

    section: ClassVar[str] = "prescription"
    pattern: str | None = None
    frequency_hz: float | None = _key(None, _range(0.0, 100.0, lo_open=True))
    pulses_per_session: int | None = _key(None, _range(1, 100000))
    sessions: int | None = _key(None, _range(1, 1000))
    sessions_per_day: int | None = _key(None, _range(1, 20))
    intensity_percent_rmt: float | None = _key(None, _range(1.0, 200.0))
    depth_adjusted: bool | None = None
    notes: str | None = None


@dataclass(frozen=True)
class QcParams(_Section):
    """``[qc]``: when a plan warns (the thresholds do not change the target, only the warnings).

    Attributes
    ----------
    split_half_warning_mm : float
        "unstable target" when the two halves of the data give targets farther apart.
    scrubbed_warning_fraction : float
        A run warns when more than this fraction of its frames is scrubbed.
    mean_fd_warning_mm : float
        A run warns ("high motion") when its mean framewise displacement is above this.
    edge_warning_voxels : float
        "edge of the search region" when the target lies at most this many voxels
        (largest voxel side) inside the region.
    rumination_subsystem_check : bool
        For a rumination contrast, warn when core-dMPFC FC does not fall and
        core-MTL FC does not rise (the published subsystem pattern).
    mean_fd_jenkinson_warning_mm : float
        A run warns when its mean FD_Jenkinson is above this (0.2 mm: REST-meta-MDD, science.md §2 and §8).
    max_translation_warning_mm, max_rotation_warning_deg : float
        A run warns when any volume is displaced (relative to the realignment
        reference) by more than this (3 mm / 3°: the Yan-lab TMS scripts, science.md §2 and §8).
    state_frames_warning_fraction : float
        Contrast: warn when the two states' frame counts differ by more than this
        fraction of the larger count.
    state_fd_warning_mm : float
        Contrast: warn when the two states' mean FD_Jenkinson (over their analysed
        frames) differ by more than this.
    seed_tsnr_warning_fraction : float
        Warn that the seed sits in signal dropout when the median tSNR of its voxels
        is below this fraction of the brain's median tSNR.
    """

    section: ClassVar[str] = "qc"
    split_half_warning_mm: float = _key(10.0, _range(0.0, 200.0))
    scrubbed_warning_fraction: float = _key(0.2, _range(0.0, 1.0))
    mean_fd_warning_mm: float = _key(0.5, _range(0.0, 10.0))
    edge_warning_voxels: float = _key(1.01, _range(0.0, 20.0))
    rumination_subsystem_check: bool = True
    mean_fd_jenkinson_warning_mm: float = _key(0.2, _range(0.0, 10.0))
    max_translation_warning_mm: float = _key(3.0, _range(0.0, 100.0))
    max_rotation_warning_deg: float = _key(3.0, _range(0.0, 180.0))
    state_frames_warning_fraction: float = _key(0.3, _range(0.0, 1.0))
    state_fd_warning_mm: float = _key(0.05, _range(0.0, 10.0))
    seed_tsnr_warning_fraction: float = _key(0.5, _range(0.0, 1.0))


@dataclass(frozen=True)
class InferenceParams(_Section):
    """``[inference]``: is the target real (family-wise null), and how sure is its position (bootstrap)?

    See :mod:`tmstarget.analysis.inference`.

    Attributes
    ----------
    alpha : float
        A target is ``significant`` when its family-wise p (``p_fwe``) is at most this.
    n_permutations : int
        Null draws (block relabelings for a contrast, phase-randomized seeds for
        a rest map); fewer when fewer distinct relabelings exist (then all are used).
    n_bootstrap : int
        Block-bootstrap resamples that re-pick the target (0: no bootstrap).
    random_seed : int
        Seeds every random draw: identical inputs give identical output.
    min_effective_dof : float
        A state needs at least this many effective degrees of freedom (after
        scrubbing, filtering and regression) or the plan is refused.
    segment_s : float
        Length (s) of the frame segments used as exchangeable blocks when a
        state is a whole run (rest bootstrap, separate-runs relabeling, split halves).
    """

    section: ClassVar[str] = "inference"
    alpha: float = _key(0.05, _range(0.0, 0.5, lo_open=True))
    n_permutations: int = _key(1000, _range(1, 100000))
    n_bootstrap: int = _key(200, _range(0, 100000))
    random_seed: int = _key(0, _range(0, 2**32 - 1))
    min_effective_dof: float = _key(10.0, _range(0.0, 100000.0))
    segment_s: float = _key(60.0, _range(4.0, 3600.0))


@dataclass(frozen=True)
class LiveParams(_Section):
    """``[live]``: the real-time watcher's model (``tmstarget watch``); the batch ``plan`` does not read it.

    The watcher cleans with the regression model (``[clean] filter = "cosine"``) and by default a high-pass
    only: ``[clean] high_pass_hz`` as cosine regressors, no low-pass (a 0.01-0.1 Hz band as cosine regressors
    costs about 100 regressors for a 240-volume run and leaves too few degrees of freedom per state).

    Attributes
    ----------
    low_pass_hz : float
        Low band limit of the live model, as cosine regressors (0: none, the default).  The watcher refuses to
        start when the live model leaves a state fewer effective degrees of freedom than
        ``[inference] min_effective_dof``.
    """

    section: ClassVar[str] = "live"
    low_pass_hz: float = _key(0.0, _range(0.0, 10.0))


# TOML tables in the order the outputs record them.
_SECTIONS = {cls.section: cls for cls in (CleanParams, RoisParams, SeedParams, SearchParams, ConnectivityParams,
                                          TargetParams, FixedParams, CoilParams, PrescriptionParams, QcParams,
                                          InferenceParams, LiveParams)}
@dataclass(frozen=True)
class _TopLevel:
    """The top-level keys, checked like table fields (name and description are required)."""

    name: str = _key()
    description: str = _key()
    kind: str = _key("connectivity", _one_of("connectivity", "fixed"))


_TOP = {f.name: f for f in dataclasses.fields(_TopLevel)}


@dataclass(frozen=True)
class Protocol:
    """A validated protocol: one frozen dataclass per TOML table.

    Every table is present (defaults filled) whatever the kind: a fixed
    protocol simply does not use ``seed``, ``search`` or ``connectivity``.

    Attributes
    ----------
    name, description : str
    kind : {'connectivity', 'fixed'}
    clean : CleanParams
    rois : RoisParams
    seed : SeedParams
    search : SearchParams
    connectivity : ConnectivityParams
    target : TargetParams
    fixed : FixedParams
    coil : CoilParams
    prescription : PrescriptionParams
    qc : QcParams
    inference : InferenceParams
    live : LiveParams
    source : str
        Path of the TOML file (or ``protocols/name.toml``).
    sha256 : str
        sha256 of the TOML file's bytes.
    overrides : dict
        ``"section.key" -> value`` applied on top of the file.
    toml_text : str
        The file as read (copied into every output).
    """

    name: str
    description: str
    kind: str = "connectivity"
    clean: CleanParams = field(default_factory=CleanParams)
    rois: RoisParams = field(default_factory=RoisParams)
    seed: SeedParams = field(default_factory=SeedParams)
    search: SearchParams = field(default_factory=SearchParams)
    connectivity: ConnectivityParams = field(default_factory=ConnectivityParams)
    target: TargetParams = field(default_factory=TargetParams)
    fixed: FixedParams = field(default_factory=FixedParams)
    coil: CoilParams = field(default_factory=CoilParams)
    prescription: PrescriptionParams = field(default_factory=PrescriptionParams)
    qc: QcParams = field(default_factory=QcParams)
    inference: InferenceParams = field(default_factory=InferenceParams)
    live: LiveParams = field(default_factory=LiveParams)
    source: str = "<protocol>"
    sha256: str = ""
    overrides: dict = field(default_factory=dict)
    toml_text: str = ""

    @property
    def states(self) -> list[str]:
        """Brain states the protocol needs (``'rest'`` means the resting run)."""
        conn = self.connectivity
        if conn.contrast is not None:
            return list(conn.contrast)
        return [conn.state] if conn.state is not None else []

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "<protocol>", *, sha256: str = "",
                  overrides: Mapping[str, Any] | None = None, toml_text: str = "") -> Self:
        """Validate a parsed protocol (the TOML's top-level keys and tables) and fill defaults.

        Parameters
        ----------
        raw : mapping
            ``name``, ``description``, ``kind`` and one mapping per table.
        source : str
            File named in errors and recorded.
        sha256, toml_text : str
            The file's hash and text, recorded.
        overrides : mapping, optional
            ``"section.key" -> value`` already applied to ``raw``, recorded.

        Returns
        -------
        Protocol

        Raises
        ------
        ProtocolError
            Naming the file, the key and the problem (unknown keys with a
            did-you-mean, wrong types, values out of range, inconsistent tables).
        """
        top_known = list(_TOP) + list(_SECTIONS)
        for key in raw:
            if key not in top_known:
                _unknown("the top level", key, top_known, source)
        top = {}
        for key, value in raw.items():
            if key in _TOP:
                top[key] = _checked(_TOP[key], value, key, source)
        for key in ("name", "description"):
            if key not in top:
                raise ProtocolError("required key is missing", path=source, key=key)
        sections = {name: section.from_dict(raw.get(name, {}), source) for name, section in _SECTIONS.items()}
        protocol = cls(**top, **sections, source=source, sha256=sha256, overrides=dict(overrides or {}),
                       toml_text=toml_text)
        protocol._cross_check()
        return protocol

    def to_dict(self) -> dict:
        """Plain dict for provenance (JSON-serialisable).

        Returns
        -------
        dict
            ``name``, ``source``, ``sha256``, ``overrides`` and ``parameters``
            (table -> key -> value, unset keys left out).
        """
        return {
            "name": self.name,
            "source": self.source,
            "sha256": self.sha256,
            "overrides": dict(self.overrides),
            "parameters": {name: getattr(self, name).to_dict() for name in _SECTIONS},
        }

    def _cross_check(self):
        source = self.source
        if self.kind == "fixed":
            if (self.fixed.site is None) == (self.fixed.mni_mm is None):
                raise ProtocolError("a fixed protocol needs exactly one of [fixed] site or mni_mm", path=source,
                                    key="fixed")
            return
        seed, conn, clean, inference = self.seed, self.connectivity, self.clean, self.inference
        if (1 + inference.n_permutations) * inference.alpha < 1:
            raise ProtocolError(
                f"n_permutations = {inference.n_permutations} cannot reach p <= alpha = {inference.alpha:g} "
                f"(the smallest p is 1/(1 + n_permutations)); use at least {math.ceil(1 / inference.alpha) - 1}",
                path=source, key="inference.n_permutations")
        if (seed.subsystem is None) == (seed.sphere is None):
            raise ProtocolError("needs exactly one of [seed] subsystem or sphere", path=source, key="seed")
        if self.search.region is None:
            raise ProtocolError("needs [search] region", path=source, key="search.region")
        if (conn.state is None) == (conn.contrast is None):
            raise ProtocolError(
                "needs exactly one of [connectivity] state (one FC map) or contrast (delta FC)",
                path=source,
                key="connectivity",
            )
        if clean.high_pass_hz and clean.low_pass_hz and clean.high_pass_hz >= clean.low_pass_hz:
            raise ProtocolError(
                f"high_pass_hz = {clean.high_pass_hz} must be below low_pass_hz = {clean.low_pass_hz}",
                path=source,
                key="clean.high_pass_hz",
            )
        if clean.high_pass_hz and self.live.low_pass_hz and clean.high_pass_hz >= self.live.low_pass_hz:
            raise ProtocolError(
                f"[live] low_pass_hz = {self.live.low_pass_hz} must be above [clean] high_pass_hz = "
                f"{clean.high_pass_hz} (or 0: no low-pass in the live model)",
                path=source,
                key="live.low_pass_hz",
            )


def _override_key(dotted, label):
    if dotted.count(".") != 1:
        raise ProtocolError(f"{label}: the key must be section.key (e.g. clean.fd_threshold_mm)")
    return dotted


def _parse_override(text):
    label = f"--set {text}"
    if "=" not in text:
        raise ProtocolError(f"{label}: must look like section.key=value")
    dotted, value_text = (part.strip() for part in text.split("=", 1))
    dotted = _override_key(dotted, label)
    try:
        value = tomllib.loads(f"v = {value_text}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text  # bare words are strings: picker=cluster
    return dotted, value, label


def _check_override(dotted, value, label):
    """One override checked on its own, so its mistakes are blamed on it (``label``), not on the protocol file."""
    section, key = dotted.split(".")
    if section not in _SECTIONS:
        hint = difflib.get_close_matches(section, list(_SECTIONS), n=1)
        raise ProtocolError(f"{label}: unknown table [{section}]" + (f"; did you mean '{hint[0]}'?" if hint else "")
                            + f" (tables: {', '.join(_SECTIONS)})")
    fields = {f.name: f for f in dataclasses.fields(_SECTIONS[section]) if f.name != "_given"}
    if key not in fields:
        hint = difflib.get_close_matches(key, list(fields), n=1)
        raise ProtocolError(f"{label}: unknown key '{key}' in [{section}]"
                            + (f"; did you mean '{hint[0]}'?" if hint else "")
                            + f" (allowed: {', '.join(sorted(fields))})")
    try:
        _checked(fields[key], value, dotted, "")
    except ProtocolError as exc:
        raise ProtocolError(f"{label}: {exc.message}") from None


def _protocol_dir():
    # Installed: the top-level protocols/ folder is packaged as tmstarget.protocols.
    # Source checkout: read it in place.
    try:
        return resources.files(PROTOCOL_PACKAGE)
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[1] / "protocols"


def builtin_protocol_names():
    """Names of the protocols shipped with tmstarget."""
    return sorted(p.name[:-5] for p in _protocol_dir().iterdir() if p.name.endswith(".toml"))


def _locate(name_or_path):
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ProtocolError("protocol file not found", path=path)
        return path.read_bytes(), str(path)
    names = builtin_protocol_names()
    name = str(name_or_path).lower()  # shipped names are lower-case: SGACC-DLPFC is sgacc-dlpfc
    if name not in names:
        hint = difflib.get_close_matches(name, names, n=1)
        did_you_mean = f" Did you mean '{hint[0]}'?" if hint else ""
        raise ProtocolError(
            f"unknown protocol '{name_or_path}'; shipped protocols: {', '.join(names)}.{did_you_mean} "
            "A path to your own .toml file also works."
        )
    resource = _protocol_dir().joinpath(f"{name}.toml")
    return resource.read_bytes(), f"protocols/{name}.toml"


def load_protocol(name_or_path: str | Path,
                  overrides: Iterable[str] | Mapping[str, Any] | None = None) -> Protocol:
    """Load, validate and resolve a protocol.

    Parameters
    ----------
    name_or_path : str or Path
        A shipped protocol name (``tmstarget protocols`` lists them; any case,
        ``SGACC-DLPFC`` is ``sgacc-dlpfc``) or a path to a user's own ``.toml`` file.
    overrides : iterable of str or mapping, optional
        ``"section.key=value"`` strings (TOML value syntax; ``tmstarget plan
        --set``), or a mapping ``{"section.key": value}``, applied on top of the
        file and validated like it. A mistake in an override is blamed on it,
        not on the file: ``--set target.pickr=cluster: unknown key 'pickr' in
        [target]; did you mean 'picker'?``.

    Returns
    -------
    Protocol

    Raises
    ------
    ProtocolError
        Naming the file, the key and the problem.
    """
    data, source = _locate(name_or_path)
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not valid TOML: {exc}", path=source) from exc
    if isinstance(overrides, Mapping):
        triples = [(_override_key(dotted, f"override {dotted!r}"), value, f"override {dotted!r}")
                   for dotted, value in overrides.items()]
    else:
        triples = [_parse_override(text) for text in overrides or ()]
    for dotted, value, label in triples:
        _check_override(dotted, value, label)
    sha256 = hashlib.sha256(data).hexdigest()
    text = data.decode("utf-8")
    if not triples:
        return Protocol.from_dict(raw, source, sha256=sha256, toml_text=text)
    merged = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    applied = {}
    for dotted, value, _ in triples:
        section, key = dotted.split(".")
        merged.setdefault(section, {})[key] = value
        applied[dotted] = value
    try:
        return Protocol.from_dict(merged, source, sha256=sha256, overrides=applied, toml_text=text)
    except ProtocolError as exc:
        Protocol.from_dict(raw, source, sha256=sha256, toml_text=text)  # the file alone fails: its own error
        labels = ", ".join(label for *_, label in triples)
        raise ProtocolError(f"{labels}: {exc}") from None
