"""Benchmark: the built-in E-field pose search on a real head.

    python bench/bench_efield.py [--repeats 3] [--coil Magstim_D70] [--t1 PATH] [--compare-ccd FILE.ccd ...]

The scalp of the real T1 in ``../shared/data/pydecnef-sub1/anat/T1w.nii.gz`` (or ``--t1``) is
extracted once (timed apart); a left-frontal target 20 mm below the scalp is planned with
:func:`tmstarget.coil.placement.place_coil`; then :func:`tmstarget.efield.search.search_poses`
runs its full default search (25 coil centres within 10 mm × 72 handle angles, plus the 72-angle
curve of the planned pose and the planned pose: 1,873 poses) ``--repeats`` times.  Reported: the
median wall time of the whole search (sphere fit, poses on the scalp, fields), the time of the
field evaluation alone (the same 1,873 poses through the vectorized kernel), the per-pose cost,
and the per-solve times quoted in issue 18 for comparison.

``--compare-ccd`` compares ``--coil`` with SimNIBS coil files (e.g. SimNIBS's
``Drakaki_BrainStim_2022/MagStim_D70.ccd``; not shipped here): |E| and the field vectors on a
9 × 9 grid (±20 mm) 20 mm below the scalp of an 85-mm sphere, 4 mm gap, at 100 A/µs.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tmstarget.anatomy.scalp import ray_hits, scalp_surface  # noqa: E402
from tmstarget.coil.placement import place_coil  # noqa: E402
from tmstarget.efield.coils import builtin_coil, read_ccd  # noqa: E402
from tmstarget.efield.search import _field_for_poses, search_poses  # noqa: E402
from tmstarget.efield.sphere import dipole_efield  # noqa: E402

DEFAULT_T1 = ROOT.parent / "shared" / "data" / "pydecnef-sub1" / "anat" / "T1w.nii.gz"
#: Issue 18's published comparisons: Gomez et al. 2021 auxiliary dipole method, about 2.1 million
#: placements in under 15 min on a laptop; BEM-FMM, seconds per solve.
ADM_S_PER_PLACEMENT = 15 * 60 / 2.1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--coil", default="Magstim_D70")
    parser.add_argument("--t1", type=Path, default=DEFAULT_T1)
    parser.add_argument("--compare-ccd", type=Path, action="append", default=[])
    args = parser.parse_args(argv)
    for path in args.compare_ccd:
        compare_with_ccd(builtin_coil(args.coil), read_ccd(path))

    start = time.perf_counter()
    mesh = scalp_surface(nib.load(args.t1))
    scalp_s = time.perf_counter() - start
    centre = mesh.centroid_ras_mm
    direction = np.array([-0.45, 0.55, 0.70])
    direction /= np.linalg.norm(direction)
    hit = centre + ray_hits(centre, direction, mesh).max() * direction
    target = hit - 20.0 * direction
    placement = place_coil(target, mesh)
    coil = builtin_coil(args.coil)

    times = []
    for _ in range(args.repeats):
        result = search_poses(coil, target, mesh, placement.pose_ras, placement.scalp_ras_mm)
        times.append(result.timing_s)
    # the poses one search evaluates: the candidate grid, the angle curve (72) and the planned pose
    curve = result.candidates.poses_ras[0]
    poses = np.concatenate([result.candidates.poses_ras.reshape(-1, 4, 4), curve, result.planned_pose_ras[None]])
    field_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        _field_for_poses(coil, poses, target, result.sphere, result.didt_a_per_s)
        field_times.append(time.perf_counter() - t0)
    n_poses = len(poses)
    total = statistics.median(times)
    field = statistics.median(field_times)
    summary = result.as_dict()
    planned, best, search = summary["planned"], summary["best"], summary["search"]
    runs = ", ".join(f"{t:.3f}" for t in times)
    per_pose_ms = 1e3 * field / n_poses
    print(f"T1 {args.t1.name}: scalp {len(mesh.vertices_ras_mm)} vertices in {scalp_s:.2f} s (not part of the search)")
    print(f"coil {coil.name}: {coil.n_dipoles} dipoles; dI/dt {summary['didt_a_per_us']} A/us")
    sphere = summary["sphere"]
    print(f"sphere radius {sphere['radius_mm']:.1f} mm (rms residual {sphere['rms_residual_mm']:.2f} mm)")
    print(f"planned |E| {planned['e_target_v_per_m']:.2f} V/m at handle {planned['handle_angle_deg']:.0f} deg")
    print(f"best |E| {best['e_target_v_per_m']:.2f} V/m at handle {best['handle_angle_deg']:.0f} deg")
    print(f"full default search ({search['n_centres']} centres x {search['n_angles']} angles + curve + planned):")
    print(f"  median {total:.3f} s of {args.repeats} runs ({runs}); {1e3 * total / n_poses:.3f} ms per pose")
    print(f"field evaluation alone: {n_poses} poses in {field:.3f} s = {per_pose_ms:.3f} ms per pose")
    print(f"  ({1e6 * field / n_poses / coil.n_dipoles:.3f} us per pose and dipole)")
    print(f"published: ADM (Gomez 2021) {1e3 * ADM_S_PER_PLACEMENT:.2f} ms per placement (laptop, full head model);")
    print("  BEM-FMM: seconds per solve")


def compare_with_ccd(coil, other, radius_m=0.085, gap_m=0.004, depth_m=0.020):
    """Print |E| maxima and the largest field difference of two coils on a grid under the coil."""
    axis = np.linspace(-0.02, 0.02, 9)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    points = np.column_stack([grid, np.full(len(grid), gap_m + depth_m)])
    centre = np.array([0.0, 0.0, gap_m + radius_m])
    e1 = dipole_efield(points, coil.positions_m, coil.moments_m2, centre, 100e6)
    e2 = dipole_efield(points, other.positions_m, other.moments_m2, centre, 100e6)
    peak1, peak2 = np.linalg.norm(e1, axis=1).max(), np.linalg.norm(e2, axis=1).max()
    diff = np.linalg.norm(e1 - e2, axis=1).max() / peak2
    shape = np.linalg.norm(e1 / peak1 - e2 / peak2, axis=1).max()
    print(
        f"{coil.name} vs {other.name}: max |E| {peak1:.1f} vs {peak2:.1f} V/m at 100 A/us; largest vector "
        f"difference {100 * diff:.1f} % of the latter's max ({100 * shape:.1f} % after scaling to equal maxima)"
    )


if __name__ == "__main__":
    main()
