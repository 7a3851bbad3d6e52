"""The Python API: the README example runs, paths and objects in memory give the same plan, save/load round trip."""

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import tmstarget
from tmstarget.cli.main import main
from tmstarget.errors import OutputError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
FUNC = SAMPLE / "derivatives" / "fmriprep" / "sub-01" / "func"
ANAT = SAMPLE / "derivatives" / "fmriprep" / "sub-01" / "anat"
MNI = "space-MNI152NLin2009cAsym"
REST = {"rest_bold": FUNC / f"sub-01_task-rest_{MNI}_desc-preproc_bold.nii.gz",
        "rest_confounds": FUNC / "sub-01_task-rest_desc-confounds_timeseries.tsv",
        "mask": FUNC / f"sub-01_task-rest_{MNI}_desc-brain_mask.nii.gz",
        "t1": ANAT / f"sub-01_{MNI}_desc-preproc_T1w.nii.gz"}
TASK = {"task_bold": FUNC / f"sub-01_task-rumination_{MNI}_desc-preproc_bold.nii.gz",
        "task_confounds": FUNC / "sub-01_task-rumination_desc-confounds_timeseries.tsv",
        "events": SAMPLE / "sub-01" / "func" / "sub-01_task-rumination_events.tsv",
        "mask": FUNC / f"sub-01_task-rumination_{MNI}_desc-brain_mask.nii.gz"}


def _readme_example():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _without_dates(document):
    document = json.loads(json.dumps(document))
    document["provenance"]["date_utc"] = None
    document["provenance"]["command"] = None
    document["outputs"] = [name for name in document["outputs"] if not name.startswith("navigation/")]
    if (document.get("anatomy") or {}).get("tissue"):
        document["anatomy"]["tissue"].pop("seconds", None)  # a timing, like the date
    return document


def test_readme_example_runs_and_matches_the_cli(tmp_path, monkeypatch):
    # the example's relative paths are those of the repository root; run it where sample_data is that folder
    (tmp_path / "sample_data").symlink_to(SAMPLE)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(_readme_example(), "README.md", "exec"), namespace)
    plan = namespace["plan"]

    # the CLI adds report.html unless told not to; Plan.save writes it only when asked (writers=[ReportWriter()])
    assert main(["plan", "sample_data", "--participant", "01", "--protocol", "sgacc-dlpfc",
                 "--set", "clean.fd_threshold_mm=0.5", "--output", "cli", "--no-report", "-q"]) == 0
    cli = json.loads(Path("cli/target.json").read_text())
    assert plan.target.voxel_ijk == tuple(cli["target"]["voxel_ijk"])
    assert plan.target.mni_mm == tuple(cli["target"]["mni_mm"]) and plan.target.score == cli["target"]["score"]
    assert plan.coil == cli["coil"] and plan.space == cli["space"] == "MNI152NLin2009cAsym"
    assert _without_dates(plan.document) == _without_dates(cli)
    # Plan.save writes the CLI's folder: same files, same bytes (target.json apart from date and command)
    api_files = sorted(p.relative_to("plan-api").as_posix() for p in Path("plan-api").rglob("*") if p.is_file())
    cli_files = sorted(p.relative_to("cli").as_posix() for p in Path("cli").rglob("*")
                       if p.is_file() and "navigation" not in p.parts)
    assert api_files == cli_files
    for name in api_files:
        if name != "target.json":
            assert (Path("plan-api") / name).read_bytes() == (Path("cli") / name).read_bytes(), name
    # Plan.export writes what the CLI's navigation step writes
    fcsv = "sub-01_slicer_targets.mrk.json"
    assert (Path("plan-api-navigation") / fcsv).read_bytes() == (Path("cli/navigation") / fcsv).read_bytes()


def _objects(files):
    out = {}
    for key, path in files.items():
        if key in ("rest_confounds", "task_confounds", "events"):
            out[key] = pd.read_csv(path, sep="\t", na_values="n/a")
        else:
            out[key] = nib.load(path)
    return out


@pytest.mark.parametrize("files, protocol", [(REST, "sgacc-dlpfc"), (TASK, "rumination-dmpfc")],
                         ids=["rest-with-t1", "task-blocks"])
def test_paths_and_objects_give_the_same_plan(files, protocol):
    from_paths = tmstarget.plan(protocol=protocol, participant="01", **files)
    from_objects = tmstarget.plan(protocol=protocol, participant="01", **_objects(files))
    assert from_objects.target == from_paths.target
    assert [c.score for c in from_objects.candidates] == [c.score for c in from_paths.candidates]
    assert sorted(from_objects.maps) == sorted(from_paths.maps)
    for name in from_paths.maps:
        assert np.array_equal(from_objects.maps[name].dataobj, from_paths.maps[name].dataobj), name
    assert from_objects.qc["runs"] == from_paths.qc["runs"]
    if "t1" in files:  # the coil sits on the same scalp; the T1 travels with the plan
        assert from_objects.coil == from_paths.coil is not None
        assert from_objects.anatomy["t1"] == "anat/T1w.nii.gz" and from_objects.anatomy["t1"] in from_objects.files


def test_separate_runs_mapping_matches_the_cli(tmp_path):
    rum, dis = TASK["task_bold"], FUNC / f"sub-01_task-rest_{MNI}_desc-preproc_bold.nii.gz"
    conf_rum, conf_dis = TASK["task_confounds"], REST["rest_confounds"]
    plan = tmstarget.plan(protocol="rumination-dmpfc", mask=TASK["mask"],
                          task_bold={"rumination": nib.load(rum), "distraction": dis},
                          task_confounds={"rumination": conf_rum, "distraction": pd.read_csv(conf_dis, sep="\t")})
    assert main(["plan", "--task-bold", f"rumination={rum}", "--task-bold", f"distraction={dis}",
                 "--task-confounds", f"rumination={conf_rum}", "--task-confounds", f"distraction={conf_dis}",
                 "--mask", str(TASK["mask"]), "--output", str(tmp_path / "cli"), "-q"]) == 0
    cli = json.loads((tmp_path / "cli" / "target.json").read_text())
    assert plan.target.voxel_ijk == tuple(cli["target"]["voxel_ijk"])
    assert [c.score for c in plan.candidates] == [c["score"] for c in cli["candidates"]]


def test_save_load_round_trip(tmp_path):
    plan = tmstarget.plan(SAMPLE, participant="01",
                          protocol="rumination-dmpfc", overrides={"target.picker": "peak", "clean.global_signal": True})
    assert plan.protocol.overrides == {"target.picker": "peak", "clean.global_signal": True}
    plan.save(tmp_path / "plan")
    loaded = tmstarget.load_plan(tmp_path / "plan")
    assert loaded == plan
    assert loaded.protocol.to_dict() == plan.protocol.to_dict()
    assert loaded.target.voxel_ijk == plan.target.voxel_ijk and loaded.target.method == "peak"
    assert sorted(loaded.maps) == ["delta", "z_distraction", "z_rumination"]
    # saving the loaded plan gives the same folder again
    loaded.save(tmp_path / "again")
    for name in ("target.json", "targets.tsv", "protocol.toml"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "plan" / name).read_bytes(), name
    # equality looks at the images, not only the document
    changed = tmstarget.load_plan(tmp_path / "plan")
    data = np.asarray(changed.maps["delta"].dataobj).copy()
    data[data.shape[0] // 2, data.shape[1] // 2, data.shape[2] // 2] += 1.0
    changed.maps["delta"] = nib.Nifti1Image(data, changed.maps["delta"].affine, changed.maps["delta"].header)
    assert changed != plan
    with pytest.raises(OutputError):
        plan.save(tmp_path / "plan")  # not empty, no force
