"""Benchmark: how the scalp surface's working resolution moves the coil (issue 19, "Coil").

Usage::

    python bench/bench_scalp_resolution.py [--resolutions 1 2 3 4] [--spread 40] [--repeats 3]

The scalp surface (:func:`tmstarget.anatomy.scalp.scalp_surface`) is a marching-cubes surface of a
head mask computed on a working grid of about ``voxel_mm`` (the T1 block-averaged by whole
factors: on a 1-mm T1, 1.5 mm gives the same factor 2 as 2 mm, so the meaningful steps are 1, 2,
3 and 4 mm). Plans use the default, 2 mm. For each T1 (the sample participant's MNI-space T1 and
the real T1 of ``../shared/data/pydecnef-sub1``) and each working resolution this computes the
surface (cold: no cache; median of ``--repeats`` runs) and places the coil
(:func:`tmstarget.coil.placement.place_coil`, the protocols' scalp method and handle rule) over

* every shipped protocol's target point: a fixed protocol's site, and every sphere centre of a
  connectivity protocol's search region (MNI mm, the search is around them), and
* ``--spread`` cortical points spread over the upper head: MNI directions from (0, -18, 20) on a
  Fibonacci hemisphere, 12 mm inside the MNI brain mask's edge.

MNI points reach the real T1 through its T1 -> MNI registration (from the T1 cache,
``$TMSTARGET_CACHE_DIR``, else about a minute); the sample T1 is in MNI space. The table gives,
against the finest resolution (1 mm) and against the default (2 mm), separately for the protocol
target points and the spread points, the coil-centre distance (max and median, mm), the
scalp-to-target depth difference and the scalp-to-cortex depth difference (max |d|, mm; cortex =
the T1's tissue segmentation, as plans measure it), and the surface's cold time (median of
``--repeats`` runs; one run when it takes over 20 s).
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_T1 = (ROOT / "sample_data/derivatives/fmriprep/sub-01/anat"
             / "sub-01_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz")
REAL_T1 = ROOT.parent / "shared/data/pydecnef-sub1/anat/T1w.nii.gz"
SPREAD_ORIGIN_MNI = np.array([0.0, -18.0, 20.0])


def protocol_points():
    """(label, MNI mm, protocol) for every shipped protocol's target point(s)."""
    from tmstarget.analysis.rois import load_atlas
    from tmstarget.protocol import builtin_protocol_names, load_protocol

    atlas = load_atlas()
    points = []
    for name in builtin_protocol_names():
        protocol = load_protocol(name)
        if protocol.kind == "fixed":
            mni = protocol.fixed.mni_mm or atlas["fixed"][protocol.fixed.site]["mni_mm"]
            points.append((name, np.asarray(mni, float), protocol))
        else:
            for k, centre in enumerate(atlas["regions"][protocol.search.region]["centres_mni_mm"]):
                points.append((f"{name}#{k + 1}", np.asarray(centre, float), protocol))
    return points


def spread_points(count, inset_mm=12.0):
    """``count`` MNI points 12 mm inside the brain mask's edge, on a Fibonacci hemisphere of directions."""
    from nibabel.affines import apply_affine

    from tmstarget.anatomy.registration import mni_brain_mask

    brain = mni_brain_mask(2)
    inside = brain.get_fdata() > 0
    to_voxel = np.linalg.inv(brain.affine)
    golden = np.pi * (3.0 - np.sqrt(5.0))
    points = []
    for k in range(count):
        z = 1.0 - (k + 0.5) / count * 1.1  # from the top down to a little below the horizontal
        r = np.sqrt(max(0.0, 1.0 - z * z))
        direction = np.array([r * np.cos(golden * k), r * np.sin(golden * k), z])
        steps = np.arange(0.0, 120.0, 0.5)
        ijk = np.round(apply_affine(to_voxel, SPREAD_ORIGIN_MNI + np.outer(steps, direction))).astype(int)
        ok = np.all((ijk >= 0) & (ijk < inside.shape), axis=1)
        hit = np.zeros(len(steps), bool)
        hit[ok] = inside[tuple(ijk[ok].T)]
        edge = steps[np.flatnonzero(hit)[-1]]
        points.append(SPREAD_ORIGIN_MNI + (edge - inset_mm) * direction)
    return points


def place_all(mesh, targets, tissue, head_axes, midline):
    """Coil centre, scalp-to-target and scalp-to-cortex depth for every target: arrays (n, 3), (n,), (n,)."""
    from tmstarget.coil.placement import place_coil
    from tmstarget.coil.plan_coils import _HANDLE_RULES, CORTEX_RADIUS_MM

    cortex = tissue.parenchyma_img()
    centres, depths, cortex_depths = [], [], []
    for target, params in targets:
        # None: a spread point, handle "auto" (the centre does not depend on the handle)
        handle = "auto" if params is None else (
            params.handle_angle_deg if params.handle == "angle" else _HANDLE_RULES[params.handle])
        method = "normal" if params is None else params.scalp_method
        placement = place_coil(target, mesh, handle=handle, method=method, brain_mask_img=cortex,
                               cortex_radius_mm=CORTEX_RADIUS_MM, head_axes_ras=head_axes, midline_ras_mm=midline)
        centres.append(placement.pose_ras[:3, 3])
        depths.append(placement.scalp_to_target_mm)
        cortex_depths.append(np.nan if placement.scalp_to_cortex_mm is None else placement.scalp_to_cortex_mm)
    return np.array(centres), np.array(depths), np.array(cortex_depths)


def bench_t1(label, t1_path, resolutions, spread, repeats):
    from tmstarget.anatomy.registration import map_points, register_t1_to_mni
    from tmstarget.anatomy.scalp import scalp_surface
    from tmstarget.coil.plan_coils import cached_segment_t1
    from tmstarget.ingest.read import read_image
    from tmstarget.workflows.t1_coil import head_frame

    img = read_image(t1_path, "T1")
    in_mni = "space-MNI152" in Path(t1_path).name
    t1_to_mni = None if in_mni else register_t1_to_mni(img)
    named = protocol_points()
    mni = [p for _, p, _ in named] + spread_points(spread)
    protocols = [p.coil for _, _, p in named] + [None] * spread
    points = np.array(mni) if in_mni else map_points(np.array(mni), t1_to_mni, "inverse")
    targets = list(zip(points, protocols))
    tissue = cached_segment_t1(t1_path, img, t1_to_mni)
    head_axes, midline = (None, None) if in_mni else head_frame(t1_to_mni)
    results = {}
    for voxel_mm in resolutions:
        seconds = []
        while len(seconds) < repeats and sum(seconds) < 20.0:  # one run is enough for a slow resolution
            start = time.perf_counter()
            mesh = scalp_surface(img, voxel_mm=voxel_mm)
            seconds.append(time.perf_counter() - start)
        results[voxel_mm] = (float(np.median(seconds)), len(mesh.faces), *place_all(mesh, targets, tissue, head_axes,
                                                                                    midline))
    from nibabel.affines import voxel_sizes

    print(f"\n{label}: {t1_path} (voxels {' x '.join(f'{v:.2f}' for v in voxel_sizes(img.affine))} mm)")
    print(f"coil centre distance and depth differences (mm) against the {min(resolutions):g}-mm and the 2-mm "
          f"surface: {len(named)} protocol target points | {spread} cortical points")
    print(f"{'voxel':>6} {'faces':>7} {'cold s':>7} {'vs':>4} | {'centre max':>10} {'median':>6} {'depth':>6} "
          f"{'cortex':>6} | {'centre max':>10} {'median':>6} {'depth':>6} {'cortex':>6}")
    for voxel_mm, (seconds, faces, centres, depths, cortex) in results.items():
        if voxel_mm == min(resolutions):
            print(f"{voxel_mm:>6g} {faces:>7d} {seconds:>7.2f}    - | (the reference)")
        for ref in (min(resolutions), 2.0):
            if ref not in results or ref == voxel_mm or (ref == 2.0 and voxel_mm < 2.0):
                continue
            _, _, ref_centres, ref_depths, ref_cortex = results[ref]
            line = f"{voxel_mm:>6g} {faces:>7d} {seconds:>7.2f} {ref:>4g}"
            for part in (slice(0, len(named)), slice(len(named), None)):
                shift = np.linalg.norm(centres[part] - ref_centres[part], axis=1)
                depth = np.abs(depths[part] - ref_depths[part]).max()
                cortex_diff = np.nanmax(np.abs(cortex[part] - ref_cortex[part]))
                line += f" | {shift.max():>10.2f} {np.median(shift):>6.2f} {depth:>6.2f} {cortex_diff:>6.2f}"
            print(line)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0],
                        help="working voxel sizes (mm) of the head mask")
    parser.add_argument("--spread", type=int, default=40, help="cortical points spread over the head")
    parser.add_argument("--repeats", type=int, default=3, help="surface computations per resolution (median time)")
    parser.add_argument("--t1", nargs="*", help="T1 files (default: the sample T1 and the shared real T1)")
    args = parser.parse_args(argv)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    t1s = [(Path(p).name, Path(p)) for p in args.t1] if args.t1 else [("sample T1 (MNI space)", SAMPLE_T1),
                                                                      ("real T1", REAL_T1)]
    for label, path in t1s:
        bench_t1(label, path, sorted(args.resolutions), args.spread, args.repeats)
    print(f"\nload average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
