"""Hand rule on a T1 intensity profile: where the brain begins under the skull (no tmstarget code)."""

import numpy as np
from scipy import ndimage


def skull_to_brain_transition_mm(t1_img, scalp_ras_mm, axis_ras, step_mm=0.25):
    """Hand rule on the T1 intensity profile along the coil axis.

    From the scalp: the brightest point of the first 10 mm is the scalp fat;
    the first local minimum after it, below 40 % of the fat, is the outer
    table of the skull.  From 2 mm past it to 25 mm, the darkest point is the
    inner table / CSF.  The brain begins at the steepest rise of the profile
    within the 4 mm that follow (the CSF -> grey-matter edge).
    """
    depth = np.arange(0.0, 35.0, step_mm)
    points = np.asarray(scalp_ras_mm) + depth[:, None] * np.asarray(axis_ras)
    ijk = np.linalg.solve(t1_img.affine, np.c_[points, np.ones(len(depth))].T)[:3]
    profile = ndimage.map_coordinates(np.asarray(t1_img.dataobj, dtype=np.float32), ijk, order=1)
    fat = int(np.argmax(profile[depth < 10]))
    k = fat
    while not (profile[k] < 0.4 * profile[fat] and profile[k + 1] >= profile[k]):
        k += 1
    window = np.flatnonzero((depth >= depth[k] + 2.0) & (depth <= 25.0))
    inner = window[np.argmin(profile[window])]
    rise = np.diff(profile[inner:inner + int(round(4.0 / step_mm)) + 1])
    steepest = inner + int(np.argmax(rise))
    return float(depth[steepest] + step_mm / 2)
