"""Rigid-geometry helpers for tests that build known transforms (written from the definitions, no tmstarget)."""

import numpy as np


def rotation(axis, degrees):
    """3x3 right-handed rotation by ``degrees`` about world axis 0 (x), 1 (y) or 2 (z)."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    r = np.eye(3)
    r[i, i] = r[j, j] = c
    r[i, j], r[j, i] = -s, s
    return r


def apply_affine(matrix, points):
    """Points (N, 3) or one point through a 4x4 matrix; always (N, 3)."""
    points = np.atleast_2d(np.asarray(points, dtype=float))
    return points @ matrix[:3, :3].T + matrix[:3, 3]
