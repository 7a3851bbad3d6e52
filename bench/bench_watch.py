"""Real-time benchmark: per-volume latency of `tmstarget watch` and its memory over 1,000 volumes.

Runs on the shared real Siemens run (64 x 64 x 34 mosaic, 120 volumes) and its T1:

* **paced**: the 120 volumes at 10x real time (one every 0.2 s), sgacc-dlpfc's
  live model (a 0.01 Hz high-pass as cosine regressors): latency from the
  file being complete to live.json rewritten, p50 / p95 / max;
* **soak**: the run played 9 times back to back as one 1,080-volume series,
  as fast as possible, the same live model: processing time per volume and
  resident memory at volumes 100, 500 and 1,000 (flat = no growth with the
  number of volumes).

The reference path, in the same run: the batch engine (`plan`) on the
recorded run, i.e. what recomputing the target from scratch after a volume
costs; ratio = batch time / streaming p50.

Set-up (T1 -> MNI, EPI -> T1, masks) happens before the timed volumes: the
first volume is copied in alone and the replay starts once it is processed;
``first_volume_to_first_live_target_s`` is the time from that first volume to
the first live.json holding a target (set-up, then enough volumes at the pace).

``motion_settings``: the watcher's motion estimation (``REALTIME_MOTION``) against the batch
defaults on the real run, alternating volume by volume: CPU ms per volume and the largest
differences in the parameters and FD (``--compare-motion`` runs only this).

Per volume, ``cpu_ms`` is the watcher thread's CPU time from the motion correction to live.json
(load inflates it far less than wall time; ``stages_cpu_ms_p50_p95`` splits it); the stages are
wall-clock: settle + read (the re-poll that finds the file's size unchanged, the DICOM parse),
motion (registration, reslicing what the stream reads, tissue means), stream, target, live.json,
and the record (the rest of the reslice, the commit's fsyncs), which comes after live.json.

Usage: python bench/bench_watch.py [--shared ../shared/data] [--out bench/results/watch.json]
       [--paced-only] [--compare-motion]
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tmstarget.protocol import load_protocol
from tmstarget.realtime.replay import replay
from tmstarget.realtime.watch import Watcher, WatchOptions

RUN = "pydecnef-sub1/dicom/func-run1"
T1 = "pydecnef-sub1/anat/T1w.nii.gz"


def rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


class Controller(threading.Thread):
    """Copies volume 1 in, waits for the watcher to process it, then replays the rest; samples memory."""

    def __init__(self, source, incoming, live, speed, repeat, watcher):
        super().__init__(daemon=True)
        self.source, self.incoming, self.live = source, incoming, live
        self.speed, self.repeat, self.watcher = speed, repeat, watcher
        self.rss = {}
        self.error = None
        self.first_target_s = None  # first volume copied in -> first live.json holding a target

    def run(self):
        try:
            self.incoming.mkdir(parents=True)
            first = sorted(self.source.iterdir())[0]
            shutil.copy(first, self.incoming / "setup_volume_0001.dcm")
            threading.Thread(target=self._first_target, args=(time.monotonic(),), daemon=True).start()
            while len(self.watcher.perf) < 1:
                time.sleep(0.05)
            sampler = threading.Thread(target=self._sample, daemon=True)
            sampler.start()
            replay(self.source, self.incoming, tr_s=2.0, speed=self.speed, drop=[1], repeat=self.repeat)
        except Exception as exc:  # reported by the main thread
            self.error = exc

    def _first_target(self, start):
        while self.first_target_s is None:
            try:
                if json.loads(self.live.read_text()).get("target") is not None:
                    self.first_target_s = round(time.monotonic() - start, 1)
            except (OSError, ValueError):
                pass
            time.sleep(0.05)

    def _sample(self):
        marks = [100, 500, 1000]
        while marks:
            if len(self.watcher.perf) >= marks[0]:
                self.rss[marks.pop(0)] = round(rss_mib(), 1)
            time.sleep(0.01)


def run_case(shared, work, name, overrides, speed, repeat):
    protocol = load_protocol("sgacc-dlpfc", overrides)  # the watcher takes its live model
    n = 120 * repeat
    root = work / name
    opts = WatchOptions(incoming=root / "incoming", output=root / "out", protocol=protocol, t1=shared / T1,
                        expected_volumes=n, participant="bench", gap_timeout_s=5.0, stop_after_s=60)
    watcher = Watcher(opts)
    controller = Controller(shared / RUN, root / "incoming", root / "out" / "live.json", speed, repeat, watcher)
    controller.start()
    start = time.monotonic()
    watcher.run()
    total = time.monotonic() - start
    controller.join()
    if controller.error:
        raise controller.error
    perf = watcher.perf[1:]  # volume 0 waited for the set-up
    live = json.loads((root / "out" / "live.json").read_text())

    def stats(key):
        values = np.array([p[key] for p in perf])
        return {"p50": round(float(np.percentile(values, 50)), 1), "p95": round(float(np.percentile(values, 95)), 1),
                "max": round(float(values.max()), 1)}

    # the reference path: the batch engine on the recorded run, timed here
    from tmstarget.analysis.engine import plan
    from tmstarget.ingest.collect import ExplicitRun, Selection

    state = root / "out" / "state"
    run = ExplicitRun(bold=state / "realigned.nii", confounds=next(state.glob("*_desc-confounds_timeseries.tsv")),
                      sidecar=next(state.glob("*_desc-realigned_bold.json")), mask=state / "brain_mask.nii.gz",
                      label="rest")
    t0 = time.perf_counter()
    plan(Selection([(run, "rest")], None, None, [], grid=watcher.grid), watcher.protocol)
    batch_s = time.perf_counter() - t0
    processing = stats("processing_ms")
    return {
        "volumes": len(watcher.perf), "replay_speed": "fast" if math.isinf(speed) else f"{speed:g}x (TR 2 s)",
        "protocol": "sgacc-dlpfc, live model: " + " ".join(f"{k}={v}" for k, v in watcher.protocol.overrides.items()),
        "regressors": watcher.stream.n_regressors, "analysed_voxels": len(watcher.layout.voxels),
        "search_region_voxels": len(watcher.layout.region_cols),
        "latency_file_complete_to_live_json_ms": stats("latency_ms"),
        "processing_ms": processing,
        "cpu_ms_per_volume": stats("cpu_ms"),
        "stages_cpu_ms_p50_p95": {k: [round(float(np.percentile([p[k] for p in perf], q)), 1) for q in (50, 95)]
                                  for k in ("motion_cpu_ms", "stream_cpu_ms", "target_cpu_ms", "live_json_cpu_ms")},
        "stages_ms_p50_p95": {k: [round(float(np.percentile([p[k] for p in perf], q)), 1) for q in (50, 95)]
                              for k in ("settle_read_ms", "motion_ms", "stream_ms", "target_ms", "live_json_ms",
                                        "record_ms")},
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "rss_mib_at_volume": controller.rss,
        "first_volume_to_first_live_target_s": controller.first_target_s,
        "setup_s_on_the_first_volume": round(watcher.perf[0]["setup_ms"] / 1000, 1),  # EPI->T1, waiting for T1->MNI
        "first_target_after_volume": watcher.history[0][0] if watcher.history else None,
        "batch_plan_on_recorded_run_s": round(batch_s, 2),
        "ratio_batch_over_streaming_p50": round(1000 * batch_s / processing["p50"], 1),
        "self_check_max_abs_dz": live["final"]["max_abs_dz_stream_vs_plan"],
        "wall_s": round(total, 1),
    }


def compare_motion(shared):
    """The watcher's motion settings against the batch defaults on the real run, alternating volume by volume.

    Both register every volume starting from their own previous estimate, as the watcher does; CPU time is this
    thread's (a shared machine's load does not inflate it).
    """
    from tmstarget.anatomy.motion import (
        fd_jenkinson,
        fd_power,
        prepare_reference,
        register_volume,
        volume_centre_ras_mm,
    )
    from tmstarget.ingest.dicom.series import load_series
    from tmstarget.realtime.watch import REALTIME_MOTION

    img, _ = load_series(shared / RUN)
    data = np.asarray(img.dataobj, dtype=np.float32)
    refs = {"batch_defaults": prepare_reference(data[..., 0], img.affine),
            "watcher": prepare_reference(data[..., 0], img.affine, **REALTIME_MOTION)}
    params = {k: np.zeros((data.shape[3], 6)) for k in refs}
    cpu = {k: [] for k in refs}
    for t in range(data.shape[3]):
        for name, ref in refs.items():
            start = time.thread_time()
            params[name][t] = register_volume(ref, data[..., t], init_params=params[name][t - 1] if t else None)
            cpu[name].append(1000 * (time.thread_time() - start))
    a, b = params["batch_defaults"], params["watcher"]
    centre = volume_centre_ras_mm(img.affine, data.shape)
    return {
        "settings": {"watcher": REALTIME_MOTION, "batch_defaults": "prepare_reference defaults"},
        "register_cpu_ms_median": {k: round(float(np.median(v[1:])), 2) for k, v in cpu.items()},
        "max_abs_diff_translation_mm": float(np.abs(a[:, :3] - b[:, :3]).max()),
        "max_abs_diff_rotation_deg": float(np.degrees(np.abs(a[:, 3:] - b[:, 3:])).max()),
        "max_abs_diff_fd_power_mm": float(np.abs(fd_power(a) - fd_power(b)).max()),
        "max_abs_diff_fd_jenkinson_mm": float(np.abs(fd_jenkinson(a, centre) - fd_jenkinson(b, centre)).max()),
        "run_motion_range": {"max_abs_translation_mm": float(np.abs(a[:, :3]).max()),
                             "max_abs_rotation_deg": float(np.degrees(np.abs(a[:, 3:])).max())},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "watch.json")
    parser.add_argument("--repeat", type=int, default=9, help="passes of the 120-volume run in the soak case")
    parser.add_argument("--paced-only", action="store_true", help="skip the 1,080-volume soak")
    parser.add_argument("--compare-motion", action="store_true",
                        help="only the watcher's motion settings against the batch defaults (no watch)")
    args = parser.parse_args(argv)
    if not (args.shared / RUN).is_dir():
        print(f"shared data not found at {args.shared}: nothing to benchmark", file=sys.stderr)
        return 2
    if args.compare_motion:
        print(json.dumps(compare_motion(args.shared), indent=2))
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    try:
        results = {
            "motion_settings": compare_motion(args.shared),
            "paced": run_case(args.shared, work, "paced", [], speed=10.0, repeat=1),
        }
        if not args.paced_only:
            results["soak"] = run_case(args.shared, work, "soak", [], speed=math.inf, repeat=args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
