"""A plan as objects (:class:`Plan`), built from the engine's result, saved as and loaded from a plan folder.

A :class:`Plan` holds exactly what a plan folder holds: the ``target.json``
document, the maps and masks as nibabel images, the protocol, and the other
files (transforms ``xfm/``, a T1 converted from DICOM ``anat/``).
:meth:`Plan.save` writes the folder layout of ``tmstarget plan`` and
:func:`load_plan` reads it back into an equal :class:`Plan`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget._fileio import publish_mode, write_bytes_atomic, write_json_atomic, write_nifti_atomic, write_text_atomic
from tmstarget.errors import InputError, OutputError
from tmstarget.outputs.plan_folder import (
    NO_T1_REASON,
    _float_img,
    _protocol_bytes,
    _swap_into_place,
    check_output_dir,
    image_names,
    provenance,
    target_document,
    targets_tsv,
)

#: Files every plan folder holds besides its images (named in ``target.json``'s ``images``).
_FIXED_FILES = ("target.json", "targets.tsv", "protocol.toml")
#: The report of a plan folder (:mod:`tmstarget.outputs.report`, written from the folder like the navigation
#: files): not carried by a loaded plan, so a saved copy never holds a stale report of another version.
REPORT_NAME = "report.html"
_OVERRIDE_NOTE = "\n# Overridden on the command line (applied on top of the values above):\n"


@dataclasses.dataclass(frozen=True)
class PlanPoint:
    """The target or one candidate of a plan (one entry of ``target.json``).

    Attributes
    ----------
    rank : int
        1 for the target.
    name : str
        ``<protocol>-<rank>``.
    mni_mm : tuple of float or None
        MNI152NLin2009cAsym coordinates (mm).
    ras_mm : tuple of float
        Coordinates in the plan's world (``Plan.space``), mm.
    voxel_ijk : tuple of int
        Voxel of the analysis grid (maps and masks).
    score : float or None
        Connectivity score (None for fixed targets).
    method : str
        How the point was found.
    coil : dict or None
        Coil placement on the scalp, when a T1 was known.
    extra : dict
        What the picker adds (``cluster_size``, ``centroid_ras_mm``, ...).
    """

    rank: int
    name: str
    mni_mm: tuple | None
    ras_mm: tuple
    voxel_ijk: tuple
    score: float | None
    method: str
    coil: dict | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def _from_entry(cls, entry: Mapping) -> PlanPoint:
        named = {"rank", "name", "mni_mm", "ras_mm", "voxel_ijk", "score", "method", "coil"}
        return cls(rank=entry["rank"], name=entry["name"],
                   mni_mm=None if entry["mni_mm"] is None else tuple(entry["mni_mm"]),
                   ras_mm=tuple(entry["ras_mm"]), voxel_ijk=tuple(entry["voxel_ijk"]), score=entry["score"],
                   method=entry["method"], coil=entry.get("coil"),
                   extra={k: v for k, v in entry.items() if k not in named})


@dataclasses.dataclass(eq=False)
class Plan:
    """An individualized TMS target plan: everything a plan folder holds, as objects.

    Build one with :func:`tmstarget.plan`, read one with :func:`tmstarget.load_plan`.

    Attributes
    ----------
    document : dict
        The ``target.json`` content (target, candidates, coil, QC, provenance;
        ``images`` names the file of every map and mask, ``outputs`` lists
        every file of the folder as last saved).
    maps : dict of str to nibabel.Nifti1Image
        Fisher-z connectivity maps by name (``"z_rest"``, ``"delta"``, ...),
        saved as ``sub-<label>_space-<space>_desc-<zRest|delta>_statmap.nii.gz``.
    masks : dict of str to nibabel.Nifti1Image
        ``"target_sphere"`` and, for connectivity protocols, ``"search_region"``
        (``..._desc-targetSphere_mask.nii.gz``, ``..._desc-searchRegion_mask.nii.gz``).
    protocol : tmstarget.protocol.Protocol
        The protocol as used (overrides applied).
    files : dict of str to bytes
        Other files of the folder by relative path: the transforms
        (``xfm/...``) of a native plan, the T1 the coordinates and the coil
        refer to (``anat/...``).
    inputs : tuple of Path
        The input files and folders, which :meth:`save` never replaces or
        writes into (empty for a loaded plan; not compared).
    """

    document: dict
    maps: dict
    masks: dict
    protocol: object
    files: dict = dataclasses.field(default_factory=dict)
    inputs: tuple = dataclasses.field(default=(), repr=False)

    @property
    def target(self) -> PlanPoint:
        """The target (rank 1), with its coil (``extra`` holds ``score_name``)."""
        return PlanPoint._from_entry({**self.document["target"], "coil": self.document["coil"]})

    @property
    def candidates(self) -> list[PlanPoint]:
        """Every ranked candidate; ``candidates[0]`` is the target."""
        return [PlanPoint._from_entry(entry) for entry in self.document["candidates"]]

    @property
    def coil(self) -> dict | None:
        """The target's coil placement (centre, pose, scalp-to-cortex distance), or None without a T1."""
        return self.document["coil"]

    @property
    def qc(self) -> dict:
        """Quality control: motion, scrubbing, tSNR, stability, warnings."""
        return self.document["qc"]

    @property
    def significant(self) -> bool | None:
        """Whether the data hold a reliable target (``qc.inference``); None for a fixed-coordinate plan."""
        inference = self.document["qc"].get("inference")
        return None if inference is None else bool(inference["significant"])

    def require_significant(self) -> None:
        """Raise :class:`~tmstarget.errors.NotSignificantError` (carrying this plan) when the target is not
        significant; a fixed-coordinate plan (no inference) passes."""
        from tmstarget.errors import NotSignificantError

        if self.significant is False:
            inference = self.document["qc"]["inference"]
            raise NotSignificantError(
                f"no significant target (p_fwe = {inference['p_fwe']:.3g} > alpha = {inference['alpha']:g}) and a "
                "significant one was required: no navigation files written", plan=self)

    @property
    def provenance(self) -> dict:
        """Version, date, command, inputs with sha256, protocol and library versions."""
        return self.document["provenance"]

    @property
    def space(self) -> str:
        """World of ``ras_mm``: ``"MNI152NLin2009cAsym"`` or ``"T1w"``."""
        return self.document["space"]

    @property
    def anatomy(self) -> dict | None:
        """The T1 the world coordinates and the coil refer to (file, sha256), or None."""
        return self.document["anatomy"]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Plan):
            return NotImplemented
        return (self.document == other.document and _same_images(self.maps, other.maps)
                and _same_images(self.masks, other.masks)
                and _protocol_bytes(self.protocol) == _protocol_bytes(other.protocol)
                and self.protocol.to_dict() == other.protocol.to_dict() and self.files == other.files)

    def save(self, folder: str | Path, force: bool = False, *, navigation: str | Iterable[str] | None = None,
             affine: str | None = None, on_navigation_skipped: Callable[[Exception], None] | None = None,
             writers: Iterable[Callable[[Path], object]] = ()) -> Path:
        """Write the plan folder (the layout of ``tmstarget plan --output``) as one atomic step.

        ``document["outputs"]`` becomes the list of every file written,
        navigation files included (``target.json`` lists them before they are
        written, so the navigation files' ``target_json_sha256`` is that of
        the final ``target.json``).

        Parameters
        ----------
        folder : str or Path
            Created; an existing non-empty folder is replaced only with
            ``force``. Never inside the plan's input folders.
        force : bool, default=False
            Replace a non-empty ``folder``.
        navigation : str or iterable of str, optional
            Navigation formats to write into ``folder/navigation/`` in the same
            step (``"all"``, or keys of :data:`tmstarget.navigation.export.FORMATS`);
            needs a coil (a T1). None: none.
        affine : {None, "qform", "sform"}
            Which T1 affine the navigator uses, needed only when they differ.
        on_navigation_skipped : callable, optional
            With ``navigation="all"``, a T1 whose qform and sform disagree (more
            than 0.1 mm) skips the navigation files instead of failing, and with
            ``affine`` a navigator reading the other transform skips its format:
            called with one line per skip (default: :func:`warnings.warn`).
        writers : iterable of callable
            ``f(staging_folder)`` writing more files before the folder is published
            (a :class:`NavigationWriter` runs last, after ``target.json``). A writer
            with a true ``after_target_json`` attribute (the report,
            :class:`tmstarget.outputs.report.ReportWriter`) runs after
            ``target.json`` is first written, so it can read the folder; the files
            of every writer but the navigation ones are listed in ``outputs``.

        Returns
        -------
        Path
            ``folder``.
        """
        check_output_dir(folder, force, self.inputs)
        out = Path(folder).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        publish_mode(staging, directory=True)
        writers = list(writers)
        navigators = [w for w in writers if isinstance(w, NavigationWriter)]
        others = [w for w in writers if not isinstance(w, NavigationWriter)]
        readers = [w for w in others if getattr(w, "after_target_json", False)]
        others = [w for w in others if w not in readers]
        if navigation and self.coil is not None:
            navigators.insert(0, NavigationWriter(navigation, affine, on_navigation_skipped))
        images = self.document["images"]
        try:
            for name, img in self.maps.items():
                write_nifti_atomic(staging / images["maps"][name], img)
            for name, img in self.masks.items():
                write_nifti_atomic(staging / images["masks"][name], img)
            write_text_atomic(staging / "targets.tsv", targets_tsv(self.document))
            write_bytes_atomic(staging / "protocol.toml", _protocol_bytes(self.protocol))
            for relative, data in self.files.items():
                write_bytes_atomic(staging / relative, data)
            for writer in others:
                writer(staging)
            document = dict(self.document)
            write_json_atomic(staging / "target.json", document)  # the navigation checks and the report read it
            for writer in readers:
                writer(staging)
            planned = [name for writer in navigators for name in writer.plan(staging)]
            written = [p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()]
            document["outputs"] = sorted(set(written) | set(planned))
            write_json_atomic(staging / "target.json", document)  # final: what the navigation files hash
            for writer in navigators:
                writer(staging)
            _swap_into_place(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.document = document
        return Path(folder)

    def export(self, format: str | Iterable[str], folder: str | Path, affine: str | None = None,
               force: bool = False) -> list[Path]:
        """Write the target and candidates (with coil poses) in navigation formats.

        Parameters
        ----------
        format : str or iterable of str
            ``"all"`` or keys of :data:`tmstarget.navigation.export.FORMATS`.
        folder : str or Path
            Where the navigation files go.
        affine : {None, "qform", "sform"}
            Which T1 affine the navigator uses, needed only when they differ.
        force : bool, default=False
            Replace existing files.

        Returns
        -------
        list of Path
            The files written.
        """
        from tmstarget.navigation.export import export_plan

        if self.coil is None:
            raise InputError("this plan has no coil placement (no T1): nothing to navigate to")
        with tempfile.TemporaryDirectory(prefix="tmstarget-plan-") as scratch:
            plan_dir = Path(scratch) / "plan"
            self.save(plan_dir)
            written = export_plan(plan_dir, format, output_dir=folder, t1_choice=affine, force=force)
        return written


class NavigationWriter:
    """Writes navigation files into ``plan_dir/navigation`` (``f(plan_dir)``), for :meth:`Plan.save`.

    With ``formats == "all"`` nothing that is valid is withheld: a T1 the
    navigators disagree on (qform and sform more than 0.1 mm apart, no
    ``affine``) skips the navigation files, and with ``affine`` each format
    whose navigator reads the other transform is skipped. Each skip is one
    line passed to ``on_skipped(message)`` (default: a warning), not fatal.
    :meth:`plan` runs every check, reports the skips and returns the files that
    calling the writer will then write (same Localite time stamp), so
    ``target.json`` can list them before they are written.
    """

    def __init__(self, formats, affine=None, on_skipped=None):
        self.formats, self.affine, self.on_skipped = formats, affine, on_skipped
        self.prepared = None
        self.skipped = False
        self.planned = False

    def _report(self, message):
        if self.on_skipped is None:
            warnings.warn(message, stacklevel=4)
        else:
            self.on_skipped(message)

    def _prepare(self, plan_dir, when=None, report=True):
        from tmstarget.errors import OrientationError
        from tmstarget.navigation.export import prepare_export

        try:
            prepared = prepare_export(plan_dir, self.formats, t1_choice=self.affine, when=when)
        except OrientationError as exc:
            if self.formats != "all":
                raise
            self.skipped = True
            self._report(f"navigation files not written: {exc} (run 'tmstarget export' with --affine)")
            return None
        for fmt, reason in prepared.skipped.items() if report else ():
            self._report(f"{fmt} navigation file not written: {reason}")
        return prepared

    def plan(self, plan_dir) -> list[str]:
        """The files (relative to ``plan_dir``) the writer will write; [] when skipped."""
        import datetime

        self.skipped, self.planned = False, True
        self.prepared = self._prepare(plan_dir, when=datetime.datetime.now())
        if self.prepared is None:
            return []
        return [p.relative_to(plan_dir).as_posix() for p in self.prepared.result().all_files()]

    def __call__(self, plan_dir):
        from tmstarget.navigation.export import write_export

        if self.skipped:  # after plan(), its skips were reported already
            return
        prepared = self.prepared if self.planned else self._prepare(plan_dir)
        if prepared is not None:  # the checks ran once, in plan(): write without reading the T1 again
            write_export(prepared)


def navigation_writer(formats, affine=None, on_skipped=None):
    """A :class:`NavigationWriter` for ``Plan.save(writers=...)``."""
    return NavigationWriter(formats, affine, on_skipped)


def _same_images(a, b):
    if a.keys() != b.keys():
        return False
    for name in a:
        x, y = a[name], b[name]
        if not (np.array_equal(x.affine, y.affine) and x.get_data_dtype() == y.get_data_dtype()
                and np.array_equal(np.asarray(x.dataobj), np.asarray(y.dataobj))):
            return False
    return True


def build_plan(result, participant, command=None, inputs=(), coils=None, anatomy=None, extra_inputs=None,
               files=None, grid_space=None, roots=(), coil_reason=NO_T1_REASON):
    """A :class:`Plan` from the engine's result (what ``save`` writes, computed once).

    Parameters
    ----------
    result : tmstarget.analysis.engine.PlanResult
    participant : str or None
        Label used in the outputs (never a DICOM patient field); None when
        unknown (``sub-`` left out of the file names).
    command : list of str, optional
        Command line, for provenance.
    inputs : sequence of Path
        Input files and folders the plan must never replace or be saved into.
    coils : list of dict, optional
        Coil block per candidate (``coils[0]`` is the target's).
    anatomy : dict, optional
        T1 the world coordinates belong to (path, sha256). A T1 given by an
        absolute path is copied into the plan as ``anat/<file name>`` and
        ``anatomy["t1"]`` names that copy.
    extra_inputs : dict, optional
        More inputs (role -> path) for provenance.
    files : dict of str to bytes, optional
        Other files of the folder (transforms, a converted T1).
    grid_space : str, optional
        World space of the analysis grid (``result.affine``: maps, masks,
        target sphere) when it is not ``result.space``: a plan of fMRIPrep
        inputs reported in T1w keeps its grid in MNI152NLin2009cAsym. Only an
        MNI space is accepted then, and the sphere is centred on
        ``result.mni_mm[0]``. Default: ``result.space``.
    roots : sequence of Path
        Dataset folders: input paths under one are recorded relative to it,
        others by file name only (:func:`~tmstarget.outputs.plan_folder.stored_path`).
    coil_reason : str
        Why there is no coil, recorded when ``coils`` is None.

    Returns
    -------
    Plan
    """
    from tmstarget.analysis.rois import ball_mask, mask_to_img

    grid_space = result.space if grid_space is None else grid_space
    if grid_space != result.space and (not grid_space.startswith("MNI") or result.mni_mm is None):
        raise OutputError(f"an analysis grid in {grid_space} under {result.space} coordinates needs an MNI grid "
                          "and the candidates' mni_mm")
    files = dict(files or {})
    if anatomy is not None and Path(anatomy["t1"]).is_absolute():
        # the T1 travels with the plan (the navigator needs it): no folder name of the inputs is recorded
        t1 = Path(anatomy["t1"])
        anatomy = {**anatomy, "t1": f"anat/{t1.name}"}
        files.setdefault(anatomy["t1"], t1.read_bytes())
    prov = provenance(result, command, extra_inputs, roots)
    document = target_document(result, participant, prov, coils, anatomy, coil_reason)
    maps = {name: _float_img(array, result.affine, grid_space) for name, array in result.maps.items()}
    masks = {}
    if "search_region" in result.masks:
        masks["search_region"] = mask_to_img(result.masks["search_region"], result.affine)
    radius = result.protocol.target.sphere_radius_mm
    centre = result.target.ras_mm if grid_space == result.space else result.mni_mm[0]
    masks["target_sphere"] = mask_to_img(ball_mask(result.shape, result.affine, centre, radius), result.affine)
    document["images"] = image_names(participant, grid_space, maps, masks)
    document["outputs"] = sorted([*_FIXED_FILES, *document["images"]["maps"].values(),
                                  *document["images"]["masks"].values(), *files])
    # the document as target.json holds it (lists, plain floats): a loaded plan compares equal
    document = json.loads(json.dumps(document, allow_nan=False))
    return Plan(document, maps, masks, result.protocol, files, tuple(inputs))


def load_plan(folder: str | Path) -> Plan:
    """Read a plan folder written by ``tmstarget plan`` or :meth:`Plan.save`.

    Parameters
    ----------
    folder : str or Path
        Folder holding ``target.json``.

    Returns
    -------
    Plan
        Equal to the plan that was saved. Navigation files (``navigation/``)
        and ``report.html`` are listed in ``document["outputs"]`` but not read:
        :meth:`Plan.export` and :func:`tmstarget.outputs.report.write_report`
        write them again.
    """
    folder = Path(folder)
    if not (folder / "target.json").is_file():
        raise InputError("not a plan folder (no target.json)", path=folder)
    try:
        document = json.loads((folder / "target.json").read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"target.json is not readable JSON: {exc}", path=folder / "target.json") from exc
    try:
        images = document["images"]
        maps = {name: _load_image(folder / file) for name, file in images["maps"].items()}
        masks = {name: _load_image(folder / file) for name, file in images["masks"].items()}
        protocol = _load_saved_protocol(folder / "protocol.toml", document["provenance"]["protocol"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"target.json is not a tmstarget plan ({type(exc).__name__}: {exc})",
                         path=folder / "target.json") from exc
    own = {*_FIXED_FILES, *images["maps"].values(), *images["masks"].values(), REPORT_NAME}
    files = {relative: (folder / relative).read_bytes() for relative in document["outputs"]
             if relative not in own and not relative.startswith("navigation/")}
    return Plan(document, maps, masks, protocol, files)


def _load_image(path):
    img = nib.load(path)
    return nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)


def _load_saved_protocol(path, recorded):
    """The protocol of a plan folder: its ``protocol.toml`` with the recorded overrides applied again."""
    from tmstarget.protocol import load_protocol

    text = path.read_text(encoding="utf-8")
    original = text.split(_OVERRIDE_NOTE, 1)[0]
    with tempfile.TemporaryDirectory(prefix="tmstarget-protocol-") as scratch:
        copy = Path(scratch) / "protocol.toml"
        copy.write_text(original, encoding="utf-8")
        protocol = load_protocol(copy, recorded.get("overrides", {}))
    return dataclasses.replace(protocol, source=recorded["source"])
