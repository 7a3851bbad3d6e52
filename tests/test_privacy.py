"""Privacy everywhere: no patient or site identifier of the DICOM headers reaches any output (issue 20, item 6).

The sample patient's resting-state run (40 volumes, Siemens MOSAIC) and its
T1 (one slice per file) are written as DICOM whose headers carry distinctive
identifying values (`PATIENT`, and the family name typed into the
SeriesDescription, as operators do), into a folder named after the patient
(`INPUT_FOLDER`, as clinics do: no input path may reach an output, issue 14
item 16).  Every command that reads DICOM is run as a subprocess with DEBUG
logging on:

* ``tmstarget convert`` (both series),
* ``tmstarget plan --rest-dicom ... --t1-dicom ...`` (native plan, with
  ``--work-dir`` kept, every navigation format and the HTML report),
* ``tmstarget replay --fast`` into an incoming folder, then ``tmstarget watch``
  with the T1 as a DICOM folder, ``--expected-volumes`` and ``--stop-after``.

One helper, `find_identifiers`, scans every file and folder name and every
byte of every file written (gzip and zip members decompressed; NIfTI
``descrip``, ``aux_file``, ``intent_name``, ``db_name`` and header
extensions named explicitly; ANTs ``.mat``/``.h5`` as bytes), plus the
captured stdout/stderr (which holds the log), case-insensitively, in ASCII
and UTF-16, for every form of every value: as written, ``^`` replaced by
spaces, each part of a person name (all parts here have 8+ letters, so
binary voxel data cannot match by chance), and the birth date as YYYYMMDD and
YYYY-MM-DD.  The same helper must find every value in the input DICOM
files and in planted hiding places, so it can fail.
"""

import gzip
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tmstarget.testing.dicom import write_dicom_series, write_mosaic_series

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "derivatives" / "fmriprep" / "sub-01"
REST = SAMPLE / "func" / "sub-01_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
T1 = SAMPLE / "anat" / "sub-01_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz"
N_VOLUMES = 40
PARTICIPANT = "P01"
# Written into every input file; none of these strings may appear in any output.
PATIENT = {
    "PatientName": "QUIXWORTH^ZEPHYRINA^BELLAMAR",
    "PatientID": "PIDQX7350912",
    "PatientBirthDate": "19580317",
    "OtherPatientIDs": "OPIDZK4481907",
    "InstitutionName": "Vexhollow Quarry Infirmary",
    "InstitutionAddress": "17 Gribblethorpe Lane, Nethermoor",
    "ReferringPhysicianName": "DRUMMELSBY^HYACINTHUS",
    "PerformingPhysicianName": "PLOVERCASTLE^EUPHEMIA",
    "OperatorsName": "SNODGRINDLE^OSWALDINE",
    "AccessionNumber": "ACCZV9021774",
}
PERSON_NAME_FIELDS = ("PatientName", "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName")
REST_DESCRIPTION = "ep2d_rest QUIXWORTH"  # the family name typed into the protocol by the operator
CLEAN = ["--set", "clean.min_volumes=20", "--set", "clean.dummy_volumes=0",  # a 40-volume run
         "--set", "inference.min_effective_dof=0"]
# Runs the CLI with every logger at DEBUG on stderr (main's own basicConfig then keeps it).
CLI = ("import logging, sys; logging.basicConfig(level=logging.DEBUG, "
       "format='%(levelname)s %(name)s: %(message)s'); "
       "from tmstarget.cli.main import main; sys.exit(main(sys.argv[1:]))")
NIFTI_TEXT_FIELDS = ("descrip", "aux_file", "intent_name", "db_name")
# Clinics name folders after the patient: no path, only file names and hashes, may reach an output (issue 14 item 16).
INPUT_FOLDER = "Quixworth_Zephyrina"


def identifier_forms(fields):
    """Every lower-case form a value could take in an output -> the DICOM keyword it comes from."""
    forms = {}
    for keyword, value in fields.items():
        value = value.strip()
        candidates = {value, value.replace("^", " "), " ".join(value.replace("^", " ").split())}
        if keyword in PERSON_NAME_FIELDS:
            candidates.update(part for part in value.replace("^", " ").split() if len(part) >= 4)
        if keyword == "PatientBirthDate":
            candidates.add(f"{value[:4]}-{value[4:6]}-{value[6:]}")
        for candidate in candidates:
            forms[candidate.lower()] = keyword
    return forms


def _readable_parts(path):
    """(label, bytes) views of one file: the raw bytes, and what gzip/zip/NIfTI headers hold inside."""
    raw = path.read_bytes()
    yield "", raw
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
        yield " [gunzipped]", raw
    if raw[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            for member in archive.namelist():
                yield f" [zip member {member}]", member.encode() + b"\n" + archive.read(member)
    if path.name.endswith((".nii", ".nii.gz")):
        img = nib.load(path)
        for field in NIFTI_TEXT_FIELDS:
            yield f" [NIfTI {field}]", bytes(img.header[field].tobytes())
        for index, extension in enumerate(img.header.extensions):
            yield f" [NIfTI extension {index} code {extension.get_code()}]", bytes(extension.get_content())


def find_identifiers(forms, folders=(), texts=None):
    """Where any form of any identifier occurs: (place, form) pairs; empty when clean.

    ``folders``: every file and folder name below them, and every file's bytes
    (see `_readable_parts`); ``texts``: label -> captured output.  Matching is
    case-insensitive, in ASCII/UTF-8 and UTF-16-LE.
    """
    encoded = {form: (form.encode("utf-8"), form.encode("utf-16-le")) for form in forms}
    hits = []

    def scan(place, data):
        low = data.lower()
        hits.extend((place, form) for form, variants in encoded.items() if any(v in low for v in variants))

    for folder in folders:
        folder = Path(folder)
        for path in sorted(folder.rglob("*")):
            relative = str(path.relative_to(folder))
            hits.extend((f"file name {folder.name}/{relative}", f) for f in forms if f in relative.lower())
            if path.is_file():
                for label, data in _readable_parts(path):
                    scan(f"{folder.name}/{relative}{label}", data)
    for label, text in (texts or {}).items():
        scan(label, text.encode("utf-8"))
    return hits


def _run(*args):
    """Run ``tmstarget ARGS`` (DEBUG logging) in a subprocess; return the CompletedProcess."""
    result = subprocess.run([sys.executable, "-c", CLI, *map(str, args)], capture_output=True, text=True,
                            timeout=900, check=False)
    assert result.returncode == 0, f"tmstarget {args[0]} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _texts(name, result):
    return {f"{name} stdout": result.stdout, f"{name} stderr/log": result.stderr}


def _suffixes(folder):
    return {"".join(p.suffixes[-2:]) if p.name.endswith(".gz") else p.suffix
            for p in Path(folder).rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The sample rest run (40 volumes) as MOSAIC and the sample T1 as slices, identifying fields filled in."""
    root = tmp_path_factory.mktemp("privacy_inputs") / INPUT_FOLDER  # a folder named after the patient
    bold = nib.load(REST)
    run = nib.Nifti1Image(np.asarray(bold.dataobj[..., :N_VOLUMES]), bold.affine, bold.header)
    write_mosaic_series(run, root / "dicom" / "rest", series_number=5, series_description=REST_DESCRIPTION,
                        t_r_s=2.0, patient_fields=PATIENT)
    write_dicom_series(nib.load(T1), root / "dicom" / "t1", series_number=2, series_description="t1_mprage",
                       patient_fields=PATIENT)
    return {"root": root, "dicom": root / "dicom", "rest": root / "dicom" / "rest", "t1": root / "dicom" / "t1"}


@pytest.fixture(scope="module")
def forms():
    forms = identifier_forms(PATIENT)
    assert min(map(len, forms)) >= 8, "short forms would match binary voxel data by chance"
    return forms


def _assert_clean(forms, folders, texts):
    hits = find_identifiers(forms, folders, texts)
    assert not hits, "identifying DICOM values in the outputs:\n" + "\n".join(
        f"  {place}: {form!r} ({forms[form]})" for place, form in hits[:40])


def test_inputs_hold_every_identifier(inputs, forms):
    """The test can fail: the helper finds every field (and the name in the description) in the inputs."""
    for series in ("rest", "t1"):
        found = {forms[form] for _, form in find_identifiers(forms, [inputs[series]])}
        assert found == set(PATIENT), f"{series}: not found {set(PATIENT) - found}"
        header = pydicom.dcmread(next(inputs[series].iterdir()), stop_before_pixels=True)
        for keyword, value in PATIENT.items():
            assert str(header.get(keyword)) == value, keyword
    header = pydicom.dcmread(next(inputs["rest"].iterdir()), stop_before_pixels=True)
    assert "MOSAIC" in header.ImageType
    assert any(form in header.SeriesDescription.lower() for form in forms)


def test_helper_finds_identifiers_wherever_they_hide(tmp_path, forms):
    """Planted in NIfTI header fields and extensions (gzipped), a zip, UTF-16 text, a file name, a log text."""
    name, birth, pid = PATIENT["PatientName"], PATIENT["PatientBirthDate"], PATIENT["PatientID"]
    planted = {"descrip": name.replace("^", " "), "aux_file": pid, "intent_name": "Zephyrina",
               "db_name": f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"}
    for index, field in enumerate(NIFTI_TEXT_FIELDS):
        img = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4))
        img.header[field] = planted[field]
        nib.save(img, tmp_path / f"field{index}.nii.gz")
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4))
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, f"id {pid}".encode()))
    nib.save(img, tmp_path / "extension.nii.gz")
    with zipfile.ZipFile(tmp_path / "arrays.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("meta.txt", f"born {birth[:4]}-{birth[4:6]}-{birth[6:]}")
    (tmp_path / "windows.txt").write_text(PATIENT["InstitutionName"].upper(), encoding="utf-16-le")
    (tmp_path / f"report_{PATIENT['AccessionNumber'].lower()}.txt").write_text("nothing inside")
    places = {place.split(" [")[0] for place, _ in find_identifiers(forms, [tmp_path])}
    expected = {f"{tmp_path.name}/field{i}.nii.gz" for i in range(4)} | {
        f"{tmp_path.name}/extension.nii.gz", f"{tmp_path.name}/arrays.npz", f"{tmp_path.name}/windows.txt",
        f"file name {tmp_path.name}/report_{PATIENT['AccessionNumber'].lower()}.txt"}
    assert expected <= places, expected - places
    assert find_identifiers(forms, texts={"log": f"INFO: patient {PATIENT['OperatorsName'].split('^')[0].title()}"})
    assert not find_identifiers(forms, texts={"log": "INFO: series 5 converted: shape (46, 55, 46, 40)"})


def test_convert_writes_no_identifier(inputs, forms, tmp_path):
    out = tmp_path / "converted"
    result = _run("convert", inputs["dicom"], out, "--participant", PARTICIPANT)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    sub = f"sub-{PARTICIPANT}"
    # series 5's description holds the patient's name: the task label falls back to the series number
    assert written == ["dataset_description.json", f"{sub}/anat/{sub}_T1w.json", f"{sub}/anat/{sub}_T1w.nii.gz",
                       f"{sub}/func/{sub}_task-series005_bold.json", f"{sub}/func/{sub}_task-series005_bold.nii.gz"]
    assert "DEBUG" in result.stderr  # the log was on
    _assert_clean(forms, [out], _texts("convert", result))


@pytest.mark.slow
def test_native_plan_writes_no_identifier(inputs, forms, tmp_path):
    out, work = tmp_path / "plan", tmp_path / "work"
    result = _run("plan", "--rest-dicom", inputs["rest"], "--t1-dicom", inputs["t1"], "--participant", PARTICIPANT,
                  "--protocol", "sgacc-dlpfc", "--output", out, "--work-dir", work, *CLEAN)
    assert (out / "target.json").is_file() and (out / "anat").is_dir() and (out / "report.html").is_file()
    assert {".json", ".tsv", ".nii.gz", ".toml", ".mat", ".csv", ".txt", ".xml"} <= _suffixes(out) | _suffixes(work)
    _assert_clean(forms, [out, work], _texts("plan", result))


@pytest.mark.slow
def test_watch_writes_no_identifier(inputs, forms, tmp_path):
    incoming, out = tmp_path / "incoming", tmp_path / "watch"
    replayed = _run("replay", inputs["rest"], incoming, "--fast")
    assert len(list(incoming.iterdir())) == N_VOLUMES
    result = _run("watch", incoming, "--t1", inputs["t1"], "--participant", PARTICIPANT, "--protocol", "sgacc-dlpfc",
                  "--output", out, "--expected-volumes", N_VOLUMES, "--stop-after", 5, *CLEAN,
                  "--set", "clean.low_pass_hz=0")
    assert (out / "live.json").is_file() and (out / "watch.log").is_file() and (out / "plan" / "target.json").is_file()
    assert (out / "plan" / "report.html").is_file()  # scanned with the rest
    assert {".json", ".tsv", ".nii", ".nii.gz", ".log", ".mat", ".csv", ".txt", ".xml"} <= _suffixes(out)
    _assert_clean(forms, [out], {**_texts("replay", replayed), **_texts("watch", result)})

