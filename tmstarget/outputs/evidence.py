"""What a plan's evidence says, in words and numbers a clinician reads: the trust verdict, the
distances to the classic targets and the intensity for this patient.

Every function reads a ``target.json`` document (``Plan.document``) only, so
the report, the viewer and any other front end say the same thing from the
same numbers.  Nothing is computed again from images.
"""

from __future__ import annotations

import dataclasses
import math

from tmstarget.efield.dose import STOKES_PERCENT_PER_MM, stokes_adjusted_rmt

#: The classic fixed targets the report measures against (keys of ``data/atlas.toml`` ``[fixed]``).
CLASSIC_TARGETS = ("5cm-rule", "beam-f3", "ba46", "ba9")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The trust verdict of a plan.

    Attributes
    ----------
    level : {"go", "caution", "no-go", "fixed"}
        ``no-go``: the data hold no significant target; ``caution``: significant
        but the plan warns (instability, motion, edge, depth, ...); ``go``:
        significant without warnings; ``fixed``: a group-average site (no
        individual evidence to judge).
    line : str
        One line: the level and the main reason.
    reasons : list of tuple (bool or None, str)
        Each piece of evidence in plain words; True good, False a concern, None neutral.
    """

    level: str
    line: str
    reasons: list


def protocol_parameters(document) -> dict:
    """The protocol's parameters as the plan recorded them (``provenance.protocol.parameters``), by section."""
    return ((document.get("provenance") or {}).get("protocol") or {}).get("parameters") or {}


def _runs_motion(qc, qc_params):
    reasons = []
    for run in qc.get("runs", []):
        mean_fd = run.get("mean_fd_power_mm")
        limit = qc_params.get("mean_fd_warning_mm", 0.5)
        if mean_fd is not None:
            kept = run.get("frames_kept")
            usable = "" if kept is None or not run.get("t_r_s") else \
                f"; {kept} frames kept = {kept * run['t_r_s'] / 60:.1f} usable minutes"
            reasons.append((mean_fd <= limit,
                            f"motion, {run['run']}: mean FD {mean_fd:.2f} mm (limit {limit:g}), "
                            f"{run.get('frames_scrubbed', 0)} frames scrubbed{usable}"))
        seed, brain = run.get("tsnr_seed_median"), run.get("tsnr_brain_median")
        if seed is not None and brain:
            ratio = seed / brain
            floor = qc_params.get("seed_tsnr_warning_fraction", 0.5)
            reasons.append((ratio >= floor, f"seed signal, {run['run']}: median tSNR {seed:.0f} "
                            f"({ratio:.0%} of the brain's {brain:.0f}; warned below {floor:.0%})"))
    return reasons


def trust_verdict(document) -> Verdict:
    """The go / caution / no-go verdict of a plan with its reasons.

    Parameters
    ----------
    document : dict
        A ``target.json`` document.

    Returns
    -------
    Verdict
    """
    qc = document.get("qc") or {}
    qc_params = protocol_parameters(document).get("qc", {})
    inference = qc.get("inference")
    warnings = list(qc.get("warnings", []))
    reasons = []
    if inference is None:
        reasons.append((None, "fixed group-average site: no individual fMRI evidence to judge"))
    else:
        p = inference["p_fwe"]
        reasons.append((bool(inference["significant"]),
                        f"significance: p_fwe = {p:.3g} ({'at most' if inference['significant'] else 'above'} "
                        f"alpha {inference['alpha']:g}; {inference['n_permutations']} null draws)"))
        spread, share = inference.get("bootstrap_spread_mm"), inference.get("bootstrap_within_5mm_share")
        if inference.get("n_bootstrap"):
            limit = qc_params.get("split_half_warning_mm", 10.0)
            if spread is None:
                reasons.append((False, "bootstrap: more than 5 % of the resamples found no target"))
            else:
                reasons.append((spread <= limit, f"bootstrap: 95% of {inference['n_bootstrap']} re-picked targets "
                                f"within {spread:.1f} mm, {share:.0%} within 5 mm"))
    split = (qc.get("stability") or {}).get("split_half_distance_mm")
    if qc.get("stability") is not None:
        limit = qc_params.get("split_half_warning_mm", 10.0)
        reasons.append((False, "split halves: a half found no target") if split is None else
                       (split <= limit, f"split halves: targets {split:.1f} mm apart (warned above {limit:g} mm)"))
    reasons += _runs_motion(qc, qc_params)
    coil = document.get("coil")
    if coil is None:
        reasons.append((False, f"no coil placement: {document.get('coil_reason') or 'no T1'}"))
    elif coil.get("scalp_to_cortex_mm") is not None:
        reasons.append((bool(coil.get("within_max_depth", True)),
                        f"depth: scalp to cortex {coil['scalp_to_cortex_mm']:.1f} mm "
                        f"(flagged beyond {coil.get('max_depth_mm', 30):g} mm)"))
    if inference is None:
        level, main = "fixed", "fixed target (group-average site, not individualized)"
    elif not inference["significant"]:
        level, main = "no-go", inference.get("verdict") or "no significant target"
    elif warnings:
        level, main = "caution", f"significant target (p_fwe = {inference['p_fwe']:.3g}) with " \
                                 f"{len(warnings)} warning{'s' if len(warnings) > 1 else ''}: {warnings[0]}"
    else:
        level, main = "go", inference.get("verdict") or "significant target without warnings"
    return Verdict(level, f"{level.upper()}: {main}", reasons)


def classic_distances(document, atlas=None) -> list[dict]:
    """Distance (MNI mm) from the plan's target to each classic fixed target.

    Parameters
    ----------
    document : dict
        A ``target.json`` document (``target.mni_mm`` is used).
    atlas : dict, optional
        Parsed ``data/atlas.toml`` (default: the package's).

    Returns
    -------
    list of dict
        ``name``, ``description``, ``mni_mm`` and ``distance_mm`` (None when
        the target has no MNI coordinates).
    """
    if atlas is None:
        from tmstarget.analysis.rois import load_atlas

        atlas = load_atlas()
    target = document["target"].get("mni_mm")
    rows = []
    for name in CLASSIC_TARGETS:
        site = atlas["fixed"][name]
        distance = None if target is None else math.dist(target, site["mni_mm"])
        rows.append({"name": name, "description": site["description"], "mni_mm": list(site["mni_mm"]),
                     "distance_mm": distance})
    return rows


def prescribed_intensity(percent_rmt, rmt_percent_mso, target_depth_mm=None, m1_depth_mm=None,
                         percent_per_mm=STOKES_PERCENT_PER_MM) -> dict:
    """The stimulation intensity for this patient, plain and depth-adjusted.

    Plain: ``percent_rmt / 100 * rMT``.  Depth-adjusted (Stokes 2005/2007): the
    motor threshold measured over the motor cortex is moved to the target's
    depth, ``rMT_adj = rMT + percent_per_mm * (target_depth - m1_depth)``, then
    ``percent_rmt / 100 * rMT_adj``.  Both depths must be measured the same way
    (scalp to cortex along the coil axis).

    Parameters
    ----------
    percent_rmt : float
        Prescribed intensity in % of the resting motor threshold.
    rmt_percent_mso : float
        The patient's resting motor threshold, % of maximum stimulator output.
    target_depth_mm : float, optional
        Scalp-to-cortex distance at the target (the plan's coil block).
    m1_depth_mm : float, optional
        Scalp-to-cortex distance at the motor hotspot where rMT was measured.
    percent_per_mm : float, default=3.0
        Stimulator output per mm of depth (Stokes 2005: 3 %; 2007: 2.8 %).

    Returns
    -------
    dict
        ``plain_percent_mso``, ``adjusted_rmt_percent_mso`` and
        ``adjusted_percent_mso`` (None without both depths),
        ``above_maximum`` (an intensity above 100 % MSO), ``assumption``.
    """
    if not 0 < rmt_percent_mso <= 100:
        raise ValueError(f"rMT must be a percentage of stimulator output in (0, 100]; got {rmt_percent_mso}")
    plain = percent_rmt / 100.0 * rmt_percent_mso
    adjusted_rmt = adjusted = None
    if target_depth_mm is not None and m1_depth_mm is not None:
        adjusted_rmt = stokes_adjusted_rmt(rmt_percent_mso, target_depth_mm, m1_depth_mm, percent_per_mm)
        adjusted = percent_rmt / 100.0 * adjusted_rmt
    assumption = (f"linear depth rule of Stokes et al. (2005, 2007): {percent_per_mm:g} % of stimulator output per mm "
                  "of scalp-to-cortex distance, for a figure-8 coil; the motor threshold was measured over the motor "
                  "hotspot, whose depth is compared with the target's, both measured scalp to cortex along the coil "
                  "axis")
    highest = max(v for v in (plain, adjusted) if v is not None)
    return {"percent_rmt": percent_rmt, "rmt_percent_mso": rmt_percent_mso, "plain_percent_mso": plain,
            "target_depth_mm": target_depth_mm, "m1_depth_mm": m1_depth_mm, "percent_per_mm": percent_per_mm,
            "adjusted_rmt_percent_mso": adjusted_rmt, "adjusted_percent_mso": adjusted,
            "above_maximum": highest > 100.0, "assumption": assumption}
