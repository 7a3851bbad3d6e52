"""The live stability verdict and drift windows of `tmstarget watch` (hand-made target histories)."""

from types import SimpleNamespace

import numpy as np

from tmstarget.realtime.watch import Watcher


def _watcher(history, t_r=2.0, stable_mm=2.0, stable_minutes=5.0):
    w = Watcher.__new__(Watcher)  # the verdict needs only the history, the TR and the rule
    w.history = [(v, np.asarray(xyz, dtype=float)) for v, xyz in history]
    w.setup = {"t_r_s": t_r}
    w.opts = SimpleNamespace(stable_mm=stable_mm, stable_minutes=stable_minutes)
    return w


def test_settling_until_the_target_has_existed_for_the_window():
    # 4 minutes of a perfectly still target at TR 2 s: 120 volumes, shorter than the 5-minute window
    w = _watcher([(v, [0, 0, 0]) for v in range(60, 180)])
    s = w._stability()
    assert s["verdict"] == "settling"
    assert s["drift_mm"] == {"1min": 0.0, "2min": 0.0, "5min": None}


def test_stable_only_when_every_target_of_the_window_is_close():
    still = [(v, [0, 0, 0]) for v in range(0, 200)]
    assert _watcher(still)._stability()["verdict"] == "stable"
    # one jump of 3 mm four minutes ago (inside the 5-minute window, outside the 2-minute one)
    jumped = [(v, [3.0, 0, 0] if v == 200 - 120 else [0, 0, 0]) for v in range(0, 200)]
    s = _watcher(jumped)._stability()
    assert s["verdict"] == "moving"
    assert s["drift_mm"]["5min"] == 3.0 and s["drift_mm"]["2min"] == 0.0
    # the same jump six minutes ago is outside every window
    old = [(v, [3.0, 0, 0] if v == 10 else [0, 0, 0]) for v in range(0, 200)]
    assert _watcher(old)._stability()["verdict"] == "stable"


def test_windows_count_minutes_not_volumes():
    # a jump 200 volumes ago: inside 5 minutes at TR 1 s (300 volumes), outside at TR 2 s (150 volumes)
    history = [(v, [0, 2.5, 0] if v == 100 else [0, 0, 0]) for v in range(0, 301)]
    assert _watcher(history, t_r=1.0)._stability()["verdict"] == "moving"
    assert _watcher(history, t_r=2.0)._stability()["verdict"] == "stable"
    # at TR 0.5 s the 301 volumes are 2.5 minutes: too short to judge
    assert _watcher(history, t_r=0.5)._stability()["verdict"] == "settling"


def test_watch_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    from tmstarget.cli import main

    out = tmp_path / "watch-out"
    code = main(["watch", str(tmp_path / "incoming"), "--t1", str(tmp_path / "missing_T1w.nii.gz"),
                 "--protocol", "sgacc-dlpfc", "--expected-volumes", "100", "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and "T1 not found" in err[0] and "missing_T1w.nii.gz" in err[0]
    assert not out.exists()
    code = main(["watch", str(tmp_path / "incoming"), "--t1", str(tmp_path), "--protocol", "rumination-dmpfc",
                 "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "--events" in err[0]
    assert not out.exists()
