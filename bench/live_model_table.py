"""Live model vs batch model on the synthetic patient's rumination task run (issue 21's table, re-measured).

The sample patient (``sample_data``, :mod:`tmstarget.testing.patient`) has a planted rumination-dmpfc
spot.  Its task run is planned in MNI space from the fMRIPrep-style derivatives, written as scanner DICOM
(:func:`tmstarget.testing.dicom.write_dicom_series`) and planned natively (``plan --native`` path,
``--task-dicom``) and watched (``tmstarget watch``, default live model), each with the models below.  For
every row: the distance of the target to the planted spot (T1w/MNI mm: the sample's T1 is in MNI space, so
both worlds coincide) and the residual degrees of freedom per state of the regression models
(:func:`tmstarget.analysis.streaming.live_effective_dof`, before the run; the plans' own figure, with the real
confounds and seed, is ``qc.effective_dof_per_state``).

Usage: python bench/live_model_table.py [--out bench/results/live_model_table.json] [--skip-native]
"""

import argparse
import json
import math
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from tmstarget.analysis.streaming import live_effective_dof, live_protocol
from tmstarget.cli.main import main as cli
from tmstarget.protocol import load_protocol
from tmstarget.realtime.replay import replay
from tmstarget.realtime.watch import Watcher, WatchOptions
from tmstarget.testing.dicom import write_dicom_series

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
FMRIPREP = SAMPLE / "derivatives" / "fmriprep" / "sub-01"
EVENTS = SAMPLE / "sub-01" / "func" / "sub-01_task-rumination_events.tsv"
T1 = FMRIPREP / "anat" / "sub-01_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz"
BOLD = FMRIPREP / "func" / "sub-01_task-rumination_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
PROTOCOL = "rumination-dmpfc"
MODELS = {
    "Butterworth 0.01-0.1 Hz (batch default)": [],
    "cosine 0.01-0.1 Hz band": ["clean.filter=cosine"],
    "cosine high-pass 0.01 Hz (live model)": ["clean.filter=cosine", "clean.low_pass_hz=0"],
}


def planted():
    truth = json.loads((SAMPLE / "ground_truth.json").read_text())
    return np.array(truth["spots"][truth["expected_targets"][PROTOCOL]]["mni_mm"], dtype=float)


def dof(overrides):
    if "clean.filter=cosine" not in overrides:
        return None  # a Butterworth filter is no regression design
    protocol = load_protocol(PROTOCOL, overrides)
    n_volumes = nib.load(BOLD).shape[3]
    found = live_effective_dof(protocol, 2.0, n_volumes, events=pd.read_csv(EVENTS, sep="\t"))
    return {s: round(v, 1) for s, v in found.items()}


def row(path, label, overrides, truth):
    doc = json.loads((path / "target.json").read_text())
    t = doc["target"]
    found = np.array(t.get("ras_mm", t["mni_mm"]), dtype=float)
    return {"plan": label, "model": " ".join(overrides) or "defaults", "target_mm": [round(v, 1) for v in found],
            "mni_mm": t["mni_mm"], "voxel_ijk": t["voxel_ijk"],
            "distance_to_planted_mm": round(float(np.linalg.norm(found - truth)), 2),
            "effective_dof_per_state_design": dof(overrides),
            "effective_dof_per_state_plan": doc["qc"].get("effective_dof_per_state")}


def watch_row(dicom, work, truth):
    """``tmstarget watch`` (default live model) on the DICOM run replayed at full speed."""
    out = work / "watch"
    feeder = threading.Thread(target=replay, args=(dicom, work / "incoming"),
                              kwargs={"speed": math.inf, "chunks": 1, "chunk_pause_s": 0.0}, daemon=True)
    feeder.start()
    opts = WatchOptions(incoming=work / "incoming", output=out, protocol=load_protocol(PROTOCOL), t1=T1,
                        events=EVENTS, expected_volumes=nib.load(BOLD).shape[3], participant="01",
                        stop_after_s=60, gap_timeout_s=2.0)
    Watcher(opts).run()
    feeder.join()
    live = json.loads((out / "live.json").read_text())
    final = row(out / "plan", "watch, final plan", MODELS["cosine high-pass 0.01 Hz (live model)"], truth)
    final["live_target_mm"] = live["target"]["ras_mm"]
    final["live_distance_to_planted_mm"] = round(float(np.linalg.norm(np.array(live["target"]["ras_mm"])
                                                                      - truth)), 2)
    final["regressors"] = live["final"]["model"]["regressors"]
    final["max_abs_dz_stream_vs_plan"] = live["final"]["max_abs_dz_stream_vs_plan"]
    assert live["final"]["model"]["effective_dof_per_state"] == final["effective_dof_per_state_design"]
    assert live_protocol(load_protocol(PROTOCOL)).overrides == json.loads(
        (out / "plan" / "target.json").read_text())["provenance"]["protocol"]["overrides"]
    return final


def report(r):
    where = "refused" if r.get("refused") else f"{r['distance_to_planted_mm']:6.2f} mm"
    print(f"{r['plan']:28s} {r['model']:45s} {where:>9s}  "
          f"effective dof {r['effective_dof_per_state_design']} / in the plan {r['effective_dof_per_state_plan']}",
          flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "live_model.json")
    parser.add_argument("--skip-native", action="store_true", help="only the MNI-space plans and the watcher")
    args = parser.parse_args(argv)
    truth = planted()
    work = Path(tempfile.mkdtemp(prefix="live-model-"))
    rows = []
    try:
        dicom = work / "dicom"
        write_dicom_series(nib.load(BOLD), dicom, series_number=7, series_description="rumination", t_r_s=2.0)
        rows.append(watch_row(dicom, work, truth))
        report(rows[-1])
        plans = [("plan, MNI derivatives", [str(SAMPLE), "--participant", "01", "--space", "MNI152NLin2009cAsym"])]
        if not args.skip_native:
            plans.append(("plan --native (DICOM)", ["--task-dicom", str(dicom), "--events", str(EVENTS), "--t1",
                                                    str(T1), "--participant", "01"]))
        for label, inputs in plans:
            for overrides in MODELS.values():
                out = work / f"plan-{len(rows)}"
                sets = [a for o in overrides for a in ("--set", o)]
                code = cli(["plan"] + inputs + ["--protocol", PROTOCOL, "--output", str(out), "--navigation", "none",
                                                "-q"] + sets)
                # a plan refused by the effective-DOF floor is a result of the table, not a failure of the script
                rows.append(row(out, label, overrides, truth) if code == 0 else
                            {"plan": label, "model": " ".join(overrides) or "defaults", "refused": True,
                             "distance_to_planted_mm": float("nan"), "effective_dof_per_state_design": dof(overrides),
                             "effective_dof_per_state_plan": None})
                report(rows[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"planted_mm": truth.tolist(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
