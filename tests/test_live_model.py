"""The watcher's live model (issue 21), its degrees-of-freedom floor, and what the watcher shows (issue 14, 7-8).

References: the residual degrees of freedom per state from the design built independently
(``nilearn_reference``: DCT-II cosines, Friston-24 and WM/CSF of the sample's confounds, nilearn's SPM-HRF
block regressors, the published block rule) and ``numpy.linalg.matrix_rank``; ``live.json`` read back from
disk by another thread while the writer is busy.
"""

import io
import json
import re
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nilearn_reference as ref
from tmstarget.analysis.streaming import live_effective_dof, live_protocol
from tmstarget.cli.main import main
from tmstarget.cli.realtime import LiveDisplay
from tmstarget.errors import InputError
from tmstarget.protocol import load_protocol
from tmstarget.realtime.live import LiveFile, live_line

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
FUNC = SAMPLE / "derivatives" / "fmriprep" / "sub-01" / "func"
EVENTS = SAMPLE / "sub-01" / "func" / "sub-01_task-rumination_events.tsv"
CONFOUNDS = FUNC / "sub-01_task-rumination_desc-confounds_timeseries.tsv"
ANAT = SAMPLE / "derivatives" / "fmriprep" / "sub-01" / "anat"
T1 = ANAT / "sub-01_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz"
N_VOLUMES, T_R, DUMMIES = 200, 2.0, 5


def test_live_model_is_a_cosine_high_pass_recorded_as_overrides():
    live = live_protocol(load_protocol("rumination-dmpfc"))
    assert live.clean.filter == "cosine" and live.clean.high_pass_hz == 0.01 and live.clean.low_pass_hz == 0.0
    assert live.overrides == {"clean.filter": "cosine", "clean.low_pass_hz": 0.0}
    assert live_protocol(live).overrides == live.overrides  # idempotent (a resumed watch)
    insisting = live_protocol(load_protocol("rumination-dmpfc", ["live.low_pass_hz=0.1"]))
    assert insisting.clean.low_pass_hz == 0.1
    with pytest.raises(InputError, match="live.low_pass_hz instead"):
        live_protocol(load_protocol("rumination-dmpfc", ["clean.low_pass_hz=0.08"]))
    with pytest.raises(InputError, match="clean.filter must be cosine"):
        live_protocol(load_protocol("rumination-dmpfc", ["clean.filter=butterworth"]))


def _direct_effective_dof(design, rows):
    """Bartlett's effective DOF of a correlation between two series of cleaned white noise, from the definition:
    residual-forming matrix R = I - X pinv(X), covariance at the state's frames S = R_s R_s', centred
    C S C; var0(r) = tr((C S C)^2) / tr(C S C)^2; N_eff = 1 + 1 / var0(r)."""
    residual = np.eye(len(design)) - design @ np.linalg.pinv(design)
    cov = residual[rows] @ residual[rows].T
    centre = np.eye(len(cov)) - 1.0 / len(cov)
    ccc = centre @ cov @ centre
    return 1.0 + np.trace(ccc) ** 2 / np.sum(ccc * ccc)


@pytest.mark.parametrize("low_pass_hz", [0.0, 0.1])
def test_live_effective_dof_is_close_to_the_direct_figure_with_the_real_confounds(low_pass_hz):
    """Before the run the confounds are stood in for; with the sample's real ones the figure moves < 20 %."""
    protocol = live_protocol(load_protocol("rumination-dmpfc", [f"live.low_pass_hz={low_pass_hz}"]))
    found = live_effective_dof(protocol, T_R, N_VOLUMES, events=pd.read_csv(EVENTS, sep="\t"))
    conf = ref.read_confounds(CONFOUNDS)
    design = ref.regression_model_design(conf, N_VOLUMES, T_R, EVENTS, DUMMIES, 0.01, low_pass_hz or np.inf)
    frames = np.arange(DUMMIES, N_VOLUMES)
    for state in ("rumination", "distraction"):
        direct = _direct_effective_dof(design, ref.block_frames(EVENTS, frames, T_R, state))
        assert abs(found[state] - direct) < 0.2 * direct, (state, found[state], direct)
    if low_pass_hz:
        assert max(found.values()) < 35  # ~116 band regressors: a third of the ~90 frames per state is left
    else:
        assert min(found.values()) > 70


def test_rest_run_without_cleaning_keeps_its_frame_count():
    """No regressor at all: the effective DOF is the number of frames (white noise)."""
    protocol = live_protocol(load_protocol("sgacc-dlpfc", ["clean.high_pass_hz=0", "clean.detrend=false",
                                                           "clean.motion=none", "clean.wm_csf=false"]))
    assert live_effective_dof(protocol, 2.0, 120, run_state="rest") == {"rest": pytest.approx(115.0, abs=1.5)}


def test_watch_refuses_a_live_low_pass_leaving_too_few_dof(tmp_path, capsys):
    """A protocol insisting on the 0.01-0.1 Hz band in the live model: refused at start, saying how many remain."""
    toml = (Path(__file__).resolve().parents[1] / "protocols" / "rumination-dmpfc.toml").read_text()
    protocol = tmp_path / "rumination-live-band.toml"
    protocol.write_text(toml + "\n[live]\nlow_pass_hz = 0.1\n\n[inference]\nmin_effective_dof = 40\n")
    out = tmp_path / "watch"
    code = main(["watch", str(tmp_path / "incoming"), "--t1", str(T1), "--protocol", str(protocol), "--events",
                 str(EVENTS), "--expected-volumes", str(N_VOLUMES), "--tr", "2", "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert re.search(r"leaves 2\d\.\d in state 'rumination', 2\d\.\d in state 'distraction'", err[0]), err[0]
    assert "floor of 40" in err[0] and "min_effective_dof" in err[0] and "live.low_pass_hz" in err[0]
    assert not out.exists()
    # the same protocol without its low-pass is accepted (checked only, not run: no incoming volume)
    from tmstarget.realtime.watch import WatchOptions, check_options

    opts = WatchOptions(incoming=tmp_path / "incoming", output=out, t1=T1, events=EVENTS, expected_volumes=N_VOLUMES,
                        t_r_s=2.0, protocol=load_protocol(str(protocol), ["live.low_pass_hz=0"]))
    assert check_options(opts).clean.low_pass_hz == 0.0


def _doc(processed=12, target=True, status="kept"):
    return {
        "volumes": {"processed": processed, "expected": 200, "received": processed + 1},
        "last_volume": {"volume": processed - 1, "status": status, "fd_power_mm": 0.2345, "latency_ms": 80.0},
        "target": {"ras_mm": [-10.0, 58.04, 28.0], "mni_mm": [-10.2, 57.9, 28.1]} if target else None,
        "stability": {"verdict": "settling", "drift_mm": {"1min": 1.25, "2min": None, "5min": None}},
        "waiting_for": None if target else "state 'rumination' has 10 of the 50 frames needed",
    }


def test_live_line_says_volumes_fd_target_and_verdict():
    line = live_line(_doc())
    assert line.startswith("volumes 12/200 processed, 13 received")
    assert "FD 0.23 mm" in line and "target T1w (-10.0 58.0 28.0) MNI (-10 58 28)" in line
    assert "settling, moved 1.2 mm in 1 min" in line or "settling, moved 1.3 mm in 1 min" in line
    waiting = live_line(_doc(target=False, status="scrubbed"))
    assert "(scrubbed)" in waiting and "no target yet: state 'rumination' has 10 of the 50 frames" in waiting


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_display_rewrites_in_place_on_a_tty_and_prints_lines_otherwise():
    tty, plain = _Terminal(), io.StringIO()
    for stream in (tty, plain):
        display = LiveDisplay(stream=stream)
        display.message("coregistering")
        display.volume(_doc(12))
        display.volume(_doc(13))
        display.message("finishing")
    text = tty.getvalue()
    assert text.count("\r") == 2 and "\x1b[K" in text
    assert text.split("coregistering\n", 1)[1].count("\n") == 2  # the live line, ended once before "finishing"
    lines = plain.getvalue().splitlines()
    assert "\r" not in plain.getvalue() and len(lines) == 4 and lines[1].startswith("volumes 12/200")


def test_heartbeat_refreshes_live_json_while_the_writer_is_busy(tmp_path):
    path = tmp_path / "live.json"
    live = LiveFile(path, lambda: ("registering the T1 to MNI152NLin2009cAsym", 3.0), interval_s=0.2)
    live.write({"status": "registering the T1 to MNI152NLin2009cAsym", "updated_utc": "2000-01-01T00:00:00.000+00:00",
                "volumes": {"processed": 0}})
    seen, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            seen.append(json.loads(path.read_text())["updated_utc"])
            time.sleep(0.05)

    reader = threading.Thread(target=read)
    live.start()
    reader.start()
    time.sleep(1.2)  # the "main thread" is busy: it writes nothing
    stop.set()
    reader.join()
    live.stop()
    stamps = sorted({datetime.fromisoformat(s) for s in seen})
    assert len(stamps) >= 4  # about one refresh every 0.2 s
    assert max(np.diff([s.timestamp() for s in stamps[1:]])) < 0.5
    doc = json.loads(path.read_text())
    assert doc["status"].startswith("registering") and doc["status_elapsed_s"] == 3.0


def test_isolated_call_returns_and_raises_across_the_process():
    """The registrations' child process: the value comes back, an exception is raised here, and the child
    is another process (its pid differs)."""
    import os

    from tmstarget.anatomy.ants_process import IsolatedCall

    assert IsolatedCall(os.getpid).result() != os.getpid()
    assert np.array_equal(IsolatedCall(np.linalg.inv, np.diag([2.0, 4.0])).result(), np.diag([0.5, 0.25]))
    with pytest.raises(np.linalg.LinAlgError):
        IsolatedCall(np.linalg.inv, np.zeros((2, 2))).result()


def test_plan_from_watch_bad_input_is_one_line(tmp_path, capsys):
    out = tmp_path / "replan"
    code = main(["plan", "--from-watch", str(tmp_path), "--output", str(out), "--protocol", "sgacc-dlpfc"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "not a tmstarget watch folder" in err[0] and str(tmp_path) in err[0]
    code = main(["plan", "--from-watch", str(tmp_path), "--rest-bold", str(tmp_path / "x.nii.gz"), "--output",
                 str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "drop --rest-bold" in err[0]
    assert not out.exists()
