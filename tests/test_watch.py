"""`tmstarget watch`: real-time runs replayed into a folder, faults, restart, and exactness against `plan`.

References: the streaming maps against the batch engine run afterwards on the
recorded run (`plan`, a different algorithm: one SVD projection of the whole
run), the realigned volumes against the batch motion path on the whole series
(`load_series` + `estimate_motion`), the planted spot of the synthetic
patient, and the DICOM headers' patient fields (privacy).
"""

import json
import math
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from tmstarget.errors import InputError
from tmstarget.protocol import load_protocol
from tmstarget.realtime.replay import replay
from tmstarget.realtime.watch import Watcher, WatchOptions

pytestmark = pytest.mark.slow

REAL_RUN = "pydecnef-sub1/dicom/func-run1"
REAL_T1 = "pydecnef-sub1/anat/T1w.nii.gz"
SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


class LiveReader(threading.Thread):
    """Reads live.json in a tight loop; every read must be complete JSON."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.reads, self.bad, self.stop = Path(path), 0, [], False
        self.processed = []

    def run(self):
        while not self.stop:
            try:
                text = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            try:
                doc = json.loads(text)
            except ValueError as exc:
                self.bad.append(str(exc))
                continue
            self.reads += 1
            self.processed.append(doc["volumes"]["processed"])


def _watch(incoming, out, t1, protocol, expected, events=None, replay_kwargs=None, source=None):
    """Replay ``source`` into ``incoming`` in a thread while a Watcher follows it; return (document, reader)."""
    thread = None
    if source is not None:
        thread = threading.Thread(target=replay, args=(source, incoming),
                                  kwargs={"speed": math.inf, **(replay_kwargs or {})}, daemon=True)
        thread.start()
    reader = LiveReader(out / "live.json")
    reader.start()
    opts = WatchOptions(incoming=incoming, output=out, protocol=protocol, t1=t1, events=events,
                        expected_volumes=expected, gap_timeout_s=2.0, participant="rt01", stop_after_s=120)
    try:
        document = Watcher(opts).run()
    finally:
        reader.stop = True
        reader.join()
        if thread is not None:
            thread.join()
    return document, reader


@pytest.fixture(scope="module")
def real_watch(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("watch")
    protocol = load_protocol("sgacc-dlpfc", ["clean.filter=cosine"])
    document, reader = _watch(root / "incoming", root / "out", shared_data / REAL_T1, protocol, 120,
                              source=shared_data / REAL_RUN,
                              replay_kwargs={"drop": [50], "duplicate": [60], "corrupt": [70], "delay": {80: 1.0}})
    return {"root": root, "out": root / "out", "doc": document, "reader": reader,
            "live": json.loads((root / "out" / "live.json").read_text())}


def test_live_json_is_always_whole_json(real_watch):
    reader = real_watch["reader"]
    assert reader.bad == []
    assert reader.reads > 50
    assert reader.processed == sorted(reader.processed)  # the volume count never goes back


def test_streaming_maps_equal_the_final_plan(real_watch):
    final = real_watch["live"]["final"]
    assert final["max_abs_dz_stream_vs_plan"] < 1e-6
    assert final["same_target_voxel_as_live"]
    doc = real_watch["doc"]
    assert doc["space"] == "T1w"
    assert doc["target"]["mni_mm"][0] < -20  # left DLPFC
    assert real_watch["live"]["target"]["voxel_ijk"] == doc["target"]["voxel_ijk"]


def test_live_maps_equal_the_final_plan_maps(real_watch):
    """The live whole-brain map files (rewritten every 10 volumes, last at the end) are the plan's maps."""
    out = real_watch["out"]
    assert real_watch["live"]["live_maps"]["after_volume"] == 119
    live = nib.load(out / "live_map-z_rest.nii.gz")
    final_doc = json.loads((out / "plan" / "target.json").read_text())
    final = nib.load(out / "plan" / final_doc["images"]["maps"]["z_rest"])
    assert np.allclose(live.affine, final.affine, atol=1e-4)  # both on the EPI grid in T1w world
    assert np.abs(live.get_fdata() - final.get_fdata()).max() < 1e-6


def test_faults_are_recorded_not_shifted(real_watch):
    """Dropped (50) and corrupt (70) volumes are gaps at their own index; the duplicate (60) is ignored."""
    live = real_watch["live"]
    assert live["volumes"]["processed"] == 120
    assert live["volumes"]["gaps"] == [49, 69]
    assert live["volumes"]["duplicates_ignored"] == 1
    state = real_watch["out"] / "state"
    rows = pd.read_csv(state / "frames.tsv", sep="\t")
    assert rows["volume"].tolist() == list(range(120))
    confounds = next(state.glob("*_desc-confounds_timeseries.tsv"))
    missing = pd.read_csv(confounds, sep="\t")["missing_volume"].to_numpy()
    assert np.flatnonzero(missing).tolist() == [49, 69]
    assert nib.load(state / "realigned.nii").shape[3] == 120


def test_realigned_volumes_follow_the_batch_motion_path(real_watch, shared_data):
    """Each recorded volume is the source volume of the same index, realigned as the batch path does it."""
    from tmstarget.anatomy.motion import estimate_motion, reslice_volume
    from tmstarget.ingest.dicom.series import load_series

    img, _ = load_series(shared_data / REAL_RUN)
    batch = estimate_motion(img)
    state = real_watch["out"] / "state"
    rows = pd.read_csv(state / "frames.tsv", sep="\t")
    params = rows[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].to_numpy()
    live = rows["missing"].to_numpy() == 0
    assert np.abs(params[live, :3] - batch[live, :3]).max() < 0.02
    assert np.degrees(np.abs(params[live, 3:] - batch[live, 3:])).max() < 0.02
    recorded = nib.load(state / "realigned.nii")
    data = np.asarray(img.dataobj, dtype=np.float32)
    for v in (0, 48, 50, 119):  # around the gap: a shifted volume would not match
        expected = reslice_volume(data[..., v], recorded.affine, params[v])
        assert np.abs(np.asarray(recorded.dataobj[..., v]) - expected).max() < 1e-3


def test_no_patient_identifier_in_any_output(real_watch, shared_data):
    ds = pydicom.dcmread(next((shared_data / REAL_RUN).iterdir()), stop_before_pixels=True)
    tokens = [t for t in (str(ds.get("PatientName", "")), str(ds.get("PatientID", "")),
                          str(ds.get("PatientBirthDate", ""))) if len(t) >= 4]
    assert tokens, "the shared DICOMs hold a patient name or birth date"
    for path in real_watch["out"].rglob("*"):
        if path.is_file() and path.suffix in (".json", ".tsv", ".log", ".toml", ".txt", ".csv", ".xml"):
            text = path.read_text(encoding="utf-8", errors="replace")
            for token in tokens:
                assert token not in text, f"{token!r} in {path}"
        for token in tokens:
            assert token not in path.name


def test_restart_after_kill_loses_and_repeats_nothing(real_watch, shared_data, tmp_path):
    """kill -9 mid-run, start again: every volume exactly once, and the streaming sums still equal plan.

    The last volume never arrives: after --stop-after idle seconds it is recorded as a gap, so the run keeps
    its planned 120 volumes."""
    incoming = tmp_path / "incoming"
    replay(shared_data / REAL_RUN, incoming, speed=math.inf, drop=[30, 120])  # 120: no later volume ever comes
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tmstarget.cli.main", "watch", str(incoming), "--t1", str(shared_data / REAL_T1),
           "--protocol", "sgacc-dlpfc", "--expected-volumes", "120", "--output", str(out), "--participant", "rt01",
           "--navigation", "none", "--gap-timeout", "1", "--stop-after", "3", "-q"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    processed = 0
    while time.monotonic() < deadline and first.poll() is None:
        try:
            processed = json.loads((out / "live.json").read_text())["volumes"]["processed"]
        except (FileNotFoundError, ValueError, KeyError):
            pass
        if processed >= 40:
            break
        time.sleep(0.02)
    assert processed >= 40, "the watcher did not get going"
    first.send_signal(signal.SIGKILL)
    first.wait()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(out / "state" / "frames.tsv", sep="\t")
    assert rows["volume"].tolist() == list(range(120))
    assert rows["missing"].tolist() == [1 if v in (29, 119) else 0 for v in range(120)]
    assert nib.load(out / "state" / "realigned.nii").shape[3] == 120
    live = json.loads((out / "live.json").read_text())
    assert live["final"]["max_abs_dz_stream_vs_plan"] < 1e-6
    assert "resuming" in (out / "watch.log").read_text() or "resumed" in (out / "watch.log").read_text()


def test_bad_requests_fail_before_anything_is_written(tmp_path):
    protocol = load_protocol("rumination-dmpfc", ["clean.filter=cosine"])
    t1 = SAMPLE / "derivatives" / "fmriprep" / "sub-01" / "anat"
    t1 = next(t1.glob("*T1w.nii.gz"))
    cases = [
        ({"expected_volumes": 200}, "needs the states"),  # a task protocol without --events
        ({"events": SAMPLE / "sub-01" / "func" / "sub-01_task-rumination_events.tsv"}, "--expected-volumes"),
    ]
    for kwargs, message in cases:
        out = tmp_path / "out"
        with pytest.raises(InputError, match=message):
            Watcher(WatchOptions(incoming=tmp_path / "in", output=out, protocol=protocol, t1=t1, **kwargs))
        assert not out.exists()
    with pytest.raises(InputError, match="inside the incoming"):
        Watcher(WatchOptions(incoming=tmp_path, output=tmp_path / "w", protocol=load_protocol("sgacc-dlpfc"), t1=t1,
                             expected_volumes=100))


@pytest.fixture(scope="module")
def synthetic_watch(tmp_path_factory):
    """The sample patient's task run written as scanner DICOM (one slice per file), watched with its events."""
    from tmstarget.testing.dicom import write_dicom_series

    root = tmp_path_factory.mktemp("synthetic-watch")
    func = SAMPLE / "derivatives" / "fmriprep" / "sub-01" / "func"
    bold = nib.load(next(func.glob("*task-rumination*_desc-preproc_bold.nii.gz")))
    write_dicom_series(bold, root / "source", series_number=7, series_description="rumination", t_r_s=2.0)
    t1 = next((SAMPLE / "derivatives" / "fmriprep" / "sub-01" / "anat").glob("*T1w.nii.gz"))
    events = SAMPLE / "sub-01" / "func" / "sub-01_task-rumination_events.tsv"
    protocol = load_protocol("rumination-dmpfc", ["clean.filter=cosine"])
    # whole files (partial writes are the incoming tests' business): 46 slice files a volume
    document, reader = _watch(root / "incoming", root / "out", t1, protocol, bold.shape[3], events=events,
                              source=root / "source", replay_kwargs={"chunks": 1, "chunk_pause_s": 0.0})
    return {"doc": document, "reader": reader, "live": json.loads((root / "out" / "live.json").read_text())}


def test_synthetic_blocks_run_finds_the_planted_spot(synthetic_watch):
    truth = json.loads((SAMPLE / "ground_truth.json").read_text())["spots"]["dmpfc_target"]["mni_mm"]
    live = synthetic_watch["live"]
    assert live["final"]["max_abs_dz_stream_vs_plan"] < 1e-6
    assert synthetic_watch["reader"].bad == []
    found = np.array(synthetic_watch["doc"]["target"]["mni_mm"])
    assert np.linalg.norm(found - truth) <= 8.0  # two 4-mm voxels, through a real EPI -> T1 -> MNI registration
    assert set(live["qc"]["frames_per_state"]) == {"rumination", "distraction"}
    verdict = live["inference"]  # the live family-wise verdict, recomputed in the background as frames accrue
    assert verdict is not None and verdict["after_volume"] <= live["last_volume"]["volume"]
    assert set(verdict["effective_dof"]) == {"rumination", "distraction"}
    assert verdict["verdict"].startswith(("reliable target", "no reliable rumination target", "not enough data"))


def test_a_partial_t1_is_refused_before_the_scan(shared_data, tmp_path):
    """The shared T1 DICOM holds 8 slices: refused at start (one clear error), nothing written."""
    out = tmp_path / "out"
    with pytest.raises(InputError, match="not a whole head"):
        Watcher(WatchOptions(incoming=tmp_path / "in", output=out, protocol=load_protocol("sgacc-dlpfc"),
                             t1=shared_data / "pydecnef-sub1" / "dicom" / "t1", expected_volumes=120))
    assert not out.exists()
