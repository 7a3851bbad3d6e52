"""The pieces of a plan folder: target.json document, targets.tsv, NIfTI maps, provenance.

:class:`tmstarget.outputs.plan.Plan` assembles them and writes the folder:
built under a temporary name beside the destination and renamed into place at
the end, so a failure never leaves a half-written plan; an existing non-empty
folder is replaced only with ``force``.  Nothing is ever written over an
input or into a dataset tree (:func:`check_output_dir`).
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
from tmstarget._fileio import sha256_file
from tmstarget.errors import OutputError


def dataset_root(path):
    """The nearest folder at or above ``path`` with a ``dataset_description.json`` (BIDS/fMRIPrep), or None."""
    for folder in (path, *path.parents):
        if (folder / "dataset_description.json").is_file():
            return folder
    return None


def check_output_dir(out_dir, force=False, inputs=()):
    """Refuse an output folder that could harm the inputs, or a non-empty one without ``force``.

    Refused, because replacing or filling it could damage data:

    * a path that is an input, or holds one (``force`` would replace it);
    * a path inside a folder given as input (a DICOM series, a dataset folder);
    * a path inside a BIDS or fMRIPrep dataset tree (a ``dataset_description.json``
      at or above it), except a pipeline folder of its own under the dataset's
      ``derivatives/`` (``<root>/derivatives/<name>``, where BIDS puts derivatives).

    A plain folder holding input files (no ``dataset_description.json`` up the
    tree) may hold the output folder.

    Parameters
    ----------
    out_dir : str or Path
    force : bool
        Replace a non-empty folder.
    inputs : sequence of Path
        Input files and folders, as given.

    Raises
    ------
    OutputError
    """
    out = Path(out_dir).resolve()
    root = dataset_root(out)
    relative = out.relative_to(root).parts if root is not None else ()
    own_derivatives = root is not None and len(relative) >= 2 and relative[0] == "derivatives"
    given = [(item, Path(item).resolve()) for item in inputs]
    for item, path in given:
        if out == path or out in path.parents:
            raise OutputError(f"the output path is, or holds, the input {item}; choose a folder that holds no input",
                              path=out_dir)
    if root is not None and not own_derivatives:
        raise OutputError(f"the output folder lies inside the dataset {root} (it holds dataset_description.json); "
                          f"choose a folder outside it, or {root / 'derivatives' / 'tmstarget'}", path=out_dir)
    for item, path in given:
        if path.is_dir() and path in out.parents and not own_derivatives:
            raise OutputError(f"the output folder lies inside the input folder {item}; choose a folder outside it "
                              f"(e.g. {path.parent / (path.name + '-tmstarget')})", path=out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError("output path exists and is not a folder", path=out_dir)
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputError("output folder exists and is not empty; use --force to replace it", path=out_dir)


def _library_versions():
    import nilearn
    import scipy

    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "nibabel": nib.__version__, "nilearn": nilearn.__version__}


def stored_path(path, roots=()):
    """How an input path is recorded: relative to the first dataset root holding it, else its file name only.

    A folder name can carry a patient's name, so no absolute path and no folder
    outside a dataset is ever recorded; the sha256 is the file's identity.
    """
    path = Path(path).resolve()
    for root in roots:
        root = Path(root).resolve()
        if root in path.parents:
            return path.relative_to(root).as_posix()
    return path.name


def anonymous_command(argv):
    """A command line for provenance with every path cut to its last part, and folders given as ``<folder>``.

    A token (or the part after ``=`` in ``STATE=FILE`` or ``--option=FILE``) is a
    path when it holds a path separator or names an existing file or folder.
    """
    import os

    def clean(token):
        if token.startswith("-") and "=" not in token:
            return token
        head, sep, value = token.rpartition("=") if "=" in token else ("", "", token)
        if os.sep not in value and "/" not in value and not Path(value).exists():
            return token
        path = Path(value)
        return head + sep + ("<folder>" if path.is_dir() else path.name)

    return [clean(str(token)) for token in argv]


def provenance(result, command=None, extra_inputs=None, roots=()):
    """Provenance block: version, date, inputs (path as :func:`stored_path`, sha256), protocol and every parameter."""
    inputs = {}
    for role, path in sorted({**result.input_files, **(extra_inputs or {})}.items()):
        inputs[role] = {"path": stored_path(path, roots), "sha256": sha256_file(path)}
    return {
        "generated_by": {"name": "tmstarget", "version": __version__},
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "inputs": inputs,
        "inputs_note": "paths relative to the dataset folder given, else file names only; sha256 identifies each",
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
    conn = protocol.connectivity
    if conn.contrast is not None:
        first, second = conn.contrast
        return f"delta Fisher z ({first} - {second})"
    if conn.state is not None:
        return f"Fisher z ({conn.state})"
    return None


def _significance(qc):
    """The target's mark: ``{"significant": bool}`` for an fMRI target, nothing for a fixed one."""
    inference = qc.get("inference")
    return {} if inference is None else {"significant": bool(inference["significant"])}


#: Why a plan has no coil (``coil_reason`` in target.json) when no T1 was known.
NO_T1_REASON = ("no T1 known: the coil is placed on the scalp of a T1 in the plan's space (--t1, or fMRIPrep's "
                "*_space-MNI152NLin2009cAsym_desc-preproc_T1w); no coil pose and no navigation files")
MNI_SPACE = "MNI152NLin2009cAsym"


def _camel(words):
    parts = [w for w in "".join(c if c.isalnum() else " " for c in words).split() if w]
    return "".join(w if i == 0 else w[0].upper() + w[1:] for i, w in enumerate(parts))


def image_file_name(participant, space, name, suffix):
    """BIDS-style name of a plan image: ``sub-<label>_space-<space>_desc-<name>_<suffix>.nii.gz``.

    ``sub-`` is left out when the participant is unknown; ``name`` is written in
    camel case without separators (``z_rest`` -> ``zRest``, ``search_region`` ->
    ``searchRegion``), as BIDS entity values hold letters and digits only.
    """
    entities = ([f"sub-{participant}"] if participant else []) + [f"space-{space}", f"desc-{_camel(name)}"]
    return "_".join(entities) + f"_{suffix}.nii.gz"


def image_names(participant, space, maps, masks):
    """``{"maps": {name: file}, "masks": {name: file}}``: maps end in ``_statmap``, masks in ``_mask``."""
    names = {"maps": {n: image_file_name(participant, space, n, "statmap") for n in maps},
             "masks": {n: image_file_name(participant, space, n, "mask") for n in masks}}
    files = [f for group in names.values() for f in group.values()]
    if len(set(files)) != len(files):
        raise OutputError(f"two plan images would share a file name: {sorted(files)}")
    return names


def target_document(result, participant, prov, coils=None, anatomy=None, coil_reason=NO_T1_REASON):
    """The ``target.json`` content (``coils``: one coil block per candidate, or None, then ``coil_reason``)."""
    protocol = result.protocol
    coils = coils or [None] * len(result.candidates)
    mni = result.mni_mm if result.mni_mm is not None else [None] * len(result.candidates)
    candidates = [candidate_dict(c, result.space, protocol.name, k, m)
                  for c, k, m in zip(result.candidates, coils, mni)]
    prescription = protocol.prescription.to_dict()
    return {
        "tmstarget_version": __version__,
        "participant": participant,
        "protocol": protocol.name,
        "protocol_description": protocol.description,
        "space": result.space,
        "mni_space": result.mni_space or (result.space if result.space.startswith("MNI") else None),
        "target": {**{k: v for k, v in candidates[0].items() if k != "coil"}, "score_name": _score_name(protocol),
                   **_significance(result.qc)},
        "candidates": candidates,
        "coil": coils[0],
        "coil_reason": None if coils[0] is not None else coil_reason,
        "anatomy": anatomy,
        "analysis_grid": {"shape": [int(s) for s in result.shape], "affine": np.round(result.affine, 6).tolist()},
        "prescription": prescription or None,
        "qc": result.qc,
        "provenance": prov,
    }


def targets_tsv(document):
    """One row per candidate; the coordinate columns name their space (``x_t1w_mm``, ``x_mni152nlin2009casym_mm``).

    A plan in MNI space has one set of coordinates; a plan in a T1's world has
    its T1w coordinates and then the MNI ones. ``i j k`` index the analysis grid.
    """
    spaces = [("ras_mm", document["space"].lower())]
    if document["space"] != MNI_SPACE:
        spaces.append(("mni_mm", (document.get("mni_space") or MNI_SPACE).lower()))
    header = ["rank", "name"] + [f"{axis}_{space}_mm" for _, space in spaces for axis in "xyz"]
    header += ["i", "j", "k", "score", "method", "cluster_size"]
    lines = ["\t".join(header)]
    for c in document["candidates"]:
        coordinates = []
        for key, _ in spaces:
            coordinates += ["n/a"] * 3 if c[key] is None else [f"{v:.4f}" for v in c[key]]
        score = "n/a" if c["score"] is None else f"{c['score']:.6f}"
        size = str(c.get("cluster_size", "n/a"))
        lines.append("\t".join([str(c["rank"]), c["name"], *coordinates, *map(str, c["voxel_ijk"]), score,
                                c["method"], size]))
    return "\n".join(lines) + "\n"


def _float_img(array, affine, space):
    """Float map; xform code 4 (MNI) for MNI plans, 2 (aligned to an anatomy) for native ones."""
    code = 4 if space.startswith("MNI") else 2
    img = nib.Nifti1Image(np.asarray(array, dtype=np.float32), affine)
    img.set_qform(affine, code=code)
    img.set_sform(affine, code=code)
    return img


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
