"""The live stability verdict and drift windows of `tmstarget watch` (hand-made target histories)."""

from tmstarget.realtime.watch import target_stability


def _verdict(history, t_r=2.0, stable_mm=2.0, stable_minutes=5.0):
    return target_stability(history, t_r, stable_mm, stable_minutes)


def test_no_target_yet_needs_no_repetition_time():
    s = target_stability([], None, 2.0, 5.0)
    assert s["verdict"] == "no target yet" and s["drift_mm"] == {"1min": None, "2min": None, "5min": None}


def test_settling_until_the_target_has_existed_for_the_window():
    # 4 minutes of a perfectly still target at TR 2 s: 120 volumes, shorter than the 5-minute window
    s = _verdict([(v, [0, 0, 0]) for v in range(60, 180)])
    assert s["verdict"] == "settling"
    assert s["drift_mm"] == {"1min": 0.0, "2min": 0.0, "5min": None}


def test_stable_only_when_every_target_of_the_window_is_close():
    still = [(v, [0, 0, 0]) for v in range(0, 200)]
    assert _verdict(still)["verdict"] == "stable"
    # one jump of 3 mm four minutes ago (inside the 5-minute window, outside the 2-minute one)
    jumped = [(v, [3.0, 0, 0] if v == 200 - 120 else [0, 0, 0]) for v in range(0, 200)]
    s = _verdict(jumped)
    assert s["verdict"] == "moving"
    assert s["drift_mm"]["5min"] == 3.0 and s["drift_mm"]["2min"] == 0.0
    # the same jump six minutes ago is outside every window
    old = [(v, [3.0, 0, 0] if v == 10 else [0, 0, 0]) for v in range(0, 200)]
    assert _verdict(old)["verdict"] == "stable"


def test_windows_count_minutes_not_volumes():
    # a jump 200 volumes ago: inside 5 minutes at TR 1 s (300 volumes), outside at TR 2 s (150 volumes)
    history = [(v, [0, 2.5, 0] if v == 100 else [0, 0, 0]) for v in range(0, 301)]
    assert _verdict(history, t_r=1.0)["verdict"] == "moving"
    assert _verdict(history, t_r=2.0)["verdict"] == "stable"
    # at TR 0.5 s the 301 volumes are 2.5 minutes: too short to judge
    assert _verdict(history, t_r=0.5)["verdict"] == "settling"


def test_watch_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    from tmstarget.cli.main import main

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
