"""The plan report: one self-contained HTML page (``report.html``) a clinician reads and prints.

:func:`write_report` renders a plan (a :class:`~tmstarget.outputs.plan.Plan` or
a plan folder): the target in every space, the coil pose and depth, the trust
verdict and its reasons (:mod:`tmstarget.outputs.evidence`), figures (glass
brain and slices through the target, a 3D view from the viewer's scene code
when the caller passes it, framewise displacement with its thresholds, target
stability; :mod:`tmstarget.outputs.report_figures`), the DMN subsystem table, distances to the classic targets, the
stimulation prescription (with the intensity for this patient when the motor
threshold is given), QC warnings, provenance, and the E-field summary when the
folder holds ``efield.json``.  The page names the participant by the plan's
label only; it reads nothing from DICOM headers.

matplotlib (Agg) and nilearn's plotting are imported inside the functions that
draw, so importing this module (and ``tmstarget plan``) stays light.
"""

from __future__ import annotations

import datetime
import gzip
import json
import re
from pathlib import Path

import nibabel as nib

from tmstarget._fileio import write_text_atomic
from tmstarget.errors import InputError
from tmstarget.outputs import evidence
from tmstarget.outputs.html import HtmlDocument
from tmstarget.outputs.plan import REPORT_NAME, Plan
from tmstarget.outputs.report_figures import (
    brain_section,
    efield_section,
    fmt_point,
    motion_section,
    stability_section,
)


class _Sources:
    """What the report reads: the document, the score map, the T1 and extra files, from a plan or a folder."""

    def __init__(self, plan_or_dir):
        self.plan = plan_or_dir if isinstance(plan_or_dir, Plan) else None
        if self.plan is not None:
            self.folder, self.document = None, plan_or_dir.document
            self._maps, self._files = plan_or_dir.maps, plan_or_dir.files
        else:
            self.folder = Path(plan_or_dir)
            target = self.folder / "target.json"
            if not target.is_file():
                raise InputError("not a plan folder (no target.json)", path=self.folder)
            try:
                self.document = json.loads(target.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise InputError(f"target.json is not readable JSON: {exc}", path=target) from exc
            self._maps, self._files = None, None

    def map_name(self):
        """The map the target was picked on (``delta`` or ``z_<state>``), or None (fixed target)."""
        names = list(self.document.get("images", {}).get("maps", {}))
        conn = evidence.protocol_parameters(self.document).get("connectivity", {})
        if "delta" in names:
            return "delta"
        state = conn.get("state")
        if state and f"z_{state}" in names:
            return f"z_{state}"
        return names[0] if names else None

    def image(self, name):
        if self._maps is not None:
            return self._maps[name]
        return nib.load(self.folder / self.document["images"]["maps"][name])

    def file_bytes(self, relative):
        if self._files is not None:
            return self._files.get(relative)
        path = self.folder / relative
        return path.read_bytes() if path.is_file() else None

    def t1(self):
        anatomy = self.document.get("anatomy")
        if not anatomy:
            return None
        if self.folder is not None:
            path = self.folder / anatomy["t1"]
            return nib.load(path) if path.is_file() else None
        data = self.file_bytes(anatomy["t1"])
        if data is None:
            return None
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        return nib.Nifti1Image.from_bytes(data)

    def grid_space(self):
        """World of the analysis grid (maps), from the image names (``space-<label>``)."""
        for name in [*self.document["images"]["maps"].values(), *self.document["images"]["masks"].values()]:
            found = re.search(r"_space-([A-Za-z0-9]+)_", name)
            if found:
                return found.group(1)
        return self.document["space"]


# ---------------------------------------------------------------------------------------------- sections


def _verdict_section(page, document):
    verdict = evidence.trust_verdict(document)
    section = page.section("Verdict", anchor="verdict")
    css = {"go": "go", "caution": "caution", "no-go": "nogo"}.get(verdict.level, "")
    section.paragraph(verdict.line, css_class=f"verdict {css}".strip())
    mark = {True: "ok", False: "concern", None: "note"}
    section.table([["", "evidence"], *[[mark[ok], text] for ok, text in verdict.reasons]])
    return verdict


def _target_section(page, document, grid_space):
    section = page.section("Target and coil", anchor="target")
    t = document["target"]
    space = document["space"]
    rows = [["point", f"{space} (mm)", f"{document.get('mni_space') or 'MNI'} (mm)"],
            ["target (fMRI voxel)", fmt_point(t["ras_mm"]), fmt_point(t.get("mni_mm"))]]
    coil = document.get("coil")
    if coil is not None:
        if coil.get("cortical_target_ras_mm") is not None:
            rows.append(["cortical target (grey matter on the coil axis)", fmt_point(coil["cortical_target_ras_mm"]),
                         "—"])
        rows.append(["scalp point (coil centre)", fmt_point(coil["centre_ras_mm"]), "—"])
    section.table(rows)
    pairs = [("protocol", f"{document['protocol']}: {document.get('protocol_description') or ''}"),
             ("voxel (i, j, k) of the analysis grid", f"{tuple(t['voxel_ijk'])} ({grid_space} world)"),
             ("method", t["method"])]
    if t.get("score") is not None:
        pairs.append(("score", f"{t['score']:+.3f} ({t.get('score_name') or t.get('score_statistic')})"))
    section.key_values(pairs)
    if coil is None:
        section.paragraph(f"No coil placement: {document.get('coil_reason') or 'no T1 known'}. "
                          "There is no coil pose, no depth and no navigation file for this plan.", css_class="warning")
        return
    depth = coil.get("scalp_to_cortex_mm")
    section.subsection("Coil pose")
    section.key_values([
        ("scalp-to-cortex depth", "not measured" if depth is None else f"{depth:.1f} mm "
         f"({'within' if coil.get('within_max_depth', True) else 'beyond'} the {coil.get('max_depth_mm', 30):g} mm "
         "limit)"),
        ("scalp to fMRI voxel", f"{coil['scalp_to_target_mm']:.1f} mm"),
        ("tissue at the fMRI voxel", coil.get("target_tissue") or "—"),
        ("handle", f"{coil['handle_rule']}; handle direction {fmt_point(coil['handle_direction'], 3)}"),
        ("convention", coil.get("axes") or coil.get("convention")),
    ])
    section.table([["pose (4 × 4)", "x axis", "y axis", "z axis (into the head)", "centre (mm)"],
                   *[[("row " + "xyzw"[i]), *(f"{v:.4f}" for v in row[:3]), f"{row[3]:.2f}"]
                     for i, row in enumerate(coil["matrix"])]])


def _candidates_section(page, document):
    section = page.section("Candidates", anchor="candidates")
    rows = [["rank", f"{document['space']} (mm)", "MNI (mm)", "score", "depth (mm)"]]
    for c in document["candidates"]:
        depth = (c.get("coil") or {}).get("scalp_to_cortex_mm")
        rows.append([c["rank"], fmt_point(c["ras_mm"]), fmt_point(c.get("mni_mm")),
                     "—" if c["score"] is None else f"{c['score']:+.3f}", "—" if depth is None else f"{depth:.1f}"])
    section.table(rows)


def _start_scene(sources, render_3d):
    """Ask ``render_3d`` for the 3D view: a callable giving the PNG bytes (or raising), or None without a renderer."""
    if render_3d is None:
        return None
    try:
        result = render_3d(sources.folder if sources.folder is not None else sources.plan)
    except Exception as exc:  # an off-screen GL failure must not cost the rest of the report
        return _failed(exc)
    return result if callable(result) else (lambda: result)


def _failed(exc):
    def reraise():
        raise exc

    return reraise


def _scene_section(section, pending):
    """The 3D view of head, coil and target (the viewer's off-screen scene code), or why there is none."""
    if pending is None:
        section.paragraph("No 3D view: no scene renderer was given (the command line passes the viewer's off-screen "
                          "renderer, tmstarget.viewer.scene, when the viewer is installed).", css_class="muted")
        return
    try:
        png = pending()
    except Exception as exc:  # an off-screen GL failure must not cost the rest of the report
        section.paragraph(f"No 3D view: off-screen rendering failed ({type(exc).__name__}: {exc}).",
                          css_class="warning")
        return
    section.image(png, caption="Head (scalp), coil at its pose (handle along -y) and the target, rendered off-screen "
                  "by the viewer's scene code.", width_percent=70)


def _subsystem_section(page, document):
    section = page.section("DMN subsystems", anchor="subsystems")
    table = (document.get("qc") or {}).get("subsystem_fc")
    if not table:
        section.paragraph("No subsystem table for this protocol.")
        return
    columns = list(table)
    pairs = list(next(iter(table.values())))
    rows = [["Fisher z", *columns]]
    rows += [[pair, *(f"{table[c][pair]:+.3f}" if table[c].get(pair) is not None else "—" for c in columns)]
             for pair in pairs]
    section.table(rows)


def _classic_section(page, document):
    section = page.section("Distances to the classic targets", anchor="classic")
    rows = [["site", "MNI (mm)", "distance from the target (mm)"]]
    for row in evidence.classic_distances(document):
        rows.append([f"{row['name']}: {row['description']}", fmt_point(row["mni_mm"], 0),
                     "—" if row["distance_mm"] is None else f"{row['distance_mm']:.1f}"])
    section.table(rows)
    section.paragraph("Straight-line distances between MNI coordinates (the target's MNI point"
                      + (" comes from this patient's registration" if document["space"] == "T1w" else "")
                      + "); the sites are group averages (Fox 2012 Table 1 via ConTarg).", css_class="muted")


def _prescription_section(page, document, rmt, m1_depth_mm, efield=None):
    section = page.section("Stimulation prescription", anchor="prescription")
    rx = document.get("prescription")
    if not rx:
        section.paragraph("The protocol gives no stimulation prescription.")
        return
    rule = "—"
    if rx.get("intensity_percent_rmt") is not None:
        rule = f"{rx['intensity_percent_rmt']:g} % of the resting motor threshold (rMT)"
        if rx.get("depth_adjusted") is not None:
            rule += ", depth-adjusted" if rx["depth_adjusted"] else ", not depth-adjusted"
    pulses = rx.get("pulses_per_session")
    sessions = rx.get("sessions")
    section.key_values([
        ("pattern", rx.get("pattern") or "—"),
        ("frequency", "—" if rx.get("frequency_hz") is None else f"{rx['frequency_hz']:g} Hz"),
        ("pulses per session", pulses or "—"),
        ("sessions", "—" if sessions is None else f"{sessions}" + (f" ({rx['sessions_per_day']} a day)"
                                                                     if rx.get("sessions_per_day") else "")),
        ("total pulses", f"{pulses * sessions:,}" if pulses and sessions else "—"),
        ("intensity rule", rule),
        ("notes", rx.get("notes") or "—"),
    ])
    if rx.get("intensity_percent_rmt") is None:
        return
    if rmt is None:
        section.paragraph("Give the patient's resting motor threshold (tmstarget report PLAN_DIR --rmt PERCENT "
                          "[--m1-depth MM]) for the intensity in % of stimulator output.", css_class="muted")
        return
    depth = (document.get("coil") or {}).get("scalp_to_cortex_mm")
    hotspot = (((efield or {}).get("dose") or {}).get("motor_hotspot") or {}).get("scalp_to_cortex_mm")
    m1_from_efield = m1_depth_mm is None and hotspot is not None
    m1_depth_mm = hotspot if m1_from_efield else m1_depth_mm
    dose = evidence.prescribed_intensity(rx["intensity_percent_rmt"], rmt, depth, m1_depth_mm)
    section.subsection("Intensity for this patient")
    rows = [("resting motor threshold", f"{rmt:g} % MSO"),
            ("plain", f"{dose['percent_rmt']:g} % × {rmt:g} = {dose['plain_percent_mso']:.1f} % MSO")]
    if dose["adjusted_percent_mso"] is not None:
        rows += [("target depth / motor-hotspot depth", f"{depth:.1f} mm / {m1_depth_mm:.1f} mm"),
                 ("depth-adjusted rMT", f"{rmt:g} + {dose['percent_per_mm']:g} × ({depth:.1f} − {m1_depth_mm:.1f})"
                  f" = {dose['adjusted_rmt_percent_mso']:.1f} % MSO"),
                 ("depth-adjusted", f"{dose['percent_rmt']:g} % × {dose['adjusted_rmt_percent_mso']:.1f} = "
                  f"{dose['adjusted_percent_mso']:.1f} % MSO")]
    section.key_values(rows)
    if m1_from_efield and dose["adjusted_percent_mso"] is not None:
        section.paragraph("The motor hotspot's depth is the one tmstarget efield measured on this T1 (efield.json "
                          "dose.motor_hotspot).", css_class="muted")
    prescribed = dose["adjusted_percent_mso"] if rx.get("depth_adjusted") else dose["plain_percent_mso"]
    if rx.get("depth_adjusted") and prescribed is None:
        why = ("the plan has no target depth (no coil)" if depth is None
               else "the motor hotspot's depth is not given (--m1-depth MM, measured the same way on this T1)")
        section.paragraph(f"The protocol adjusts for depth, but {why}: the depth-adjusted intensity cannot be "
                          f"computed. Per mm the target lies deeper than the motor hotspot, add "
                          f"{dose['percent_per_mm']:g} % MSO to the rMT.", css_class="warning")
    elif prescribed is not None:
        section.paragraph(f"Prescribed intensity: {prescribed:.1f} % of maximum stimulator output "
                          f"({'depth-adjusted' if rx.get('depth_adjusted') else 'as the protocol: not depth-adjusted'})"
                          ".", css_class="verdict")
    if dose["above_maximum"]:
        section.paragraph("An intensity above 100 % of stimulator output cannot be delivered: check the motor "
                          "threshold, the depths and the coil.", css_class="warning")
    section.paragraph(f"Assumption: {dose['assumption']}.", css_class="muted")


def _warnings_section(page, document):
    section = page.section("QC warnings", anchor="warnings")
    warnings = list((document.get("qc") or {}).get("warnings", []))
    if warnings:
        section.items(warnings, css_class="warning")
    else:
        section.paragraph("No warnings.")


def _efield(sources):
    """``efield.json`` of the plan folder (written by ``tmstarget efield``), parsed; None when absent or unreadable."""
    data = sources.file_bytes("efield.json")
    if data is None:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as exc:
        return {"error": f"efield.json is not readable JSON ({exc})"}


def _provenance_section(page, document, built):
    section = page.section("Provenance", anchor="provenance")
    prov = document["provenance"]
    protocol = prov.get("protocol") or {}
    libraries = ", ".join(f"{k} {v}" for k, v in (prov.get("libraries") or {}).items())
    section.key_values([
        ("tmstarget", (prov.get("generated_by") or {}).get("version", document.get("tmstarget_version"))),
        ("plan computed (UTC)", prov.get("date_utc")),
        ("report written (UTC)", built),
        ("command", " ".join(prov.get("command") or []) or "— (Python API)"),
        ("protocol", f"{protocol.get('name', document['protocol'])} ({protocol.get('source', '—')})"),
        ("overrides", ", ".join(f"{k} = {v}" for k, v in (protocol.get("overrides") or {}).items()) or "none"),
        ("libraries", libraries),
    ])
    rows = [["input", "path", "sha256"]]
    rows += [[role, item.get("path"), item.get("sha256")] for role, item in (prov.get("inputs") or {}).items()]
    anatomy = document.get("anatomy")
    if anatomy:
        rows.append(["T1 of the coordinates", anatomy.get("t1"), anatomy.get("t1_sha256")])
    section.table(rows)
    section.paragraph(prov.get("inputs_note") or "", css_class="muted")


# ---------------------------------------------------------------------------------------------- the page


def build_report(plan_or_dir, rmt: float | None = None, m1_depth_mm: float | None = None,
                 render_3d=None) -> str:
    """The report of a plan as one HTML string (see :func:`write_report`)."""
    sources = _Sources(plan_or_dir)
    document = sources.document
    grid_space = sources.grid_space()
    built = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    who = f"participant {document['participant']}" if document.get("participant") else "participant not labelled"
    page = HtmlDocument(f"TMS target plan — {who}",
                        subtitle=f"protocol {document['protocol']} · coordinates in {document['space']} · "
                                 f"tmstarget {document.get('tmstarget_version', '')} · plan of "
                                 f"{document['provenance'].get('date_utc', '—')}")
    pending = _start_scene(sources, render_3d)  # a renderer in another process draws while this one does
    _verdict_section(page, document)
    _target_section(page, document, grid_space)
    brain_section(page, sources, document, grid_space)
    scene = page.section("3D view", anchor="view3d")
    stability_section(page, sources, document)
    motion_section(page, document)
    _subsystem_section(page, document)
    _classic_section(page, document)
    _candidates_section(page, document)
    efield = _efield(sources)
    _prescription_section(page, document, rmt, m1_depth_mm, efield)
    _warnings_section(page, document)
    efield_section(page, efield)
    _provenance_section(page, document, built)
    _scene_section(scene, pending)
    return page.render()


def write_report(plan_or_dir, path: str | Path | None = None, rmt: float | None = None,
                 m1_depth_mm: float | None = None, render_3d=None) -> Path:
    """Write the self-contained HTML report of a plan.

    Parameters
    ----------
    plan_or_dir : Plan or str or Path
        A :class:`~tmstarget.outputs.plan.Plan`, or a plan folder (``target.json``).
    path : str or Path, optional
        The HTML file; default ``<plan folder>/report.html`` (required for a
        Plan object). Written atomically.
    rmt : float, optional
        The patient's resting motor threshold (% of maximum stimulator output):
        the prescription section then gives the intensity in % MSO.
    m1_depth_mm : float, optional
        Scalp-to-cortex depth at the motor hotspot where ``rmt`` was measured
        (mm): with the plan's target depth, the depth-adjusted intensity
        (:func:`tmstarget.outputs.evidence.prescribed_intensity`).
    render_3d : callable, optional
        ``render_3d(plan_or_dir)``: a PNG of head, coil and target rendered
        off-screen (the viewer's scene code; the library does not import the
        viewer, a front end: the command line passes it), as bytes or as a
        callable without arguments returning the bytes: a render started
        elsewhere (another process), which the report collects after drawing
        its other figures. None: the 3D section says why there is no view.

    Returns
    -------
    Path
        The file written.
    """
    if rmt is not None and not 0 < rmt <= 100:
        raise InputError(f"--rmt must be a percentage of stimulator output in (0, 100]; got {rmt:g}")
    if m1_depth_mm is not None and not 0 <= m1_depth_mm <= 80:
        raise InputError(f"--m1-depth must be a scalp-to-cortex distance in mm (0-80); got {m1_depth_mm:g}")
    if path is None:
        if isinstance(plan_or_dir, (str, Path)):
            path = Path(plan_or_dir) / REPORT_NAME
        else:
            raise InputError("write_report of a Plan object needs a path (or save the plan and give its folder)")
    text = build_report(plan_or_dir, rmt=rmt, m1_depth_mm=m1_depth_mm, render_3d=render_3d)
    return write_text_atomic(Path(path), text)


class ReportWriter:
    """Writes ``report.html`` into a plan folder being saved (``Plan.save(writers=[ReportWriter()])``).

    Runs after ``target.json`` is first written (``after_target_json``), reads
    the folder being built, so ``target.json``'s ``outputs`` lists the report
    and the folder still appears all at once. ``progress(message)`` is told
    when it starts.
    """

    after_target_json = True

    def __init__(self, rmt=None, m1_depth_mm=None, progress=None, render_3d=None):
        self.rmt, self.m1_depth_mm, self.progress, self.render_3d = rmt, m1_depth_mm, progress, render_3d

    def __call__(self, plan_dir):
        if self.progress is not None:
            self.progress("writing the report")
        write_report(plan_dir, Path(plan_dir) / REPORT_NAME, rmt=self.rmt, m1_depth_mm=self.m1_depth_mm,
                     render_3d=self.render_3d)
