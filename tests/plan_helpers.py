"""Test helpers shared by the plan-revision and E-field tests: a real plan with its head, file hashes."""

import hashlib
from pathlib import Path

import tmstarget

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def file_hashes(folder):
    """sha256 of every file under ``folder`` by relative path (to prove a folder untouched)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def sample_dlpfc_plan(out):
    """The sample patient's left-DLPFC plan (coil on its MNI-space T1) saved to ``out``, and its PlanHead."""
    from tmstarget.coil.adjust import PlanHead

    tmstarget.plan(SAMPLE, participant="01", protocol="sgacc-dlpfc").save(out, navigation="all")
    return out, PlanHead(out)
