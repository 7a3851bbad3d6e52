"""Benchmark: `tmstarget compare` on N synthetic participants × 5 protocols, three ways, in one run.

    python bench/bench_compare.py [--participants 20] [--jobs 2] [--modes serial,pool,dask] [--work DIR]

The participants (``tmstarget.testing.patient.make_patient``, seeds 1..N, the default synthetic size) are
generated once and cached in ``bench/results/compare-<N>/``. Then the same comparison runs

* ``serial`` - ``n_jobs=1``, in one process;
* ``pool``   - ``n_jobs=--jobs`` (2): a local process pool;
* ``dask``   - a real local Dask cluster (``dask scheduler`` + ``--jobs`` workers of one thread each,
  tmstarget.testing.dask_cluster), the client in its own process.

Each comparison runs in a fresh driver process (``report=False``: the group report is the same work in
every mode), into its own output folder, with the T1 cache off (no mode profits from the one before).
Reported per mode: wall time (driver start to tables written)
and its ratio to serial, wall time per participant, the peak resident memory (``VmHWM``) of every
process that ran jobs (sampled from ``/proc`` every 0.2 s; the high-water mark is exact), the CPU time of
the driver and those processes (user + system, as last sampled: a process gone within 0.2 s of its last
sample loses that much; on a shared machine CPU time says more than wall time), and whether the
tables equal the serial ones cell by cell (timing columns aside). From the serial rows: the share of
job time spent reading and cleaning the runs (``prepare_s``, once per group of protocols) versus
computing targets and their inference (``analysis_s``), the data-length curve (``data_length_s``: each length
cleaned and analysed again) and writing plan folders (``write_s``).
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOCOLS = "rumination-dmpfc,sgacc-dlpfc,dmn-dlpfc,5cm-rule,beam-f3"
TABLES = ("targets", "distances", "summary", "data_length")
T1_CACHE_ENV = "TMSTARGET_CACHE_DIR"  # tmstarget.anatomy.t1_cache.ENV


def ensure_dataset(root, count):
    """``count`` synthetic participants (labels 01..) in one BIDS root with fMRIPrep derivatives."""
    from tmstarget.testing.patient import SyntheticConfig, make_patient

    labels = [f"{number:02d}" for number in range(1, count + 1)]
    for number, label in enumerate(labels, start=1):
        done = root / f".done-{label}"
        if not done.is_file():
            start = time.perf_counter()
            make_patient(root, SyntheticConfig(participant=label, seed=number))
            done.write_text(f"{time.perf_counter() - start:.1f}\n")
            print(f"  participant {label} generated in {done.read_text().strip()} s", flush=True)
    return labels


def drive(arguments):
    """The driver process: one comparison, its wall time printed as JSON on the last line."""
    from tmstarget.research.compare import compare

    start = time.perf_counter()
    tables = compare(arguments.dataset, PROTOCOLS, arguments.output, participants=arguments.labels.split(","),
                     n_jobs=arguments.n_jobs, dask_scheduler=arguments.scheduler, report=False)
    failed = int((tables["targets"]["status"] != "ok").sum())
    print(json.dumps({"wall_s": time.perf_counter() - start, "failed_rows": failed}))


def _peak_kib(pid):
    """Peak resident memory (VmHWM) of a live process in KiB, None if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakSampler(threading.Thread):
    """Every 0.2 s: the high-water mark of each process below the roots (their descendants, roots included)."""

    def __init__(self, roots):
        super().__init__(daemon=True)
        self.roots = list(roots)
        self.peaks = {}  # pid -> (KiB, command line)
        self.cpu_s = {}  # pid -> user + system CPU seconds, as last seen
        self.done = threading.Event()

    def run(self):
        import psutil

        while not self.done.wait(0.2):
            for root in self.roots:
                try:
                    processes = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
                except psutil.NoSuchProcess:
                    continue
                for process in processes:
                    kib = _peak_kib(process.pid)
                    if kib is None:
                        continue
                    try:
                        times = process.cpu_times()
                        self.cpu_s[process.pid] = times.user + times.system
                    except psutil.Error:
                        pass
                    try:
                        command = " ".join(process.cmdline())
                    except psutil.Error:
                        command = self.peaks.get(process.pid, (0, ""))[1]
                    self.peaks[process.pid] = (max(kib, self.peaks.get(process.pid, (0, ""))[0]), command)

    def stop(self):
        self.done.set()
        self.join()


def run_mode(mode, dataset, labels, work, n_jobs):
    """One comparison in a driver process; returns wall time, failed rows and per-process peaks (MiB)."""
    output = work / f"out-{mode}"
    if output.exists():
        import shutil

        shutil.rmtree(output)
    command = [sys.executable, str(Path(__file__).resolve()), "--drive", "--dataset", str(dataset),
               "--output", str(output), "--labels", ",".join(labels)]
    cluster = None
    if mode == "dask":
        from tmstarget.testing.dask_cluster import LocalDaskCluster

        cluster = LocalDaskCluster(work / "dask", n_workers=n_jobs)
        command += ["--scheduler", cluster.address]
    else:
        command += ["--n-jobs", "1" if mode == "serial" else str(n_jobs)]
    try:
        driver = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        roots = [driver.pid] + ([worker.pid for worker in cluster.workers] if cluster else [])
        sampler = PeakSampler(roots)
        sampler.start()
        stdout, _ = driver.communicate()
        sampler.stop()
    finally:
        if cluster is not None:
            cluster.close()
    if driver.returncode != 0:
        raise SystemExit(f"{mode}: the driver failed (exit {driver.returncode})")
    result = json.loads(stdout.strip().splitlines()[-1])
    if mode == "serial":
        workers = [driver.pid]
    elif mode == "pool":  # the driver's spawned children, not its resource tracker
        workers = [pid for pid, (_, cmd) in sampler.peaks.items()
                   if pid != driver.pid and "spawn_main" in cmd and "resource_tracker" not in cmd]
    else:  # each nanny's worker process
        nannies = {worker.pid for worker in cluster.workers}
        workers = [pid for pid, (_, cmd) in sampler.peaks.items() if pid not in nannies and pid != driver.pid
                   and "spawn_main" in cmd]
    result["cpu_s"] = sum(sampler.cpu_s.get(pid, 0.0) for pid in set(workers) | {driver.pid})
    result["worker_peak_mib"] = sorted(round(sampler.peaks[pid][0] / 1024) for pid in workers)
    result["driver_peak_mib"] = round(sampler.peaks.get(driver.pid, (0, ""))[0] / 1024)
    result["output"] = str(output)
    return result


def _tables_equal(first, second):
    """Names of the tables that differ between two output folders (timing columns ``*_s`` aside)."""
    import pandas as pd

    differ = []
    for name in TABLES:
        a = pd.read_csv(Path(first) / f"{name}.tsv", sep="\t", keep_default_na=False, dtype=str)
        b = pd.read_csv(Path(second) / f"{name}.tsv", sep="\t", keep_default_na=False, dtype=str)
        keep = [column for column in a.columns if not column.endswith("_s")]
        if list(a.columns) != list(b.columns) or not a[keep].equals(b[keep]):
            differ.append(name)
    return differ


def time_shares(output):
    """Seconds of job time by step, summed over participants, from a comparison's targets.tsv.

    ``prepare_s`` (read + clean) and ``data_length_s`` (the data-length curve) are measured once per
    group of protocols sharing their runs and copied to each protocol's row: a group is the rows of a
    participant with the very same ``prepare_s``, counted once (``data_length_s``: its largest value).
    """
    import pandas as pd

    targets = pd.read_csv(Path(output) / "targets.tsv", sep="\t")
    shares = {column: float(targets[column].sum()) for column in ("analysis_s", "write_s") if column in targets}
    groups = targets.dropna(subset=["prepare_s"]).groupby(["participant", "prepare_s"])
    shares["prepare_s"] = float(sum(prepare for (_, prepare) in groups.groups))
    shares["data_length_s"] = float(groups["data_length_s"].max().sum())
    return shares


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=20, help="synthetic participants (default 20)")
    parser.add_argument("--jobs", type=int, default=2, help="pool processes and Dask workers (default 2)")
    parser.add_argument("--modes", default="serial,pool,dask")
    parser.add_argument("--work", type=Path, help="work folder (default bench/results/compare-<N>)")
    parser.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--labels", help=argparse.SUPPRESS)
    parser.add_argument("--n-jobs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--scheduler", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.drive:
        return drive(arguments)
    work = arguments.work or HERE / "results" / f"compare-{arguments.participants}"
    dataset = work / "dataset"
    dataset.mkdir(parents=True, exist_ok=True)
    print(f"dataset: {arguments.participants} participants in {dataset}", flush=True)
    labels = ensure_dataset(dataset, arguments.participants)
    print(f"cores: {len(os.sched_getaffinity(0))}; load average before: {os.getloadavg()[0]:.1f}", flush=True)
    # every mode computes everything: no T1 cache warmed by the mode before (drivers and workers inherit this)
    os.environ[T1_CACHE_ENV] = "off"
    results = {}
    for mode in arguments.modes.split(","):
        results[mode] = run_mode(mode, dataset, labels, work, arguments.jobs)
        results[mode]["load_average_1min_after"] = os.getloadavg()[0]
        print(f"  {mode}: {results[mode]['wall_s']:.1f} s (load average after: {os.getloadavg()[0]:.1f})", flush=True)
    reference = results.get("serial")
    print(f"\n{len(labels)} participants x 5 protocols, --jobs {arguments.jobs}")
    print(f"{'mode':8} {'wall s':>8} {'vs serial':>9} {'s/participant':>13} {'CPU s':>7} {'failed':>6}  "
          f"{'peak MiB per job process':24} {'same tables':>11}")
    for mode, result in results.items():
        ratio = f"{reference['wall_s'] / result['wall_s']:.2f}x" if reference else "-"
        same = "-" if reference is None or mode == "serial" else (
            "yes" if not _tables_equal(reference["output"], result["output"])
            else "NO: " + ",".join(_tables_equal(reference["output"], result["output"])))
        print(f"{mode:8} {result['wall_s']:8.1f} {ratio:>9} {result['wall_s'] / len(labels):13.1f} "
              f"{result['cpu_s']:7.1f} {result['failed_rows']:6d}  {str(result['worker_peak_mib']):24} {same:>11}")
    if reference:
        shares = time_shares(reference["output"])
        total = sum(shares.values()) or 1.0
        print("\nserial job time by step (sum over participants): " + ", ".join(
            f"{name} {seconds:.1f} s ({100 * seconds / total:.0f} %)" for name, seconds in shares.items()))
    (work / "bench_compare.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
