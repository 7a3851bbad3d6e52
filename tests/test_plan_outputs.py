"""What a plan folder holds and says (issue 14, items 13, 14, 16, 17).

* 13: a plan without a T1 says why it has no coil (``coil: null``, ``coil_reason``, the run summary);
* 14: ``targets.tsv`` names the space of its coordinates in the column names;
* 16: ``outputs`` lists every file written (navigation files included); input paths in provenance are
  relative to the dataset folder or file names only (the folders here are named like a patient);
* 17: maps and masks have BIDS-style names (``sub-<label>_space-<space>_desc-<name>_statmap|mask``).
"""

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import tmstarget
from test_plan import EVENTS, REST_BOLD, REST_CONF, REST_MASK, SAMPLE, TASK_BOLD, TASK_CONF, TASK_MASK
from tmstarget.cli.main import main

MNI = "MNI152NLin2009cAsym"
T1 = SAMPLE / "derivatives" / "fmriprep" / "sub-01" / "anat" / f"sub-01_space-{MNI}_desc-preproc_T1w.nii.gz"
FOLDER_NAME = "QUIXWORTH_ZEPHYRINA_1958"  # a folder named after the patient, as clinics do


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def explicit_plan(tmp_path_factory):
    """`tmstarget plan` on explicit files (with the T1) copied into a folder named after the patient."""
    root = tmp_path_factory.mktemp("outputs")
    inputs = root / FOLDER_NAME
    inputs.mkdir()
    for source in (REST_BOLD, REST_CONF, REST_MASK, T1):
        shutil.copy(source, inputs / source.name)
    out = root / "plan"
    argv = ["plan", "--protocol", "sgacc-dlpfc", "--rest-bold", inputs / REST_BOLD.name, "--rest-confounds",
            inputs / REST_CONF.name, "--mask", inputs / REST_MASK.name, "--t1", inputs / T1.name, "--output", out, "-q"]
    assert main([str(a) for a in argv]) == 0
    return out, json.loads((out / "target.json").read_text())


def test_outputs_list_every_file_written(explicit_plan):
    out, doc = explicit_plan
    written = _files(out)
    assert doc["outputs"] == written
    navigation = [name for name in written if name.startswith("navigation/")]
    assert len(navigation) >= 10 and any(name.startswith("navigation/localite/") for name in navigation)
    assert "anat/" + T1.name in written  # the T1 the coil and the navigation files refer to travels with the plan
    loaded = tmstarget.load_plan(out)
    assert loaded.document == doc and sorted(loaded.files) == ["anat/" + T1.name]
    # the navigation files hash the final target.json (written before them, listing them)
    sidecar = json.loads((out / next(n for n in navigation if n.endswith(".provenance.json"))).read_text())
    assert hashlib.sha256((out / "target.json").read_bytes()).hexdigest() in json.dumps(sidecar)


def test_provenance_records_file_names_and_hashes_not_folders(explicit_plan):
    out, doc = explicit_plan
    inputs = doc["provenance"]["inputs"]
    assert {v["path"] for v in inputs.values()} == {REST_BOLD.name, REST_CONF.name, REST_MASK.name, T1.name}
    for entry in inputs.values():
        source = next(p for p in (REST_BOLD, REST_CONF, REST_MASK, T1) if p.name == entry["path"])
        assert entry["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert doc["anatomy"]["t1"] == "anat/" + T1.name
    for name in _files(out):  # the folder name appears in no file (nor target.json's command)
        data = (out / name).read_bytes()
        assert FOLDER_NAME.encode() not in data and FOLDER_NAME.lower().encode() not in data.lower(), name
    assert doc["provenance"]["command"][doc["provenance"]["command"].index("--t1") + 1] == T1.name


def test_dataset_inputs_are_relative_to_the_dataset(tmp_path):
    dataset = tmp_path / FOLDER_NAME
    shutil.copytree(SAMPLE / "derivatives", dataset / "derivatives")
    shutil.copytree(SAMPLE / "sub-01", dataset / "sub-01")
    shutil.copy(SAMPLE / "dataset_description.json", dataset)
    out = tmp_path / "plan"
    assert main(["plan", str(dataset), "--participant", "01", "--output", str(out), "--navigation", "none", "-q"]) == 0
    doc = json.loads((out / "target.json").read_text())
    paths = {v["path"] for v in doc["provenance"]["inputs"].values()}
    assert "sub-01/func/sub-01_task-rumination_events.tsv" in paths
    assert f"derivatives/fmriprep/sub-01/func/{TASK_BOLD.name}" in paths
    assert f"derivatives/fmriprep/sub-01/anat/{T1.name}" in paths
    assert FOLDER_NAME not in json.dumps(doc)
    assert "<folder>" in doc["provenance"]["command"]


def test_no_t1_says_why_there_is_no_coil(capsys, tmp_path):
    out = tmp_path / "plan"
    code = main(["plan", "--protocol", "rest-dmpfc", "--rest-bold", str(REST_BOLD), "--rest-confounds", str(REST_CONF),
                 "--mask", str(REST_MASK), "--output", str(out)])
    assert code == 0
    doc = json.loads((out / "target.json").read_text())
    assert doc["coil"] is None and "no T1" in doc["coil_reason"] and "navigation" in doc["coil_reason"]
    assert not (out / "navigation").exists()
    assert f"coil: not placed ({doc['coil_reason']})" in capsys.readouterr().out


def test_coil_reason_is_null_with_a_coil(explicit_plan):
    _, doc = explicit_plan
    assert doc["coil"] is not None and doc["coil_reason"] is None


def test_targets_tsv_names_its_space(explicit_plan):
    out, doc = explicit_plan
    rows = [line.split("\t") for line in (out / "targets.tsv").read_text().splitlines()]
    header = rows[0]
    assert header[:5] == ["rank", "name", "x_mni152nlin2009casym_mm", "y_mni152nlin2009casym_mm",
                          "z_mni152nlin2009casym_mm"]
    assert not any(column in ("x_mm", "y_mm", "z_mm") for column in header)
    for row, candidate in zip(rows[1:], doc["candidates"]):
        assert [float(v) for v in row[2:5]] == pytest.approx(candidate["mni_mm"], abs=1e-4)
        assert [int(v) for v in row[header.index("i"):header.index("i") + 3]] == candidate["voxel_ijk"]


def test_images_have_bids_names(explicit_plan):
    out, doc = explicit_plan
    assert doc["participant"] == "01"  # known from the input names (sub-01_...), no --participant given
    assert doc["images"] == {
        "maps": {"z_rest": f"sub-01_space-{MNI}_desc-zRest_statmap.nii.gz"},
        "masks": {"search_region": f"sub-01_space-{MNI}_desc-searchRegion_mask.nii.gz",
                  "target_sphere": f"sub-01_space-{MNI}_desc-targetSphere_mask.nii.gz"}}
    assert not [name for name in _files(out) if name.startswith(("map-", "search_region", "target_sphere"))]
    sphere = nib.load(out / doc["images"]["masks"]["target_sphere"])
    centre = np.argwhere(np.asarray(sphere.dataobj) > 0).mean(axis=0)
    assert np.allclose(centre, doc["target"]["voxel_ijk"], atol=0.01)


def test_task_maps_and_unknown_participant(tmp_path):
    """A contrast plan: one statmap per state and the delta; inputs without sub- in their names: no sub- entity."""
    plan = tmstarget.plan(protocol="rumination-dmpfc", task_bold=nib.load(TASK_BOLD), task_confounds=TASK_CONF,
                          events=EVENTS, mask=TASK_MASK)
    assert plan.document["participant"] is None
    assert plan.document["images"]["maps"] == {
        "z_rumination": f"space-{MNI}_desc-zRumination_statmap.nii.gz",
        "z_distraction": f"space-{MNI}_desc-zDistraction_statmap.nii.gz",
        "delta": f"space-{MNI}_desc-delta_statmap.nii.gz"}
    plan.save(tmp_path / "plan")
    loaded = tmstarget.load_plan(tmp_path / "plan")
    assert loaded == plan
    assert np.array_equal(nib.load(tmp_path / "plan" / f"space-{MNI}_desc-delta_statmap.nii.gz").dataobj,
                          plan.maps["delta"].dataobj)
