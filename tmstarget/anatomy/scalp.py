"""Head surface, scalp point, coil pose and scalp-to-cortex depth.

Everything is in the **world RAS frame of the T1 file, in mm** (the frame of
``img.affine``); voxel axes are used only inside, through the affine, so any
storage order (RAS, LAS, sagittal, oblique) gives the same world answer.

Coil poses follow the SimNIBS convention of ``shared/specs/navigation-formats.md``
§1.5 and §2: a 4x4 matrix whose columns 0-2 are the unit coil axes x, y, z and
column 3 the coil centre; z is the coil normal **into** the head, y points
**away** from the handle (the handle direction is ``handle_ras = -pose_ras[:3, 1]``),
x = y × z, det +1.  Poses are never pushed through a warp (§1.4): build them
here, on the scalp of the T1 the navigator loads.

Order of operations (``place_coil``):

1. ``head_mask``: block-average the T1 to about ``voxel_mm`` (2 mm), threshold
   at half of Otsu's threshold, fill holes in 3-D, keep the largest connected
   component, close, fill holes in 3-D and slice by slice along each voxel
   axis, open (trims noise spurs) and keep the largest component again.
2. ``mask_surface``: pad, Gaussian-smooth the mask, marching cubes at 0.5
   (scikit-image), map vertices through the affine, keep the largest
   connected piece, orient faces outward (positive enclosed volume) and
   compute area-weighted outward vertex normals.
3. ``scalp_point``: "closest" = closest point of the mesh to the target;
   "normal" = the scalp point whose smoothed outward normal (faces within
   ``normal_radius_mm``) passes through the target (fixed-point iteration of
   ray casts from the target, started at the closest point).
4. ``coil_pose``: centre = scalp point + ``distance_mm`` along the outward
   normal; z = minus the smoothed scalp normal (``z_axis="normal"``, coil flat on
   the scalp) or the unit vector from the centre to the target
   (``z_axis="target"``); the handle (a rule from ``handle_direction`` or an
   explicit vector) is projected into the plane normal to z; y = -handle;
   x = y × z.
5. ``scalp_to_cortex_mm``: distance from the scalp point to where the line
   toward the target enters a brain mask (or to the target without a mask).
"""

import logging
import time
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
from nibabel.affines import apply_affine, voxel_sizes
from scipy import ndimage, sparse
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

from tmstarget.errors import InputError, OrientationError

logger = logging.getLogger(__name__)

#: Handle angle of the DLPFC rule, degrees from the posterior midline direction
#: toward the lateral side of the target's hemisphere.
DLPFC_HANDLE_ANGLE_DEG = 45.0

_SCALP_METHODS = ("closest", "normal")
_Z_AXES = ("normal", "target")
_HANDLE_RULES = ("auto", "dlpfc", "midline")


# --------------------------------------------------------------------------
# surfaces
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SurfaceMesh:
    """A closed triangle surface in world RAS mm (scalp or brain).

    Parameters
    ----------
    vertices_ras_mm : ndarray, shape (n, 3)
        Vertex positions, world RAS, mm.
    faces : ndarray of int, shape (m, 3)
        Vertex indices, counter-clockwise seen from outside (right-hand rule
        gives the outward normal).
    normals_ras : ndarray, shape (n, 3)
        Outward unit vertex normals (area-weighted mean of face normals).
    """

    vertices_ras_mm: np.ndarray
    faces: np.ndarray
    normals_ras: np.ndarray
    _face_cross: np.ndarray = field(init=False, repr=False, compare=False)
    _centroids: np.ndarray = field(init=False, repr=False, compare=False)
    _tree: cKDTree = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        v = self.vertices_ras_mm
        tri = v[self.faces]
        # cross product: direction = outward face normal, length = 2 * area
        object.__setattr__(self, "_face_cross", np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]))
        object.__setattr__(self, "_centroids", tri.mean(axis=1))
        object.__setattr__(self, "_tree", cKDTree(self._centroids))

    @property
    def centroid_ras_mm(self):
        """Area-weighted centroid of the surface, world RAS mm, shape (3,)."""
        area = np.linalg.norm(self._face_cross, axis=1)
        return (self._centroids * area[:, None]).sum(axis=0) / area.sum()


def _load_3d(img, what):
    if not hasattr(img, "affine") or not hasattr(img, "dataobj"):
        raise InputError(f"{what} must be a nibabel image; got {type(img).__name__}")
    data = np.asarray(img.dataobj, dtype=np.float32)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{what} must be a 3-D image; got shape {img.shape}")
    affine = np.asarray(img.affine, dtype=float)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise OrientationError(f"{what} has a singular or non-finite affine:\n{affine}")
    return np.nan_to_num(data), affine


def _working_grid(data, affine, voxel_mm):
    """Block-average ``data`` to voxels of about ``voxel_mm`` (integer factors).

    The new voxel (i, j, k) covers old voxels f*i .. f*i+f-1, so its centre is
    old index f*i + (f-1)/2 and the affine stays exact for any orientation.
    """
    if voxel_mm is None:
        return data, affine
    factors = np.maximum(1, np.round(float(voxel_mm) / voxel_sizes(affine))).astype(int)
    if np.all(factors == 1):
        return data, affine
    new_shape = -(-np.array(data.shape) // factors)
    padded = np.zeros(new_shape * factors, dtype=np.float32)
    padded[: data.shape[0], : data.shape[1], : data.shape[2]] = data
    blocks = padded.reshape(new_shape[0], factors[0], new_shape[1], factors[1], new_shape[2], factors[2])
    scale = np.diag([*factors.astype(float), 1.0])
    scale[:3, 3] = (factors - 1) / 2.0
    return blocks.mean(axis=(1, 3, 5)), affine @ scale


def _ball(radius_mm, affine):
    """Boolean ellipsoidal structuring element of ``radius_mm`` in world mm."""
    sizes = voxel_sizes(affine)
    half = np.maximum(1, np.floor(radius_mm / sizes)).astype(int)
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    return sum((g * s / radius_mm) ** 2 for g, s in zip(grids, sizes)) <= 1.0


def _largest_component(mask):
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == np.argmax(counts)


def _otsu_threshold(values, bins=256):
    """Otsu's threshold of ``values`` (between-class variance maximum)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (m0 / w0 - (m0[-1] - m0) / w1) ** 2
    return float(centres[np.nanargmax(between[:-1])])


def head_mask(t1_img, *, voxel_mm=2.0, threshold=None, closing_mm=6.0, opening_mm=4.0):
    """Binary head (scalp-bounded) mask of a T1 image.

    Parameters
    ----------
    t1_img : nibabel image, 3-D
        T1-weighted image (any storage orientation; background may be noisy).
    voxel_mm : float or None
        Working voxel size in mm: the image is block-averaged by integer
        factors to about this size first (2 mm makes a 1 mm MPRAGE 8x faster).
        None keeps the native grid.
    threshold : float, optional
        Intensity threshold on the working grid; default half of Otsu's
        threshold of the whole (block-averaged) image.
    closing_mm : float
        Radius of the morphological closing (mm), which seals ear canals,
        nostrils and small gaps before hole filling.
    opening_mm : float
        Radius of the opening applied after hole filling (mm), which trims
        noise and ghost spurs attached to the head.

    Returns
    -------
    nibabel.Nifti1Image
        uint8 mask (1 = head) on the working grid; its affine maps the
        working voxels to the same world RAS mm as ``t1_img``.

    Raises
    ------
    InputError
        Not a 3-D image, or nothing above the threshold.
    OrientationError
        Singular or non-finite affine.
    """
    data, affine = _load_3d(t1_img, "T1 image")
    data, affine = _working_grid(data, affine, voxel_mm)
    if threshold is None:
        if data.max() <= data.min():
            raise InputError(f"T1 image is constant ({data.min():g}): no head to find")
        threshold = 0.5 * _otsu_threshold(data)
    mask = data > threshold
    if not mask.any():
        raise InputError(f"no voxel of the T1 image is above the head threshold {threshold:g}")
    # fill before choosing the largest piece: a thin scalp shell may hold fewer
    # voxels than the brain it encloses; dropping the other pieces (skin
    # markers, noise) before closing keeps them from being bridged to the head
    mask = _largest_component(ndimage.binary_fill_holes(mask))
    ball = _ball(closing_mm, affine)
    pad = max(ball.shape) // 2 + 1
    mask = np.pad(mask, pad)
    mask = ndimage.binary_closing(mask, structure=ball)[pad:-pad, pad:-pad, pad:-pad]
    mask = ndimage.binary_fill_holes(mask)
    for axis in range(3):
        moved = np.moveaxis(mask, axis, 0)
        filled = np.stack([ndimage.binary_fill_holes(s) for s in moved])
        mask = np.moveaxis(filled, 0, axis)
    # the filled head is thick: an opening now only trims noise spurs
    mask = _largest_component(ndimage.binary_opening(mask, structure=_ball(opening_mm, affine)))
    logger.debug("head mask: threshold %g, %d voxels of %s mm", threshold, mask.sum(), voxel_sizes(affine))
    return nib.Nifti1Image(mask.astype(np.uint8), affine)


def _keep_largest_piece(vertices, faces):
    n = len(vertices)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = sparse.csgraph.connected_components(graph, directed=False)
    keep = labels == np.argmax(np.bincount(labels[faces[:, 0]]))
    new_index = np.cumsum(keep) - 1
    faces = faces[keep[faces[:, 0]]]
    return vertices[keep], new_index[faces]


def mask_surface(mask_img, *, smoothing_mm=2.0):
    """Closed outer surface of a binary mask, in world RAS mm.

    Parameters
    ----------
    mask_img : nibabel image, 3-D
        Mask (nonzero = inside), e.g. from ``head_mask`` or a brain mask.
    smoothing_mm : float
        Gaussian sigma (mm) applied to the mask before marching cubes at 0.5;
        removes voxel stair-steps from positions and normals.

    Returns
    -------
    SurfaceMesh

    Raises
    ------
    InputError
        Empty mask.
    """
    data, affine = _load_3d(mask_img, "mask image")
    inside = (data > 0).astype(np.float32)
    if not inside.any():
        raise InputError("mask image is empty: no surface to extract")
    sigma_vox = float(smoothing_mm) / voxel_sizes(affine)
    pad = int(np.ceil(3 * sigma_vox.max())) + 2
    inside = ndimage.gaussian_filter(np.pad(inside, pad), sigma_vox) if smoothing_mm > 0 else np.pad(inside, pad)
    shift = np.eye(4)
    shift[:3, 3] = -pad
    verts_ijk, faces, _, _ = marching_cubes(inside, level=0.5, allow_degenerate=False)
    vertices = apply_affine(affine @ shift, verts_ijk)
    vertices, faces = _keep_largest_piece(vertices, faces.astype(np.int64))
    tri = vertices[faces]
    signed_volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    if signed_volume < 0:
        faces = faces[:, [0, 2, 1]]
        tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros_like(vertices)
    for corner in range(3):
        np.add.at(normals, faces[:, corner], cross)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return SurfaceMesh(vertices, faces, normals)


def scalp_surface(t1_img, *, voxel_mm=2.0, smoothing_mm=2.0):
    """Scalp (outer head) surface of a T1 image: ``mask_surface(head_mask(t1))``.

    Parameters
    ----------
    t1_img : nibabel image, 3-D
    voxel_mm : float or None
        Working voxel size of the head mask (see ``head_mask``).
    smoothing_mm : float
        See ``mask_surface``.

    Returns
    -------
    SurfaceMesh
        In the world RAS mm of ``t1_img``.
    """
    start = time.perf_counter()
    mesh = mask_surface(head_mask(t1_img, voxel_mm=voxel_mm), smoothing_mm=smoothing_mm)
    logger.info(
        "scalp surface: %d vertices, %d faces in %.2f s",
        len(mesh.vertices_ras_mm),
        len(mesh.faces),
        time.perf_counter() - start,
    )
    return mesh


# --------------------------------------------------------------------------
# points on the surface
# --------------------------------------------------------------------------


def _as_point(point, name):
    p = np.asarray(point, dtype=float)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise InputError(f"{name} must be 3 finite numbers (x, y, z in RAS mm); got {point!r}")
    return p


def _unit(vector, name):
    v = np.asarray(vector, dtype=float)
    norm = np.linalg.norm(v)
    if v.shape != (3,) or not np.isfinite(norm) or norm < 1e-9:
        raise OrientationError(f"{name} must be a nonzero finite 3-vector; got {vector!r}")
    return v / norm


def _closest_on_triangles(point, tri):
    """Closest point to ``point`` on each triangle ``tri`` (k, 3, 3).

    Returns the points (k, 3), their barycentric weights (k, 3) and distances (k,).
    """
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    ab, ac = b - a, c - a
    ap = point - a
    d00 = np.einsum("ij,ij->i", ab, ab)
    d01 = np.einsum("ij,ij->i", ab, ac)
    d11 = np.einsum("ij,ij->i", ac, ac)
    d20 = np.einsum("ij,ij->i", ap, ab)
    d21 = np.einsum("ij,ij->i", ap, ac)
    denom = d00 * d11 - d01**2
    with np.errstate(divide="ignore", invalid="ignore"):
        v = (d11 * d20 - d01 * d21) / denom
        w = (d00 * d21 - d01 * d20) / denom
    u = 1.0 - v - w
    weights = np.stack([u, v, w], axis=1)
    inside = np.all(weights >= 0, axis=1) & np.isfinite(denom) & (denom > 0)
    best = np.where(inside[:, None], a + v[:, None] * ab + w[:, None] * ac, np.nan)
    best_w = np.where(inside[:, None], weights, np.nan)
    best_d = np.where(inside, np.linalg.norm(best - point, axis=1), np.inf)
    for i, j in ((0, 1), (1, 2), (0, 2)):
        p0, p1 = tri[:, i], tri[:, j]
        edge = p1 - p0
        length2 = np.einsum("ij,ij->i", edge, edge)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.clip(np.einsum("ij,ij->i", point - p0, edge) / length2, 0.0, 1.0)
        t = np.nan_to_num(t)
        cand = p0 + t[:, None] * edge
        dist = np.linalg.norm(cand - point, axis=1)
        better = ~inside & (dist < best_d)
        cand_w = np.zeros_like(weights)
        cand_w[:, i] = 1.0 - t
        cand_w[:, j] = t
        best = np.where(better[:, None], cand, best)
        best_w = np.where(better[:, None], cand_w, best_w)
        best_d = np.where(better, dist, best_d)
    return best, best_w, best_d


def closest_point(point_ras_mm, mesh, *, candidates=32):
    """Closest point of ``mesh`` to a point, and the interpolated unit normal there.

    Parameters
    ----------
    point_ras_mm : array-like, shape (3,)
        World RAS mm.
    mesh : SurfaceMesh
    candidates : int
        Number of triangles (nearest centroids) searched exactly.

    Returns
    -------
    point_ras_mm : ndarray, shape (3,)
    normal_ras : ndarray, shape (3,)
        Outward unit normal, barycentric blend of the vertex normals.
    """
    p = _as_point(point_ras_mm, "point_ras_mm")
    _, face_ids = mesh._tree.query(p, k=min(candidates, len(mesh.faces)))
    face_ids = np.atleast_1d(face_ids)
    faces = mesh.faces[face_ids]
    points, weights, dist = _closest_on_triangles(p, mesh.vertices_ras_mm[faces])
    best = int(np.argmin(dist))
    normal = weights[best] @ mesh.normals_ras[faces[best]]
    return points[best], normal / np.linalg.norm(normal)


def surface_normal(point_ras_mm, mesh, *, radius_mm=10.0):
    """Smoothed outward normal of ``mesh`` near a point on it.

    Parameters
    ----------
    point_ras_mm : array-like, shape (3,)
        A point on (or near) the surface, world RAS mm.
    mesh : SurfaceMesh
    radius_mm : float
        Area-weighted mean of the normals of the faces whose centroid lies
        within this distance (mm); 0 gives the interpolated vertex normal at
        the closest point.

    Returns
    -------
    ndarray, shape (3,)
        Outward unit normal, world RAS.
    """
    p = _as_point(point_ras_mm, "point_ras_mm")
    face_ids = mesh._tree.query_ball_point(p, r=radius_mm) if radius_mm > 0 else []
    if len(face_ids) == 0:
        return closest_point(p, mesh)[1]
    normal = mesh._face_cross[face_ids].sum(axis=0)
    return normal / np.linalg.norm(normal)


def _ray_hits(origin, direction, mesh):
    """Distances t along a ray (Möller-Trumbore) at which it crosses the mesh."""
    tri = mesh.vertices_ras_mm[mesh.faces]
    e1 = tri[:, 1] - tri[:, 0]
    e2 = tri[:, 2] - tri[:, 0]
    pvec = np.cross(direction, e2)
    det = np.einsum("ij,ij->i", e1, pvec)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    tvec = origin - tri[:, 0]
    u = np.einsum("ij,ij->i", tvec, pvec) * inv
    qvec = np.cross(tvec, e1)
    v = (qvec @ direction) * inv
    t = np.einsum("ij,ij->i", e2, qvec) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1)
    return t[hit]


def _depth_below_surface(target, mesh, normal_radius_mm):
    """Signed depth (mm, > 0 inside) of ``target`` below the closest surface point."""
    point, _ = closest_point(target, mesh)
    normal = surface_normal(point, mesh, radius_mm=normal_radius_mm)
    return float((point - target) @ normal), point, normal


def scalp_point(target_ras_mm, mesh, *, method="normal", normal_radius_mm=10.0, max_iter=30, tol_mm=0.05):
    """Point on the scalp for a cortical target, and the outward scalp normal there.

    Parameters
    ----------
    target_ras_mm : array-like, shape (3,)
        Cortical target, world RAS mm of the T1 the mesh came from.
    mesh : SurfaceMesh
        Scalp surface (``scalp_surface``).
    method : {"normal", "closest"}
        "closest": the closest scalp point to the target.  "normal": the
        scalp point whose smoothed normal (``normal_radius_mm``) passes
        through the target, i.e. the perpendicular projection onto the
        smoothed scalp (found by casting rays from the target along the
        normal, starting at the closest point, until the point moves less than
        ``tol_mm``).  On a smooth head both agree to about a millimetre.
    normal_radius_mm : float
        Smoothing radius of the returned normal (see ``surface_normal``).
    max_iter, tol_mm : int, float
        Iteration limit and convergence distance of the "normal" method.

    Returns
    -------
    point_ras_mm : ndarray, shape (3,)
        On the mesh, world RAS mm.
    normal_ras : ndarray, shape (3,)
        Outward unit normal (smoothed), world RAS.

    Raises
    ------
    OrientationError
        The target lies outside the head surface (a target in another space,
        e.g. MNI coordinates given for a native T1, usually shows this way).
    InputError
        Unknown method.
    """
    target = _as_point(target_ras_mm, "target_ras_mm")
    if method not in _SCALP_METHODS:
        raise InputError(f"scalp point method must be one of {_SCALP_METHODS}; got {method!r}")
    depth_mm, point, normal = _depth_below_surface(target, mesh, normal_radius_mm)
    if depth_mm < 0:
        raise OrientationError(
            f"target {np.round(target, 1).tolist()} RAS mm lies {-depth_mm:.1f} mm outside the head "
            "surface; is it in the world space of this T1?"
        )
    if method == "closest":
        return point, normal
    for _ in range(max_iter):
        hits = _ray_hits(target, normal, mesh)
        hits = hits[hits > -1e-6]
        if len(hits) == 0:
            break
        new_point = target + hits.min() * normal
        moved_mm = np.linalg.norm(new_point - point)
        point = new_point
        normal = surface_normal(point, mesh, radius_mm=normal_radius_mm)
        if moved_mm < tol_mm:
            return point, normal
    logger.warning(
        "scalp point along the normal did not converge for target %s; last point %s",
        np.round(target, 1).tolist(),
        np.round(point, 1).tolist(),
    )
    return point, normal


# --------------------------------------------------------------------------
# handle and pose
# --------------------------------------------------------------------------


def _check_head_axes(head_axes_ras):
    if head_axes_ras is None:
        return np.eye(3)
    axes = np.asarray(head_axes_ras, dtype=float)
    if axes.shape != (3, 3) or not np.allclose(axes.T @ axes, np.eye(3), atol=1e-6) or np.linalg.det(axes) <= 0:
        raise OrientationError(
            "head_axes_ras must be a 3x3 rotation whose columns are the head's Right, Anterior and "
            f"Superior unit vectors in world RAS; got {head_axes_ras!r}"
        )
    return axes


def handle_direction(
    target_ras_mm, rule="auto", *, midline_ras_mm=(0.0, 0.0, 0.0), head_axes_ras=None, midline_tolerance_mm=10.0
):
    """Default coil handle direction for a target (before projection onto the scalp).

    Parameters
    ----------
    target_ras_mm : array-like, shape (3,)
        Target, world RAS mm.
    rule : {"auto", "dlpfc", "midline"} or float
        - "dlpfc": the usual figure-8 convention for DLPFC, handle pointing
          posterior and lateral (away from the midline, on the target's side),
          45° from the midsagittal line.  Left target -> (-s, -s, 0), right
          target -> (+s, -s, 0), s = 1/√2 (head frame).
        - "midline": handle pointing posterior along the midline (dMPFC).
        - "auto": "midline" when the target is within ``midline_tolerance_mm``
          of the midsagittal plane, else "dlpfc".
        - a number: angle in degrees from the posterior midline direction,
          positive toward the lateral side of the target's hemisphere (45 =
          "dlpfc"); for a target on the midline only 0 or 180 are defined.
    midline_ras_mm : array-like, shape (3,)
        A point of the midsagittal plane, world RAS mm (0 in MNI space).
    head_axes_ras : ndarray, shape (3, 3), optional
        Columns = the head's Right, Anterior, Superior unit vectors in world
        RAS (e.g. the rotation of the T1 -> MNI affine); default identity.
    midline_tolerance_mm : float
        Lateral distance (mm) under which a target counts as midline.

    Returns
    -------
    ndarray, shape (3,)
        Unit handle direction in world RAS, in the head's axial plane.

    Raises
    ------
    InputError
        Unknown rule.
    OrientationError
        A lateral angle for a midline target, or invalid head axes.
    """
    target = _as_point(target_ras_mm, "target_ras_mm")
    midline = _as_point(midline_ras_mm, "midline_ras_mm")
    axes = _check_head_axes(head_axes_ras)
    right, anterior = axes[:, 0], axes[:, 1]
    lateral_mm = float((target - midline) @ right)
    on_midline = abs(lateral_mm) <= midline_tolerance_mm
    if isinstance(rule, str):
        if rule not in _HANDLE_RULES:
            raise InputError(f"handle rule must be one of {_HANDLE_RULES} or an angle in degrees; got {rule!r}")
        if rule == "auto":
            rule = "midline" if on_midline else "dlpfc"
        angle_deg = DLPFC_HANDLE_ANGLE_DEG if rule == "dlpfc" else 0.0
    elif isinstance(rule, (int, float, np.integer, np.floating)) and not isinstance(rule, bool) and np.isfinite(rule):
        angle_deg = float(rule)
    else:
        raise InputError(f"handle rule must be one of {_HANDLE_RULES} or an angle in degrees; got {rule!r}")
    angle = np.deg2rad(angle_deg)
    if on_midline and abs(np.sin(angle)) > 1e-9:
        raise OrientationError(
            f"handle angle {angle_deg:g}° toward the lateral side is undefined for a target "
            f"{lateral_mm:+.1f} mm from the midline (tolerance {midline_tolerance_mm:g} mm); "
            "use 'midline', 0 or 180, or an explicit handle vector"
        )
    side = np.sign(lateral_mm) if not on_midline else 0.0
    return -np.cos(angle) * anterior + np.sin(angle) * side * right


def pose_from_axes(centre_ras_mm, z_ras, handle_ras):
    """SimNIBS coil pose from a centre, a coil normal and a handle direction.

    Parameters
    ----------
    centre_ras_mm : array-like, shape (3,)
        Coil centre, world RAS mm.
    z_ras : array-like, shape (3,)
        Coil normal pointing into the head (any length).
    handle_ras : array-like, shape (3,)
        Approximate handle direction; its component along z is removed.

    Returns
    -------
    pose_ras : ndarray, shape (4, 4)
        Columns x, y, z, centre; y = -(unit handle in the coil plane),
        x = y × z, det +1.

    Raises
    ------
    OrientationError
        Handle (almost) parallel to the coil normal.
    """
    centre = _as_point(centre_ras_mm, "centre_ras_mm")
    z = _unit(z_ras, "coil normal z_ras")
    handle = _unit(handle_ras, "handle_ras")
    in_plane = handle - (handle @ z) * z
    if np.linalg.norm(in_plane) < np.sin(np.deg2rad(5.0)):
        raise OrientationError(
            f"handle direction {np.round(handle, 3).tolist()} is within 5° of the coil normal "
            f"{np.round(z, 3).tolist()}: it has no direction in the coil plane"
        )
    y = -in_plane / np.linalg.norm(in_plane)
    x = np.cross(y, z)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, centre
    return pose


def scalp_to_cortex_mm(scalp_ras_mm, target_ras_mm, brain_mask_img=None, *, step_mm=0.1, max_depth_mm=80.0):
    """Distance from a scalp point to the cortex along the line to the target.

    Parameters
    ----------
    scalp_ras_mm : array-like, shape (3,)
        Point on the scalp (coil centre without offset), world RAS mm.
    target_ras_mm : array-like, shape (3,)
        Cortical target, world RAS mm; gives the direction of the line.
    brain_mask_img : nibabel image, optional
        Brain mask (nonzero = brain) in the same world space.  Without it the
        result is the scalp-to-target distance.
    step_mm, max_depth_mm : float
        Sampling step and search length along the line (mm).

    Returns
    -------
    float
        mm from the scalp point to where the line first enters the brain
        (trilinear mask value 0.5, linearly interpolated between samples).

    Raises
    ------
    InputError
        The line never enters the brain mask within ``max_depth_mm``.
    """
    scalp = _as_point(scalp_ras_mm, "scalp_ras_mm")
    target = _as_point(target_ras_mm, "target_ras_mm")
    if brain_mask_img is None:
        return float(np.linalg.norm(target - scalp))
    direction = _unit(target - scalp, "scalp-to-target direction")
    data, affine = _load_3d(brain_mask_img, "brain mask image")
    depths = np.arange(0.0, max_depth_mm + step_mm, step_mm)
    ijk = apply_affine(np.linalg.inv(affine), scalp + depths[:, None] * direction)
    values = ndimage.map_coordinates((data > 0).astype(np.float32), ijk.T, order=1, mode="constant")
    entered = np.flatnonzero(values >= 0.5)
    if len(entered) == 0:
        raise InputError(
            f"the line from scalp point {np.round(scalp, 1).tolist()} toward the target never enters "
            f"the brain mask within {max_depth_mm:g} mm; is the mask in the same world space?"
        )
    k = int(entered[0])
    if k == 0:
        return 0.0
    frac = (0.5 - values[k - 1]) / (values[k] - values[k - 1])
    return float(depths[k - 1] + frac * step_mm)


@dataclass(frozen=True)
class CoilPlacement:
    """A coil placed over a target on one T1's scalp (world RAS mm, SimNIBS axes).

    Attributes
    ----------
    pose_ras : ndarray, shape (4, 4)
        SimNIBS pose; ``handle_ras = -pose_ras[:3, 1]``.
    scalp_ras_mm : ndarray, shape (3,)
        Scalp point under the coil centre.
    scalp_normal_ras : ndarray, shape (3,)
        Outward smoothed scalp normal at that point.
    handle_rule : str
        How the handle was chosen (rule name, angle or "explicit").
    scalp_to_target_mm : float
    scalp_to_cortex_mm : float or None
        None without a brain mask.
    """

    pose_ras: np.ndarray
    scalp_ras_mm: np.ndarray
    scalp_normal_ras: np.ndarray
    handle_rule: str
    scalp_to_target_mm: float
    scalp_to_cortex_mm: float | None

    @property
    def handle_ras(self):
        """Unit handle direction, world RAS (= -y of the pose)."""
        return -self.pose_ras[:3, 1]

    def to_dict(self):
        """JSON-ready ``coil`` block (lists of floats, RAS mm, SimNIBS axes)."""
        return {
            "convention": "simnibs",
            "axes": "z = coil normal into the head, y away from the handle (handle = -y), x = y x z; world RAS mm",
            "centre_ras_mm": self.pose_ras[:3, 3].tolist(),
            "matrix": self.pose_ras.tolist(),
            "handle_direction": self.handle_ras.tolist(),
            "handle_rule": self.handle_rule,
            "scalp_ras_mm": self.scalp_ras_mm.tolist(),
            "scalp_to_target_mm": self.scalp_to_target_mm,
            "scalp_to_cortex_mm": self.scalp_to_cortex_mm,
        }


def place_coil(
    target_ras_mm,
    mesh,
    *,
    handle="auto",
    method="normal",
    z_axis="normal",
    distance_mm=0.0,
    normal_radius_mm=10.0,
    head_axes_ras=None,
    midline_ras_mm=None,
    brain_mask_img=None,
):
    """Scalp point, coil pose and depths for a target.

    Parameters
    ----------
    target_ras_mm : array-like, shape (3,)
        Cortical target, world RAS mm of the T1 the mesh came from.
    mesh : SurfaceMesh
        Scalp surface of that T1.
    handle : str, float or array-like of shape (3,)
        A ``handle_direction`` rule ("auto", "dlpfc", "midline"), an angle in
        degrees (see ``handle_direction``), or an explicit handle vector in
        world RAS (e.g. a mapped point 20 mm along the handle minus the
        centre).  It is projected into the coil plane.
    method : {"normal", "closest"}
        See ``scalp_point``.
    z_axis : {"normal", "target"}
        "normal": z = minus the smoothed scalp normal (coil flat on the scalp,
        as SimNIBS does); "target": z = unit vector from the centre to the
        target.  With method "normal" and no offset both coincide.
    distance_mm : float
        Coil centre offset outward from the scalp along the normal (hair,
        casing), mm; default 0.
    normal_radius_mm : float
        Scalp normal smoothing radius (mm).
    head_axes_ras, midline_ras_mm :
        Head frame for the handle rules (see ``handle_direction``); the
        midline point defaults to the area-weighted centroid of the mesh.
    brain_mask_img : nibabel image, optional
        For ``scalp_to_cortex_mm``.

    Returns
    -------
    CoilPlacement

    Raises
    ------
    OrientationError
        Target outside the head, target at the coil centre with
        ``z_axis="target"``, or handle parallel to the coil normal.
    InputError
        Unknown method, z axis or handle rule.
    """
    target = _as_point(target_ras_mm, "target_ras_mm")
    if z_axis not in _Z_AXES:
        raise InputError(f"z_axis must be one of {_Z_AXES}; got {z_axis!r}")
    scalp, normal = scalp_point(target, mesh, method=method, normal_radius_mm=normal_radius_mm)
    centre = scalp + float(distance_mm) * normal
    z = -normal if z_axis == "normal" else _unit(target - centre, "centre-to-target direction")
    if isinstance(handle, str) or np.ndim(handle) == 0:
        midline = mesh.centroid_ras_mm if midline_ras_mm is None else midline_ras_mm
        handle_ras = handle_direction(target, handle, midline_ras_mm=midline, head_axes_ras=head_axes_ras)
        rule = handle if isinstance(handle, str) else f"{float(handle):g} deg from posterior toward lateral"
    else:
        handle_ras, rule = handle, "explicit"
    pose = pose_from_axes(centre, z, handle_ras)
    cortex_mm = None if brain_mask_img is None else scalp_to_cortex_mm(scalp, target, brain_mask_img)
    return CoilPlacement(pose, scalp, normal, rule, float(np.linalg.norm(target - scalp)), cortex_mm)


def coil_pose(target_ras_mm, mesh, **options):
    """SimNIBS 4x4 coil pose (world RAS mm) for a target: ``place_coil(...).pose_ras``.

    Parameters
    ----------
    target_ras_mm : array-like, shape (3,)
    mesh : SurfaceMesh
    **options
        Keyword options of ``place_coil`` (handle, method, z_axis,
        distance_mm, normal_radius_mm, head_axes_ras, midline_ras_mm).

    Returns
    -------
    ndarray, shape (4, 4)
    """
    return place_coil(target_ras_mm, mesh, **options).pose_ras
