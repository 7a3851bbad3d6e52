"""The figures of the plan report (:mod:`tmstarget.outputs.report`): each function adds one section that draws.

Glass brain and slices through the target (pixels drawn with numpy, :mod:`tmstarget.outputs.report_raster`),
framewise displacement with its thresholds, target stability (bootstrap and split-half re-picks; the
live drift of a watch), the E-field angle curve and dose: charts and every label as inline SVG
(:mod:`tmstarget.outputs.report_svg`). No plotting library is imported: a report costs a fraction of a
second (issue 19), and its figures print sharp.
"""

from __future__ import annotations

import json

import numpy as np

from tmstarget.outputs import evidence
from tmstarget.outputs.report_raster import glass_brain_rgb, png_bytes, ramp_stops, slices_rgb
from tmstarget.outputs.report_svg import SvgFigure, equal_limits

#: Marker colour of the target in every figure (the viewer's target colour, as in the 3D view).
TARGET_COLOUR = "#ff00ff"
#: Colour of data lines and points.
LINE_COLOUR = "#1f4e8c"


def fmt_point(point, digits=1):
    """``(x, y, z)`` with ``digits`` decimals, or a dash."""
    return "—" if point is None else "(" + ", ".join(f"{v:.{digits}f}" for v in point) + ")"


def _threshold(img):
    """The display threshold of a map: the 97.5th percentile of its non-zero |values|; and its largest |value|."""
    values = np.abs(np.asarray(img.dataobj, dtype=float))
    values = values[np.isfinite(values) & (values > 0)]
    if not values.size:
        return 0.0, 1.0
    return float(np.percentile(values, 97.5)), float(values.max())


def _brain_figure(rgb, panels, titles, threshold, limit, name, label, crosshair_mm=None):
    """The SVG of a brain picture: the pixels, a title and orientation letters per panel, the crosshair
    through ``crosshair_mm`` and the colour bar."""
    top, bottom = 16.0, 30.0
    height, width = rgb.shape[:2]
    figure = SvgFigure(width, height + top + bottom, name=name, label=label)
    figure.image(png_bytes(rgb), 0, top, width, height)
    halo = 'paint-order="stroke" stroke="white" stroke-width="2.5" stroke-linejoin="round"'
    for panel, title in zip(panels, titles):
        left, right = panel.left, panel.left + panel.width
        figure.text((left + right) / 2, top - 4, title, anchor="middle")
        if crosshair_mm is not None:
            col, row = panel.pixel(crosshair_mm)
            figure.add(f'<g stroke="#40c0ff" stroke-width="0.7" stroke-opacity="0.9">'
                       f'<line x1="{left}" y1="{top + row:.2f}" x2="{right}" y2="{top + row:.2f}"/>'
                       f'<line x1="{col:.2f}" y1="{top}" x2="{col:.2f}" y2="{top + panel.height}"/></g>')
        west, east, north, south = panel.letters
        for x, y, letter, anchor in ((left + 3, top + panel.height / 2 + 4, west, "start"),
                                     (right - 3, top + panel.height / 2 + 4, east, "end"),
                                     ((left + right) / 2, top + 11, north, "middle"),
                                     ((left + right) / 2, top + panel.height - 3, south, "middle")):
            figure.add(f'<text x="{x:.2f}" y="{y:.2f}" text-anchor="{anchor}" font-weight="bold" '
                       f'font-size="10" {halo}>{letter}</text>')
    _colour_bar(figure, width - 250, top + height + 8, 240, 8, threshold, limit)
    return figure.render()


def _colour_bar(figure, left, top, width, height, threshold, limit):
    """Two bars: negative values (-limit .. -threshold) and positive (threshold .. limit), hidden between."""
    half = (width - 20) / 2
    stops = ramp_stops()
    cold = [(f * 2, c) for f, c in stops if f <= 0.5]
    hot = [((f - 0.5) * 2, c) for f, c in stops if f >= 0.5]
    for name, ramp, x0, low, high in (("cold", cold, left, -limit, -threshold),
                                      ("hot", hot, left + half + 20, threshold, limit)):
        gradient = f"{figure.name}-{name}"
        figure.add(f'<linearGradient id="{gradient}">' + "".join(
            f'<stop offset="{f:.3f}" stop-color="{c}"/>' for f, c in ramp) + "</linearGradient>"
            f'<rect x="{x0:.2f}" y="{top:.2f}" width="{half:.2f}" height="{height}" fill="url(#{gradient})" '
            'stroke="#666" stroke-width="0.5"/>')
        figure.text(x0, top + height + 10, f"{low:+.2f}", anchor="start")
        figure.text(x0 + half, top + height + 10, f"{high:+.2f}", anchor="end")
    figure.text(left - 6, top + height, "map value", anchor="end")


def brain_section(page, sources, document, grid_space):
    """Glass brain (MNI grids only) and orthogonal slices through the target, with the target's map."""
    section = page.section("Map and target", anchor="map")
    name = sources.map_name()
    if name is None:
        section.paragraph("A fixed target has no connectivity map: no brain figure.")
        return
    img = sources.image(name)
    t = document["target"]
    centre = np.asarray(t["ras_mm"] if grid_space == document["space"] else t.get("mni_mm"), dtype=float)
    threshold, limit = _threshold(img)
    label = name.replace("_", " ")
    if grid_space.startswith("MNI"):
        rgb, panels = glass_brain_rgb(img, threshold, centre)
        section.svg(_brain_figure(rgb, panels, ("left hemisphere, from the left", "from above",
                                                "right hemisphere, from the right"), threshold, limit,
                                  "glass", f"glass brain of the {label} map"),
                    caption=f"Glass brain of the {label} map (|value| above {threshold:.2f}, the 97.5th percentile; "
                    "largest |value| along each line of sight, the left and right views one hemisphere each, "
                    "outline: the analysis mask); target in magenta.")
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
    rgb, panels = slices_rgb(img, centre, threshold, background)
    titles = [f"{axis} = {value:.0f} mm" for axis, value in zip("xyz", centre)]
    section.svg(_brain_figure(rgb, panels, titles, threshold, limit, "slices", "slices through the target",
                              crosshair_mm=centre),
                caption=f"Slices through the target at {fmt_point(centre)} mm ({grid_space}) on {what} "
                f"(neurological: the patient's left on the left); {label} map above {threshold:.2f}; "
                "target in magenta.")


def motion_section(page, document):
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
        section.svg(fd_figure(traced, scrub, mean_limit),
                    caption="Framewise displacement (Power) per volume after the dummy volumes, with "
                    + ("" if scrub is None else f"the scrubbing threshold {scrub:g} mm (red dashed) and ")
                    + f"the mean-FD warning level {mean_limit:g} mm (orange dotted).")
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


def stability_section(page, sources, document):
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
            section.svg(stability_figure(np.array(boot).reshape(-1, 3), np.array(halves).reshape(-1, 3)),
                        caption="Targets re-picked on bootstrap resamples of the blocks and on the two split halves, "
                        "as offsets from the target (dashed circle: 5 mm).")
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


def efield_section(page, efield):
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
        figure = SvgFigure(560, 190, name="efield", label="field at the target against the handle angle")
        axes = figure.axes((60, 14, 480, 140), *_padded([c["handle_angle_deg"] for c in curve],
                                                        [c["e_target_v_per_m"] for c in curve]))
        axes.line([c["handle_angle_deg"] for c in curve], [c["e_target_v_per_m"] for c in curve], LINE_COLOUR,
                  css_class="curve")
        if planned.get("handle_angle_deg") is not None:
            axes.vline(planned["handle_angle_deg"], TARGET_COLOUR, dash="4,3", label="planned handle")
        figure.add(axes.render("handle angle (°)", f"{objective} (V/m)"))
        section.svg(figure.render(), caption="Field at the target as the planned coil turns about its normal "
                    "(100 % output).")
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


def _padded(x, y, pad=0.06):
    """Axis limits around the data with a margin (a flat series gets a unit range)."""
    def limits(values):
        low, high = float(np.min(values)), float(np.max(values))
        span = (high - low) or 1.0
        return low - pad * span, high + pad * span

    return limits(x), limits(y)


def fd_figure(runs, scrub, mean_limit):
    """SVG of each run's framewise displacement per volume (a polyline per run, ``class="fd"``), with the
    scrubbing threshold and the mean-FD warning level.

    Volume numbers count from the start of the run: the first plotted volume is the first after the
    dummy volumes dropped.
    """
    row_height, top = 112, 16
    figure = SvgFigure(640, top + row_height * len(runs) + 14, name="fd", label="framewise displacement per volume")
    for i, run in enumerate(runs):
        fd = np.asarray(run["fd_power_trace_mm"], dtype=float)
        volumes = np.arange(len(fd)) + run.get("dummy_volumes_dropped", 0)
        high = max(float(np.nanmax(fd)) if fd.size else 0.0, scrub or 0.0, mean_limit) * 1.08
        axes = figure.axes((60, top + i * row_height, 560, row_height - 40),
                           (volumes[0] - 0.5, volumes[-1] + 0.5), (0.0, high))
        axes.line(volumes, fd, LINE_COLOUR, width=1.0, css_class="fd")
        if scrub is not None:
            axes.hline(scrub, "#b02020", dash="5,3", label=f"scrubbing threshold {scrub:g} mm", css_class="scrub")
        axes.hline(mean_limit, "#c08000", dash="1.5,2", label=f"mean-FD warning {mean_limit:g} mm",
                   css_class="mean-limit")
        figure.add(axes.render("volume" if i == len(runs) - 1 else "", "FD (mm)", run["run"]))
    return figure.render()


def stability_figure(boot, halves):
    """SVG of the re-picked targets as offsets from the target: x-y and y-z planes, equal scales."""
    figure = SvgFigure(560, 250, name="stability", label="bootstrap and split-half re-picks around the target")
    points = np.vstack([boot, halves, np.zeros((1, 3))])
    for panel, (a, b) in enumerate(((0, 1), (1, 2))):
        box = (50 + panel * 280, 12, 210, 200)
        reach = max(6.0, float(np.abs(points[:, [a, b]]).max()) * 1.1)
        axes = figure.axes(box, *equal_limits((-reach, reach), (-reach, reach), box))
        axes.ring(0.0, 0.0, 5.0, "#555")
        axes.scatter(boot[:, a], boot[:, b], LINE_COLOUR, size=2.2, opacity=0.35, label="bootstrap re-picks")
        axes.scatter(halves[:, a], halves[:, b], "#c08000", size=3.5, shape="square", label="split halves")
        axes.scatter([0.0], [0.0], TARGET_COLOUR, size=6.0, shape="star", label="target", edge="black")
        figure.add(axes.render(f"{'xyz'[a]} offset (mm)", f"{'xyz'[b]} offset (mm)", legend=panel == 0))
    return figure.render()
