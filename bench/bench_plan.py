"""Benchmark: `tmstarget plan` against a plain nilearn implementation of the same computation.

    python bench/bench_plan.py [--repeats 3] [--voxel-mm 3] [--volumes 240]

Both paths run on the same synthetic 3-mm, 240-volume patient (generated once
and cached in ``bench/results/``), in the same run, each in its own process so
peak memory (max RSS) is measured per path.  Paths timed:

* ``tmstarget``  - the whole CLI command ``tmstarget plan`` (imports, checks,
  cleaning, maps, outputs written), from interpreter start;
* ``engine``     - tmstarget's ``plan()`` alone in-process (no imports, no writing); the time of its
  inference step (family-wise null, bootstrap, split halves: ``target_inference``) is
  reported on its own as ``inference`` (part of ``engine``);
* ``nilearn``    - smooth_img + apply_mask + signal.clean + seed mean + correlation
  (``tests/nilearn_reference.py``), the same maps, in-process;
* ``load``       - reading the gzipped BOLD into float32 (the floor both paths pay).
"""

import time

T0 = time.perf_counter()  # before the heavy imports: the CLI path counts them

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
PROTOCOLS = {"rumination-dmpfc": "rumination", "sgacc-dlpfc": "rest"}


def patient_dir(voxel_mm, volumes):
    return HERE / "results" / f"patient-{voxel_mm:g}mm-{volumes}vol"


def ensure_patient(voxel_mm, volumes):
    out = patient_dir(voxel_mm, volumes)
    if not (out / "ground_truth.json").is_file():
        from tmstarget.testing.patient import SyntheticConfig, make_patient

        make_patient(out, SyntheticConfig(voxel_mm=voxel_mm, n_rest=volumes, n_task=volumes, block_s=60.0))
    return out


def _files(patient, task):
    func = patient / "derivatives" / "fmriprep" / "sub-01" / "func"
    space = "space-MNI152NLin2009cAsym"
    events = patient / "sub-01" / "func" / f"sub-01_task-{task}_events.tsv"
    return (func / f"sub-01_task-{task}_{space}_desc-preproc_bold.nii.gz",
            func / f"sub-01_task-{task}_desc-confounds_timeseries.tsv",
            func / f"sub-01_task-{task}_{space}_desc-brain_mask.nii.gz",
            events if events.is_file() else None)


def run_path(path, patient, protocol):
    """One measurement inside a child process; prints JSON with the elapsed time."""
    task = PROTOCOLS[protocol]
    bold, conf, mask, events = _files(patient, task)
    start = time.perf_counter()
    extra = {}
    if path == "tmstarget":
        from tmstarget.cli.main import main as cli_main

        start = T0
        out_dir = HERE / "results" / "plan-out"
        cli_main(["plan", str(patient), "--participant", "01", "--protocol", protocol, "--output", str(out_dir),
                  "--force", "--quiet"])
    elif path == "engine":
        from tmstarget.analysis import engine
        from tmstarget.ingest.collect import select_runs
        from tmstarget.protocol import load_protocol

        inner, extra["inference_seconds"] = engine.target_inference, 0.0

        def timed(*args, **kwargs):  # the inference step's share of the engine time
            t = time.perf_counter()
            out = inner(*args, **kwargs)
            extra["inference_seconds"] += time.perf_counter() - t
            return out

        engine.target_inference = timed
        proto = load_protocol(protocol)
        start = time.perf_counter()
        engine.plan(select_runs(proto.states, dataset=patient, participant="01"), proto)
    elif path == "nilearn":
        import numpy as np
        from nilearn import image

        import nilearn_reference as ref

        start = time.perf_counter()
        mask_img = image.load_img(mask)
        mask_arr = mask_img.get_fdata() > 0
        cleaned, frames = ref.clean_run(bold, conf, mask_img, events)
        gm = ref.grey_matter(image.load_img(bold))
        if task == "rest":
            seed = ref.sphere_seed(cleaned, mask_img, mask_arr, gm, ref.SGACC, 10.0)
            ref.zmap(cleaned, seed)
        else:
            seed = ref.core_seed(cleaned, mask_img, mask_arr, gm)
            z = [ref.zmap(cleaned[s], seed[s]) for s in
                 (ref.block_frames(events, frames, 2.0, st) for st in ("rumination", "distraction"))]
            np.subtract(*z)
    elif path == "load":
        import nibabel as nib
        import numpy as np

        start = time.perf_counter()
        np.asarray(nib.load(bold).dataobj, dtype=np.float32)
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_mib": _peak_rss_mib(), **extra}))


def _peak_rss_mib():
    # VmHWM is this process's own high-water mark (ru_maxrss would include the parent's from before exec)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def child(args):
    """Run a measurement in a fresh process; return (seconds, peak RSS in MiB)."""
    proc = subprocess.run(args, capture_output=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed: {' '.join(map(str, args))}\n{proc.stderr.decode()[-2000:]}")
    result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return result["seconds"], result["peak_mib"], result.get("inference_seconds")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--voxel-mm", type=float, default=3.0)
    parser.add_argument("--volumes", type=int, default=240)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--protocol", help=argparse.SUPPRESS)
    args = parser.parse_args()
    patient = ensure_patient(args.voxel_mm, args.volumes)
    if args.path:
        return run_path(args.path, patient, args.protocol)
    print(f"patient: {patient.relative_to(ROOT)} ({args.voxel_mm:g} mm, {args.volumes} volumes per run); "
          f"{args.repeats} repeats, median; CPU cores: {os.cpu_count()}")
    print(f"{'protocol':18s} {'path':10s} {'seconds':>8s} {'peak MiB':>9s}")
    for protocol in PROTOCOLS:
        results = {}
        for path in ("tmstarget", "engine", "nilearn", "load"):
            cmd = [sys.executable, __file__, "--path", path, "--protocol", protocol,
                   "--voxel-mm", str(args.voxel_mm), "--volumes", str(args.volumes)]
            runs = [child(cmd) for _ in range(args.repeats)]
            results[path] = (statistics.median(r[0] for r in runs), max(r[1] for r in runs))
            print(f"{protocol:18s} {path:10s} {results[path][0]:8.2f} {results[path][1]:9.0f}", flush=True)
            if path == "engine":
                print(f"{protocol:18s} {'inference':10s} {statistics.median(r[2] for r in runs):8.2f} "
                      f"{'(part of engine)':>9s}", flush=True)
        ratio_engine = results["nilearn"][0] / results["engine"][0]
        ratio_cli = results["nilearn"][0] / results["tmstarget"][0]
        print(f"{protocol:18s} speed-up vs nilearn: engine {ratio_engine:.1f}x, whole CLI command {ratio_cli:.1f}x; "
              f"gz load = {100 * results['load'][0] / results['engine'][0]:.0f}% of the engine time")


if __name__ == "__main__":
    main()
