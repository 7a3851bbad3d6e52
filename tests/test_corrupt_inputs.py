"""Corrupt inputs (issue 14, item 11): every reader, every kind of damage -> one line naming the file, exit 1.

Through the CLI: the BOLD, brain mask and T1 images (truncated ``.nii.gz``,
truncated ``.nii``, corrupt compressed bytes, not a NIfTI, empty), the
confounds and events tables (cut mid-row, binary bytes, a ragged row, empty)
and the JSON sidecar (cut, binary, not an object, empty). Before the shared
reader (:mod:`tmstarget.ingest.read`) a truncated ``.nii.gz`` gave a 45-line
``EOFError`` traceback and a truncated ``.nii`` ``ValueError: Oh dear, n_bytes``.
"""

import gzip

import nibabel as nib
import pytest

import tmstarget
from test_plan import EVENTS, FUNC, REST_BOLD, REST_CONF, REST_MASK, TASK_BOLD, TASK_CONF, TASK_MASK
from test_plan_bad_input import fails, rest_args
from tmstarget.errors import InputError

T1 = FUNC.parent / "anat" / "sub-01_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz"
REST_SIDECAR = FUNC / "sub-01_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.json"
IMAGE_DAMAGE = {  # kind -> (file suffix, words the message must hold)
    "truncated_gz": (".nii.gz", "compressed data end early"),
    "truncated_nii": (".nii", "the file is truncated"),
    "corrupt_gz": (".nii.gz", "compressed data are corrupt"),
    "not_nifti": (".nii.gz", "cannot read the {role} image as NIfTI"),
    "empty": (".nii.gz", "{role} file is empty"),
}
TABLE_DAMAGE = {
    "cut_mid_row": "the file looks truncated",
    "binary": "is not UTF-8 text",
    "ragged_row": "row 4 has",
    "empty": "file is empty",
}
JSON_DAMAGE = {
    "cut": "is not valid JSON",
    "binary": "is not UTF-8 text",
    "not_object": "must hold a JSON object",
    "empty": "file is empty",
}


def damaged_image(source, kind, folder, name):
    """A copy of ``source`` damaged as ``kind`` (see IMAGE_DAMAGE)."""
    suffix = IMAGE_DAMAGE[kind][0]
    path = folder / f"{name}{suffix}"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "not_nifti":
        path.write_bytes(gzip.compress(b"onset\tduration\n" * 50))
    elif kind == "truncated_nii":
        nib.save(nib.load(source), path)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * 0.6)])
    else:
        data = bytearray(source.read_bytes())
        if kind == "truncated_gz":
            data = data[: int(len(data) * 0.6)]
        else:  # bytes overwritten inside the deflate stream: a zlib error or a CRC mismatch
            middle = len(data) // 2
            data[middle:middle + 64] = bytes(range(64))
        path.write_bytes(bytes(data))
    return path


def damaged_text(source, kind, folder, name):
    path = folder / name
    text = source.read_text()
    if kind in ("empty",):
        path.write_bytes(b"")
    elif kind == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe" + text.encode()[:100])
    elif kind in ("cut_mid_row", "cut"):
        lines = text.splitlines(keepends=True)
        if name.endswith(".json"):
            path.write_text(text[: len(text) // 2])
        else:  # the last row stops after its second field
            path.write_text("".join(lines[:-1]) + "\t".join(lines[-1].split("\t")[:2]) + "\n")
    elif kind == "ragged_row":
        lines = text.splitlines(keepends=True)
        lines[3] = lines[3].rstrip("\n") + "\t0.5\n"
        path.write_text("".join(lines))
    elif kind == "not_object":
        path.write_text("[2.0, 2.5]\n")
    return path


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("kind", sorted(IMAGE_DAMAGE))
@pytest.mark.parametrize("role", ["BOLD", "brain mask", "T1"])
def test_damaged_image_is_one_line(capsys, tmp_path, inputs, role, kind):
    source = {"BOLD": REST_BOLD, "brain mask": REST_MASK, "T1": T1}[role]
    bad = damaged_image(source, kind, inputs, role.replace(" ", "_"))
    argv = {"BOLD": rest_args(bold=bad), "brain mask": rest_args(mask=bad), "T1": rest_args() + ["--t1", bad]}[role]
    fails(capsys, tmp_path, argv, bad.name, IMAGE_DAMAGE[kind][1].format(role=role))


@pytest.mark.parametrize("kind", sorted(TABLE_DAMAGE))
@pytest.mark.parametrize("role", ["confounds", "events"])
def test_damaged_table_is_one_line(capsys, tmp_path, inputs, role, kind):
    bad = damaged_text(REST_CONF if role == "confounds" else EVENTS, kind, inputs, f"{role}.tsv")
    if role == "confounds":
        argv = rest_args(confounds=bad)
    else:
        argv = ["--task-bold", TASK_BOLD, "--task-confounds", TASK_CONF, "--events", bad, "--mask", TASK_MASK]
    fails(capsys, tmp_path, argv, bad.name, role, TABLE_DAMAGE[kind])


@pytest.mark.parametrize("kind", sorted(JSON_DAMAGE))
def test_damaged_sidecar_is_one_line(capsys, tmp_path, inputs, kind):
    """An fMRIPrep folder whose rest run's sidecar is damaged (the other files are links to the sample's)."""
    func = inputs / "sub-01" / "func"
    func.mkdir(parents=True)
    for source in (REST_BOLD, REST_CONF, REST_MASK):
        (func / source.name).symlink_to(source)
    bad = damaged_text(REST_SIDECAR, kind, func, REST_SIDECAR.name)
    fails(capsys, tmp_path, [inputs, "--participant", "01", "--protocol", "rest-dmpfc"], bad.name, "sidecar",
          JSON_DAMAGE[kind])


def test_native_run_with_a_truncated_image_and_sidecar(capsys, tmp_path, inputs):
    """Raw runs read through the same helper: a truncated NIfTI run, then a damaged sidecar beside a good one."""
    bad = damaged_image(REST_BOLD, "truncated_gz", inputs, "rest_bold")
    argv = ["--native", "--rest-bold", bad, "--t1", T1, "--protocol", "sgacc-dlpfc"]
    fails(capsys, tmp_path, argv, bad.name, "cannot read the functional run image: the compressed data end early")
    good = inputs / "rest2_bold.nii.gz"
    good.symlink_to(REST_BOLD)
    damaged_text(REST_SIDECAR, "cut", inputs, "rest2_bold.json")
    fails(capsys, tmp_path, ["--native", "--rest-bold", good, "--t1", T1, "--protocol", "sgacc-dlpfc"],
          "rest2_bold.json", "sidecar file is not valid JSON")


def test_api_raises_the_same_error(inputs):
    bad = damaged_image(REST_BOLD, "truncated_nii", inputs, "rest_bold")
    with pytest.raises(InputError, match="rest_bold.nii: cannot read the BOLD image: the file is truncated"):
        tmstarget.plan(protocol="rest-dmpfc", rest_bold=bad, rest_confounds=REST_CONF, mask=REST_MASK)
