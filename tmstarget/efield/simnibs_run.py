"""SimNIBS, when installed: the full-head finite-element field at the target, run in a subprocess.

SimNIBS (simnibs.org; its own installer, GPL-3, PyQt5) is never imported here: a session script is
written and run by SimNIBS's own interpreter, ``simnibs_python`` (on PATH or given as ``simnibs``),
and its NIfTI output is read back with nibabel.

The session (SimNIBS docs, "Scripting Simulations" and the SESSION / TMSLIST / POSITION
structures): ``fnamehead`` = ``<m2m>/<id>.msh`` of the patient's ``charm`` head model
(``m2m_<id>``), ``subpath`` = the m2m folder, ``pathfem`` = a temporary folder, one
TMSLIST with ``fnamecoil`` (a ``.ccd`` file given by the user, else SimNIBS's own measured model of
the built-in coil: ``Drakaki_BrainStim_2022/MagStim_D70.ccd``, ``.../MagVenture_MC-B70.ccd`` or
``.../MagVenture_Cool-B65.ccd``) and one POSITION whose ``matsimnibs`` is the pose exactly (the
project's coil convention is SimNIBS's; mm) and ``didt`` in A/s; ``map_to_surf`` and ``map_to_vol``
on, ``open_in_gmsh`` off.

Read back: ``map_to_vol`` writes ``subject_volumes/<simulation id>_magnE.nii.gz`` (``normE`` in
SimNIBS 3) in the space of the m2m folder's T1, which ``charm`` keeps in the input T1's world;
grey matter only by default (``tissues_in_niftis`` = 2). The value reported is the median of the
non-zero voxels within 2 mm of the target. SimNIBS's own outputs and the session script are then
deleted: their names and paths carry the head model's id, which may be a patient's name, and only
numbers go into ``efield.json`` (re-run SimNIBS on the recorded pose to view its field).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from tmstarget.errors import InputError, OutputError

#: The one line printed when SimNIBS is not found.
SIMNIBS_NOTE = ("SimNIBS not found: with SimNIBS (installer at simnibs.org, not on PyPI) and the patient's head model "
                "from 'charm' (--m2m DIR), 'tmstarget efield --simnibs PATH --m2m DIR' adds the full-head "
                "finite-element field at the target beside this spherical-head estimate")
#: SimNIBS's measured models (Drakaki et al. 2022) of the built-in coils, relative to its coil folder.
SIMNIBS_COILS = {"Magstim_D70": "Drakaki_BrainStim_2022/MagStim_D70.ccd",
                 "MagVenture_MC-B70": "Drakaki_BrainStim_2022/MagVenture_MC-B70.ccd",
                 "MagVenture_Cool-B65": "Drakaki_BrainStim_2022/MagVenture_Cool-B65.ccd"}
TIMEOUT_S = 4 * 3600


def find_simnibs(simnibs=None):
    """Path of ``simnibs_python``: ``simnibs`` (the program or a folder holding it, or its ``bin/``), else PATH.

    Returns None when not given and not on PATH; InputError when given but not found.
    """
    if simnibs is None:
        found = shutil.which("simnibs_python")
        return None if found is None else Path(found)
    path = Path(simnibs)
    if path.is_dir():
        for candidate in (path / "simnibs_python", path / "bin" / "simnibs_python"):
            if candidate.is_file():
                return candidate
        raise InputError("no simnibs_python in this folder or its bin/", path=path)
    if not path.is_file():
        raise InputError("SimNIBS program not found", path=path)
    return path


def head_mesh(m2m):
    """``(m2m folder, <id>.msh)`` of a ``charm`` head model folder ``m2m_<id>``."""
    folder = Path(m2m)
    if not folder.is_dir():
        raise InputError("SimNIBS head model folder (m2m) not found", path=folder)
    subject = folder.name[4:] if folder.name.startswith("m2m_") else folder.name
    mesh = folder / f"{subject}.msh"
    if not mesh.is_file():
        raise InputError(f"no {subject}.msh in the head model folder (is it charm's m2m_{subject}?)", path=folder)
    return folder, mesh


def coil_file(coil_spec, coil_model):
    """``fnamecoil`` for SimNIBS: the user's ``.ccd`` (absolute) or SimNIBS's model of the built-in coil."""
    if str(coil_spec).lower().endswith(".ccd"):
        return str(Path(coil_spec).resolve())
    if coil_model.name not in SIMNIBS_COILS:
        raise InputError(f"no SimNIBS model known for coil {coil_model.name!r}: give its .ccd file with --coil")
    return SIMNIBS_COILS[coil_model.name]


def session_script(mesh, m2m, out_dir, pose, didt_a_per_s, fnamecoil):
    """Text of a SimNIBS Python session script for one coil pose (see the module docstring)."""
    matrix = ",\n    ".join("[" + ", ".join(repr(float(v)) for v in row) + "]" for row in np.asarray(pose, dtype=float))
    return f'''"""SimNIBS session written by tmstarget efield: one TMS simulation at the E-field best pose."""
from simnibs import run_simnibs, sim_struct

s = sim_struct.SESSION()
s.fnamehead = {str(Path(mesh).resolve())!r}
s.subpath = {str(Path(m2m).resolve())!r}
s.pathfem = {str(Path(out_dir).resolve())!r}
s.fields = "eE"
s.map_to_surf = True
s.map_to_vol = True
s.open_in_gmsh = False
tms = s.add_tmslist()
tms.fnamecoil = {fnamecoil!r}
pos = tms.add_position()
pos.matsimnibs = [
    {matrix},
]
pos.didt = {float(didt_a_per_s)!r}
run_simnibs(s)
'''


def field_at(out_dir, target_ras_mm, radius_mm=2.0):
    """|E| (V/m) at a point from SimNIBS's ``subject_volumes/*_magnE.nii.gz`` (or ``*_normE``): the median of
    the non-zero voxels within ``radius_mm``; returns ``(value, file name)``."""
    import nibabel as nib
    from nibabel.affines import apply_affine

    folder = Path(out_dir) / "subject_volumes"
    files = sorted(folder.glob("*_magnE.nii.gz")) or sorted(folder.glob("*_normE.nii.gz"))
    if not files:
        raise OutputError("SimNIBS wrote no subject_volumes/*_magnE.nii.gz (map_to_vol output)", path=folder)
    img = nib.load(files[0])
    data = np.asarray(img.dataobj, dtype=float)
    centre = apply_affine(np.linalg.inv(img.affine), target_ras_mm)
    voxel = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
    half = np.ceil(radius_mm / voxel).astype(int)
    lo = np.maximum(np.round(centre).astype(int) - half, 0)
    hi = np.minimum(np.round(centre).astype(int) + half + 1, data.shape[:3])
    if np.any(hi <= lo):
        raise OutputError("the target lies outside SimNIBS's volume", path=files[0])
    ijk = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
    near = np.linalg.norm(apply_affine(img.affine, ijk) - target_ras_mm, axis=1) <= radius_mm
    values = data[tuple(ijk[near].T)]
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) == 0:
        raise OutputError(f"no field within {radius_mm:g} mm of the target in SimNIBS's volume (grey matter only)",
                          path=files[0])
    return float(np.median(values)), files[0].name


def run_session(program, m2m, pose, didt_a_per_s, fnamecoil, target_ras_mm):
    """Write and run the session in a subprocess, in a temporary folder; return the field at the target."""
    import tempfile

    m2m, mesh = head_mesh(m2m)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tmstarget-simnibs-") as scratch:
        out_dir = Path(scratch)
        script = out_dir / "tmstarget_session.py"
        script.write_text(session_script(mesh, m2m, out_dir / "simulation", pose, didt_a_per_s, fnamecoil),
                          encoding="utf-8")
        try:
            done = subprocess.run([str(program), str(script)], cwd=out_dir, capture_output=True, text=True,
                                  timeout=TIMEOUT_S, check=False)
        except OSError as exc:
            raise InputError(f"cannot run SimNIBS: {exc}", path=Path(program)) from exc
        except subprocess.TimeoutExpired as exc:
            raise OutputError(f"SimNIBS did not finish within {TIMEOUT_S} s") from exc
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise OutputError(f"SimNIBS failed (exit {done.returncode}): {last}")
        value, name = field_at(out_dir / "simulation", target_ras_mm)
    return {"e_target_v_per_m": value, "file": name, "seconds": round(time.perf_counter() - start, 2)}


def simnibs_block(simnibs, m2m, pose, coil_spec, coil_model, target_ras_mm, e_builtin):
    """The ``simnibs`` block of ``efield.json``: SimNIBS's field at the target beside the built-in model's,
    or ``available``/``note`` saying why it did not run."""
    program = find_simnibs(simnibs)
    if program is None:
        return {"available": False, "note": SIMNIBS_NOTE}
    if m2m is None:
        return {"available": True, "program": program.name,
                "note": "SimNIBS found: give the patient's head model (charm's m2m folder) with --m2m to run it"}
    run = run_session(program, m2m, pose, coil_model.didt_a_per_s, coil_file(coil_spec, coil_model),
                      np.asarray(target_ras_mm))
    return {
        "available": True,
        "program": program.name,
        "read_from": "subject_volumes/*_magnE.nii.gz (map_to_vol)" if run["file"].endswith("_magnE.nii.gz") else
                     "subject_volumes/*_normE.nii.gz (map_to_vol)",
        "pose": "best",
        "fnamecoil": Path(coil_file(coil_spec, coil_model)).name,
        "didt_a_per_s": coil_model.didt_a_per_s,
        "e_target_v_per_m": run["e_target_v_per_m"],
        "builtin_e_target_v_per_m": e_builtin,
        "ratio_simnibs_to_builtin": run["e_target_v_per_m"] / e_builtin,
        "read_back": "median of the non-zero voxels within 2 mm of the target in SimNIBS's map_to_vol NIfTI",
        "timing_s": run["seconds"],
    }

