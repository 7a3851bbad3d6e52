"""Same inputs, same command, same answer (issue 14 item 2).

Two identical ``tmstarget plan --native`` runs once moved the target by 0.2 mm (T1w) / 0.9 mm (MNI),
a candidate by 16 mm and the EPI -> T1 transform by 1.2 degrees: ANTs sampled its metric at random
points over several threads. The registrations now run single-threaded with a fixed seed
(:mod:`tmstarget.anatomy.ants_process`). The same command is run twice here (the first
run's output moved aside before the second; intermediate files in a new temporary folder each time) and every byte is
compared: ``target.json`` apart from its creation date, the saved transforms, the maps and masks.
"""

import re
import shutil
from pathlib import Path

import pytest

from tmstarget.cli.main import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "derivatives" / "fmriprep" / "sub-01"
SAMPLE_T1 = SAMPLE / "anat" / "sub-01_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz"
SAMPLE_REST = SAMPLE / "func" / "sub-01_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
DATE = re.compile(r'"date_utc": "[^"]*"')
# the report prints when the plan was computed and when the report was built: the only text left out
REPORT_TIME = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?")


@pytest.mark.slow
def test_two_identical_native_runs_give_identical_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("TMSTARGET_CACHE_DIR", "off")  # both runs register and segment the T1 (determinism)
    out, first = tmp_path / "plan", tmp_path / "first"
    command = ["plan", "--native", "--rest-bold", str(SAMPLE_REST), "--t1", str(SAMPLE_T1), "--participant", "01",
               "--protocol", "rest-dmpfc", "--output", str(out), "--navigation", "none",
               "--force", "--quiet"]
    assert main(command) == 0
    shutil.move(out, first)  # the second run starts from the same state: no output folder yet
    assert main(command) == 0
    texts = [(folder / "target.json").read_text() for folder in (first, out)]
    assert all(DATE.search(text) for text in texts)  # the date is there, and is the only thing left out
    lines = [DATE.sub("", text).splitlines() for text in texts]
    assert len(lines[0]) == len(lines[1])
    differing = [(a, b) for a, b in zip(*lines) if a != b]
    assert not differing, f"target.json differs between the two runs: {differing[:10]}"
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file() and p.name != "target.json")
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.name != "target.json") == files
    assert any(str(name).startswith("xfm/") for name in files)
    for name in files:
        a, b = (first / name).read_bytes(), (out / name).read_bytes()
        if str(name) == "report.html":
            assert REPORT_TIME.search(a)
            a, b = REPORT_TIME.sub(b"", a), REPORT_TIME.sub(b"", b)
        assert a == b, f"{name} differs between the two runs"
