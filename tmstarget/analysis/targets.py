"""Target pickers: peak, cluster, fixed coordinate.

Pickers work on a score map restricted to a search region, with a direction:
``'negative'`` picks the most negative values (anticorrelation, a drop in FC),
``'positive'`` the most positive.  They return ranked candidates.
"""

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from tmstarget.errors import InputError


@dataclass
class Candidate:
    """One candidate target.

    Attributes
    ----------
    rank : int
        1 = best.
    voxel_ijk : tuple of int
        Zero-based voxel index on the analysis grid.
    ras_mm : ndarray (3,)
        World coordinate of that voxel (analysis image's world space).
    score : float
        The candidate's score: the map value at the voxel (``peak``, ``fixed``) or
        the mean over the cluster's voxels (``cluster``); ``extra["score_statistic"]``
        names it.
    method : str
        ``'peak'``, ``'cluster'`` or ``'fixed'``.
    extra : dict
        Method details (cluster size, cluster mean, unsnapped centroid...).
    """

    rank: int
    voxel_ijk: tuple
    ras_mm: np.ndarray
    score: float
    method: str
    extra: dict = field(default_factory=dict)


def _oriented(values, direction):
    if direction not in ("negative", "positive"):
        raise InputError(f"direction must be 'negative' or 'positive'; got {direction!r}")
    return values if direction == "negative" else -values


def _check_region(region_columns, name="search region"):
    if len(region_columns) == 0:
        raise InputError(f"the {name} is empty on this grid and brain mask")


def pick_peak_targets(values, voxels, region_columns, direction="negative", n_candidates=5, spacing_mm=10.0):
    """Most extreme voxels of the region, at least ``spacing_mm`` apart.

    Parameters
    ----------
    values : ndarray (V,)
        Score per voxel of ``voxels``.
    voxels : tmstarget.analysis.voxels.VoxelSet
    region_columns : ndarray of int
        Columns of the search-region voxels.
    direction : {'negative', 'positive'}
    n_candidates : int
    spacing_mm : float
        Minimum distance between candidates (greedy suppression).

    Returns
    -------
    list of Candidate
    """
    _check_region(region_columns)
    region_columns = np.asarray(region_columns)
    oriented = _oriented(np.asarray(values)[region_columns], direction)
    # stable sort: ties go to the lower column, so the pick is deterministic
    order = region_columns[np.argsort(oriented, kind="stable")]
    xyz = voxels.ras_mm(order)
    chosen = []
    for position, column in enumerate(order):
        if len(chosen) == n_candidates:
            break
        if any(np.linalg.norm(xyz[position] - xyz[p]) < spacing_mm for p, _ in chosen):
            continue
        chosen.append((position, column))
    return [
        Candidate(rank, tuple(int(v) for v in voxels.ijk[col]), xyz[pos], float(values[col]), "peak",
                  {"score_statistic": "peak_value"})
        for rank, (pos, col) in enumerate(chosen, start=1)
    ]


def pick_cluster_targets(values, voxels, region_columns, direction="negative", fraction=0.10, n_candidates=5):
    """Cluster picker (science.md §4, ConTarg/Cash): threshold, 26-connected clusters, centroids.

    Of the search-region voxels with the wanted sign (negative values for
    ``direction="negative"``), those at or beyond the ``fraction`` quantile of
    *those* values are kept (10 %: "below the 10th percentile of the negative
    values"); they are labelled with 26-connectivity; clusters are ranked by
    size (then by mean score); each cluster's unweighted centre of mass (mm)
    is snapped to the nearest search-region voxel.

    Returns
    -------
    list of Candidate
        ``score`` is the cluster's mean value; ``extra`` holds
        ``score_statistic`` (``"cluster_mean"``), ``cluster_size``,
        ``cluster_mean``, ``cluster_peak`` (its most extreme value),
        ``value_at_voxel`` (the map at the snapped voxel) and ``centroid_ras_mm``.
    """
    _check_region(region_columns)
    region_columns = np.asarray(region_columns)
    region_values = np.asarray(values)[region_columns]
    oriented = _oriented(region_values, direction)
    wanted = oriented < 0
    if not wanted.any():
        raise InputError(
            f"no {direction} values in the search region: the cluster picker has nothing to cluster"
        )
    threshold = np.quantile(oriented[wanted], fraction)
    keep = region_columns[wanted & (oriented <= threshold)]
    # labelled inside the kept voxels' bounding box only (the bootstrap calls this hundreds of times): the
    # clusters and their numbering (raster order) are those of the whole grid
    ijk = voxels.ijk[keep]
    low = ijk.min(axis=0)
    local = tuple((ijk - low).T)
    grid = np.zeros(tuple(ijk.max(axis=0) - low + 1), dtype=bool)
    grid[local] = True
    labels, n_labels = ndimage.label(grid, structure=np.ones((3, 3, 3), dtype=bool))
    kept_labels = labels[local]
    clusters = []
    for label in range(1, n_labels + 1):
        members = keep[kept_labels == label]
        clusters.append((len(members), float(np.mean(_oriented(np.asarray(values)[members], direction))), members))
    clusters.sort(key=lambda c: (-c[0], c[1]))
    region_xyz = voxels.ras_mm(region_columns)
    candidates = []
    for rank, (size, _, members) in enumerate(clusters[:n_candidates], start=1):
        centroid = voxels.ras_mm(members).mean(axis=0)
        nearest = region_columns[int(np.argmin(np.sum((region_xyz - centroid) ** 2, axis=1)))]
        member_values = np.asarray(values)[members]
        mean = float(np.mean(member_values))
        peak = float(member_values[np.argmin(_oriented(member_values, direction))])
        candidates.append(
            Candidate(
                rank,
                tuple(int(v) for v in voxels.ijk[nearest]),
                voxels.ras_mm([nearest])[0],
                mean,
                "cluster",
                {
                    "score_statistic": "cluster_mean",
                    "cluster_size": int(size),
                    "cluster_mean": mean,
                    "cluster_peak": peak,
                    "value_at_voxel": float(values[nearest]),
                    "centroid_ras_mm": [float(v) for v in centroid],
                },
            )
        )
    return candidates


def pick_targets(values, voxels, region_columns, target_params):
    """Dispatch on the protocol's ``[target]`` section (a :class:`tmstarget.protocol.TargetParams`)."""
    if target_params.picker == "cluster":
        return pick_cluster_targets(
            values, voxels, region_columns, target_params.direction,
            target_params.cluster_fraction, target_params.n_candidates,
        )
    return pick_peak_targets(
        values, voxels, region_columns, target_params.direction,
        target_params.n_candidates, target_params.candidate_spacing_mm,
    )


def score_lead_over_next(candidates, direction):
    """Signed lead of the target's score over the next candidate's, in the picker's direction.

    Positive: the target is more extreme (more negative for ``direction="negative"``)
    than the next candidate; negative: the next candidate scores *stronger* (possible
    for the cluster picker, which ranks by size). None with fewer than two candidates.
    """
    if len(candidates) < 2:
        return None
    lead = candidates[1].score - candidates[0].score
    return float(lead if _oriented(1.0, direction) > 0 else -lead)


def fixed_target(mni_mm, affine, shape):
    """A fixed MNI coordinate as a candidate on a grid (nearest voxel; ``score`` NaN).

    Raises when the coordinate falls outside the grid.
    """
    point = np.asarray(mni_mm, dtype=float)
    ijk = np.rint(np.linalg.solve(affine, np.append(point, 1.0))[:3]).astype(int)
    if np.any(ijk < 0) or np.any(ijk >= np.asarray(shape[:3])):
        raise InputError(f"fixed target {list(point)} lies outside the image grid {tuple(shape[:3])}")
    return Candidate(1, tuple(int(v) for v in ijk), point, float("nan"), "fixed")
