"""Benchmark: the whole `tmstarget plan` command against a plain nilearn implementation of the same maps.

    python bench/bench_plan.py [--repeats 3] [--voxel-mm 3] [--volumes 240] [--base OTHER_TREE]

All paths run on the same synthetic 3-mm, 240-volume patient (generated once
and cached in ``bench/results/``), in the same run, each in its own process, in
rounds: every round runs each path once, in the same order, so the paths
alternate and share the machine's load; the medians over the rounds are given,
and the speed-up is the median of the per-round ratios (alternating pairs).
The load average is printed before and after. Paths:

* ``command``      - ``python -m tmstarget.cli plan ...`` timed from process start to exit by this
  script (interpreter start, imports, checks, cleaning, maps, inference, coil,
  every navigation file, exit), with the T1 cache warm (a T1 seen before:
  ``tmstarget.anatomy.t1_cache``); its stage lines give the breakdown;
* ``command-cold`` - the same with an empty T1 cache (first plan of a T1);
* ``no-report``    - the same with ``--no-report`` (when the command has it);
* ``base``         - with ``--base TREE``: the command from another source tree (e.g. a
  ``git archive`` of an older commit), for before/after figures in the same run, its cache
  warmed the same way (the trees' cache keys differ);
* ``engine``       - tmstarget's ``plan()`` alone in-process (no imports, no writing; the warm cache); its
  inference step (family-wise null, bootstrap, split halves) is reported as ``inference``;
* ``nilearn``      - smooth_img + apply_mask + signal.clean + seed mean + correlation
  (``tests/nilearn_reference.py``), the same maps, in-process;
* ``load``         - what a plain script pays to read the BOLD: nibabel's load and the whole
  image cast to float32 (the ``nilearn`` path does this inside smooth_img);
* ``load-ours``    - what the command pays: tmstarget's reader (the file read once, its sha256,
  python-isal's decoding when installed, the header checked), without a whole-image cast (the
  engine casts only the brain's box, volume chunk by chunk, while smoothing).

Settings: numpy marks large arrays ``MADV_HUGEPAGE``. With transparent huge pages in
``defrag = madvise`` mode (the THP mode is printed) and few free huge pages, every first touch of
a fresh large array may stall in memory compaction: on the 2-core test machine nibabel's load of
this BOLD into float32 took 1.0-2.0 s with numpy's default and 0.54-0.63 s without the mark
(alternating runs; the noisy, contradictory load lines of earlier runs). And OpenBLAS's idle
threads spin ~0.1 s after every call, burning the second core. The command gives itself
``NUMPY_MADVISE_HUGEPAGE=0`` and ``OPENBLAS_THREAD_TIMEOUT=4`` (unless set:
``tmstarget.cli._common``; this script removes both from the command's environment so the
command decides; neither changes a number). So the in-process paths run twice per round:
``[default]`` (neither set, as a plain script runs) and ``[cmd]`` (the command's two settings).
The speed-up against ``nilearn [cmd]`` is the fair headline (the same settings); the one against
``nilearn [default]`` is what a plain nilearn script gets on this machine.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
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
    if path == "engine":
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
    elif path == "load-ours":
        from tmstarget.ingest.read import read_image

        start = time.perf_counter()
        read_image(bold, "BOLD")
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_mib": _peak_rss_mib(), **extra}))


def _peak_rss_mib():
    # VmHWM is this process's own high-water mark (ru_maxrss would include the parent's from before exec)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


#: The variables the command sets for itself (``tmstarget.cli._common``): memory pages, idle BLAS threads.
COMMAND_SETTINGS = {"NUMPY_MADVISE_HUGEPAGE": "0", "OPENBLAS_THREAD_TIMEOUT": "4"}
#: The in-process paths' settings: name -> the variables set (none: numpy's and OpenBLAS's defaults).
SETTINGS = {"default": {}, "cmd": COMMAND_SETTINGS}


def settings_env(variables):
    """This process's environment without :data:`COMMAND_SETTINGS`' variables, then with ``variables``."""
    env = {k: v for k, v in os.environ.items() if k not in COMMAND_SETTINGS}
    return {**env, **variables}


def child(args, env=None):
    """Run a measurement in a fresh process; return (seconds, peak RSS in MiB, inference seconds)."""
    proc = subprocess.run(args, capture_output=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed: {' '.join(map(str, args))}\n{proc.stderr.decode()[-2000:]}")
    result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return result["seconds"], result["peak_mib"], result.get("inference_seconds")


def command(tree, patient, protocol, extra=(), cache=None):
    """Time ``tmstarget plan`` from process start to exit.

    Returns (seconds, peak MiB, {stage: seconds}): each stage line is stamped when it reaches this process
    (the command flushes them), so a stage lasts from its line to the next, the last one to the exit (the run
    summary and the interpreter's exit included), and ``start-up`` is process start to the first line
    (interpreter, imports, argument parsing, protocol).
    """
    out_dir = HERE / "results" / "plan-out"
    env = {**settings_env({}), "PYTHONPATH": str(tree)}  # the command chooses its settings itself
    if cache is not None:
        env["TMSTARGET_CACHE_DIR"] = str(cache)
    # -P: the tree on PYTHONPATH is imported, not the current folder (python -m would put it first on sys.path)
    cmd = ["/usr/bin/time", "-f", "peak_kib=%M", sys.executable, "-P", "-m", "tmstarget.cli", "plan", str(patient),
           "--participant", "01", "--protocol", protocol, "--output", str(out_dir), "--force", *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marks, lines = [], []
    for line in proc.stderr:
        lines.append(line)
        found = re.match(r"^\[\s*[\d.]+ s\] (.*)$", line.rstrip("\n"))
        if found:
            marks.append((time.perf_counter() - start, found.group(1)))
    proc.wait()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"tmstarget plan failed ({tree}):\n{''.join(lines)[-2000:]}")
    peak = float(re.search(r"peak_kib=(\d+)", "".join(lines)).group(1)) / 1024.0
    stamps = [t for t, _ in marks] + [seconds]
    stages = {"start-up": stamps[0]}
    stages.update({name: stamps[k + 1] - t for k, (t, name) in enumerate(marks)})
    return seconds, peak, stages


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="rounds (each runs every path once)")
    parser.add_argument("--voxel-mm", type=float, default=3.0)
    parser.add_argument("--volumes", type=int, default=240)
    parser.add_argument("--base", type=Path, help="another source tree whose command is timed too (before/after)")
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--protocol", help=argparse.SUPPRESS)
    args = parser.parse_args()
    patient = ensure_patient(args.voxel_mm, args.volumes)
    if args.path:
        return run_path(args.path, patient, args.protocol)
    help_text = subprocess.run([sys.executable, "-m", "tmstarget.cli", "plan", "--help"], capture_output=True,
                               text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    has_no_report = "--no-report" in help_text
    print(f"patient: {patient.relative_to(ROOT)} ({args.voxel_mm:g} mm, {args.volumes} volumes per run); "
          f"{args.repeats} rounds, medians; CPU cores: {os.cpu_count()}; load average {_load()}; "
          f"transparent huge pages: {_thp()}; [cmd] = {COMMAND_SETTINGS}", flush=True)
    warm_cache = Path(tempfile.mkdtemp(prefix="bench-plan-cache-"))
    base_cache = Path(tempfile.mkdtemp(prefix="bench-plan-base-cache-"))  # the base tree's keys differ
    paths = ["command", "command-cold"] + (["no-report"] if has_no_report else []) + \
        (["base"] if args.base else []) + \
        [f"{p} [{m}]" for p in ("engine", "nilearn", "load", "load-ours") for m in SETTINGS]
    for protocol in args.protocols:
        command(ROOT, patient, protocol, cache=warm_cache)  # the T1 (and the grid) seen once: the cache is warm
        if args.base:
            command(args.base, patient, protocol, cache=base_cache)
        rounds = {path: [] for path in paths}
        for _ in range(args.repeats):
            for path in paths:
                if path.startswith("command") or path in ("no-report", "base"):
                    tree = args.base if path == "base" else ROOT
                    with tempfile.TemporaryDirectory(prefix="bench-plan-cold-") as cold:
                        cache = {"command-cold": cold, "base": base_cache}.get(path, warm_cache)
                        extra = ["--no-report"] if path == "no-report" else []
                        rounds[path].append(command(tree, patient, protocol, extra, cache))
                else:
                    name, setting = path[:-1].split(" [")
                    cmd = [sys.executable, __file__, "--path", name, "--protocol", protocol,
                           "--voxel-mm", str(args.voxel_mm), "--volumes", str(args.volumes)]
                    env = {**settings_env(SETTINGS[setting]), "TMSTARGET_CACHE_DIR": str(warm_cache)}
                    rounds[path].append(child(cmd, env))
        _report(protocol, rounds)
    print(f"load average after: {_load()}")


def _load():
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _thp():
    """The kernel's transparent huge page modes (enabled, defrag), the chosen one of each."""
    modes = []
    for name in ("enabled", "defrag"):
        try:
            text = Path(f"/sys/kernel/mm/transparent_hugepage/{name}").read_text()
            chosen = re.search(r"\[([\w+]+)\]", text).group(1)
            modes.append(f"{name}={chosen}")
        except (OSError, AttributeError):
            modes.append(f"{name}=?")
    return " ".join(modes)


def _report(protocol, rounds):
    print(f"\n{protocol}\n{'path':20s} {'median s':>9s} {'runs (s)':>26s} {'peak MiB':>9s}")
    for path, runs in rounds.items():
        times = [r[0] for r in runs]
        print(f"{path:20s} {statistics.median(times):9.2f} {' '.join(f'{t:.2f}' for t in times):>26s} "
              f"{max(r[1] for r in runs):9.0f}")
        if path.startswith("engine"):
            print(f"{'  inference':20s} {statistics.median(r[2] for r in runs):9.2f} (part of {path})")
    for path in ("command", "command-cold", "no-report", "base"):
        if path in rounds:
            _stages(path, rounds[path])
    for setting, note in (("cmd", "the command's own settings: the fair comparison"),
                          ("default", "numpy's and OpenBLAS's defaults, as a plain nilearn script runs")):
        nilearn = [r[0] for r in rounds[f"nilearn [{setting}]"]]
        print(f"speed-up vs nilearn [{setting}] ({note}):")
        for path in ("command", "command-cold", "no-report", "base", f"engine [{setting}]"):
            if path in rounds:
                ratios = [n / r[0] for n, r in zip(nilearn, rounds[path])]
                per_round = " ".join(f"{x:.1f}" for x in ratios)
                print(f"  {path:18s} {statistics.median(ratios):5.1f}x (per round: {per_round})")
    whole = statistics.median(r[0] for r in rounds["command"])
    for path in ("load [cmd]", "load-ours [cmd]", "load [default]", "load-ours [default]"):
        load = statistics.median(r[0] for r in rounds[path])
        print(f"reading the BOLD, {path:20s} {load:5.2f} s = {100 * load / whole:3.0f}% of the whole command")


def _stages(path, runs):
    """Median seconds per stage over the rounds (see :func:`command`)."""
    table = {}
    for _, _, stages in runs:
        for name, value in stages.items():
            table.setdefault(name, []).append(value)
    print(f"  stages of {path} (median s; the last one until the process exits):")
    for name, values in table.items():
        print(f"    {statistics.median(values):7.2f}  {name}")


if __name__ == "__main__":
    main()
