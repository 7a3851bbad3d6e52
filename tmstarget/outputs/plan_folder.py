"""Write a plan's outputs: target.json, targets.tsv, NIfTI maps, provenance.

The whole output folder is built under a temporary name beside the
destination and renamed into place at the end, so a failure never leaves a
half-written plan; an existing non-empty folder is replaced only with
``force``.  Nothing is ever written inside an input folder.
"""

import datetime
import os
import platform
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget import __version__
from tmstarget.errors import OutputError
from tmstarget._fileio import publish_mode, sha256_file, write_bytes_atomic, write_json_atomic, write_nifti_atomic, write_text_atomic
from tmstarget.analysis.rois import ball_mask, mask_to_img


def check_output_dir(out_dir, force=False, input_dirs=()):
    """Refuse an output folder that is non-empty (without ``force``) or inside/equal to an input folder."""
    out = Path(out_dir).resolve()
    for folder in input_dirs:
        folder = Path(folder).resolve()
        if out == folder or folder in out.parents:
            raise OutputError(
                f"the output folder lies inside the input folder {folder}; choose a folder outside the inputs "
                f"(e.g. {folder.parent / (folder.name + '-tmstarget')})",
                path=out_dir,
            )
    if out.exists() and not out.is_dir():
        raise OutputError("output path exists and is not a folder", path=out_dir)
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputError("output folder exists and is not empty; use --force to replace it", path=out_dir)


def _library_versions():
    import nilearn
    import scipy

    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "nibabel": nib.__version__, "nilearn": nilearn.__version__}


def provenance(result, command=None, extra_inputs=None):
    """Provenance block: version, date, inputs with sha256, protocol and every parameter."""
    inputs = {}
    for role, path in sorted({**result.input_files, **(extra_inputs or {})}.items()):
        inputs[role] = {"path": str(path), "sha256": sha256_file(path)}
    return {
        "generated_by": {"name": "tmstarget", "version": __version__},
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "inputs": inputs,
        "protocol": result.protocol.to_dict(),
        "libraries": _library_versions(),
    }


def _point(values):
    return [round(float(v), 4) for v in values]


def candidate_dict(candidate, space, protocol_name, coil=None, mni_mm=None):
    """JSON form of a candidate; ``mni_mm`` from a registration when the world is not MNI."""
    score = None if np.isnan(candidate.score) else round(candidate.score, 6)
    if mni_mm is None and space.startswith("MNI"):
        mni_mm = candidate.ras_mm
    entry = {
        "rank": candidate.rank,
        "name": f"{protocol_name}-{candidate.rank}",
        "mni_mm": None if mni_mm is None else _point(mni_mm),
        "ras_mm": _point(candidate.ras_mm),
        "voxel_ijk": [int(v) for v in candidate.voxel_ijk],
        "score": score,
        "method": candidate.method,
    }
    entry.update(candidate.extra)
    if coil is not None:
        entry["coil"] = coil
    return entry


def _score_name(protocol):
    conn = protocol.params.get("connectivity", {})
    if "contrast" in conn:
        first, second = conn["contrast"]
        return f"delta Fisher z ({first} - {second})"
    if "state" in conn:
        return f"Fisher z ({conn['state']})"
    return None


def target_document(result, participant, prov, coils=None, anatomy=None):
    """The ``target.json`` content (``coils``: one coil block per candidate, or None)."""
    protocol = result.protocol
    coils = coils or [None] * len(result.candidates)
    mni = result.mni_mm if result.mni_mm is not None else [None] * len(result.candidates)
    candidates = [candidate_dict(c, result.space, protocol.name, k, m)
                  for c, k, m in zip(result.candidates, coils, mni)]
    prescription = protocol.params.get("prescription", {})
    return {
        "tmstarget_version": __version__,
        "participant": participant,
        "protocol": protocol.name,
        "protocol_description": protocol.description,
        "space": result.space,
        "target": {**{k: v for k, v in candidates[0].items() if k != "coil"}, "score_name": _score_name(protocol)},
        "candidates": candidates,
        "coil": coils[0],
        "anatomy": anatomy,
        "analysis_grid": {"shape": [int(s) for s in result.shape], "affine": np.round(result.affine, 6).tolist()},
        "prescription": prescription or None,
        "qc": result.qc,
        "provenance": prov,
    }


def targets_tsv(document):
    """One row per candidate."""
    header = ["rank", "name", "x_mm", "y_mm", "z_mm", "i", "j", "k", "score", "method", "cluster_size"]
    lines = ["\t".join(header)]
    for c in document["candidates"]:
        x, y, z = c["ras_mm"]
        i, j, k = c["voxel_ijk"]
        score = "n/a" if c["score"] is None else f"{c['score']:.6f}"
        size = str(c.get("cluster_size", "n/a"))
        lines.append("\t".join([str(c["rank"]), c["name"], f"{x:.4f}", f"{y:.4f}", f"{z:.4f}",
                                str(i), str(j), str(k), score, c["method"], size]))
    return "\n".join(lines) + "\n"


def _float_img(array, affine, space):
    """Float map; xform code 4 (MNI) for MNI plans, 2 (aligned to an anatomy) for native ones."""
    code = 4 if space.startswith("MNI") else 2
    img = nib.Nifti1Image(np.asarray(array, dtype=np.float32), affine)
    img.set_qform(affine, code=code)
    img.set_sform(affine, code=code)
    return img


def write_plan(result, out_dir, participant, force=False, command=None, input_dirs=(), coils=None,
               anatomy=None, extra_inputs=None, extra_writers=(), grid_space=None):
    """Write every output of a plan into ``out_dir`` as one atomic step.

    Parameters
    ----------
    result : tmstarget.analysis.engine.PlanResult
    out_dir : Path
    participant : str
        Label used in the outputs (never a DICOM patient field).
    force : bool
        Replace a non-empty ``out_dir``.
    command : list of str, optional
        Command line, for provenance.
    input_dirs : sequence of Path
        Folders the output must not be inside.
    coils : list of dict, optional
        Coil block per candidate (``coils[0]`` is the target's).
    anatomy : dict, optional
        T1 the world coordinates belong to (path, sha256).
    extra_writers : sequence of callables
        ``f(staging_dir)`` writing more files once ``target.json`` is in the
        staging folder (navigation exports); they end up in the same atomic step.
    grid_space : str, optional
        World space of the analysis grid (``result.affine``: maps, masks,
        target sphere) when it is not ``result.space``: a plan of fMRIPrep
        inputs reported in T1w keeps its grid in MNI152NLin2009cAsym. Only an
        MNI space is accepted then, and the sphere is centred on
        ``result.mni_mm[0]``. Default: ``result.space``.

    Returns
    -------
    dict
        The ``target.json`` document.
    """
    check_output_dir(out_dir, force, input_dirs)
    grid_space = result.space if grid_space is None else grid_space
    if grid_space != result.space and (not grid_space.startswith("MNI") or result.mni_mm is None):
        raise OutputError(f"an analysis grid in {grid_space} under {result.space} coordinates needs an MNI grid "
                          "and the candidates' mni_mm", path=out_dir)
    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    publish_mode(staging, directory=True)
    try:
        prov = provenance(result, command, extra_inputs)
        document = target_document(result, participant, prov, coils, anatomy)
        files = {}
        for name, array in result.maps.items():
            files[f"{name}.nii.gz"] = write_nifti_atomic(staging / f"map-{name}.nii.gz",
                                                         _float_img(array, result.affine, grid_space))
        if "search_region" in result.masks:
            write_nifti_atomic(staging / "search_region.nii.gz", mask_to_img(result.masks["search_region"], result.affine))
        radius = result.protocol.params["target"]["sphere_radius_mm"] if "target" in result.protocol.params else 5.0
        centre = result.target.ras_mm if grid_space == result.space else result.mni_mm[0]
        sphere = ball_mask(result.shape, result.affine, centre, radius)
        write_nifti_atomic(staging / "target_sphere.nii.gz", mask_to_img(sphere, result.affine))
        document["outputs"] = sorted(["target.json", "targets.tsv", "target_sphere.nii.gz", "protocol.toml"]
                                     + [f"map-{n}.nii.gz" for n in result.maps]
                                     + (["search_region.nii.gz"] if "search_region" in result.masks else []))
        write_text_atomic(staging / "targets.tsv", targets_tsv(document))
        write_bytes_atomic(staging / "protocol.toml", _protocol_bytes(result.protocol))
        write_json_atomic(staging / "target.json", document)
        for writer in extra_writers:
            writer(staging)
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return document


def _protocol_bytes(protocol):
    text = protocol.toml_text
    if protocol.overrides:
        lines = "".join(f"#   {k} = {v!r}\n" for k, v in protocol.overrides.items())
        text += f"\n# Overridden on the command line (applied on top of the values above):\n{lines}"
    return text.encode("utf-8")


def _swap_into_place(staging, out):
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.rmdir(old)
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)
