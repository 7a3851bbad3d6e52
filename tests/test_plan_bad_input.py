"""Bad input: one clear line naming what and where, exit code 1, nothing written."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from test_plan import EVENTS, REST_BOLD, REST_CONF, REST_MASK, SAMPLE, TASK_BOLD, TASK_CONF, TASK_MASK
from tmstarget.cli.main import main


def fails(capsys, tmp_path, argv, *expected):
    """Run the CLI, expect exit 1 with one stderr line holding every ``expected`` text, and no output."""
    out = tmp_path.parent / f"{tmp_path.name}-out"  # outside the folder holding the (modified) inputs
    code = main(["plan", *map(str, argv), "--output", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("tmstarget: error: ")
    for text in expected:
        assert str(text) in err, err
    assert not out.exists()
    assert not list(tmp_path.parent.glob(f".{out.name}.*")), "a staging folder was left behind"
    return err


def rest_args(bold=REST_BOLD, confounds=REST_CONF, mask=REST_MASK):
    return ["--protocol", "rest-dmpfc", "--rest-bold", bold, "--rest-confounds", confounds, "--mask", mask]


def save_like(img, data, path, zooms=None):
    out = nib.Nifti1Image(data, img.affine, img.header)
    out.set_data_dtype(data.dtype)
    if zooms is not None:
        out.header.set_zooms(zooms)
    nib.save(out, path)
    return path


@pytest.fixture(scope="module")
def rest_img():
    img = nib.load(REST_BOLD)
    return img, np.asanyarray(img.dataobj)


def test_missing_file(capsys, tmp_path):
    fails(capsys, tmp_path, rest_args(bold=tmp_path / "nope.nii.gz"), "nope.nii.gz", "not found")


def test_3d_image_where_4d_needed(capsys, tmp_path, rest_img):
    img, data = rest_img
    path = save_like(img, data[..., 0], tmp_path / "three_d.nii.gz")
    fails(capsys, tmp_path, rest_args(bold=path), "three_d.nii.gz", "expected a 4-D BOLD image", "3-D")


def test_tr_header_versus_sidecar(capsys, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(SAMPLE, ds)
    sidecar = next(ds.rglob("*task-rest_*desc-preproc_bold.json"))
    meta = json.loads(sidecar.read_text())
    meta["RepetitionTime"] = 2.5
    sidecar.write_text(json.dumps(meta))
    fails(capsys, tmp_path, [ds, "--participant", "01", "--protocol", "rest-dmpfc"],
          "repetition times disagree", "2 s", "2.5 s")


def test_tr_given_by_user_disagrees(capsys, tmp_path):
    fails(capsys, tmp_path, rest_args() + ["--tr", "2.5"], "repetition times disagree", "--tr")


def test_tr_differs_between_runs(capsys, tmp_path, rest_img):
    img, data = rest_img
    slow = save_like(img, data, tmp_path / "slow.nii.gz", zooms=img.header.get_zooms()[:3] + (2.5,))
    argv = rest_args() + ["--rest-bold", slow, "--rest-confounds", REST_CONF]
    fails(capsys, tmp_path, argv, "different repetition times", "2 s", "2.5 s")


def test_too_few_usable_volumes_after_scrubbing(capsys, tmp_path):
    fails(capsys, tmp_path, rest_args() + ["--fd-threshold", "0.01"], "usable volumes after scrubbing", "at least 50")


def test_nan_in_bold_names_the_volume(capsys, tmp_path, rest_img):
    img, data = rest_img
    bad = data.astype(np.float32)
    i, j, k = np.argwhere(nib.load(REST_MASK).get_fdata() > 0)[500]
    bad[i, j, k, 17] = np.nan
    path = save_like(img, bad, tmp_path / "nan.nii.gz")
    fails(capsys, tmp_path, rest_args(bold=path), "nan.nii.gz", "volume 17", "NaN")


def test_events_outside_the_run(capsys, tmp_path):
    events = tmp_path / "events.tsv"
    events.write_text(EVENTS.read_text() + "390\t50\trumination\n")
    argv = ["--task-bold", TASK_BOLD, "--task-confounds", TASK_CONF, "--events", events, "--mask", TASK_MASK]
    fails(capsys, tmp_path, argv, "events.tsv", "after the run ends", "400 s")


def test_mask_grid_mismatch(capsys, tmp_path):
    mask = nib.load(REST_MASK)
    half = nib.Nifti1Image(np.asanyarray(mask.dataobj)[::2, ::2, ::2], mask.affine @ np.diag([2, 2, 2, 1]))
    nib.save(half, tmp_path / "mask8mm.nii.gz")
    fails(capsys, tmp_path, rest_args(mask=tmp_path / "mask8mm.nii.gz"), "mask8mm.nii.gz",
          "does not match the BOLD grid")


def test_empty_search_region(capsys, tmp_path):
    mask = nib.load(REST_MASK)
    data = np.asanyarray(mask.dataobj).copy()
    y_mm = mask.affine[1, 1] * np.arange(data.shape[1]) + mask.affine[1, 3]
    data[:, y_mm > 10, :] = 0  # no frontal lobe left
    nib.save(nib.Nifti1Image(data, mask.affine), tmp_path / "posterior.nii.gz")
    fails(capsys, tmp_path, rest_args(mask=tmp_path / "posterior.nii.gz"), "search region 'dmpfc' is empty")


def test_invalid_protocol_file(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\ndescription = "y"\n[seed]\nsubsystem = "core"\nradius = 3\n')
    fails(capsys, tmp_path, rest_args()[2:] + ["--protocol", bad], "bad.toml", "unknown key 'radius'")


def test_missing_state_is_named(capsys, tmp_path):
    argv = [SAMPLE, "--participant", "01", "--set", 'connectivity.contrast=["rumination", "sad"]']
    fails(capsys, tmp_path, argv, "state 'sad'", "found: distraction, rumination", "task-sad")


def test_existing_output_needs_force(capsys, tmp_path):
    out = tmp_path / "out"  # the sample's own folder holds the inputs here
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = main(["plan", *map(str, rest_args()), "--output", str(out), "--quiet"])
    assert code == 1 and "use --force" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main(["plan", *map(str, rest_args()), "--output", str(out), "--quiet", "--force"]) == 0
    assert (out / "target.json").is_file() and not (out / "keep.txt").exists()


def test_output_inside_input_is_refused(capsys, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(SAMPLE / "derivatives", ds / "derivatives")
    code = main(["plan", str(ds), "--participant", "01", "--protocol", "rest-dmpfc",
                 "--output", str(ds / "derivatives" / "fmriprep" / "plan"), "--quiet"])
    assert code == 1 and "inside the dataset" in capsys.readouterr().err
    assert not (ds / "derivatives" / "fmriprep" / "plan").exists()


def test_readme_explicit_files_example_writes_beside_its_inputs(tmp_path, monkeypatch):
    """The README's explicit-files command, run in a plain folder holding its inputs: `--output out` is accepted."""
    for name, source in (("task.nii.gz", TASK_BOLD), ("task_confounds.tsv", TASK_CONF),
                         ("task_events.tsv", EVENTS), ("mask.nii.gz", TASK_MASK)):
        (tmp_path / name).symlink_to(source)
    monkeypatch.chdir(tmp_path)
    code = main(["plan", "--task-bold", "task.nii.gz", "--task-confounds", "task_confounds.tsv", "--events",
                 "task_events.tsv", "--mask", "mask.nii.gz", "--output", "out", "--quiet"])
    assert code == 0
    assert (tmp_path / "out" / "target.json").is_file()


def test_missing_input_is_named_before_the_output_rules(capsys, tmp_path):
    """A BOLD file that does not exist is the error, even when the output folder would also be refused."""
    ds = tmp_path / "ds"
    shutil.copytree(SAMPLE / "derivatives", ds / "derivatives")
    out = ds / "derivatives" / "fmriprep" / "plan"
    code = main(["plan", *map(str, rest_args(bold=tmp_path / "nope.nii.gz")), "--output", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "nope.nii.gz: BOLD file not found" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("where, refused", [
    ("plain/out", None),                                  # a plain folder holding the input files
    ("plain/bold.nii.gz", "is, or holds, the input"),     # the output path is an input
    ("plain", "is, or holds, the input"),                 # replacing it would delete the inputs
    ("dicom/out", "inside the input folder"),             # a folder given as input (a DICOM series)
    ("bids/sub-01/func/out", "inside the dataset"),       # a BIDS tree
    ("bids/derivatives/fmriprep/out", "inside the dataset"),  # fMRIPrep's own dataset
    ("bids/derivatives/tmstarget", None),                 # BIDS's place for a new pipeline's derivatives
])
def test_output_rules(tmp_path, where, refused):
    from tmstarget.errors import OutputError
    from tmstarget.outputs.plan_folder import check_output_dir

    for folder in ("plain", "dicom", "bids/sub-01/func", "bids/derivatives/fmriprep"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "plain" / "bold.nii.gz").write_bytes(b"x")
    for dataset in ("bids", "bids/derivatives/fmriprep"):
        (tmp_path / dataset / "dataset_description.json").write_text("{}")
    inputs = [tmp_path / "plain" / "bold.nii.gz", tmp_path / "dicom", tmp_path / "bids" / "sub-01" / "func"]
    if refused is None:
        check_output_dir(tmp_path / where, inputs=inputs)
    else:
        with pytest.raises(OutputError, match=refused):
            check_output_dir(tmp_path / where, inputs=inputs)
