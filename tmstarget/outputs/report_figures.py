"""The figures of the plan report (:mod:`tmstarget.outputs.report`): each function adds one section that draws.

Glass brain and slices through the target (nilearn plotting), framewise displacement with its
thresholds, target stability (bootstrap and split-half re-picks; the live drift of a watch), the
E-field angle curve and dose.  matplotlib (Agg) and nilearn's plotting are imported inside the
functions, so importing this module stays light.
"""

from __future__ import annotations

import json
import warnings

import numpy as np

from tmstarget.outputs import evidence

#: Resolution of the embedded figures (dots per inch): small files, fast to draw, sharp enough on A4.
FIGURE_DPI = 80
#: Marker colour of the target in every figure (the viewer's target colour, as in the 3D view).
TARGET_COLOUR = "#ff00ff"


def fmt_point(point, digits=1):
    """``(x, y, z)`` with ``digits`` decimals, or a dash."""
    return "—" if point is None else "(" + ", ".join(f"{v:.{digits}f}" for v in point) + ")"


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported here: not at package import)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt



def brain_section(page, sources, document, grid_space, dpi):
    """Glass brain (MNI grids only) and orthogonal slices through the target, with the target's map."""
    section = page.section("Map and target", anchor="map")
    name = sources.map_name()
    if name is None:
        section.paragraph("A fixed target has no connectivity map: no brain figure.")
        return
    from nilearn import plotting

    plt = pyplot()
    img = sources.image(name)
    t = document["target"]
    centre = t["ras_mm"] if grid_space == document["space"] else t.get("mni_mm")
    values = np.abs(np.asarray(img.dataobj, dtype=float))
    values = values[np.isfinite(values) & (values > 0)]
    threshold = float(np.percentile(values, 97.5)) if values.size else 0.0
    label = name.replace("_", " ")
    if grid_space.startswith("MNI"):
        fig = plt.figure(figsize=(8, 2.6))
        display = plotting.plot_glass_brain(img, figure=fig, threshold=threshold, plot_abs=False, colorbar=True,
                                            display_mode="lzr", cmap="cold_hot")
        display.add_markers([centre], marker_color=TARGET_COLOUR, marker_size=110, edgecolors="black")
        section.figure(fig, caption=f"Glass brain of the {label} map (|value| above {threshold:.2f}, the "
                       "97.5th percentile); target in magenta.", dpi=dpi)
    else:
        section.paragraph(f"No glass brain: the map lies in this patient's {grid_space} world, not in MNI space "
                          "(the glass-brain outline is the MNI brain).", css_class="muted")
    anatomy_space = (document.get("anatomy") or {}).get("space", document["space"])
    t1 = sources.t1() if anatomy_space == grid_space else None
    if t1 is not None:
        background, what = t1, "this patient's T1"
    elif grid_space.startswith("MNI"):
        from nilearn.datasets import load_mni152_template

        background, what = load_mni152_template(resolution=2), "nilearn's MNI152 template"
    else:
        background, what = None, "no background"
    fig = plt.figure(figsize=(8, 2.8))
    with warnings.catch_warnings():  # an integer T1 is cast to float for display: nothing to tell the user
        warnings.filterwarnings("ignore", message="Casting data from", category=UserWarning)
        display = plotting.plot_stat_map(img, bg_img=background, figure=fig, threshold=threshold, cut_coords=centre,
                                         black_bg=False, cmap="cold_hot", draw_cross=True, dim=-0.3)
    display.add_markers([centre], marker_color=TARGET_COLOUR, marker_size=50)
    section.figure(fig, caption=f"Slices through the target at {fmt_point(centre)} mm ({grid_space}) on {what}; "
                   f"{label} map above {threshold:.2f}.", dpi=dpi)


def motion_section(page, document, dpi):
    """Framewise displacement per volume with the scrubbing threshold and the mean-FD warning; the motion table."""
    section = page.section("Motion", anchor="motion")
    qc = document.get("qc") or {}
    runs = qc.get("runs") or []
    parameters = evidence.protocol_parameters(document)
    scrub = (parameters.get("clean") or {}).get("fd_threshold_mm")
    mean_limit = (parameters.get("qc") or {}).get("mean_fd_warning_mm", 0.5)
    if not runs:
        section.paragraph("No fMRI runs (fixed target): no motion to report.")
        return
    traced = [r for r in runs if r.get("fd_power_trace_mm")]
    if traced:
        plt = pyplot()
        fig, axes = plt.subplots(len(traced), 1, figsize=(8, 1.6 * len(traced) + 0.4), squeeze=False)
        for ax, run in zip(axes[:, 0], traced):
            fd = np.asarray(run["fd_power_trace_mm"])
            ax.plot(np.arange(len(fd)) + run.get("dummy_volumes_dropped", 0), fd, color="#1f4e8c", lw=0.9)
            if scrub is not None:
                ax.axhline(scrub, color="#b02020", ls="--", lw=0.9, label=f"scrubbing threshold {scrub:g} mm")
            ax.axhline(mean_limit, color="#c08000", ls=":", lw=0.9, label=f"mean-FD warning {mean_limit:g} mm")
            ax.set_ylabel("FD (mm)")
            ax.set_title(run["run"], fontsize=9, loc="left")
            ax.legend(fontsize=7, loc="upper right")
        axes[-1, 0].set_xlabel("volume")
        fig.tight_layout()
        lines = ("" if scrub is None else f"the scrubbing threshold {scrub:g} mm (red dashed) and ") + \
            f"the mean-FD warning level {mean_limit:g} mm (orange dotted)"
        section.figure(fig, caption=f"Framewise displacement (Power) per volume after the dummy volumes, with {lines}.",
                       dpi=dpi)
    else:
        section.paragraph("This plan records no per-volume FD trace (made by an older tmstarget): the table only.",
                          css_class="muted")
    rows = [["run", "volumes", "scrubbed", "kept", "mean FD (mm)", "max FD (mm)", "mean FD Jenkinson (mm)",
             "max translation (mm)", "max rotation (°)"]]
    for r in runs:
        rows.append([r["run"], r.get("volumes"), r.get("frames_scrubbed"), r.get("frames_kept"),
                     *(f"{r[k]:.3f}" if r.get(k) is not None else "—" for k in
                       ("mean_fd_power_mm", "max_fd_power_mm", "mean_fd_jenkinson_mm", "max_translation_mm",
                        "max_rotation_deg"))])
    section.table(rows)


def stability_section(page, sources, document, dpi):
    """Bootstrap and split-half re-picks around the target; for a watch plan, the live drift from live.json."""
    section = page.section("Target stability", anchor="stability")
    inference = (document.get("qc") or {}).get("inference")
    split = ((document.get("qc") or {}).get("stability") or {}).get("split_half_distance_mm")
    if inference is None:
        section.paragraph("Fixed target: no resampling.")
    else:
        boot = [p for p in inference.get("bootstrap_offsets_mm") or [] if p is not None]
        halves = [p for p in inference.get("split_half_offsets_mm") or [] if p is not None]
        if boot or halves:
            plt = pyplot()
            fig, axes = plt.subplots(1, 2, figsize=(7, 3.2))
            boot, halves = np.array(boot).reshape(-1, 3), np.array(halves).reshape(-1, 3)
            for ax, (a, b) in zip(axes, ((0, 1), (1, 2))):
                ax.scatter(boot[:, a], boot[:, b], s=9, alpha=0.35, color="#1f4e8c", label="bootstrap re-picks")
                ax.scatter(halves[:, a], halves[:, b], s=40, marker="s", color="#c08000", label="split halves")
                ax.scatter([0], [0], s=80, marker="*", color=TARGET_COLOUR, label="target")
                ax.add_patch(plt.Circle((0, 0), 5.0, fill=False, ls="--", color="#555", lw=0.8))
                ax.set_aspect("equal", adjustable="datalim")
                ax.set_xlabel(f"{'xyz'[a]} offset (mm)")
                ax.set_ylabel(f"{'xyz'[b]} offset (mm)")
            axes[0].legend(fontsize=7, loc="best")
            fig.tight_layout()
            section.figure(fig, caption="Targets re-picked on bootstrap resamples of the blocks and on the two "
                           "split halves, as offsets from the target (dashed circle: 5 mm).", dpi=dpi)
        elif inference.get("n_bootstrap"):
            section.paragraph("This plan records no re-picked targets (made by an older tmstarget).",
                              css_class="muted")
        spread = inference.get("bootstrap_spread_mm")
        section.key_values([
            ("split-half distance", "a half found no target" if split is None else f"{split:.1f} mm"),
            ("bootstrap: 95% within", "unbounded (resamples without a target)" if spread is None
             else f"{spread:.1f} mm"),
            ("bootstrap: share within 5 mm", "—" if inference.get("bootstrap_within_5mm_share") is None
             else f"{inference['bootstrap_within_5mm_share']:.0%}"),
            ("resamples", inference.get("n_bootstrap")),
        ])
    _watch_history(section, sources, document)


def _watch_history(section, sources, document):
    """For the final plan of ``tmstarget watch``: the live target's drift from ``live.json`` beside the plan."""
    qc = document.get("qc") or {}
    if "realtime" not in (qc.get("native") or {}) or sources.folder is None:  # qc.native.realtime: a watch's plan
        return
    # OUTPUT/plan (or OUTPUT/.plan.*.partial while it is written) beside OUTPUT/live.json
    live_path = sources.folder.resolve().parent / "live.json"
    section.subsection("During the scan (tmstarget watch)")
    try:
        live = json.loads(live_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        section.paragraph("live.json was not found beside the plan: no record of the target during the scan.",
                          css_class="muted")
        return
    stability = live.get("stability") or {}
    drift = stability.get("drift_mm") or {}
    section.key_values([("live stability verdict", stability.get("verdict")),
                        *[(f"live target moved over the last {k}", "—" if v is None else f"{v:.1f} mm")
                          for k, v in drift.items()],
                        ("volumes processed", (live.get("volumes") or {}).get("processed"))])
    section.paragraph("live.json keeps the live target's drift over the last 1, 2 and 5 minutes, not its whole "
                      "path, so the target over scan time is summarized by these drifts.", css_class="muted")


def fmt_number(value, unit="", digits=1):
    return "—" if value is None else f"{value:.{digits}f}{unit}"


def efield_section(page, efield, dpi):
    """What ``tmstarget efield`` found (``efield.json``): the coil, |E| at the target, the best pose, the dose."""
    if efield is None:
        return
    section = page.section("E-field", anchor="efield")
    if "error" in efield:
        section.paragraph(efield["error"], css_class="warning")
        return
    planned, best = efield.get("planned") or {}, efield.get("best") or {}
    objective = (efield.get("objective") or {}).get("e_target_v_per_m", "|E|")
    section.key_values([
        ("coil", efield.get("coil", "—")),
        ("dI/dt at 100 % output", fmt_number(efield.get("didt_a_per_us"), " A/µs")),
        (f"planned pose: {objective} at the target", fmt_number(planned.get("e_target_v_per_m"), " V/m") +
         f" (handle {fmt_number(planned.get('handle_angle_deg'), '°')})"),
        (f"best pose: {objective} at the target", fmt_number(best.get("e_target_v_per_m"), " V/m") +
         f" (handle {fmt_number(best.get('handle_angle_deg'), '°')}, "
         f"centre {fmt_point(best.get('centre_ras_mm'))} mm)"),
    ])
    curve = efield.get("angle_curve") or []
    if curve and all("handle_angle_deg" in c and "e_target_v_per_m" in c for c in curve):
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 2.2))
        ax.plot([c["handle_angle_deg"] for c in curve], [c["e_target_v_per_m"] for c in curve], color="#1f4e8c")
        if planned.get("handle_angle_deg") is not None:
            ax.axvline(planned["handle_angle_deg"], color=TARGET_COLOUR, ls="--", lw=1, label="planned handle")
            ax.legend(fontsize=7)
        ax.set_xlabel("handle angle (°)")
        ax.set_ylabel(f"{objective} (V/m)")
        fig.tight_layout()
        section.figure(fig, caption="Field at the target as the planned coil turns about its normal (100 % output).",
                       dpi=dpi)
    dose = efield.get("dose")
    if dose:
        rows = [["rule", "planned pose (% output)", "best pose (% output)"]]
        for rule, name in (("stokes", "scalp-to-cortex depth (Stokes)"), ("efield_matched", "E-field matched")):
            block = dose.get(rule) or {}
            key = "prescribed_output_percent" if dose.get("prescription_percent_rmt") else "output_percent"
            rows.append([name, *(fmt_number((block.get(p) or {}).get(key)) for p in ("planned", "best"))])
        section.subsection(f"Dose at rMT {dose.get('rmt_percent', '—')} %"
                           + (f", {dose['prescription_percent_rmt']:g} % rMT prescribed"
                              if dose.get("prescription_percent_rmt") else ""))
        section.table(rows)
        if dose.get("warnings"):
            section.items(dose["warnings"], css_class="warning")
