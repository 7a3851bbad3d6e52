"""The streaming engine (running sums) against the batch engine (`plan`) and a direct computation.

The direct computation (``nilearn_reference``) shares no code with either engine: the design is built
from its definitions (constant, trend in frame time, DCT-II cosines outside 0.01-0.1 Hz, Friston-24 and
WM/CSF from the confounds, SPM-HRF block regressors from nilearn), the data smoothed by nilearn, the
frames scrubbed by FD_Power and split into states by the published block rule, and the Fisher-z maps
come from one ``numpy.linalg.lstsq`` fit and Pearson r.  Runs are read with nibabel and pandas; only
public tmstarget functions are called.
"""

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn import signal

import nilearn_reference as ref
from tmstarget.analysis.clean import cosine_band_regressors, regression_design, regression_operator
from tmstarget.analysis.engine import analysis_layout, plan
from tmstarget.analysis.rois import MniGrid
from tmstarget.analysis.streaming import StreamingConnectivity
from tmstarget.analysis.targets import pick_targets
from tmstarget.ingest.collect import ExplicitRun, Selection
from tmstarget.protocol import load_protocol

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
FUNC = SAMPLE / "derivatives" / "fmriprep" / "sub-01" / "func"
SPACE = "space-MNI152NLin2009cAsym"
DIRECT_TOLERANCE = 1e-6  # z; float64 sums vs one lstsq (measured below 1e-9)


def _run_files(task):
    return ExplicitRun(
        bold=FUNC / f"sub-01_task-{task}_{SPACE}_desc-preproc_bold.nii.gz",
        confounds=FUNC / f"sub-01_task-{task}_desc-confounds_timeseries.tsv",
        events=(SAMPLE / "sub-01" / "func" / f"sub-01_task-{task}_events.tsv") if task != "rest" else None,
        mask=FUNC / f"sub-01_task-{task}_{SPACE}_desc-brain_mask.nii.gz",
        label=task,
    )


def _stream(files, protocol, until=None):
    """Feed a run volume by volume into the streaming engine, as the watcher does (inputs read here)."""
    img = nib.load(files.bold)
    brain = np.asarray(nib.load(files.mask).dataobj) > 0
    layout = analysis_layout(protocol, brain, img.affine, MniGrid(brain.shape, img.affine))
    events = pd.read_csv(files.events, sep="\t") if files.events is not None else None
    stream = StreamingConnectivity(layout, protocol, ref.repetition_time(files.bold), img.shape[3], events=events,
                                   run_state=None if events is not None else "rest")
    conf = ref.read_confounds(files.confounds)
    motion = conf[ref.MOTION_COLUMNS].to_numpy(dtype=float)
    nuisance = conf[["white_matter", "csf"] + (["global_signal"] if protocol.clean.global_signal else [])].to_numpy(
        dtype=float)
    fd = ref.fd_power(conf)
    data = np.asarray(img.dataobj, dtype=np.float32)
    for v in range(img.shape[3] if until is None else until):
        stream.push(v, data[..., v], motion[v], nuisance[v], fd[v])
    return stream, layout


def _direct(files, dummies=5):
    """Fisher-z maps (3-D) per state from the regression model computed directly, and the frames per state.

    As the shipped protocols say: the task run (rumination-dmpfc) censors 1 frame before and 2 after each
    high-motion frame; the resting run (sgacc-dlpfc) regresses the global signal."""
    img = nib.load(files.bold)
    mask = np.asarray(nib.load(files.mask).dataobj) > 0
    t_r = ref.repetition_time(files.bold)
    conf = ref.read_confounds(files.confounds)
    rest = files.events is None
    design = ref.regression_model_design(conf, img.shape[3], t_r, files.events, dummies, global_signal=rest)
    kept = ref.kept_frames(conf, dummies, before=0 if rest else 1, after=0 if rest else 2)
    residuals = ref.regression_residuals(design[kept - dummies], ref.smoothed_masked(files.bold, mask)[kept])
    gm = ref.grey_matter(img)
    if files.events is None:
        seed = ref.sphere_seed(residuals, img, mask, gm, ref.SGACC, 10.0)
        states = {"rest": np.ones(len(kept), dtype=bool)}
    else:
        seed = ref.core_seed(residuals, img, mask, gm)
        states = {s: ref.block_frames(files.events, kept, t_r, s) for s in ("rumination", "distraction")}
    maps = {}
    for state, sel in states.items():
        maps[state] = np.zeros(mask.shape)
        maps[state][mask] = ref.zmap(residuals[sel], seed[sel])
    return maps, {s: int(sel.sum()) for s, sel in states.items()}, kept


CASES = {"rumination-dmpfc": "rumination", "sgacc-dlpfc": "rest"}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    """A protocol in the regression model and its sample run."""
    return request.param, _run_files(CASES[request.param]), load_protocol(request.param, ["clean.filter=cosine"])


@pytest.fixture(scope="module")
def batch(case):
    _, files, protocol = case
    return plan(Selection([(files, "rest" if files.events is None else None)], None, None, []), protocol)


@pytest.fixture(scope="module")
def streamed(case):
    """The stream fed every volume of the run, and its layout."""
    _, files, protocol = case
    return _stream(files, protocol)


@pytest.fixture(scope="module")
def direct(case):
    """The direct computation: maps, frames per state, kept frames."""
    return _direct(case[1])


@pytest.mark.slow
def test_stream_equals_plan_at_the_last_volume(case, batch, streamed):
    protocol = case[2]
    stream, layout = streamed
    z, score = stream.brain_maps()
    ijk = tuple(layout.voxels.ijk.T)
    for s in z:
        assert np.abs(z[s] - batch.maps[f"z_{s}"][ijk]).max() < 1e-6
    if "delta" in batch.maps:
        assert np.abs(score - batch.maps["delta"][ijk]).max() < 1e-6
    # the live (search-region) readout: same numbers, same target voxel
    _, region_score, tables = stream.region_maps()
    assert np.abs(region_score - score[layout.region_cols]).max() < 1e-6
    full = np.zeros(len(layout.voxels))
    full[layout.region_cols] = region_score
    assert pick_targets(full, layout.voxels, layout.region_cols, protocol.target)[0].voxel_ijk == \
        batch.target.voxel_ijk
    for s, table in tables.items():
        for key, value in table.items():
            assert value == pytest.approx(batch.qc["subsystem_fc"][s][key], abs=1e-6)


@pytest.mark.slow
def test_stream_equals_direct_regression(case, streamed, direct):
    """Independently of `plan`: the stream's maps are the direct lstsq computation's (every voxel, every state)."""
    (stream, layout), (maps, _, kept) = streamed, direct
    z, score = stream.brain_maps()
    ijk = tuple(layout.voxels.ijk.T)
    assert set(z) == set(maps)
    for state, values in z.items():
        assert np.abs(values - maps[state][ijk]).max() < DIRECT_TOLERANCE, state
        assert np.abs(maps[state][ijk]).max() > 0.5  # not a trivially small map
    if case[0] == "rumination-dmpfc":
        assert np.abs(score - (maps["rumination"] - maps["distraction"])[ijk]).max() < DIRECT_TOLERANCE
    # every kept frame was added once, in order; dummies and scrubbed frames were not
    assert stream.frames_added == list(kept)
    if case[0] == "rumination-dmpfc":  # the frame before each high-motion frame was added, then taken out again
        assert stream.censored_after_the_fact and not set(stream.censored_after_the_fact) & set(kept)


@pytest.mark.slow
def test_plan_regression_model_equals_direct_regression(case, batch, direct):
    maps, counts, _ = direct
    mask = batch.masks["brain"]
    for state, values in maps.items():
        assert np.abs(batch.maps[f"z_{state}"][mask] - values[mask]).max() < DIRECT_TOLERANCE, state
    if "delta" in batch.maps:
        delta = maps["rumination"] - maps["distraction"]
        assert np.abs(batch.maps["delta"][mask] - delta[mask]).max() < DIRECT_TOLERANCE
    assert batch.qc["frames_per_state"] == counts
    expected = {"rumination-dmpfc": {"rumination": 71, "distraction": 90}, "sgacc-dlpfc": {"rest": 137}}
    assert counts == expected[case[0]]


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


@pytest.mark.slow
def test_readout_mid_run_equals_plan_on_the_volumes_so_far(tmp_path):
    """Without band regressors the model does not depend on the run length: after volume k the stream is plan on k."""
    protocol = load_protocol("rumination-dmpfc", ["clean.filter=cosine", "clean.high_pass_hz=0",
                                                  "clean.low_pass_hz=0", "clean.task_regressors=boxcar"])
    files = _run_files("rumination")
    k = 170
    batch = plan(Selection([(_truncated_run(tmp_path, files, k), None)], None, None, []), protocol)
    stream, layout = _stream(files, protocol, until=k)
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
        expected = signal.clean(data, detrend=True, standardize=None, confounds=confounds, filter="cosine",
                                high_pass=0.01, t_r=t_r)
    assert np.abs(ours - expected).max() < 1e-8


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
