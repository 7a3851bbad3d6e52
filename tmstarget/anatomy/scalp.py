"""Head surface of a T1: head mask, scalp mesh, closest point, normals, ray hits.

Everything is in the **world RAS frame of the T1 file, in mm** (the frame of
``img.affine``); voxel axes are used only inside, through the affine, so any
storage order (RAS, LAS, sagittal, oblique) gives the same world answer.
The coil placed on this surface is :mod:`tmstarget.coil`.

Order of operations (``scalp_surface``):

1. ``head_mask``: block-average the T1 to about ``voxel_mm`` (2 mm), threshold
   at half of Otsu's threshold, fill holes in 3-D, keep the largest connected
   component, close, fill holes in 3-D and slice by slice along each voxel
   axis, open (trims noise spurs) and keep the largest component again.
2. ``mask_surface``: pad, Gaussian-smooth the mask, marching cubes at 0.5
   (scikit-image), map vertices through the affine, keep the largest
   connected piece, orient faces outward (positive enclosed volume) and
   compute area-weighted outward vertex normals.

On the mesh: ``closest_point`` (with the interpolated normal there),
``surface_normal`` (smoothed over a radius) and ``ray_hits`` (where a ray
crosses the surface).
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
    _corner_edges: tuple = field(init=False, repr=False, compare=False)
    _centroids: np.ndarray = field(init=False, repr=False, compare=False)
    _tree: cKDTree = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        v = self.vertices_ras_mm
        tri = v[self.faces]
        # cross product: direction = outward face normal, length = 2 * area
        e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        object.__setattr__(self, "_corner_edges", (tri[:, 0], e1, e2))  # for every ray test (ray_hits)
        object.__setattr__(self, "_face_cross", np.cross(e1, e2))
        object.__setattr__(self, "_centroids", tri.mean(axis=1))
        object.__setattr__(self, "_tree", cKDTree(self._centroids))

    @property
    def centroid_ras_mm(self):
        """Area-weighted centroid of the surface, world RAS mm, shape (3,)."""
        area = np.linalg.norm(self._face_cross, axis=1)
        return (self._centroids * area[:, None]).sum(axis=0) / area.sum()


def load_3d(img, what):
    """Float32 data (NaN -> 0, trailing unit axes dropped) and affine of a 3-D nibabel image ``what``."""
    if not hasattr(img, "affine") or not hasattr(img, "dataobj"):
        raise InputError(f"{what} must be a nibabel image; got {type(img).__name__}")
    data = np.asarray(img.dataobj, dtype=np.float32)
    if not np.all(np.isfinite(data)):  # nan_to_num only when needed (it costs a second pass and a copy)
        data = np.nan_to_num(data)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{what} must be a 3-D image; got shape {img.shape}")
    affine = np.asarray(img.affine, dtype=float)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise OrientationError(f"{what} has a singular or non-finite affine:\n{affine}")
    return data, affine


def block_average(data, affine, voxel_mm):
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


def ball_structure(radius_mm, affine):
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
    data, affine = load_3d(t1_img, "T1 image")
    data, affine = block_average(data, affine, voxel_mm)
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
    ball = ball_structure(closing_mm, affine)
    pad = max(ball.shape) // 2 + 1
    mask = np.pad(mask, pad)
    mask = ndimage.binary_closing(mask, structure=ball)[pad:-pad, pad:-pad, pad:-pad]
    mask = ndimage.binary_fill_holes(mask)
    for axis in range(3):
        moved = np.moveaxis(mask, axis, 0)
        filled = np.stack([ndimage.binary_fill_holes(s) for s in moved])
        mask = np.moveaxis(filled, 0, axis)
    # the filled head is thick: an opening now only trims noise spurs
    mask = _largest_component(ndimage.binary_opening(mask, structure=ball_structure(opening_mm, affine)))
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
    data, affine = load_3d(mask_img, "mask image")
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


def scalp_surface(t1_img, *, voxel_mm=2.0, smoothing_mm=2.0, head=None):
    """Scalp (outer head) surface of a T1 image: ``mask_surface(head_mask(t1))``.

    Parameters
    ----------
    t1_img : nibabel image, 3-D
    voxel_mm : float or None
        Working voxel size of the head mask (see ``head_mask``).
    smoothing_mm : float
        See ``mask_surface``.
    head : nibabel image, optional
        ``head_mask(t1_img, voxel_mm=voxel_mm)`` when already computed (the T1 checks use it too).

    Returns
    -------
    SurfaceMesh
        In the world RAS mm of ``t1_img``.
    """
    start = time.perf_counter()
    head = head_mask(t1_img, voxel_mm=voxel_mm) if head is None else head
    mesh = mask_surface(head, smoothing_mm=smoothing_mm)
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


def as_point(point, name):
    """``point`` as a float array of 3 finite numbers (RAS mm), else :class:`InputError` naming ``name``."""
    p = np.asarray(point, dtype=float)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise InputError(f"{name} must be 3 finite numbers (x, y, z in RAS mm); got {point!r}")
    return p


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
    p = as_point(point_ras_mm, "point_ras_mm")
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
    p = as_point(point_ras_mm, "point_ras_mm")
    face_ids = mesh._tree.query_ball_point(p, r=radius_mm) if radius_mm > 0 else []
    if len(face_ids) == 0:
        return closest_point(p, mesh)[1]
    normal = mesh._face_cross[face_ids].sum(axis=0)
    return normal / np.linalg.norm(normal)


def ray_hits(origin, direction, mesh):
    """Distances t along a ray (Möller-Trumbore) at which it crosses the mesh."""
    corner, e1, e2 = mesh._corner_edges
    pvec = np.cross(direction, e2)
    det = np.einsum("ij,ij->i", e1, pvec)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    tvec = origin - corner
    u = np.einsum("ij,ij->i", tvec, pvec) * inv
    qvec = np.cross(tvec, e1)
    v = (qvec @ direction) * inv
    t = np.einsum("ij,ij->i", e2, qvec) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1)
    return t[hit]
