"""TMS coils as sets of magnetic dipoles: built-in figure-8 models and SimNIBS ``.ccd`` files.

A coil is described in its own frame, the **SimNIBS coil frame** (``shared/specs/navigation-formats.md``
§2): origin at the centre of the casing's face that touches the head, **z = coil normal pointing into
the head** (the windings lie at z < 0), **y pointing away from the handle** (the handle lies along
-y), x = y × z.  A pose matrix (4×4, mm, columns x, y, z, centre) maps this frame into the world.

Each dipole i has a position ``positions_m[i]`` (m) and a moment per ampere of coil current
``moments_m2[i]`` (m², i.e. A·m² per A); the coil's field at a current slope dI/dt (A/s) is the
sum of the dipoles' fields times dI/dt.  A winding of n turns is made into dipoles the standard way
(the way SimNIBS's ``.ccd`` coils are built): the flat region a turn encloses is cut into small
area elements, and each element carries the moment ``turns enclosing it × element area × normal``.

Built-in models (:data:`BUILTIN_COILS`, :func:`builtin_coil`) are flat, circular-spiral figure-8
coils built by :func:`figure8_coil` from a few winding numbers; their sources and which numbers are
estimates are in :data:`BUILTIN_COILS`.  For the coil models measured by Drakaki et al. (2022) use
SimNIBS's own ``.ccd`` files through :func:`read_ccd` (``load_coil("…/MagStim_D70.ccd")``).
"""

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tmstarget.errors import InputError

#: dI/dt units: the files and the clinic speak A/µs, the physics A/s.
A_PER_US = 1e6


@dataclass(frozen=True)
class Coil:
    """A TMS coil as magnetic dipoles in the SimNIBS coil frame.

    Parameters
    ----------
    name : str
        Coil name (shown in outputs).
    positions_m : ndarray, shape (n, 3)
        Dipole positions in the coil frame, metres (z < 0: above the head).
    moments_m2 : ndarray, shape (n, 3)
        Dipole moments per ampere of coil current, m² (A·m² per A).
    didt_a_per_s : float or None
        dI/dt at 100 % stimulator output, A/s (None when unknown).
    didt_source : str
        Where ``didt_a_per_s`` comes from.
    source : str
        Where the coil model comes from (a file, or the published numbers it was built from).
    """

    name: str
    positions_m: np.ndarray
    moments_m2: np.ndarray
    didt_a_per_s: float | None = None
    didt_source: str = ""
    source: str = ""

    def __post_init__(self):
        pos = np.ascontiguousarray(self.positions_m, dtype=float)
        mom = np.ascontiguousarray(self.moments_m2, dtype=float)
        if pos.ndim != 2 or pos.shape[1] != 3 or mom.shape != pos.shape or len(pos) == 0:
            raise InputError(
                f"coil {self.name!r}: positions and moments must both have shape (n, 3) with n > 0; "
                f"got {pos.shape} and {mom.shape}"
            )
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(mom))):
            raise InputError(f"coil {self.name!r}: dipole positions or moments are not all finite")
        if self.didt_a_per_s is not None and not (math.isfinite(self.didt_a_per_s) and self.didt_a_per_s > 0):
            raise InputError(f"coil {self.name!r}: dI/dt must be a positive number of A/s; got {self.didt_a_per_s!r}")
        object.__setattr__(self, "positions_m", pos)
        object.__setattr__(self, "moments_m2", mom)

    @property
    def n_dipoles(self):
        """Number of dipoles."""
        return len(self.positions_m)


# --------------------------------------------------------------------------
# built-in figure-8 models
# --------------------------------------------------------------------------


def _turn_density(rho_m, radii_m, band_m):
    """Turns enclosing points at distance ``rho_m`` from a wing centre (current-sheet winding).

    Turn k of radius ``radii_m[k]`` carries its current spread evenly over a band of width
    ``band_m`` centred on that radius, so the number of turns enclosing a point falls linearly
    across each band: a smooth density that area quadrature integrates accurately.
    """
    rho = np.asarray(rho_m)[..., None]
    return np.clip((radii_m + band_m / 2 - rho) / band_m, 0.0, 1.0).sum(axis=-1)


def figure8_coil(
    name,
    *,
    turns_per_wing,
    inner_radius_m,
    outer_radius_m,
    wing_centre_x_m,
    layer_z_m,
    left_wing_sign=-1.0,
    element_m=0.0035,
    didt_a_per_s=None,
    didt_source="",
    source="",
):
    """Flat figure-8 coil of two circular spiral wings, as magnetic dipoles.

    Each wing holds ``turns_per_wing`` turns split evenly over the layers ``layer_z_m``; the turn
    radii are spaced evenly so that the windings fill the annulus from ``inner_radius_m`` to
    ``outer_radius_m`` (each turn's current spread over one winding pitch).  Wing centres lie at
    x = ±``wing_centre_x_m``; each wing is cut at the midline x = 0, so wings whose outer radius
    exceeds their centre distance get the straight central segment of a "butterfly" coil.  The two
    wings carry opposite currents; the wing at x < 0 has its moment along ``left_wing_sign`` × z.

    The region enclosed by the windings is cut into square elements of side ``element_m`` (grid
    aligned with the midline); every element with a nonzero turn count becomes one dipole per layer
    with moment ``turns enclosing it / layers × element area`` along ±z.

    Parameters
    ----------
    name : str
    turns_per_wing : int
        Turns of each wing (all layers together).
    inner_radius_m, outer_radius_m : float
        Inner and outer edge of the winding annulus, m.
    wing_centre_x_m : float
        Distance of each wing centre from the coil centre along x, m.
    layer_z_m : sequence of float
        z of each winding layer in the coil frame, m (negative: above the casing face).
    left_wing_sign : float
        -1 or +1: direction (along z) of the moment of the wing at x < 0; sets the sign of E.
    element_m : float
        Side of the square area elements, m (the discretization).
    didt_a_per_s : float, optional
        dI/dt at 100 % stimulator output, A/s.
    didt_source, source : str
        Provenance of the dI/dt and of the winding numbers.

    Returns
    -------
    Coil
    """
    layers = np.atleast_1d(np.asarray(layer_z_m, dtype=float))
    if not (0 < inner_radius_m < outer_radius_m) or turns_per_wing < 1 or element_m <= 0 or len(layers) == 0:
        raise InputError(f"figure-8 coil {name!r}: impossible winding geometry")
    pitch = (outer_radius_m - inner_radius_m) / turns_per_wing
    radii = inner_radius_m + pitch * (np.arange(turns_per_wing) + 0.5)
    half = int(math.ceil((outer_radius_m + wing_centre_x_m) / element_m))
    centres_1d = (np.arange(-half, half) + 0.5) * element_m
    gx, gy = np.meshgrid(centres_1d, centres_1d, indexing="ij")
    gx, gy = gx.ravel(), gy.ravel()
    turns = np.where(
        gx < 0,
        _turn_density(np.hypot(gx + wing_centre_x_m, gy), radii, pitch),
        _turn_density(np.hypot(gx - wing_centre_x_m, gy), radii, pitch),
    )
    keep = turns > 0
    gx, gy, turns = gx[keep], gy[keep], turns[keep]
    sign = np.where(gx < 0, left_wing_sign, -left_wing_sign)
    mz = sign * turns * element_m**2 / len(layers)
    positions = np.concatenate([np.column_stack([gx, gy, np.full_like(gx, z)]) for z in layers])
    moments = np.zeros_like(positions)
    moments[:, 2] = np.tile(mz, len(layers))
    return Coil(name, positions, moments, didt_a_per_s, didt_source, source)


#: Built-in coil models: keyword arguments of :func:`figure8_coil`, with the source of every number.
BUILTIN_COILS = {
    "Magstim_D70": dict(
        turns_per_wing=9,
        inner_radius_m=0.027,
        outer_radius_m=0.045,
        wing_centre_x_m=0.045,
        layer_z_m=(-0.004167, -0.0065, -0.008833),
        left_wing_sign=-1.0,
        didt_a_per_s=114.73 * A_PER_US,
        didt_source=(
            "Magstim D70 with a Magstim Rapid at 100 % output: 114.73 A/us, Drakaki et al. 2022 Brain Stimul "
            "15:641 (the dIdtmax of SimNIBS's Drakaki_BrainStim_2022/MagStim_D70.ccd header)"
        ),
        source=(
            "Magstim 70-mm double (figure-8) coil, flat circular spirals: 9 turns per wing in 3 layers of 3 "
            "(Thielscher & Kammer 2004 Clin Neurophysiol 115:1697, X-ray based), windings filling radii "
            "27-45 mm around wing centres 45 mm either side of the coil centre, layers 4.2, 6.5 and 8.8 mm "
            "above the casing face.  The radii, spacing and layer heights are read off the dipole layout of "
            "SimNIBS's model built from that paper (legacy_and_other/Magstim_70mm_Fig8.ccd: wing centres "
            "x = +-45 mm, enclosed-turn count 3 per layer inside r = 27 mm falling by one turn per 6 mm to 0 "
            "at r = 45 mm; total moment 0.0374 m^2 per wing, which this model reproduces: 0.0373); Magstim "
            "quotes 56/87 mm inner/outer winding diameters (not checked against a datasheet here).  On the "
            "coil axis in an 85-mm sphere (4 mm gap, 100 A/us) this model gives 274.9, 165.8, 101.9, 63.1 "
            "V/m at 0, 10, 20, 30 mm depth, SimNIBS's legacy model 274.9, 166.0, 102.1, 63.1 and the model "
            "measured by Drakaki et al. 2022 (MagStim_D70.ccd) 237.3, 145.4, 90.2, 56.3: about 13 % more "
            "than the measured coil.  The left wing (x < 0) has its moment along -z, as in both SimNIBS "
            "Magstim models."
        ),
    ),
    "MagVenture_MC-B70": dict(
        turns_per_wing=10,
        inner_radius_m=0.015,
        outer_radius_m=0.050,
        wing_centre_x_m=0.035,
        layer_z_m=(-0.0035, -0.0055, -0.0075, -0.0095),
        left_wing_sign=1.0,
        didt_a_per_s=155.33 * A_PER_US,
        didt_source=(
            "MagVenture MC-B70 with a MagPro X100 at 100 % output: 155.33 A/us, Drakaki et al. 2022 Brain "
            "Stimul 15:641 (dIdtmax of SimNIBS's Drakaki_BrainStim_2022/MagVenture_MC-B70.ccd header)"
        ),
        source=(
            "MagVenture MC-B70 type butterfly coil, flat approximation (ESTIMATE, calibrated): 10 turns per "
            "wing in 4 layers 3.5-9.5 mm above the casing face, windings filling radii 15-50 mm around wing "
            "centres 35 mm either side of the coil centre, cut at the midline (straight central segment).  "
            "Outer radius (50 mm), layer heights and the D-shaped cut are read off the dipole layout of "
            "SimNIBS's X-ray based model (legacy_and_other/MagVenture_MC_B70.ccd, after Thielscher & Kammer "
            "2004); the turn count, inner radius and centre distance were chosen among 8-12 turns, 5-20 mm "
            "and 25-35 mm so that |E| on the coil axis in an 85-mm sphere (4 mm gap, 0-30 mm deep) is "
            "within 5 % of the mean of SimNIBS's legacy and Drakaki 2022 MC-B70 models (measured: 327.8, "
            "178.9, 103.9, 61.6 V/m at 0, 10, 20, 30 mm and 100 A/us against 315.4, 184.6, 108.9, 64.1).  "
            "The real wings are bent up by about 18 deg beyond 20 mm from the midline, which this flat model "
            "ignores.  For accurate MagVenture fields use the measured SimNIBS model "
            "(Drakaki_BrainStim_2022/MagVenture_MC-B70.ccd) through read_ccd.  The left wing has its moment "
            "along +z, as in both SimNIBS MC-B70 models."
        ),
    ),
    "MagVenture_Cool-B65": dict(
        turns_per_wing=8,
        inner_radius_m=0.020,
        outer_radius_m=0.041,
        wing_centre_x_m=0.040,
        layer_z_m=(-0.006, -0.010),
        left_wing_sign=1.0,
        didt_a_per_s=149.77 * A_PER_US,
        didt_source=(
            "MagVenture Cool-B65 with a MagPro X100 at 100 % output: 149.77 A/us, Drakaki et al. 2022 Brain "
            "Stimul 15:641 (dIdtmax of SimNIBS's Drakaki_BrainStim_2022/MagVenture_Cool-B65.ccd header)"
        ),
        source=(
            "MagVenture Cool-B65 type, EFFECTIVE flat model (calibrated, not the real winding): the winding "
            "numbers are not published in a source available here, so turns (8 per wing, 2 layers 6 and 10 "
            "mm above the casing face), radii (20-41 mm) and wing centres (+-40 mm) were chosen among 6-12 "
            "turns, 5-20 / 38-44 mm and 35-44 mm so that |E| on the coil axis in an 85-mm sphere (4 mm gap, "
            "100 A/us) matches the model measured by Drakaki et al. 2022 (SimNIBS "
            "Drakaki_BrainStim_2022/MagVenture_Cool-B65.ccd): 201.9, 118.7, 71.2, 43.0 V/m at 0, 10, 20, 30 "
            "mm against 204.6, 119.1, 70.3, 41.7 (within 3 %).  The extent matches that model's (wings to "
            "+-84 mm in x, +-44 mm in y).  Off the axis the two may differ more; for accurate fields use the "
            "SimNIBS file through read_ccd.  The left wing has its moment along +z, as in that model."
        ),
    ),
}

#: Other names accepted by :func:`builtin_coil` (compared ignoring case, spaces, ``-`` and ``_``).
COIL_ALIASES = {
    "D70": "Magstim_D70",
    "Magstim_70mm": "Magstim_D70",
    "MC-B70": "MagVenture_MC-B70",
    "Cool-B65": "MagVenture_Cool-B65",
}


def _normalized(name):
    return re.sub(r"[\s_-]", "", str(name).lower())


DEFAULT_COIL = "Magstim_D70"


def builtin_coil(name=DEFAULT_COIL, *, element_m=0.0035):
    """A built-in coil model by name (see :data:`BUILTIN_COILS` and :data:`COIL_ALIASES`).

    Parameters
    ----------
    name : str
        "Magstim_D70", "MagVenture_MC-B70" or "MagVenture_Cool-B65", or an alias (D70, MC-B70,
        Cool-B65, ...); case, spaces, ``-`` and ``_`` are ignored ("magstim-d70" works).
    element_m : float
        Side of the area elements, m (the default gives 1,700-2,500 dipoles).

    Returns
    -------
    Coil

    Raises
    ------
    InputError
        Unknown name.
    """
    names = {_normalized(k): k for k in BUILTIN_COILS} | {_normalized(a): k for a, k in COIL_ALIASES.items()}
    key = names.get(_normalized(name))
    if key is None:
        raise InputError(
            f"unknown coil {name!r}; built-in coils: {', '.join(BUILTIN_COILS)} "
            f"(aliases {', '.join(COIL_ALIASES)}), or give a SimNIBS .ccd file"
        )
    return figure8_coil(key, element_m=element_m, **BUILTIN_COILS[key])


# --------------------------------------------------------------------------
# SimNIBS .ccd files
# --------------------------------------------------------------------------

_HEADER_FIELD = re.compile(r"([A-Za-z_]+)\s*=\s*([^;]*)")


def _header_fields(line):
    """key=value fields of a ``.ccd`` header line (``;``-separated), as strings."""
    return {key: value.strip() for key, value in _HEADER_FIELD.findall(line)}


def read_ccd(path, *, didt_a_per_s=None):
    """Read a SimNIBS ``.ccd`` coil file (magnetic dipoles).

    The format (SimNIBS ``coil_numpy.read_ccd`` and its coil files): line 1 is a ``#`` header, in
    newer files with ``;``-separated fields such as ``dIdtmax=114.73`` (A/µs at 100 % output),
    ``coilname=D70``, ``stimulator=…``; line 2 holds the number of dipoles; further ``#`` lines are
    comments; then one dipole per line, ``x y z mx my mz``: position in m (coil frame, z into the
    head) and moment per ampere in m².

    Parameters
    ----------
    path : str or Path
    didt_a_per_s : float, optional
        Overrides the header's dIdtmax.

    Returns
    -------
    Coil
        Named after ``coilname`` (else the file stem); ``didt_a_per_s`` from ``dIdtmax`` when present.

    Raises
    ------
    InputError
        Missing or unreadable file, a missing or wrong count, a line without six finite numbers
        (naming the file and line), a moment-free coil, or positions that look like millimetres.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("coil file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read coil file as text: {exc}", path=path) from None
    lines = text.splitlines()
    header = {}
    count = None
    rows = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if number == 1:
                header = _header_fields(line[1:])
            continue
        if count is None:
            try:
                count = int(line)
            except ValueError:
                raise InputError(
                    f"line {number}: expected the number of dipoles, got {line[:60]!r}", path=path
                ) from None
            if count < 1:
                raise InputError(f"line {number}: the number of dipoles must be positive, got {count}", path=path)
            continue
        parts = line.replace(",", " ").split()
        try:
            values = [float(v) for v in parts]
        except ValueError:
            raise InputError(
                f"line {number}: expected 6 numbers (x y z mx my mz), got {line[:80]!r}", path=path
            ) from None
        if len(values) != 6 or not all(math.isfinite(v) for v in values):
            raise InputError(
                f"line {number}: expected 6 finite numbers (x y z in m, mx my mz in m^2), got {len(values)}: "
                f"{line[:80]!r}",
                path=path,
            )
        rows.append(values)
    if count is None:
        raise InputError("no dipole count line (line 2 of a .ccd file) and no dipoles", path=path)
    if len(rows) != count:
        raise InputError(f"header says {count} dipoles but the file holds {len(rows)}", path=path)
    data = np.array(rows)
    if not np.any(data[:, 3:]):
        raise InputError("every dipole moment is zero", path=path)
    extent = float(np.abs(data[:, :3]).max())
    if extent > 2.0:
        raise InputError(
            f"dipole positions reach {extent:g}: a .ccd file gives positions in metres (is it in mm?)", path=path
        )
    if didt_a_per_s is None and header.get("dIdtmax"):
        try:
            didt_a_per_s = float(header["dIdtmax"]) * A_PER_US
        except ValueError:
            raise InputError(f"line 1: dIdtmax={header['dIdtmax']!r} is not a number (A/us)", path=path) from None
    name = header.get("coilname") or path.stem
    didt_source = f"dIdtmax in the header of {path.name}" if "dIdtmax" in header else ""
    return Coil(name, data[:, :3], data[:, 3:], didt_a_per_s, didt_source, f"SimNIBS .ccd file {path.name}")


def write_ccd(path, coil):
    """Write a coil as a SimNIBS ``.ccd`` file (atomic): header with dIdtmax and coilname, count, dipoles.

    Parameters
    ----------
    path : str or Path
    coil : Coil
    """
    from tmstarget._fileio import write_text_atomic

    fields = [f"{Path(path).name} version 1.0 written by tmstarget"]
    if coil.didt_a_per_s is not None:
        fields.append(f"dIdtmax={coil.didt_a_per_s / A_PER_US:.6g}")
    fields.append(f"coilname={coil.name}")
    lines = [
        "# " + ";".join(fields),
        str(coil.n_dipoles),
        "# centers and weighted directions of the elements (magnetic dipoles)",
    ]
    for p, m in zip(coil.positions_m, coil.moments_m2):
        lines.append(" ".join(f"{v:.15e}" for v in (*p, *m)))
    write_text_atomic(path, "\n".join(lines) + "\n")


def load_coil(spec=DEFAULT_COIL, *, didt_a_per_s=None):
    """A coil from a built-in name or a ``.ccd`` path, with an optional dI/dt override.

    Parameters
    ----------
    spec : str or Path
        Built-in name (:func:`builtin_coil`) or a path ending in ``.ccd``.
    didt_a_per_s : float, optional
        dI/dt (A/s) replacing the model's default.

    Returns
    -------
    Coil
    """
    if str(spec).lower().endswith(".ccd"):
        return read_ccd(spec, didt_a_per_s=didt_a_per_s)
    coil = builtin_coil(spec)
    if didt_a_per_s is None:
        return coil
    return Coil(coil.name, coil.positions_m, coil.moments_m2, float(didt_a_per_s), "given by the user", coil.source)
