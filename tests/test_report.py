"""The plan report (report.html): every section, images that decode, nothing external, no patient identifier,
the prescribed intensity as computed by hand, a plan without a coil, atomic writing (issue 16, Report).

One real plan of the sample patient is made by ``tmstarget plan`` from a copy of the sample dataset in a
folder named after a patient, whose JSON sidecars carry the patient's name, ID and birth date (as some
converters write them): none of it may reach the report.
"""

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import tmstarget
from test_privacy import PATIENT, find_identifiers, identifier_forms
from tmstarget.cli._common import scene_renderer
from tmstarget.cli.main import main
from tmstarget.errors import InputError
from tmstarget.outputs.evidence import prescribed_intensity
from tmstarget.outputs.report import ReportWriter, write_report

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
SECTIONS = ("verdict", "target", "map", "view3d", "stability", "motion", "subsystems", "classic", "candidates",
            "prescription", "warnings", "provenance")


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    dataset = root / "Quixworth_Zephyrina" / "sample"  # clinics name folders after the patient
    shutil.copytree(SAMPLE, dataset)
    for sidecar in dataset.rglob("*_bold.json"):
        fields = json.loads(sidecar.read_text())
        fields.update({k: PATIENT[k] for k in ("PatientName", "PatientID", "PatientBirthDate")})
        sidecar.write_text(json.dumps(fields))
    out = root / "plan"
    assert main(["plan", str(dataset), "--participant", "01", "--output", str(out), "--navigation", "none",
                 "-q"]) == 0
    return {"root": root, "out": out, "page": (out / "report.html").read_text(encoding="utf-8"),
            "document": json.loads((out / "target.json").read_text())}


def _images(page):
    """Every embedded PNG (an <img> or an SVG figure's <image>), as floats in 0..1 (decoded by Pillow)."""
    from PIL import Image

    payloads = re.findall(r'(?:src|href)="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(p))).convert("RGB")) / 255.0 for p in payloads]


@pytest.mark.slow  # shares a ~20-s fixture (a real plan of the sample, its report with the 3D view)
def test_plan_writes_the_report_with_every_section(planned):
    page, document = planned["page"], planned["document"]
    assert "report.html" in document["outputs"]
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in page, anchor
    # the numbers of target.json, not others: target, depth, verdict line, p_fwe
    assert "(-10.0, 58.0, 28.0)" in page
    assert f"{document['coil']['scalp_to_cortex_mm']:.1f} mm" in page
    assert f"p_fwe = {document['qc']['inference']['p_fwe']:.3g}" in page
    assert "CAUTION:" in page  # significant, with the plan's warnings
    assert "scrubbing threshold 0.5 mm" in page and "task-rumination" in page  # the FD plot's lines, from the protocol
    for warning in document["qc"]["warnings"]:
        assert warning.replace("'", "&#x27;") in page
    for role, item in document["provenance"]["inputs"].items():
        assert item["sha256"] in page and role in page
    # classic targets: the distance to Beam F3 as computed by hand from the atlas coordinates
    beam = np.linalg.norm(np.subtract(document["target"]["mni_mm"], [-37, 26, 49]))
    assert f"{beam:.1f}" in page


@pytest.mark.slow  # shares a ~20-s fixture (a real plan of the sample, its report with the 3D view)
def test_every_image_decodes_and_shows_something(planned):
    images = _images(planned["page"])
    assert len(images) >= 2  # glass brain and slices (+ the 3D view once the viewer is there); charts are SVG
    assert planned["page"].count('<svg class="chart"') >= 4  # glass brain, slices, stability, motion
    for image in images:
        rgb = image[..., :3]
        assert rgb.shape[0] > 100 and rgb.shape[1] > 200
        assert rgb.std() > 0.05, "a blank image"
    # the target's magenta marker is drawn in both brain figures (and the 3D view), and the stability plot's star
    magenta = [((im[..., 0] > 0.8) & (im[..., 1] < 0.3) & (im[..., 2] > 0.8)).sum() for im in images]
    assert sum(m > 5 for m in magenta) >= 2
    stability = planned["page"].split('<section id="stability">')[1].split("</section>")[0]
    assert 'fill="#ff00ff"' in stability
    if scene_renderer() is not None:  # the viewer is installed: its off-screen scene is the 3D view
        assert len(images) >= 3 and sum(m > 5 for m in magenta) >= 3
        assert "rendered off-screen by the viewer" in planned["page"]


@pytest.mark.slow  # shares a ~20-s fixture (a real plan of the sample, its report with the 3D view)
def test_no_external_reference(planned):
    page = planned["page"]
    assert not re.search(r'<link|<script|<iframe|<object|@import|src="(?!data:)|href="(?!#|data:)', page)
    assert not re.search(r"url\((?!#)", page)  # SVG fills may name a gradient of the same figure: url(#id)
    assert "http://" not in page and "https://" not in page


@pytest.mark.slow  # shares a ~20-s fixture (a real plan of the sample, its report with the 3D view)
def test_no_patient_identifier(planned):
    forms = identifier_forms(PATIENT)
    assert find_identifiers(forms, [planned["root"] / "Quixworth_Zephyrina"]), "the inputs must hold them"
    hits = find_identifiers(forms, [planned["out"]])
    assert not hits, hits
    assert "participant 01" in planned["page"]


@pytest.mark.slow  # shares a ~20-s fixture (a real plan of the sample, its report with the 3D view)
def test_prescribed_intensity_equals_the_hand_computation(planned, tmp_path):
    # the SNT rule (90 % rMT, depth-adjusted) on this plan; rMT 50 % MSO measured where the cortex is 12 mm deep
    copy = tmp_path / "plan"
    shutil.copytree(planned["out"], copy)
    document = json.loads((copy / "target.json").read_text())
    document["prescription"] = tmstarget.load_protocol("sgacc-dlpfc").prescription.to_dict()
    (copy / "target.json").write_text(json.dumps(document))
    depth = document["coil"]["scalp_to_cortex_mm"]
    expected = 0.9 * (50 + 3.0 * (depth - 12.0))
    page = write_report(copy, rmt=50, m1_depth_mm=12).read_text(encoding="utf-8")
    found = re.search(r"Prescribed intensity: ([0-9.]+) % of maximum stimulator output \(depth-adjusted\)", page)
    assert found and float(found.group(1)) == pytest.approx(expected, abs=0.05)
    assert "Stokes" in page and f"{0.9 * 50:.1f} % MSO" in page  # the plain figure beside it
    # without the motor hotspot's depth the adjusted figure is refused, with the reason
    page = write_report(copy, tmp_path / "r.html", rmt=50).read_text(encoding="utf-8")
    assert "Prescribed intensity" not in page and "--m1-depth" in page
    dose = prescribed_intensity(120, 70, 25.0, 10.0)
    assert dose["adjusted_percent_mso"] == pytest.approx(1.2 * (70 + 45)) and dose["above_maximum"]


def test_plan_without_coil_says_so(tmp_path):
    func = SAMPLE / "derivatives" / "fmriprep" / "sub-01" / "func"
    stem = "sub-01_task-rumination_space-MNI152NLin2009cAsym"
    plan = tmstarget.plan(task_bold=func / f"{stem}_desc-preproc_bold.nii.gz",
                          task_confounds=func / "sub-01_task-rumination_desc-confounds_timeseries.tsv",
                          events=SAMPLE / "sub-01" / "func" / "sub-01_task-rumination_events.tsv",
                          mask=func / f"{stem}_desc-brain_mask.nii.gz", participant="01",
                          overrides={"inference.n_bootstrap": 20})
    assert plan.coil is None
    page = tmstarget.report(plan, tmp_path / "r.html").read_text(encoding="utf-8")  # a Plan object, no folder
    assert "No coil placement: no T1 known" in page and "no navigation file" in page
    assert "no coil placement" in page  # among the verdict's reasons
    assert "No 3D view: no scene renderer was given" in page  # a Python caller without the viewer's renderer
    assert "nilearn&#x27;s MNI152 template" in page  # no T1: the slices lie on the template


@pytest.mark.slow  # shares a ~20-s fixture (a real plan of the sample, its report with the 3D view)
def test_cli_report_leaves_the_plan_untouched_and_efield_is_shown(planned, tmp_path):
    copy = tmp_path / "plan"
    shutil.copytree(planned["out"], copy)
    document = json.loads((copy / "target.json").read_text())
    document["prescription"] = tmstarget.load_protocol("sgacc-dlpfc").prescription.to_dict()  # 90 % rMT, adjusted
    (copy / "target.json").write_text(json.dumps(document))
    before, report_before = (copy / "target.json").read_bytes(), (copy / "report.html").read_bytes()
    # efield.json as README's 'tmstarget efield' section specifies it (hand-written: the real run takes ~40 s)
    curve_data = [{"handle_angle_deg": float(a), "e_target_v_per_m": 100.0 + 5 * np.cos(np.radians(a))}
                  for a in range(-180, 180, 5)]
    (copy / "efield.json").write_text(json.dumps({
        "coil": "Magstim_D70", "didt_a_per_us": 114.73, "objective": {"name": "magnitude", "e_target_v_per_m": "|E|"},
        "planned": {"handle_angle_deg": 0.0, "e_target_v_per_m": 104.7},
        "best": {"handle_angle_deg": 35.0, "centre_ras_mm": [-12.0, 75.0, 38.0], "e_target_v_per_m": 108.3},
        "angle_curve": curve_data,
        "dose": {"rmt_percent": 55.0, "prescription_percent_rmt": 90.0, "motor_hotspot": {"scalp_to_cortex_mm": 12.5},
                 "stokes": {"planned": {"prescribed_output_percent": 51.2},
                            "best": {"prescribed_output_percent": 50.8}},
                 "efield_matched": {"planned": {"prescribed_output_percent": 47.3}}, "warnings": []}}))
    assert main(["report", str(copy), "--rmt", "55", "--output", str(tmp_path / "out.html"), "-q"]) == 0
    page = (tmp_path / "out.html").read_text(encoding="utf-8")
    assert (copy / "target.json").read_bytes() == before
    assert '<section id="efield">' in page and "Magstim_D70" in page and "104.7 V/m" in page and "108.3 V/m" in page
    assert "51.2" in page and "47.3" in page
    efield_part = page.split('<section id="efield">')[1].split("</section>")[0]
    curve = re.search(r'<polyline class="curve" points="([^"]+)"', efield_part).group(1).split()
    assert len(curve) == len(curve_values := [c["e_target_v_per_m"] for c in curve_data]) == 72
    heights = [float(p.split(",")[1]) for p in curve]
    assert np.argmin(heights) == int(np.argmax(curve_values))  # the strongest field is drawn highest
    # the motor hotspot's depth measured by tmstarget efield completes the depth-adjusted intensity
    expected = 0.9 * (55 + 3.0 * (document["coil"]["scalp_to_cortex_mm"] - 12.5))
    found = re.search(r"Prescribed intensity: ([0-9.]+) % of maximum stimulator output \(depth-adjusted\)", page)
    assert found and float(found.group(1)) == pytest.approx(expected, abs=0.05)
    assert main(["report", str(copy), "--rmt", "150", "-q"]) == 1  # impossible rMT: one line, nothing written
    assert (copy / "report.html").read_bytes() == report_before


@pytest.mark.slow  # shares a ~20-s fixture (a real plan of the sample, its report with the 3D view)
def test_loaded_plan_carries_no_stale_report_and_a_failing_report_writes_nothing(planned, tmp_path):
    plan = tmstarget.load_plan(planned["out"])
    assert "report.html" not in plan.files
    plan.save(tmp_path / "plain")  # the API writes no report unless asked
    assert not (tmp_path / "plain" / "report.html").exists()
    with pytest.raises(InputError, match="rmt"):
        plan.save(tmp_path / "failed", writers=[ReportWriter(rmt=500)])
    assert not (tmp_path / "failed").exists() and not list(tmp_path.glob(".failed*"))
    assert main(["report", str(tmp_path / "plain"), "-q"]) == 0
    page = (tmp_path / "plain" / "report.html").read_text(encoding="utf-8")
    assert '<section id="verdict">' in page
