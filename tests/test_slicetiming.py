"""Slice-timing correction against analytic signals (a sinusoid and a ramp sampled at each slice's time)."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tmstarget.anatomy.slicetiming import slice_time_correct
from tmstarget.cli.main import main
from tmstarget.errors import InputError
from tmstarget.ingest.native import NativeRun
from tmstarget.workflows.native import prepare_native

TR_S = 2.0
N_SLICES = 24
N_VOLUMES = 100
#: Interleaved ascending (even slices first), each slice at the middle of its slot: all in (0, TR).
SLICE_TIMES_S = np.empty(N_SLICES)
SLICE_TIMES_S[np.r_[0:N_SLICES:2, 1:N_SLICES:2]] = (np.arange(N_SLICES) + 0.5) * TR_S / N_SLICES
AMPLITUDE = 3.0


def signal(t_s, freq_hz=0.05):
    """Offset + drift + sinusoid (phase 0.3 rad), a continuous function of time."""
    return 100.0 + 0.02 * t_s + AMPLITUDE * np.sin(2 * np.pi * freq_hz * t_s + 0.3)


def sampled(freq_hz=0.05, slice_axis=2, shape_xy=(3, 2)):
    """Slice z of volume n holds ``signal(n * TR + SLICE_TIMES_S[z])``."""
    t = np.arange(N_VOLUMES) * TR_S
    data = np.empty(shape_xy + (N_SLICES, N_VOLUMES))
    for z, s in enumerate(SLICE_TIMES_S):
        data[:, :, z] = signal(t + s, freq_hz)
    return np.moveaxis(data, 2, slice_axis)


def error_by_volume(corrected, reference_s, freq_hz=0.05, slice_axis=2):
    """Largest |corrected - signal at n * TR + reference| per volume, in units of the amplitude."""
    expected = signal(np.arange(N_VOLUMES) * TR_S + reference_s, freq_hz)
    return np.abs(np.moveaxis(corrected, slice_axis, 2) - expected).max(axis=(0, 1, 2)) / AMPLITUDE


# Tolerances (fraction of the amplitude). The Fourier shift is exact for a periodic band-limited series;
# what remains comes from the ends, where a real series is extended (see slice_time_correct, Notes): measured
# 2e-4 (0.05 Hz) and 1e-3 (0.1 Hz) ten volumes from either end, 8e-2 and 0.4 on the two end volumes, which are
# extrapolated by up to half a TR. The bounds below leave a factor ~2-3; a shift the wrong way is off by
# 2 sin(pi f |2 dt|), i.e. 0.3-0.6 of the amplitude at 0.05 Hz for most slices, far above them.
INTERIOR_TOL = {0.05: 5e-4, 0.1: 3e-3}
EDGE_TOL = {0.05: 0.15}


@pytest.mark.parametrize("freq_hz", [0.05, 0.1])
def test_sinusoid_is_moved_to_the_middle_of_the_tr(freq_hz):
    corrected = slice_time_correct(sampled(freq_hz), SLICE_TIMES_S, TR_S)
    err = error_by_volume(corrected, TR_S / 2, freq_hz)
    assert err[10:-10].max() < INTERIOR_TOL[freq_hz], err[10:-10].max()
    if freq_hz in EDGE_TOL:
        assert err.max() < EDGE_TOL[freq_hz], err.max()


def test_a_shift_the_wrong_way_fails():
    """Slice times mirrored about the reference give every slice the opposite shift (a sign error)."""
    data = sampled()
    wrong = slice_time_correct(data, TR_S - SLICE_TIMES_S, TR_S)
    err = error_by_volume(wrong, TR_S / 2)
    assert err[10:-10].max() > 100 * INTERIOR_TOL[0.05]
    # and the uncorrected data fail too: the correction is not a no-op
    assert error_by_volume(data.astype(np.float32), TR_S / 2)[10:-10].max() > 100 * INTERIOR_TOL[0.05]


def test_reference_time_and_slice_axis():
    data = sampled(slice_axis=0, shape_xy=(2, 3)).astype(np.float32)
    corrected = slice_time_correct(data, SLICE_TIMES_S, TR_S, reference_s=0.3, slice_axis=0)
    assert corrected.shape == data.shape and corrected.dtype == np.float32
    assert error_by_volume(corrected, 0.3, slice_axis=0)[10:-10].max() < INTERIOR_TOL[0.05]


def test_a_ramp_is_exact_to_the_end_volumes():
    """A linear signal is removed as the trend and put back at the shifted times: no edge error."""
    t = np.arange(N_VOLUMES) * TR_S
    data = np.stack([5.0 + 0.7 * (t + s) for s in SLICE_TIMES_S])[None, None]  # (1, 1, Z, T)
    corrected = slice_time_correct(data, SLICE_TIMES_S, TR_S)
    np.testing.assert_allclose(corrected[0, 0], np.broadcast_to(5.0 + 0.7 * (t + 1.0), (N_SLICES, N_VOLUMES)),
                               atol=1e-9)


def test_slice_at_the_reference_is_unchanged():
    data = sampled()
    corrected = slice_time_correct(data, np.full(N_SLICES, 0.7), TR_S, reference_s=0.7)
    np.testing.assert_array_equal(corrected, data)


@pytest.mark.parametrize("kwargs, match", [
    ({"slice_times_s": SLICE_TIMES_S[:-1]}, "one time per slice"),
    ({"slice_times_s": SLICE_TIMES_S + TR_S}, r"\[0, TR"),
    ({"t_r_s": 0.0}, "positive"),
    ({"reference_s": 2.5}, "reference time"),
    ({"slice_axis": 3}, "slice_axis"),
])
def test_bad_arguments_are_refused(kwargs, match):
    args = {"slice_times_s": SLICE_TIMES_S, "t_r_s": TR_S, **kwargs}
    with pytest.raises(InputError, match=match):
        slice_time_correct(sampled(), **args)


def test_a_3d_image_is_refused():
    with pytest.raises(InputError, match="4-D"):
        slice_time_correct(np.zeros((4, 4, N_SLICES)), SLICE_TIMES_S, TR_S)


SAMPLE_T1 = (Path(__file__).resolve().parents[1] / "sample_data" / "derivatives" / "fmriprep" / "sub-01" / "anat"
             / "sub-01_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz")


def _write_run_and_t1(folder, sidecar=None):
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    run = folder / "bold.nii.gz"
    nib.save(nib.Nifti1Image(sampled(shape_xy=(6, 5)).astype(np.float32), affine), run)
    if sidecar is not None:
        (folder / "bold.json").write_text(json.dumps(sidecar))
    # a real head: the T1 checks (whole head, scalp) run before the runs' sidecars are read for slice timing
    return NativeRun(run, "rest", "rest_run-1"), SAMPLE_T1


def test_prepare_native_needs_slice_timing_in_the_sidecar(tmp_path):
    run, t1 = _write_run_and_t1(tmp_path, sidecar={"RepetitionTime": TR_S})
    with pytest.raises(InputError, match="SliceTiming"):
        prepare_native([run], t1, tmp_path / "work", "01", slice_timing=True)


def test_sidecar_slice_encoding_direction_reversed():
    """BIDS: with SliceEncodingDirection k- the first SliceTiming entry is the last slice."""
    from tmstarget.anatomy.slicetiming import sidecar_slice_timing

    data = sampled().astype(np.float32)
    meta = {"RepetitionTime": TR_S, "SliceTiming": list(SLICE_TIMES_S[::-1]), "SliceEncodingDirection": "k-"}
    times, axis = sidecar_slice_timing(meta)
    assert axis == 2 and times == list(SLICE_TIMES_S)
    corrected = slice_time_correct(data, times, TR_S, slice_axis=axis)
    assert error_by_volume(corrected, TR_S / 2)[10:-10].max() < INTERIOR_TOL[0.05]


def test_slice_timing_flag_is_for_raw_runs_only(tmp_path, capsys):
    sample = Path(__file__).resolve().parents[1] / "sample_data"
    code = main(["plan", str(sample), "--participant", "01", "--slice-timing", "--output", str(tmp_path / "out")])
    assert code == 1
    assert "--slice-timing is for raw runs" in capsys.readouterr().err
