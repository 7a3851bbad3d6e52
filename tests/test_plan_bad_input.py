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
    assert code == 1 and "inside the input folder" in capsys.readouterr().err
    assert not (ds / "derivatives" / "fmriprep" / "plan").exists()
