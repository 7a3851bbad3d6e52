"""The streaming engine (running sums) against the batch engine (`plan`) and independent references."""

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn import signal

from tmstarget import rois as roi_defs
from tmstarget.clean import cosine_band_regressors, regression_design, regression_operator
from tmstarget.ingest.collect import ExplicitRun, Selection
from tmstarget.ingest.runs import confound_column, motion_params
from tmstarget.motion import fd_power
from tmstarget.pipeline import _brain_mask, _load_runs, analysis_layout, plan
from tmstarget.protocol import load_protocol
from tmstarget.streaming import StreamingConnectivity

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
FUNC = SAMPLE / "derivatives" / "fmriprep" / "sub-01" / "func"
SPACE = "space-MNI152NLin2009cAsym"


def _run_files(task):
    return ExplicitRun(
        bold=FUNC / f"sub-01_task-{task}_{SPACE}_desc-preproc_bold.nii.gz",
        confounds=FUNC / f"sub-01_task-{task}_desc-confounds_timeseries.tsv",
        events=(SAMPLE / "sub-01" / "func" / f"sub-01_task-{task}_events.tsv") if task != "rest" else None,
        mask=FUNC / f"sub-01_task-{task}_{SPACE}_desc-brain_mask.nii.gz",
        label=task,
    )


def _stream(selection, protocol, until=None):
    """Feed a run volume by volume into the streaming engine, as the watcher does."""
    runs = _load_runs(selection, None)
    run = runs[0]
    brain = _brain_mask(runs, selection.mask, [])
    layout = analysis_layout(protocol, brain, run.img.affine, roi_defs.MniGrid(brain.shape, run.img.affine))
    stream = StreamingConnectivity(layout, protocol, run.t_r, run.n_volumes,
                                   events=run.events if run.state is None else None, run_state=run.state)
    motion = motion_params(run.confounds, None)
    nuisance = np.column_stack([confound_column(run.confounds, c, None, "") for c in ("white_matter", "csf")])
    fd = fd_power(motion)
    data = np.asarray(run.img.dataobj, dtype=np.float32)
    for v in range(run.n_volumes if until is None else until):
        stream.push(v, data[..., v], motion[v], nuisance[v], fd[v])
    return stream, layout


@pytest.mark.parametrize("name,task", [("rumination-dmpfc", "rumination"), ("sgacc-dlpfc", "rest")])
def test_stream_equals_plan_at_the_last_volume(name, task):
    protocol = load_protocol(name, ["clean.filter=cosine"])
    state = None if task != "rest" else "rest"
    selection = Selection([(_run_files(task), state)], None, None, [])
    batch = plan(selection, protocol)
    stream, layout = _stream(selection, protocol)
    z, score = stream.brain_maps()
    ijk = tuple(layout.voxels.ijk.T)
    for s in z:
        assert np.abs(z[s] - batch.maps[f"z_{s}"][ijk]).max() < 1e-6
    if "delta" in batch.maps:
        assert np.abs(score - batch.maps["delta"][ijk]).max() < 1e-6
    # the live (search-region) readout: same numbers, same target voxel
    _, region_score, tables = stream.region_maps()
    assert np.abs(region_score - score[layout.region_cols]).max() < 1e-6
    from tmstarget.targets import pick_targets

    full = np.zeros(len(layout.voxels))
    full[layout.region_cols] = region_score
    assert pick_targets(full, layout.voxels, layout.region_cols, protocol["target"])[0].voxel_ijk == \
        batch.target.voxel_ijk
    for s, table in tables.items():
        for key, value in table.items():
            assert value == pytest.approx(batch.qc["subsystem_fc"][s][key], abs=1e-6)


def _truncated_run(tmp_path, files, n):
    img = nib.load(files.bold)
    cut = nib.Nifti1Image(np.asarray(img.dataobj)[..., :n], img.affine, img.header)
    bold = tmp_path / Path(files.bold).name
    nib.save(cut, bold)
    pd.read_csv(files.confounds, sep="\t").iloc[:n].to_csv(tmp_path / Path(files.confounds).name, sep="\t",
                                                          index=False, na_rep="n/a")
    sidecar = Path(str(files.bold).replace(".nii.gz", ".json"))
    (tmp_path / sidecar.name).write_bytes(sidecar.read_bytes())
    events = pd.read_csv(files.events, sep="\t")
    end = n * 2.0
    events = events[events["onset"] < end].copy()
    events["duration"] = np.minimum(events["duration"], end - events["onset"])
    events.to_csv(tmp_path / "events.tsv", sep="\t", index=False)
    return ExplicitRun(bold=bold, confounds=tmp_path / Path(files.confounds).name, events=tmp_path / "events.tsv",
                       mask=files.mask, label=files.label)


def test_readout_mid_run_equals_plan_on_the_volumes_so_far(tmp_path):
    """Without band regressors the model does not depend on the run length: after volume k the stream is plan on k."""
    protocol = load_protocol("rumination-dmpfc", ["clean.filter=cosine", "clean.high_pass_hz=0",
                                                  "clean.low_pass_hz=0", "clean.task_regressors=boxcar"])
    files = _run_files("rumination")
    k = 170
    batch = plan(Selection([(_truncated_run(tmp_path, files, k), None)], None, None, []), protocol)
    stream, layout = _stream(Selection([(files, None)], None, None, []), protocol, until=k)
    z, _ = stream.brain_maps()
    ijk = tuple(layout.voxels.ijk.T)
    for s in z:
        assert np.abs(z[s] - batch.maps[f"z_{s}"][ijk]).max() < 1e-6


def test_regression_model_equals_nilearn_cosine_filter():
    """High-pass only: our one regression equals nilearn's detrend + cosine drift + confound regression."""
    rng = np.random.default_rng(3)
    n, t_r = 180, 2.0
    confounds = rng.normal(size=(n, 6))
    data = rng.normal(size=(n, 40)).cumsum(axis=0)
    ours = regression_operator(regression_design(n, t_r, confounds, True, 0.01, None)) @ data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = signal.clean(data, detrend=True, standardize=None, confounds=confounds, filter="cosine",
                           high_pass=0.01, t_r=t_r)
    assert np.abs(ours - ref).max() < 1e-8


def test_low_pass_regressors_remove_exactly_the_frequencies_above_the_band():
    """Hand-written DCT-II reference: a signal made of in-band and out-of-band cosines keeps only the in-band part."""
    n, t_r = 200, 2.0
    frames = np.arange(n)

    def basis(k):
        return np.cos(np.pi * k * (2 * frames + 1) / (2 * n))

    # frequency k / (2 n t_r): k=30 -> 0.0375 Hz (in band), k=120 -> 0.15 Hz (above 0.1), k=2 -> 0.005 Hz (drift)
    assert cosine_band_regressors(n, t_r, 0.01, 0.1).shape[1] == 8 + (n - 81)
    x = 3 * basis(30) + 2 * basis(120) + 5 * basis(2)
    cleaned = regression_operator(regression_design(n, t_r, None, False, 0.01, 0.1)) @ x
    assert np.abs(cleaned - 3 * basis(30)).max() < 1e-9


def test_scrubbed_frames_leave_the_regression_and_keep_their_time():
    """A censored frame is left out of the fit, and the trend regressor uses true frame time."""
    rng = np.random.default_rng(4)
    n = 60
    design = regression_design(n, 2.0, None, True)
    kept = np.setdiff1d(np.arange(n), [10, 11, 40])
    y = 0.5 * np.arange(n) + rng.normal(size=n)
    y_kept = y[kept]
    x = np.column_stack([np.ones(len(kept)), kept])
    beta, *_ = np.linalg.lstsq(x, y_kept, rcond=None)
    assert np.allclose(regression_operator(design, kept) @ y, y_kept - x @ beta, atol=1e-10)
