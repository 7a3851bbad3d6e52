"""Coil pose search: handle angle × coil centre on the scalp, maximizing the field at a target.

Poses follow the project convention (SimNIBS: columns x, y, z, centre; z into the head; handle =
−y; world RAS mm).  **Handle angle**: the angle of the handle direction in the plane tangent to the
scalp, measured from a reference direction (default: posterior, RAS (0, −1, 0), projected onto that
plane; superior when posterior is within 10° of the scalp normal), counter-clockwise seen from
outside the head (right-hand rule about the outward normal), in [0, 360).

Order of operations (:func:`search_poses`):

1. :func:`~tmstarget.efield.sphere.fit_local_sphere` to the scalp vertices around the planned
   scalp point (one sphere for the whole search, so that every pose is judged in the same head).
2. :func:`coil_poses_on_scalp`: coil centres on the scalp within ``radius_mm`` of the planned
   scalp point (the point itself and rings of 8, 16, ... points, projected onto the scalp), each
   lifted ``gap_mm`` along the smoothed outward normal with the coil flat on the scalp (z = −normal),
   at every handle angle.
3. The field at the target for every pose at once: the target and the sphere centre are moved into
   each pose's coil frame (the dipoles never move) and the Heller-van Hulsteyn sum is evaluated
   in blocks (:func:`~tmstarget.efield.sphere.coil_frame_field`).
4. The objective is |E| (or |E·direction|); the best pose maximizes it.  A coil turned by 180°
   gives −E, so the optimum comes in pairs, and |E| at a target on the coil axis barely changes
   with the angle: candidates within ``tie_tolerance`` (0.1 %) of the maximum are ties, won by
   the angle nearest the planned handle angle, then the centre nearest the planned scalp point.
   The angle curve rotates the planned pose itself about its normal.
"""

import time
from dataclasses import dataclass

import numpy as np

from tmstarget.anatomy.scalp import as_point, closest_point, surface_normal
from tmstarget.efield.sphere import check_pose, coil_frame_field, fit_local_sphere, resolve_didt
from tmstarget.errors import InputError, OrientationError
from tmstarget.spaces import pose_from_axes

#: Default reference of the handle angle: posterior in world RAS.
POSTERIOR_RAS = (0.0, -1.0, 0.0)
_FALLBACK_RAS = (0.0, 0.0, 1.0)
_MIN_SIN = np.sin(np.deg2rad(10.0))


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _reference_in_plane(reference_ras, normal):
    """Unit reference direction(s) in the plane(s) normal to ``normal`` (n, 3); fallback: superior."""
    ref = np.broadcast_to(np.asarray(reference_ras, dtype=float), normal.shape)
    proj = ref - np.sum(ref * normal, axis=-1, keepdims=True) * normal
    weak = np.linalg.norm(proj, axis=-1) < _MIN_SIN * np.linalg.norm(ref, axis=-1)
    if np.any(weak):
        fallback = (
            np.asarray(_FALLBACK_RAS) - np.sum(np.asarray(_FALLBACK_RAS) * normal, axis=-1, keepdims=True) * normal
        )
        proj = np.where(weak[:, None], fallback, proj)
    return _unit(proj)


def handle_angle_deg(pose_ras, reference_ras=POSTERIOR_RAS):
    """Handle angle (degrees, [0, 360)) of a pose: handle = −y, about the outward normal −z.

    Parameters
    ----------
    pose_ras : array-like, shape (4, 4)
    reference_ras : array-like, shape (3,)
        Direction of angle 0 (projected onto the coil plane).

    Returns
    -------
    float
    """
    pose = check_pose(pose_ras)
    outward = -pose[:3, 2]
    ref = _reference_in_plane(reference_ras, outward[None])[0]
    handle = -pose[:3, 1]
    angle = np.degrees(np.arctan2(np.cross(ref, handle) @ outward, handle @ ref))
    return float(angle % 360.0)


def poses_at_angles(centre_ras_mm, outward_normal, angles_deg, reference_ras=POSTERIOR_RAS):
    """Poses (a, 4, 4) with the coil centred at ``centre_ras_mm``, z = −normal, at each handle angle."""
    n = _unit(np.asarray(outward_normal, dtype=float))
    ref = _reference_in_plane(reference_ras, n[None])[0]
    side = np.cross(n, ref)
    theta = np.deg2rad(np.asarray(angles_deg, dtype=float))
    handles = np.cos(theta)[:, None] * ref + np.sin(theta)[:, None] * side
    return np.stack([pose_from_axes(centre_ras_mm, -h, -n) for h in handles])


@dataclass(frozen=True)
class CandidatePoses:
    """Coil poses on the scalp around a planned scalp point.

    Attributes
    ----------
    scalp_ras_mm : ndarray, shape (c, 3)
        Scalp points under the coil centres (row 0: the planned scalp point).
    normals_ras : ndarray, shape (c, 3)
        Smoothed outward scalp normals there.
    angles_deg : ndarray, shape (a,)
        Handle angles.
    poses_ras : ndarray, shape (c, a, 4, 4)
        SimNIBS poses, world RAS mm.
    """

    scalp_ras_mm: np.ndarray
    normals_ras: np.ndarray
    angles_deg: np.ndarray
    poses_ras: np.ndarray


def coil_poses_on_scalp(
    mesh,
    scalp_point_ras_mm,
    *,
    radius_mm=10.0,
    rings=2,
    gap_mm=4.0,
    angle_step_deg=5.0,
    reference_ras=POSTERIOR_RAS,
    normal_radius_mm=10.0,
):
    """Candidate coil poses: centres on the scalp near a point × handle angles.

    Parameters
    ----------
    mesh : SurfaceMesh
        Scalp surface (:func:`tmstarget.anatomy.scalp.scalp_surface`).
    scalp_point_ras_mm : array-like, shape (3,)
        The planned scalp point (world RAS mm).
    radius_mm : float
        Largest distance of a centre from the planned point, in the tangent plane, mm.
    rings : int
        Rings of centres at radius_mm·j/rings (j = 1..rings) with 8·j points each: 1 + 8 + 16 = 25
        centres for 2 rings.  Each ring point is projected onto the scalp (closest point), its
        offset shortened when the projection lands farther than the ring radius (a dent in the
        scalp), so every centre stays within ``radius_mm``.
    gap_mm : float
        Distance from the scalp to the coil's casing face along the outward normal (SimNIBS
        ``distance``), mm.
    angle_step_deg : float
        Handle angle step; 360 must be a multiple of it (5° → 72 angles).
    reference_ras : array-like, shape (3,)
        Direction of handle angle 0 (see the module docstring).
    normal_radius_mm : float
        Smoothing radius of the scalp normal (:func:`~tmstarget.anatomy.scalp.surface_normal`).

    Returns
    -------
    CandidatePoses

    Raises
    ------
    InputError
        An angle step that does not divide 360, negative radius, gap or ring count.
    """
    point = as_point(scalp_point_ras_mm, "scalp_point_ras_mm")
    n_angles = 360.0 / float(angle_step_deg)
    if angle_step_deg <= 0 or abs(n_angles - round(n_angles)) > 1e-9:
        raise InputError(f"handle angle step must divide 360 degrees; got {angle_step_deg!r}")
    if radius_mm < 0 or gap_mm < 0 or rings < 0 or int(rings) != rings:
        raise InputError(
            f"radius_mm, gap_mm and rings must be >= 0 (rings an integer); got {radius_mm}, {gap_mm}, {rings}"
        )
    angles = np.arange(int(round(n_angles))) * float(angle_step_deg)
    normal0 = surface_normal(point, mesh, radius_mm=normal_radius_mm)
    u = _reference_in_plane(reference_ras, normal0[None])[0]
    v = np.cross(normal0, u)
    offsets = [np.zeros(3)]
    for j in range(1, int(rings) + 1):
        phi = np.arange(8 * j) * 2 * np.pi / (8 * j)
        radius = radius_mm * j / rings
        offsets.extend(radius * (np.cos(p) * u + np.sin(p) * v) for p in phi)
    scalp, normals = [point], [normal0]
    for offset in offsets[1:]:
        on_scalp = _project_within(point, offset, mesh, float(np.linalg.norm(offset)))
        scalp.append(on_scalp)
        normals.append(surface_normal(on_scalp, mesh, radius_mm=normal_radius_mm))
    scalp, normals = np.array(scalp), np.array(normals)
    poses = np.stack([poses_at_angles(s + gap_mm * n, n, angles, reference_ras) for s, n in zip(scalp, normals)])
    return CandidatePoses(scalp, normals, angles, poses)


def _project_within(point, offset, mesh, limit_mm, tries=8):
    """Closest scalp point to ``point + offset``, pulled in until it lies within ``limit_mm`` of ``point``."""
    for _ in range(tries):
        on_scalp, _ = closest_point(point + offset, mesh)
        distance = float(np.linalg.norm(on_scalp - point))
        if distance <= limit_mm:
            return on_scalp
        offset = offset * (limit_mm / distance)
    return on_scalp


@dataclass(frozen=True)
class SearchResult:
    """Outcome of :func:`search_poses` (all positions world RAS mm, fields V/m).

    Attributes
    ----------
    coil_name : str
    n_dipoles : int
    didt_a_per_s : float
    sphere : Sphere
    target_ras_mm : ndarray, shape (3,)
    direction_ras : ndarray or None
        Unit direction whose E component was maximized (None: |E|).
    candidates : CandidatePoses
    e_ras_v_per_m : ndarray, shape (c, a, 3)
        E at the target for every candidate pose.
    objective_v_per_m : ndarray, shape (c, a)
        |E|, or E·direction, per candidate pose (the search maximizes its absolute value).
    best_index : tuple of int
        (centre, angle) of the best candidate.
    planned_pose_ras : ndarray, shape (4, 4)
        The planned orientation at the search's gap (see :func:`search_poses`).
    planned_angle_deg : float
    planned_e_ras_v_per_m : ndarray, shape (3,)
    curve_angles_deg : ndarray, shape (a,)
        Handle angles of the angle curve (the planned pose turned about its own normal).
    curve_e_ras_v_per_m : ndarray, shape (a, 3)
    timing_s : float
        Wall time of the search (sphere fit, poses and fields).
    """

    coil_name: str
    n_dipoles: int
    didt_a_per_s: float
    sphere: object
    target_ras_mm: np.ndarray
    direction_ras: np.ndarray | None
    candidates: CandidatePoses
    e_ras_v_per_m: np.ndarray
    objective_v_per_m: np.ndarray
    best_index: tuple
    planned_pose_ras: np.ndarray
    planned_angle_deg: float
    planned_e_ras_v_per_m: np.ndarray
    curve_angles_deg: np.ndarray
    curve_e_ras_v_per_m: np.ndarray
    timing_s: float

    def objective(self, e_ras):
        """|E| or E·direction of field vectors (..., 3)."""
        return _objective(e_ras, self.direction_ras)

    @property
    def best_pose_ras(self):
        """4×4 pose of the best candidate."""
        return self.candidates.poses_ras[self.best_index]

    @property
    def best_angle_deg(self):
        """Handle angle of the best candidate."""
        return float(self.candidates.angles_deg[self.best_index[1]])

    @property
    def best_e_ras_v_per_m(self):
        """E at the target (vector) for the best candidate."""
        return self.e_ras_v_per_m[self.best_index]

    def as_dict(self):
        """JSON-ready summary in the ``efield.json`` layout (without ``dose`` and ``simnibs``).

        Keys: ``coil``, ``didt_a_per_us``, ``sphere``, ``target_ras_mm``, ``objective`` ("|E|" or
        "E.direction"), ``direction_ras``, ``planned`` (``handle_angle_deg``, ``e_target_v_per_m``,
        ``e_target_vector_v_per_m``, ``pose``), ``angle_curve`` (list of ``handle_angle_deg``,
        ``e_target_v_per_m``), ``best`` (``handle_angle_deg``, ``centre_ras_mm`` = coil centre,
        ``scalp_ras_mm``, ``pose``, ``e_target_v_per_m``, ``e_target_vector_v_per_m``),
        ``search`` (numbers of centres and angles, radius), ``timing_s``.  ``e_target_v_per_m`` is
        the objective (|E| or E·direction, V/m).
        """

        def rounded(values, digits=4):
            return np.round(np.asarray(values, dtype=float), digits).tolist()

        c, a = self.best_index
        return {
            "coil": self.coil_name,
            "didt_a_per_us": round(self.didt_a_per_s / 1e6, 4),
            "sphere": self.sphere.as_dict(),
            "target_ras_mm": rounded(self.target_ras_mm),
            "objective": "|E|" if self.direction_ras is None else "E.direction",
            "direction_ras": None if self.direction_ras is None else rounded(self.direction_ras, 6),
            "planned": {
                "handle_angle_deg": round(self.planned_angle_deg, 3),
                "e_target_v_per_m": round(float(self.objective(self.planned_e_ras_v_per_m)), 4),
                "e_target_vector_v_per_m": rounded(self.planned_e_ras_v_per_m),
                "pose": rounded(self.planned_pose_ras, 6),
            },
            "angle_curve": [
                {"handle_angle_deg": round(float(angle), 3), "e_target_v_per_m": round(float(value), 4)}
                for angle, value in zip(self.curve_angles_deg, self.objective(self.curve_e_ras_v_per_m))
            ],
            "best": {
                "handle_angle_deg": round(self.best_angle_deg, 3),
                "centre_ras_mm": rounded(self.best_pose_ras[:3, 3]),
                "scalp_ras_mm": rounded(self.candidates.scalp_ras_mm[c]),
                "pose": rounded(self.best_pose_ras, 6),
                "e_target_v_per_m": round(float(self.objective_v_per_m[c, a]), 4),
                "e_target_vector_v_per_m": rounded(self.best_e_ras_v_per_m),
            },
            "search": {
                "n_centres": int(len(self.candidates.scalp_ras_mm)),
                "n_angles": int(len(self.candidates.angles_deg)),
                "n_dipoles": self.n_dipoles,
            },
            "timing_s": round(self.timing_s, 4),
        }


def _objective(e_ras, direction):
    e = np.asarray(e_ras, dtype=float)
    return np.linalg.norm(e, axis=-1) if direction is None else e @ direction


def _field_for_poses(coil, poses_ras, target_ras_mm, sphere, didt):
    """E (V/m, world) at one target for poses (..., 4, 4)."""
    flat = np.asarray(poses_ras, dtype=float).reshape(-1, 4, 4)
    target_m = np.broadcast_to(np.asarray(target_ras_mm, dtype=float) * 1e-3, (len(flat), 3))
    e = coil_frame_field(coil, flat[:, :3, :3], flat[:, :3, 3] * 1e-3, target_m, sphere.centre_ras_mm * 1e-3, didt)
    return e.reshape(*np.shape(poses_ras)[:-2], 3)


def _angle_gap_deg(a, b):
    d = np.abs(np.asarray(a) - b) % 360.0
    return np.minimum(d, 360.0 - d)


def search_poses(
    coil,
    target_ras_mm,
    mesh,
    planned_pose_ras,
    scalp_point_ras_mm,
    *,
    didt_a_per_s=None,
    direction_ras=None,
    radius_mm=10.0,
    rings=2,
    gap_mm=4.0,
    angle_step_deg=5.0,
    reference_ras=POSTERIOR_RAS,
    sphere_patch_mm=40.0,
    normal_radius_mm=10.0,
    tie_tolerance=1e-3,
):
    """Best coil pose for a cortical target in the local-sphere model, and the E-vs-angle curve.

    Parameters
    ----------
    coil : Coil
    target_ras_mm : array-like, shape (3,)
        Cortical target (e.g. ``cortical_target_ras_mm`` of the plan), world RAS mm.
    mesh : SurfaceMesh
        Scalp surface of the same T1.
    planned_pose_ras : array-like, shape (4, 4)
        The plan's coil pose (SimNIBS convention): its orientation gives the planned field and
        angle, and it is turned about its own normal for the angle curve.  It is evaluated at the
        same gap as the candidates: centre moved to ``gap_mm`` above ``scalp_point_ras_mm`` along
        its own axis (the plan puts the casing on the scalp), so planned and best compare like with
        like; ``SearchResult.planned_pose_ras`` is that moved pose.
    scalp_point_ras_mm : array-like, shape (3,)
        The plan's scalp point under the coil (centre of the search and of the sphere patch).
    didt_a_per_s : float, optional
        Default: the coil's dI/dt at 100 % output.
    direction_ras : array-like, shape (3,), optional
        Maximize |E·direction| (e.g. a cortical normal) instead of |E|.
    radius_mm, rings, gap_mm, angle_step_deg, reference_ras, normal_radius_mm
        See :func:`coil_poses_on_scalp` (defaults: 25 centres within 10 mm, 4 mm gap, 72 angles).
    sphere_patch_mm : float
        Radius of the scalp patch of the sphere fit (:func:`~tmstarget.efield.sphere.fit_local_sphere`).
    tie_tolerance : float
        Candidates within this fraction of the largest objective count as equal (default 0.1 %,
        far below the model's accuracy); among them the best is the one whose handle angle is
        nearest the planned angle, then whose centre is nearest the planned scalp point.  In the
        sphere model |E| at a target on the coil axis hardly depends on the handle angle (a coil
        turned by 180° gives −E), so without a ``direction_ras`` the planned angle is usually kept.

    Returns
    -------
    SearchResult

    Raises
    ------
    InputError
        No dI/dt, a zero direction, bad search parameters.
    OrientationError
        The target outside the fitted sphere, a coil dipole inside it, an invalid planned pose.
    """
    start = time.perf_counter()
    didt = resolve_didt(coil, didt_a_per_s)
    target = as_point(target_ras_mm, "target_ras_mm")
    planned = check_pose(planned_pose_ras)
    direction = None
    if direction_ras is not None:
        direction = np.asarray(direction_ras, dtype=float)
        if direction.shape != (3,) or not np.isfinite(direction).all() or np.linalg.norm(direction) < 1e-9:
            raise InputError(f"direction_ras must be a nonzero 3-vector; got {direction_ras!r}")
        direction = direction / np.linalg.norm(direction)
    scalp_point = as_point(scalp_point_ras_mm, "scalp_point_ras_mm")
    sphere = fit_local_sphere(mesh.vertices_ras_mm, scalp_point, sphere_patch_mm)
    depth_in_sphere = sphere.radius_mm - np.linalg.norm(target - sphere.centre_ras_mm)
    if depth_in_sphere <= 0:
        raise OrientationError(
            f"target {np.round(target, 1).tolist()} RAS mm lies {-depth_in_sphere:.1f} mm outside the head sphere "
            f"fitted to the scalp around {np.round(scalp_point, 1).tolist()}"
        )
    candidates = coil_poses_on_scalp(
        mesh,
        scalp_point,
        radius_mm=radius_mm,
        rings=rings,
        gap_mm=gap_mm,
        angle_step_deg=angle_step_deg,
        reference_ras=reference_ras,
        normal_radius_mm=normal_radius_mm,
    )
    _check_dipoles_outside(coil, candidates.poses_ras[:, 0], sphere)
    e_grid = _field_for_poses(coil, candidates.poses_ras, target, sphere, didt)
    planned = planned.copy()
    planned[:3, 3] = scalp_point - gap_mm * planned[:3, 2]
    planned_angle = handle_angle_deg(planned, reference_ras)
    curve_poses = poses_at_angles(planned[:3, 3], -planned[:3, 2], candidates.angles_deg, reference_ras)
    e_curve = _field_for_poses(coil, np.concatenate([curve_poses, planned[None]]), target, sphere, didt)
    objective = _objective(e_grid, direction)
    score = np.abs(objective)
    ties = np.flatnonzero(score.ravel() >= score.max() * (1 - tie_tolerance))
    centre_ids, angle_ids = np.unravel_index(ties, score.shape)
    angle_gap = _angle_gap_deg(candidates.angles_deg[angle_ids], planned_angle)
    shift = np.linalg.norm(candidates.scalp_ras_mm[centre_ids] - scalp_point, axis=1)
    pick = np.lexsort((shift, np.round(angle_gap, 9)))[0]
    best = (centre_ids[pick], angle_ids[pick])
    return SearchResult(
        coil.name,
        coil.n_dipoles,
        didt,
        sphere,
        target,
        direction,
        candidates,
        e_grid,
        objective,
        (int(best[0]), int(best[1])),
        planned,
        planned_angle,
        e_curve[-1],
        candidates.angles_deg,
        e_curve[:-1],
        time.perf_counter() - start,
    )


def _check_dipoles_outside(coil, poses_ras, sphere):
    """OrientationError when a coil dipole of any pose lies inside the head sphere."""
    for pose in poses_ras:
        world = coil.positions_m * 1e3 @ pose[:3, :3].T + pose[:3, 3]
        inside = np.linalg.norm(world - sphere.centre_ras_mm, axis=1) < sphere.radius_mm
        if inside.any():
            raise OrientationError(
                f"{int(inside.sum())} dipoles of coil {coil.name!r} lie inside the head sphere (radius "
                f"{sphere.radius_mm:.1f} mm) at a pose centred at {np.round(pose[:3, 3], 1).tolist()}: "
                "increase the gap or check the scalp surface"
            )
