"""Targeting protocols: declarative TOML files, validated on load.

A protocol names one targeting strategy and every parameter it uses.  The
schema below is data: for each section, each key has a type, a check and a
default.  Unknown keys, wrong types and impossible values raise
:class:`~tmstarget.errors.ProtocolError` naming the file, the key and the
problem.  The resolved protocol (defaults filled, overrides applied) is what
the pipeline uses and what the outputs record.
"""

import copy
import difflib
import hashlib
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from tmstarget.errors import ProtocolError
from tmstarget.analysis.rois import load_atlas

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


# section -> key -> (type, check or None, default); REQUIRED marks mandatory keys.
REQUIRED = object()
FLOAT = (int, float)
SCHEMA = {
    "": {
        "name": (str, None, REQUIRED),
        "description": (str, None, REQUIRED),
        "kind": (str, _one_of("connectivity", "fixed"), "connectivity"),
    },
    "clean": {
        "dummy_volumes": (int, _range(0, 1000), 5),
        "motion": (str, _one_of("friston24", "6p", "none"), "friston24"),
        "wm_csf": (bool, None, True),
        "global_signal": (bool, None, False),
        "detrend": (bool, None, True),
        "high_pass_hz": (FLOAT, _range(0.0, 1.0), 0.01),
        "low_pass_hz": (FLOAT, _range(0.0, 10.0), 0.1),
        "filter": (str, _one_of("butterworth", "cosine"), "butterworth"),
        "scrub": (bool, None, True),
        "fd_threshold_mm": (FLOAT, _range(0.0, 10.0, lo_open=True), 0.5),
        "task_regressors": (str, _one_of("hrf", "boxcar", "none"), "hrf"),
        "smoothing_fwhm_mm": (FLOAT, _range(0.0, 20.0), 6.0),
        "min_volumes": (int, _range(10, 100000), 50),
    },
    "rois": {
        "set": (str, _names_in("roi_sets"), "dixon24"),
        "radius_mm": (FLOAT, _range(1.0, 30.0), 0.0),
        "gm_threshold": (FLOAT, _range(0.0, 1.0), 0.2),
    },
    "seed": {
        "subsystem": (str, _one_of("core", "dmpfc", "mtl"), ""),
        "sphere": (str, _names_in("spheres"), ""),
    },
    "search": {
        "region": (str, _names_in("regions"), ""),
    },
    "connectivity": {
        "state": (str, None, ""),
        "contrast": (list, _state_pair, []),
        "hrf_delay_s": (FLOAT, _range(0.0, 20.0), 4.0),
        "transition_s": (FLOAT, _range(0.0, 60.0), 4.0),
    },
    "target": {
        "picker": (str, _one_of("peak", "cluster"), "peak"),
        "direction": (str, _one_of("negative", "positive"), "negative"),
        "n_candidates": (int, _range(1, 50), 5),
        "candidate_spacing_mm": (FLOAT, _range(0.0, 100.0), 10.0),
        "cluster_fraction": (FLOAT, _range(0.0, 0.5, lo_open=True), 0.10),
        "sphere_radius_mm": (FLOAT, _range(1.0, 30.0), 5.0),
    },
    "fixed": {
        "site": (str, _names_in("fixed"), ""),
        "mni_mm": (list, _mni_point, []),
    },
    "coil": {
        "handle": (str, _one_of("auto", "dlpfc-45", "midline-posterior", "angle"), "auto"),
        "handle_angle_deg": (FLOAT, _range(-180.0, 180.0), 45.0),
        "scalp_method": (str, _one_of("closest", "normal"), "normal"),
    },
    "prescription": {
        "pattern": (str, None, ""),
        "frequency_hz": (FLOAT, _range(0.0, 100.0, lo_open=True), 0.0),
        "pulses_per_session": (int, _range(1, 100000), 0),
        "sessions": (int, _range(1, 1000), 0),
        "sessions_per_day": (int, _range(1, 20), 0),
        "intensity_percent_rmt": (FLOAT, _range(1.0, 200.0), 0.0),
        "notes": (str, None, ""),
    },
}
# Keys whose schema default is a placeholder meaning "not set" (omitted from the resolved protocol).
_UNSET = ("", [], 0.0, 0)
_OPTIONAL_UNSET = {
    ("rois", "radius_mm"), ("seed", "subsystem"), ("seed", "sphere"), ("search", "region"),
    ("connectivity", "state"), ("connectivity", "contrast"), ("fixed", "site"), ("fixed", "mni_mm"),
} | {("prescription", k) for k in SCHEMA["prescription"]}


@dataclass(frozen=True)
class Protocol:
    """A validated protocol.

    Attributes
    ----------
    name, description : str
    kind : {'connectivity', 'fixed'}
    params : dict
        Section -> key -> value, defaults filled in, overrides applied.
    source : str
        Path of the TOML file (or ``<package>/name.toml``).
    sha256 : str
        sha256 of the TOML file's bytes.
    overrides : dict
        ``"section.key" -> value`` applied on top of the file.
    toml_text : str
        The file as read (copied into every output).
    """

    name: str
    description: str
    kind: str
    params: dict
    source: str
    sha256: str
    overrides: dict = field(default_factory=dict)
    toml_text: str = ""

    def __getitem__(self, section):
        return self.params[section]

    @property
    def states(self):
        """Brain states the protocol needs (``'rest'`` means the resting run)."""
        conn = self.params.get("connectivity", {})
        if "contrast" in conn:
            return list(conn["contrast"])
        return [conn["state"]] if "state" in conn else []

    def to_dict(self):
        """Plain dict for provenance (JSON-serialisable)."""
        return {
            "name": self.name,
            "source": self.source,
            "sha256": self.sha256,
            "overrides": dict(self.overrides),
            "parameters": copy.deepcopy(self.params),
        }


def _type_ok(value, expected):
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == FLOAT:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, expected)


def _type_name(expected):
    return {bool: "true/false", int: "an integer", str: "a string", list: "a list"}.get(expected, "a number")


def _unknown(where, key, known, source):
    hint = difflib.get_close_matches(key, known, n=1)
    did_you_mean = f"; did you mean '{hint[0]}'?" if hint else ""
    raise ProtocolError(
        f"unknown key '{key}' in {where}{did_you_mean} (allowed: {', '.join(sorted(known))})",
        path=source,
        key=key,
    )


def validate(raw, source="<protocol>"):
    """Validate a parsed protocol dict and fill defaults.

    Returns
    -------
    dict
        ``{"": top-level keys, section: {key: value}}``.

    Raises
    ------
    ProtocolError
        Naming the file, the key and the problem.
    """
    resolved = {}
    top_known = list(SCHEMA[""]) + [s for s in SCHEMA if s]
    for key in raw:
        if key not in top_known:
            _unknown("the top level", key, top_known, source)
    for section, keys in SCHEMA.items():
        values = raw if section == "" else raw.get(section, {})
        if section and not isinstance(values, dict):
            raise ProtocolError(f"[{section}] must be a table; got {type(values).__name__}", path=source, key=section)
        out = {}
        for key, value in values.items():
            if section == "" and key in SCHEMA:
                continue
            dotted = f"{section}.{key}" if section else key
            if key not in keys:
                _unknown(f"[{section}]" if section else "the top level", key, list(keys), source)
            expected, check, _default = keys[key]
            if not _type_ok(value, expected):
                raise ProtocolError(
                    f"must be {_type_name(expected)}; got {value!r} ({type(value).__name__})", path=source, key=dotted
                )
            if expected == FLOAT:
                value = float(value)
            if expected is list and any(
                not isinstance(v, (int, float, str)) or isinstance(v, bool) for v in value
            ):
                raise ProtocolError(f"list items must be numbers or strings; got {value!r}", path=source, key=dotted)
            problem = check(value) if check else None
            if problem:
                raise ProtocolError(problem, path=source, key=dotted)
            out[key] = value
        for key, (_t, _c, default) in keys.items():
            if key in out:
                continue
            if default is REQUIRED:
                raise ProtocolError("required key is missing", path=source, key=key)
            if (section, key) not in _OPTIONAL_UNSET:
                out[key] = copy.deepcopy(default)
        resolved[section] = out
    _cross_check(resolved, source)
    return resolved


def _cross_check(p, source):
    kind = p[""]["kind"]
    if kind == "fixed":
        if ("site" in p["fixed"]) == ("mni_mm" in p["fixed"]):
            raise ProtocolError("a fixed protocol needs exactly one of [fixed] site or mni_mm", path=source, key="fixed")
        return
    seed, conn = p["seed"], p["connectivity"]
    if ("subsystem" in seed) == ("sphere" in seed):
        raise ProtocolError("needs exactly one of [seed] subsystem or sphere", path=source, key="seed")
    if "region" not in p["search"]:
        raise ProtocolError("needs [search] region", path=source, key="search.region")
    if ("state" in conn) == ("contrast" in conn):
        raise ProtocolError(
            "needs exactly one of [connectivity] state (one FC map) or contrast (delta FC)",
            path=source,
            key="connectivity",
        )
    clean = p["clean"]
    if clean["high_pass_hz"] and clean["low_pass_hz"] and clean["high_pass_hz"] >= clean["low_pass_hz"]:
        raise ProtocolError(
            f"high_pass_hz = {clean['high_pass_hz']} must be below low_pass_hz = {clean['low_pass_hz']}",
            path=source,
            key="clean.high_pass_hz",
        )


def _parse_override(text):
    if "=" not in text:
        raise ProtocolError(f"override {text!r} must look like section.key=value", key=text)
    dotted, value_text = (part.strip() for part in text.split("=", 1))
    if dotted.count(".") != 1:
        raise ProtocolError(f"override key {dotted!r} must be section.key (e.g. clean.fd_threshold_mm)", key=dotted)
    try:
        value = tomllib.loads(f"v = {value_text}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text  # bare words are strings: picker=cluster
    return dotted, value


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
    if name_or_path not in names:
        hint = difflib.get_close_matches(name_or_path, names, n=1)
        did_you_mean = f" Did you mean '{hint[0]}'?" if hint else ""
        raise ProtocolError(
            f"unknown protocol '{name_or_path}'; shipped protocols: {', '.join(names)}.{did_you_mean} "
            "A path to your own .toml file also works."
        )
    resource = _protocol_dir().joinpath(f"{name_or_path}.toml")
    return resource.read_bytes(), f"protocols/{name_or_path}.toml"


def load_protocol(name_or_path, overrides=()):
    """Load, validate and resolve a protocol.

    Parameters
    ----------
    name_or_path : str or Path
        A shipped protocol name (``tmstarget protocols`` lists them) or a path
        to a user's own ``.toml`` file.
    overrides : iterable of str
        ``"section.key=value"`` strings (TOML value syntax) applied on top of
        the file and validated like it.

    Returns
    -------
    Protocol
    """
    data, source = _locate(name_or_path)
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not valid TOML: {exc}", path=source) from exc
    applied = {}
    for text in overrides:
        dotted, value = _parse_override(text)
        section, key = dotted.split(".")
        if section not in SCHEMA or not section:
            _unknown("overrides", section, [s for s in SCHEMA if s], source)
        raw.setdefault(section, {})[key] = value
        applied[dotted] = value
    params = validate(raw, source)
    top = params.pop("")
    return Protocol(
        name=top["name"],
        description=top["description"],
        kind=top["kind"],
        params=params,
        source=source,
        sha256=hashlib.sha256(data).hexdigest(),
        overrides=applied,
        toml_text=data.decode("utf-8"),
    )
