"""tmstarget compare: tables against hand computations, resumption, a broken participant, planted targets."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tmstarget
from tmstarget.cli.main import main
from tmstarget.research import tables as tb
from tmstarget.testing.patient import SyntheticConfig, make_patient


def _record(participant, protocol, xyz, split=None, boot=None, significant=None, status="ok", points=()):
    x, y, z = xyz if xyz is not None else (None, None, None)
    return {"participant": participant, "protocol": protocol, "x_mni": x, "y_mni": y, "z_mni": z, "score": None,
            "p_fwe": None, "significant": significant, "split_half_mm": split, "bootstrap_spread_mm": boot,
            "mean_fd_mm": None, "usable_minutes": None, "status": status, "data_length": list(points)}


def _point(minutes, xyz, significant=True, split=None, status="ok"):
    x, y, z = xyz if xyz is not None else (None, None, None)
    return {"minutes": minutes, "x_mni": x, "y_mni": y, "z_mni": z, "p_fwe": None, "significant": significant,
            "split_half_mm": split, "bootstrap_spread_mm": None, "status": status}


@pytest.fixture(scope="module")
def hand_tables():
    records = [
        _record("a", "P", (0, 0, 0), split=2, boot=1, significant=True,
                points=[_point(5, (0, 0, 1), True, 6), _point(10, (0, 0, 0), True, 2)]),
        _record("b", "P", (3, 4, 0), split=4, boot=1, significant=False,
                points=[_point(5, (3, 4, 0), False, 8), _point(10, (3, 4, 0), True, 1)]),
        _record("c", "P", (0, 0, 12), split=10, boot=1, significant=True,
                points=[_point(5, None, None, None, "failed: too few volumes")]),
        _record("a", "Q", (0, 0, 0), split=1, significant=True),
        _record("b", "Q", (0, 0, 0), split=3, significant=True),
        _record("c", "Q", None, status="failed: x"),
    ]
    targets = tb.targets_table(records, ["P", "Q"])
    distances = tb.distances_table(targets, ["P", "Q"])
    points = tb.data_length_points_table(records, targets)
    return {"targets": targets, "distances": distances, "summary": tb.summary_table(targets, distances, ["P", "Q"]),
            "points": points, "data_length": tb.data_length_table(points, ["P", "Q"])}


def _summary(summary, name, measure):
    row = summary[(summary["name"] == name) & (summary["measure"] == measure)]
    assert len(row) == 1
    return row.iloc[0]


def test_distances_and_pair_summary_by_hand(hand_tables):
    d = hand_tables["distances"]
    assert list(d["participant"]) == ["a", "b", "c"]
    assert d["distance_mm"].iloc[0] == 0.0
    assert d["distance_mm"].iloc[1] == pytest.approx(5.0)  # (3, 4, 0) from (0, 0, 0)
    assert np.isnan(d["distance_mm"].iloc[2])  # Q failed for c
    pair = _summary(hand_tables["summary"], "P vs Q", "distance_mm")
    # distances 0 and 5: median 2.5, quartiles 1.25 and 3.75 (linear interpolation)
    assert (pair["n"], pair["failures"]) == (2, 1)
    assert (pair["median"], pair["q1"], pair["q3"], pair["iqr"]) == pytest.approx((2.5, 1.25, 3.75, 2.5))


def test_strategy_summary_and_spread_ratio_by_hand(hand_tables):
    s = hand_tables["summary"]
    split = _summary(s, "P", "split_half_mm")
    assert (split["median"], split["q1"], split["q3"], split["iqr"]) == pytest.approx((4, 3, 7, 4))  # of 2, 4, 10
    between = _summary(s, "P", "between_person_mm")
    # centroid of (0,0,0), (3,4,0), (0,0,12) is (1, 4/3, 4)
    by_hand = sorted([math.sqrt(1 + 16 / 9 + 16), math.sqrt(4 + 64 / 9 + 16), math.sqrt(1 + 16 / 9 + 64)])
    assert between["median"] == pytest.approx(by_hand[1])
    assert _summary(s, "P", "between_within_ratio")["value"] == pytest.approx(by_hand[1] / 4.0)
    assert _summary(s, "P", "significant_share")["value"] == pytest.approx(2 / 3)
    q = _summary(s, "Q", "between_person_mm")
    assert (q["n"], q["failures"], q["median"]) == (2, 1, 0.0)
    assert _summary(s, "Q", "between_within_ratio")["value"] == 0.0  # both at the centroid; split halves 1 and 3


def test_data_length_by_hand(hand_tables):
    dl = hand_tables["data_length"].set_index(["protocol", "minutes"])
    five = dl.loc[("P", 5.0)]
    # a: 1 mm from its full-data target, b: 0 mm; c failed at 5 min
    assert (five["n"], five["failures"]) == (2, 1)
    assert five["distance_median_mm"] == pytest.approx(0.5)
    assert five["distance_iqr_mm"] == pytest.approx(0.5)
    assert five["significant_share"] == pytest.approx(0.5)
    assert five["split_half_median_mm"] == pytest.approx(7.0)
    ten = dl.loc[("P", 10.0)]
    assert (ten["n"], ten["distance_median_mm"], ten["significant_share"]) == (2, 0.0, 1.0)
    assert ("Q", 5.0) not in dl.index


def test_tables_written_as_tsv(tmp_path, hand_tables):
    tb.write_tsv(hand_tables["distances"], tmp_path / "distances.tsv")
    text = (tmp_path / "distances.tsv").read_text()
    assert text.splitlines()[0] == "participant\tprotocol_a\tprotocol_b\tdistance_mm"
    assert text.splitlines()[3].endswith("\tn/a")
    assert [p.name for p in tmp_path.iterdir()] == ["distances.tsv"]  # no temporary file left


def test_truncate_run_cuts_frames_confounds_and_events_together():
    import nibabel as nib

    from tmstarget.ingest.runs import Run, truncate_run

    data = np.arange(2 * 2 * 2 * 10, dtype=np.float32).reshape(2, 2, 2, 10)
    events = pd.DataFrame({"onset": [0.0, 8.0, 14.0], "duration": [8.0, 8.0, 6.0],
                           "trial_type": ["rumination", "distraction", "rumination"]})
    run = Run("task-x", None, nib.Nifti1Image(data, np.eye(4)), 2.0, pd.DataFrame({"trans_x": np.arange(10.0)}),
              events, {"bold": Path("x_bold.nii.gz")}, 1.0)
    cut = truncate_run(run, 6)  # 12 s of a 20 s run
    assert cut.n_volumes == 6 and np.array_equal(np.asarray(cut.img.dataobj), data[..., :6])
    assert list(cut.confounds["trans_x"]) == [0, 1, 2, 3, 4, 5]
    # the first block stays, the second (8-16 s) is cut at 12 s, the third (from 14 s) is gone
    assert cut.events.to_dict("list") == {"onset": [0.0, 8.0], "duration": [8.0, 4.0],
                                          "trial_type": ["rumination", "distraction"]}
    assert (cut.t_r, cut.frame_offset_s, cut.label) == (2.0, 1.0, "task-x")
    assert len(run.events) == 3 and run.n_volumes == 10  # the full run is untouched


def test_progress_bar_counts_participant_protocols_and_estimates_from_this_run():
    import io

    from tmstarget.cli.compare import ProgressBar

    stream = io.StringIO()
    bar = ProgressBar(stream, width=10)
    bar(2, 8)  # 2 already finished by an earlier run: no estimate yet
    bar.start -= 30.0  # 30 s later, 2 more done: 4 left at 15 s each
    bar(4, 8)
    first, second = stream.getvalue().splitlines()
    assert first.startswith("[##........] 2/8 participant x protocol") and first.endswith("remaining ~?")
    assert second.startswith("[#####.....] 4/8") and "elapsed 0:30" in second and second.endswith("remaining ~1:00")


# --- end to end on synthetic participants -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    """Two small synthetic participants (5 min of rest); sub-02's rest BOLD is truncated (a damaged download)."""
    root = tmp_path_factory.mktemp("compare") / "ds"
    for i, label in enumerate(("01", "02")):
        make_patient(root, SyntheticConfig(n_rest=150, n_task=0, participant=label, seed=40 + i))
    bold = next((root / "derivatives" / "fmriprep" / "sub-02" / "func").glob("*task-rest*_bold.nii.gz"))
    data = bold.read_bytes()
    bold.write_bytes(data[: len(data) // 2])
    return root


def _mtimes(folder):
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_compare_cli_broken_participant_resume_and_force(small_dataset, tmp_path, monkeypatch):
    from tmstarget.analysis import engine
    from tmstarget.research import jobs

    cleanings, sent = [], []
    real_prepare, real_job = engine.prepare, jobs.run_participant
    monkeypatch.setattr(engine, "prepare", lambda selection, protocols, *a, **k: (
        cleanings.append(tuple(p.name for p in protocols)) or real_prepare(selection, protocols, *a, **k)))
    monkeypatch.setattr(jobs, "run_participant", lambda job: sent.append((job.participant, job.protocols))
                        or real_job(job))
    out = tmp_path / "out"
    argv = ["compare", str(small_dataset), "--protocols", "sgacc-dlpfc,dmn-dlpfc,5cm-rule", "--output", str(out),
            "--jobs", "1", "--minutes", "none", "-q"]
    status = main(argv)
    assert status == 2  # sub-02's two connectivity results failed; its fixed target did not need the BOLD
    targets = pd.read_csv(out / "targets.tsv", sep="\t", dtype={"participant": str})
    assert len(targets) == 6
    failed = targets[targets["status"] != "ok"]
    assert sorted(failed["protocol"]) == ["dmn-dlpfc", "sgacc-dlpfc"] and set(failed["participant"]) == {"02"}
    assert all(s.startswith("failed: sub-02_task-rest") and "truncated" in s for s in failed["status"])
    assert (targets[targets["participant"] != "02"]["status"] == "ok").all()
    # sgacc-dlpfc regresses the global signal, dmn-dlpfc does not: two cleanings (sub-02's runs never loaded)
    assert sorted(cleanings) == [("dmn-dlpfc",), ("sgacc-dlpfc",)]
    # each row is its plan folder's target (the normal plan layout, readable by load_plan)
    for row in targets[targets["status"] == "ok"].itertuples():
        plan = tmstarget.load_plan(out / "participants" / f"sub-{row.participant}" / row.protocol)
        assert plan.target.mni_mm == pytest.approx([row.x_mni, row.y_mni, row.z_mni], abs=1e-4)
    summary = pd.read_csv(out / "summary.tsv", sep="\t")
    assert _summary(summary, "sgacc-dlpfc", "split_half_mm")["failures"] == 1
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")

    before = _mtimes(out / "participants" / "sub-01")
    sent.clear()
    cleanings.clear()
    assert main(argv) == 2
    assert _mtimes(out / "participants" / "sub-01") == before  # finished work skipped
    assert sent == [("02", ("sgacc-dlpfc", "dmn-dlpfc"))] and cleanings == []  # only the failed results retried
    again = pd.read_csv(out / "targets.tsv", sep="\t", dtype={"participant": str})
    timing = [c for c in targets.columns if c.endswith("_s")]
    pd.testing.assert_frame_equal(again.drop(columns=timing), targets.drop(columns=timing))

    sent.clear()
    assert main(argv + ["--force"]) == 2
    assert [job[0] for job in sent] == ["01", "02"] and len(cleanings) == 2
    record = out / "participants" / "sub-01" / "sgacc-dlpfc.result.json"
    assert record.stat().st_mtime_ns > before["sgacc-dlpfc.result.json"]
    assert json.loads(record.read_text())["status"] == "ok"


@pytest.mark.slow
def test_rest_protocols_with_the_same_cleaning_share_it(small_dataset, tmp_path, monkeypatch):
    from tmstarget.analysis import engine

    calls = []
    real_prepare = engine.prepare
    monkeypatch.setattr(engine, "prepare", lambda selection, protocols, *a, **k: (
        calls.append(tuple(p.name for p in protocols)) or real_prepare(selection, protocols, *a, **k)))
    tables = tmstarget.compare(small_dataset, ["rest-dmpfc", "dmn-dlpfc"], tmp_path / "out", participants=["01"],
                               n_jobs=1, minutes=(), report=False)
    assert calls == [("rest-dmpfc", "dmn-dlpfc")]  # read and cleaned once for both
    alone = tmstarget.plan(small_dataset, participant="01", protocol="dmn-dlpfc")
    row = tables["targets"].set_index("protocol").loc["dmn-dlpfc"]
    assert [row.x_mni, row.y_mni, row.z_mni] == pytest.approx(alone.target.mni_mm, abs=1e-4)
    assert row.split_half_mm == pytest.approx(alone.qc["stability"]["split_half_distance_mm"])
    assert row.p_fwe == pytest.approx(alone.qc["inference"]["p_fwe"])
    shared = tmstarget.load_plan(tmp_path / "out" / "participants" / "sub-01" / "dmn-dlpfc")
    assert shared.qc["runs"] == alone.qc["runs"]  # tSNR of its own region and seed, motion, frames
    assert shared.maps["z_rest"].get_fdata() == pytest.approx(alone.maps["z_rest"].get_fdata())


def test_unknown_participant_is_one_line_error(tmp_path, capsys):
    for label in ("01", "02"):
        (tmp_path / "ds" / "derivatives" / "fmriprep" / f"sub-{label}").mkdir(parents=True)
    assert main(["compare", str(tmp_path / "ds"), "--protocols", "5cm-rule", "--output", str(tmp_path / "o"),
                 "--participants", "09"]) == 1
    err = capsys.readouterr().err
    assert "participant(s) 09" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_planted_targets_found_and_split_half_shrinks_with_minutes(tmp_path):
    root = tmp_path / "ds"
    truth = None
    for i, label in enumerate(("01", "02", "03")):
        truth = make_patient(root, SyntheticConfig(n_rest=450, n_task=0, participant=label, seed=20 + i,
                                                   noise_percent=4.0))
    # two worker processes; the two protocols share their cleaning (at full length and at 5 minutes)
    tables = tmstarget.compare(root, ["rest-dmpfc", "dmn-dlpfc"], tmp_path / "out", n_jobs=2,
                               minutes=(5, 15), report=False)
    targets = tables["targets"]
    assert (targets["status"] == "ok").all()
    for protocol in ("rest-dmpfc", "dmn-dlpfc"):
        spot = truth["expected_targets"][protocol]
        planted = np.array(truth["spots"][spot]["mni_mm"])
        rows = targets[targets["protocol"] == protocol]
        found = np.linalg.norm(rows[["x_mni", "y_mni", "z_mni"]].to_numpy() - planted, axis=1)
        assert (found <= 8.0).all(), (protocol, found)
    points = tables["data_length_targets"]
    mean_split = points.groupby("minutes")["split_half_mm"].mean()
    assert list(mean_split.index) == [5.0, 15.0]
    assert mean_split[15.0] < mean_split[5.0], mean_split
    dl = tables["data_length"].set_index(["protocol", "minutes"])
    assert (dl.xs(15.0, level="minutes")["distance_median_mm"] == 0).all()  # 15 min is all the data

