"""The spherical head model: a sphere fitted to the local scalp and the dipole field inside it.

In a spherically symmetric conductor the field a coil induces does not depend on the
conductivities, and the field of a magnetic dipole has a closed form (Heller & van Hulsteyn 1992
Biophys J 63:129, after Sarvas 1987 Phys Med Biol 32:11).  With the sphere centre as origin, a dipole of
moment m (per ampere) at r₀ outside the sphere, a field point r inside, and

    a = r₀ − r,   a = |a|,   F = a (r₀ a + r₀·a),
    ∇F = (a²/r₀ + 2a + 2r₀ + r₀·a/a) r₀ − (a + 2r₀ + r₀·a/a) r,

the induced field is

    E(r) = −(μ₀/4π) (dI/dt) / F² [F (r × m) − (m·∇F)(r × r₀)],

summed over the coil's dipoles (:func:`dipole_efield`, exactly this formula, SI units).  E is
linear in dI/dt, has no radial component, and vanishes at the sphere centre.

World-level helpers work in the project's units (RAS mm, SimNIBS poses): :func:`fit_local_sphere`
and :func:`efield_at_points`.
"""

from dataclasses import dataclass

import numpy as np

from tmstarget.errors import InputError, OrientationError

#: μ₀/4π in T·m/A (SI value, exact enough: μ₀ = 4π·1e-7 before the 2019 redefinition, 1.00000000055×that after).
MU0_OVER_4PI = 1e-7

#: Largest (poses or points) × dipoles handled in one vectorized block: bounds the memory of the kernel.
BLOCK_ELEMENTS = 200_000


@dataclass(frozen=True)
class Sphere:
    """A sphere fitted to the scalp, world RAS mm.

    Attributes
    ----------
    centre_ras_mm : ndarray, shape (3,)
    radius_mm : float
    rms_residual_mm : float
        Root-mean-square distance of the fitted scalp points from the sphere.
    n_points : int
        Scalp vertices used in the fit.
    """

    centre_ras_mm: np.ndarray
    radius_mm: float
    rms_residual_mm: float = 0.0
    n_points: int = 0

    def as_dict(self):
        """JSON-ready: ``centre_ras_mm``, ``radius_mm``, ``rms_residual_mm``, ``n_points``."""
        return {
            "centre_ras_mm": [round(float(v), 4) for v in self.centre_ras_mm],
            "radius_mm": round(float(self.radius_mm), 4),
            "rms_residual_mm": round(float(self.rms_residual_mm), 4),
            "n_points": int(self.n_points),
        }


def fit_local_sphere(scalp_points_mm, centre_mm, radius_mm=40.0, *, min_points=20):
    """Least-squares sphere through the scalp vertices within ``radius_mm`` of a point.

    The algebraic fit (|p|² = 2 p·c + k, linear in c and k; radius² = k + |c|²) of the vertices
    in the patch; on a patch of a real scalp it is within a fraction of a millimetre of the
    geometric fit, and it is exact for points on a sphere.

    Parameters
    ----------
    scalp_points_mm : array-like, shape (n, 3)
        Scalp vertices, world RAS mm (``SurfaceMesh.vertices_ras_mm``).
    centre_mm : array-like, shape (3,)
        Centre of the patch (the scalp point under the coil).
    radius_mm : float
        Patch radius (default 40 mm, about the size of a figure-8 coil's wings).
    min_points : int
        Fewest vertices accepted in the patch.

    Returns
    -------
    Sphere

    Raises
    ------
    InputError
        Too few vertices in the patch.
    OrientationError
        The patch is (nearly) flat or degenerate: no finite sphere fits it.
    """
    points = np.asarray(scalp_points_mm, dtype=float).reshape(-1, 3)
    centre = np.asarray(centre_mm, dtype=float)
    patch = points[np.linalg.norm(points - centre, axis=1) <= radius_mm]
    if len(patch) < min_points:
        raise InputError(
            f"only {len(patch)} scalp vertices within {radius_mm:g} mm of {np.round(centre, 1).tolist()} RAS mm "
            f"(need {min_points}) to fit the head sphere"
        )
    origin = patch.mean(axis=0)
    local = patch - origin
    design = np.column_stack([2 * local, np.ones(len(local))])
    solution, *_ = np.linalg.lstsq(design, (local**2).sum(axis=1), rcond=None)
    c_local, k = solution[:3], solution[3]
    radius_sq = k + c_local @ c_local
    if not np.isfinite(radius_sq) or radius_sq <= 0 or radius_sq > 1e3**2:
        raise OrientationError(
            f"the scalp patch around {np.round(centre, 1).tolist()} RAS mm is too flat or degenerate for a sphere fit"
        )
    radius = float(np.sqrt(radius_sq))
    residual = np.linalg.norm(local - c_local, axis=1) - radius
    return Sphere(c_local + origin, radius, float(np.sqrt(np.mean(residual**2))), len(patch))


def _heller_sum(r, positions, offsets, m):
    """Σ over dipoles of the Heller-van Hulsteyn bracket divided by F², for a batch of points.

    Field points ``r`` (b, 3) are relative to the sphere centre; the dipoles sit at
    ``positions`` (n, 3) − ``offsets`` (b, 3) relative to it (one offset per point: the sphere
    centre in the frame of ``positions``), with moments ``m`` (n, 3).  Because r is the same for
    every dipole of a row, Σᵢ [F (r × mᵢ) − (mᵢ·∇F)(r × r₀ᵢ)] / F² = r × Σᵢ [mᵢ/F − (mᵢ·∇F)/F² r₀ᵢ]:
    the sum over dipoles is two matrix products.  Returns (b, 3), without −μ₀/4π · dI/dt.
    """
    rx, ry, rz = (r[:, k, None] for k in range(3))
    r0x, r0y, r0z = (positions[None, :, k] - offsets[:, k, None] for k in range(3))
    ax, ay, az = r0x - rx, r0y - ry, r0z - rz
    a = np.sqrt(ax * ax + ay * ay + az * az)
    r0n = np.sqrt(r0x * r0x + r0y * r0y + r0z * r0z)
    r0_dot_a = r0x * ax + r0y * ay + r0z * az
    f = a * (r0n * a + r0_dot_a)
    c0 = a * a / r0n + 2 * a + 2 * r0n + r0_dot_a / a
    c1 = a + 2 * r0n + r0_dot_a / a
    m_dot_r0 = r0x * m[:, 0] + r0y * m[:, 1] + r0z * m[:, 2]
    m_dot_r = rx * m[:, 0] + ry * m[:, 1] + rz * m[:, 2]
    inv_f = 1.0 / f
    u = (c0 * m_dot_r0 - c1 * m_dot_r) * inv_f * inv_f
    total = inv_f @ m - (u @ positions - u.sum(axis=1)[:, None] * offsets)
    return np.cross(r, total)


def dipole_efield(points_m, dipole_positions_m, moments_m2, sphere_centre_m, didt_a_per_s):
    """Induced E-field inside a conducting sphere from magnetic dipoles (Heller & van Hulsteyn 1992).

    Parameters
    ----------
    points_m : array-like, shape (p, 3) or (3,)
        Field points inside the sphere, m.
    dipole_positions_m : array-like, shape (n, 3)
        Dipole positions (outside the sphere), m, same frame.
    moments_m2 : array-like, shape (n, 3)
        Dipole moments per ampere, m².
    sphere_centre_m : array-like, shape (3,)
        Sphere centre, m, same frame.
    didt_a_per_s : float
        Rate of change of the coil current, A/s.

    Returns
    -------
    ndarray, shape (p, 3) (or (3,) for one point)
        E in V/m, in the frame of the inputs: −(μ₀/4π)(dI/dt) Σᵢ [F (r × mᵢ) − (mᵢ·∇F)(r × r₀ᵢ)] / F².
    """
    pts = np.asarray(points_m, dtype=float)
    single = pts.ndim == 1
    pts = pts.reshape(-1, 3)
    centre = np.asarray(sphere_centre_m, dtype=float)
    positions = np.asarray(dipole_positions_m, dtype=float).reshape(-1, 3)
    m = np.asarray(moments_m2, dtype=float).reshape(-1, 3)
    r = pts - centre
    offsets = np.broadcast_to(centre, r.shape)
    out = np.empty_like(r)
    step = max(1, BLOCK_ELEMENTS // len(positions))
    for start in range(0, len(r), step):
        block = slice(start, start + step)
        out[block] = _heller_sum(r[block], positions, offsets[block], m)
    out *= -MU0_OVER_4PI * float(didt_a_per_s)
    return out[0] if single else out


def check_pose(pose_ras):
    """``pose_ras`` as a (4, 4) float array with a proper rotation (det +1), else OrientationError."""
    pose = np.asarray(pose_ras, dtype=float)
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
        raise OrientationError(f"coil pose must be a finite 4x4 matrix; got shape {pose.shape}")
    rot = pose[:3, :3]
    if not np.allclose(rot.T @ rot, np.eye(3), atol=1e-6) or np.linalg.det(rot) < 0:
        raise OrientationError("coil pose is not a rigid transform (its 3x3 part must be a rotation, det +1)")
    return pose


def coil_frame_field(coil, rotation, centre_m, points_m, sphere_centre_m, didt_a_per_s):
    """E at points for a batch of coil poses, computed in each coil's frame.

    Instead of moving the coil's dipoles, the points and the sphere centre are moved into the
    coil frame (p' = Rᵀ(p − c)) and the field is rotated back; the dipoles stay fixed.

    Parameters
    ----------
    coil : Coil
    rotation : ndarray, shape (b, 3, 3)
        Pose rotations (columns = coil axes in world).
    centre_m : ndarray, shape (b, 3)
        Coil centres in world, m.
    points_m : ndarray, shape (b, 3)
        One field point per pose, world, m.
    sphere_centre_m : ndarray, shape (3,)
        World, m.
    didt_a_per_s : float

    Returns
    -------
    ndarray, shape (b, 3)
        E in world axes, V/m.
    """
    rt = np.transpose(rotation, (0, 2, 1))
    target_local = np.einsum("bij,bj->bi", rt, points_m - centre_m)
    sphere_local = np.einsum("bij,bj->bi", rt, sphere_centre_m - centre_m)
    out = np.empty_like(target_local)
    step = max(1, BLOCK_ELEMENTS // coil.n_dipoles)
    for start in range(0, len(out), step):
        block = slice(start, start + step)
        s = sphere_local[block]
        out[block] = _heller_sum(target_local[block] - s, coil.positions_m, s, coil.moments_m2)
    out *= -MU0_OVER_4PI * float(didt_a_per_s)
    return np.einsum("bij,bj->bi", rotation, out)


def efield_at_points(coil, pose_ras, points_ras_mm, sphere, didt_a_per_s=None):
    """E-field (V/m, world RAS axes) of a coil at a pose, at points inside the head sphere.

    Parameters
    ----------
    coil : Coil
    pose_ras : array-like, shape (4, 4)
        SimNIBS coil pose, world RAS mm (columns x, y, z, centre).
    points_ras_mm : array-like, shape (p, 3)
        World RAS mm.
    sphere : Sphere
    didt_a_per_s : float, optional
        Default: the coil's dI/dt at 100 % output.

    Returns
    -------
    ndarray, shape (p, 3)
        V/m; NaN at points outside the sphere, where the model does not apply.

    Notes
    -----
    The cost is about 0.1-0.4 µs per point and dipole on 2 cores (``bench/bench_efield.py``):
    a map of 8,000 points with the 3,156-dipole D70 takes 3-9 s.  For maps, a coarser coil
    (``builtin_coil(name, element_m=0.007)``, 768 dipoles for the D70, 0.1 % off) is 4× faster.

    Raises
    ------
    InputError
        No dI/dt given and none known for the coil.
    OrientationError
        A pose that is not a rigid transform.
    """
    didt = resolve_didt(coil, didt_a_per_s)
    pose = check_pose(pose_ras)
    pts = np.asarray(points_ras_mm, dtype=float).reshape(-1, 3)
    rot, centre_m = pose[:3, :3], pose[:3, 3] * 1e-3
    dipoles_m = coil.positions_m @ rot.T + centre_m
    moments = coil.moments_m2 @ rot.T
    sphere_m = np.asarray(sphere.centre_ras_mm, dtype=float) * 1e-3
    inside = np.linalg.norm(pts - sphere.centre_ras_mm, axis=1) < sphere.radius_mm
    out = np.full(pts.shape, np.nan)
    if inside.any():
        out[inside] = dipole_efield(pts[inside] * 1e-3, dipoles_m, moments, sphere_m, didt)
    return out


def resolve_didt(coil, didt_a_per_s):
    """The dI/dt to use (A/s): the one given, else the coil's default; InputError when neither exists."""
    didt = coil.didt_a_per_s if didt_a_per_s is None else float(didt_a_per_s)
    if didt is None or not np.isfinite(didt) or didt <= 0:
        raise InputError(
            f"no dI/dt for coil {coil.name!r}: give one (A/us at the stimulator output used; "
            "the coil file has no dIdtmax)"
        )
    return didt
