"""DICOM ingest checked against dcm2niix references (shared data) and nibabel's CSA reader."""

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

from tmstarget.cli.main import main as convert_main
from tmstarget.ingest.dicom.csa import parse_csa_header
from tmstarget.ingest.dicom.series import convert, find_series, load_series

# (DICOM folder, reference stem) relative to shared/data.
CASES = {
    "func-run1": ("pydecnef-sub1/dicom/func-run1", "pydecnef-sub1/reference/func-run1"),
    "t1": ("pydecnef-sub1/dicom/t1", "pydecnef-sub1/reference/t1"),
    "ax_asc_35sl": ("dcm-qa-mosaic/ax_asc_35sl/dicom", "dcm-qa-mosaic/ax_asc_35sl/reference/ax_asc_35sl_6"),
    "ax_desc_35sl": ("dcm-qa-mosaic/ax_desc_35sl/dicom", "dcm-qa-mosaic/ax_desc_35sl/reference/ax_desc_35sl_7"),
    "ax_int_35sl": ("dcm-qa-mosaic/ax_int_35sl/dicom", "dcm-qa-mosaic/ax_int_35sl/reference/ax_int_35sl_8"),
    "ax_int_36sl": ("dcm-qa-mosaic/ax_int_36sl/dicom", "dcm-qa-mosaic/ax_int_36sl/reference/ax_int_36sl_12"),
    "sag_int_36sl": ("dcm-qa-mosaic/sag_int_36sl/dicom", "dcm-qa-mosaic/sag_int_36sl/reference/sag_int_36sl_21"),
    "ep2d_asc_hf_36sl": (
        "dcm-qa-mosaic/ep2d_asc_hf_36sl/dicom",
        "dcm-qa-mosaic/ep2d_asc_hf_36sl/reference/Siemens_ep2d_Asc_HF_10",
    ),
    "philips": (
        "dcm-qa-other/philips_epi_asc_singleframe/dicom",
        "dcm-qa-other/philips_epi_asc_singleframe/reference/EPI_asc_CLEAR_201",
    ),
    "ge": ("dcm-qa-other/ge_epirt_singleframe/dicom", "dcm-qa-other/ge_epirt_singleframe/reference/GE_Brain_Routine_2"),
    "xa10": (
        "dcm-qa-other/siemens_xa10_enhanced/dicom",
        "dcm-qa-other/siemens_xa10_enhanced/reference/Siemens_REST1_w_SMS_PF7-8_6",
    ),
}
# The two volumes of ax_asc_35sl report MosaicRefAcqTimes spanning 2437.5 and 2440 ms in the DICOM
# itself; like dcm2niix (issue 870) we then use the second volume's (checked below against pydicom).


def _reference(shared_data, stem):
    nii = next(p for p in (shared_data / f"{stem}.nii.gz", shared_data / f"{stem}.nii") if p.exists())
    return nib.load(nii), json.loads((shared_data / f"{stem}.json").read_text())


def _to_our_orientation(ref_img, our_img):
    """Reference data, affine and slice-index map brought to our voxel axes with nibabel."""
    transform = ornt_transform(io_orientation(ref_img.affine), io_orientation(our_img.affine))
    data = apply_orientation(np.asanyarray(ref_img.dataobj.get_unscaled()), transform)
    affine = ref_img.affine @ inv_ornt_aff(transform, ref_img.shape[:3])
    ref_k = np.broadcast_to(np.arange(ref_img.shape[2])[None, None, :], ref_img.shape[:3])
    ref_k_in_ours = apply_orientation(ref_k, transform)
    return data, affine, ref_k_in_ours


def _pe_world_vector(direction, affine):
    axis = "ijk".index(direction[0])
    sign = -1.0 if direction.endswith("-") else 1.0
    vector = sign * affine[:3, axis]
    return vector / np.linalg.norm(vector)


@pytest.fixture(scope="module")
def loaded(shared_data):
    return {name: load_series(shared_data / dicom) for name, (dicom, _) in CASES.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_dcm2niix(name, shared_data, loaded):
    image, sidecar = loaded[name]
    ref_img, ref_json = _reference(shared_data, CASES[name][1])
    ref_data, ref_affine, ref_k = _to_our_orientation(ref_img, image)
    ours = np.asanyarray(image.dataobj.get_unscaled() if hasattr(image.dataobj, "get_unscaled") else image.dataobj)
    assert ours.shape == ref_data.shape
    np.testing.assert_array_equal(ours, ref_data)
    np.testing.assert_allclose(image.get_fdata(dtype=np.float32), apply_orientation(
        ref_img.get_fdata(dtype=np.float32),
        ornt_transform(io_orientation(ref_img.affine), io_orientation(image.affine))
    ), rtol=1e-6)
    np.testing.assert_allclose(image.affine, ref_affine, atol=1e-3)
    assert image.header["qform_code"] == 1 and image.header["sform_code"] == 1
    # qform is a quaternion: it cannot hold the 1e-6 non-orthogonality of 6-digit cosines
    np.testing.assert_allclose(image.header.get_qform(), image.header.get_sform(), atol=1e-4)
    assert sidecar["RepetitionTime"] == pytest.approx(ref_json["RepetitionTime"], abs=1e-3)
    assert sidecar["EchoTime"] == pytest.approx(ref_json["EchoTime"], abs=1e-6)
    assert sidecar["SeriesNumber"] == ref_json["SeriesNumber"]
    assert sidecar["Manufacturer"] == ref_json["Manufacturer"]
    if image.ndim == 4:
        assert image.header.get_zooms()[3] == pytest.approx(ref_json["RepetitionTime"], abs=1e-3)
    if "SliceTiming" in ref_json:
        assert np.all(ref_k == ref_k[:1, :1, :]), "slice axis must map to slice axis"
        expected = np.asarray(ref_json["SliceTiming"])[ref_k[0, 0, :]]
        np.testing.assert_allclose(sidecar["SliceTiming"], expected, atol=0.001)
    else:
        assert "SliceTiming" not in sidecar
    if "PhaseEncodingDirection" in ref_json and "PhaseEncodingDirection" in sidecar:
        ours_pe = _pe_world_vector(sidecar["PhaseEncodingDirection"], image.affine)
        ref_pe = _pe_world_vector(ref_json["PhaseEncodingDirection"], ref_img.affine)
        assert ours_pe @ ref_pe > 0.99


def test_phase_encoding_known_where_dcm2niix_knows_it(loaded):
    for name in ("func-run1", "ax_asc_35sl", "sag_int_36sl", "ep2d_asc_hf_36sl", "xa10"):
        assert "PhaseEncodingDirection" in loaded[name][1], name
    assert loaded["ge"][1]["PhaseEncodingAxis"] == "j"  # GE polarity not decoded: axis only


def test_slice_timing_is_raw_mosaic_times_in_spatial_order(shared_data, loaded):
    """H>>F mosaic: raw (0019,1029) times run 2605 -> 0 ms in tile order; spatial order ascends."""
    files = sorted((shared_data / CASES["ep2d_asc_hf_36sl"][0]).iterdir())
    raw_ms = np.asarray(pydicom.dcmread(files[0], stop_before_pixels=True)[0x0019, 0x1029].value)
    assert raw_ms[0] > raw_ms[-1]
    timing = np.asarray(loaded["ep2d_asc_hf_36sl"][1]["SliceTiming"])
    np.testing.assert_allclose(timing, (raw_ms[::-1] - raw_ms.min()) / 1000.0, atol=1e-6)
    files = sorted((shared_data / CASES["ax_asc_35sl"][0]).iterdir())
    first_ms, second_ms = (np.asarray(pydicom.dcmread(f, stop_before_pixels=True)[0x0019, 0x1029].value)
                           for f in files)
    assert np.ptp(first_ms) != np.ptp(second_ms)
    np.testing.assert_allclose(loaded["ax_asc_35sl"][1]["SliceTiming"], second_ms / 1000.0, atol=1e-6)


@pytest.mark.filterwarnings("ignore:The DICOM readers are highly experimental")
def test_csa_parser_matches_nibabel(shared_data):
    from nibabel.nicom import csareader

    path = sorted((shared_data / CASES["func-run1"][0]).iterdir())[0]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    for tag in ((0x0029, 0x1010), (0x0029, 0x1020)):
        raw = ds[tag].value
        ours = parse_csa_header(raw)
        theirs = csareader.read(raw)["tags"]
        assert set(ours) == set(theirs)
        for key in ("NumberOfImagesInMosaic", "SliceNormalVector", "MosaicRefAcqTimes",
                    "PhaseEncodingDirectionPositive"):
            if key in theirs and theirs[key]["items"]:
                np.testing.assert_allclose(ours[key], theirs[key]["items"], err_msg=key)
    assert parse_csa_header(ds[0x0029, 0x1010].value)["NumberOfImagesInMosaic"] == [34]


def test_find_series_lists_without_patient_fields(shared_data):
    series = find_series(shared_data / "pydecnef-sub1" / "dicom")
    assert [(s.number, s.description, s.n_volumes, s.n_files) for s in series] == [
        (5, "PERCEPTION", 120, 120),
        (11, "t1_mprage_sag_p2_1iso_MGH", 1, 8),
    ]
    assert series[0].shape == (64, 64, 34, 120) and series[0].layout == "mosaic"
    assert series.n_skipped_non_dicom == 0


def _patient_strings(dicom_dirs):
    strings = set()
    for folder in dicom_dirs:
        for path in sorted(Path(folder).iterdir()):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            for keyword in ("PatientName", "PatientID", "PatientBirthDate"):
                value = str(ds.get(keyword, "")).strip()
                if value:
                    strings.add(value)
    return strings


def test_no_patient_data_in_outputs_or_logs(shared_data, tmp_path, caplog):
    dicom_dirs = [shared_data / dicom for dicom, _ in CASES.values() if "func-run1" not in dicom]
    forbidden = _patient_strings(dicom_dirs)
    assert forbidden, "the shared DICOMs are expected to hold patient fields"
    written = []
    caplog.set_level(logging.DEBUG)
    for index, folder in enumerate(dicom_dirs):
        written += convert(folder, tmp_path / f"out{index}", "01")[:2]
    assert len(written) == 2 * len(dicom_dirs)
    for path in written:
        content = path.read_bytes()
        if path.suffix == ".gz":
            content += nib.load(path).header.binaryblock
        for text in forbidden:
            assert text.lower() not in path.name.lower()
            assert text.encode("latin-1").lower() not in content.lower(), (path.name, "holds a patient field")
    logs = caplog.text.lower()
    for text in forbidden:
        assert text.lower() not in logs
    sidecar = json.loads(written[1].read_text())
    assert not {"PatientName", "PatientID", "PatientBirthDate"} & set(sidecar)


def test_convert_writes_bids_names_and_refuses_an_existing_subject(shared_data, tmp_path):
    folder = shared_data / CASES["ax_int_36sl"][0]
    written = convert(folder, tmp_path / "out", subject="P01")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in written] == [
        "sub-P01/func/sub-P01_task-axint36sl_bold.nii.gz", "sub-P01/func/sub-P01_task-axint36sl_bold.json",
        "dataset_description.json"]
    assert json.loads(written[1].read_text())["TaskName"] == "axint36sl"
    from tmstarget.errors import InputError, OutputError

    with pytest.raises(OutputError, match="sub-P01 already exists"):
        convert(folder, tmp_path / "out", subject="P01")
    second = convert(folder, tmp_path / "out", subject="P02", task="rest")  # a second subject in the same root
    assert [p.name for p in second] == ["sub-P02_task-rest_bold.nii.gz", "sub-P02_task-rest_bold.json"]
    with pytest.raises(InputError, match="letters and digits"):
        convert(folder, tmp_path / "other", subject="../x")
    with pytest.raises(InputError, match="task label"):
        convert(folder, tmp_path / "other", subject="1", task="rest run")
    assert not (tmp_path / "other").exists()


def test_convert_numbers_runs_that_would_share_a_name(shared_data, tmp_path):
    folders = [shared_data / CASES[name][0] for name in ("ax_asc_35sl", "ax_desc_35sl")]
    written = convert([f for folder in folders for f in sorted(folder.iterdir())], tmp_path, "7", task="rest")
    assert [p.name for p in written if p.suffix == ".gz"] == ["sub-7_task-rest_run-1_bold.nii.gz",
                                                             "sub-7_task-rest_run-2_bold.nii.gz"]
    assert nib.load(written[0]).header.get_zooms()[3] == 3.0


def test_cli_converts_one_series_with_progress(shared_data, tmp_path, capsys):
    out = tmp_path / "cli"
    code = convert_main([
        "convert", str(shared_data / "pydecnef-sub1" / "dicom"), str(out), "--series", "11", "--subject", "7",
    ])
    assert code == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "dataset_description.json", "sub-7/anat/sub-7_T1w.json", "sub-7/anat/sub-7_T1w.nii.gz"]
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].endswith("sub-7_T1w.nii.gz")
    # not a terminal: plain lines, no carriage returns, first and last count of each long step
    lines = captured.err.splitlines()
    assert "\r" not in captured.err
    assert any(line.endswith("reading DICOM headers: 0/128") for line in lines)
    assert any(line.endswith("reading DICOM headers: 128/128") for line in lines)
    assert any(line.endswith("series 11: assembling volumes: 1/1") for line in lines)
    assert len(lines) <= 11 + 1 + 2 + 1  # tenths of the header scan, the volume, the write; no flood
    assert convert_main(["convert", str(shared_data / "pydecnef-sub1" / "dicom"), str(out), "--subject", "7"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert convert_main(["convert", str(shared_data / "pydecnef-sub1" / "dicom"), str(out / "x"), "-q",
                         "--subject", "8", "--series", "11"]) == 0
    assert capsys.readouterr().err == ""


def test_progress_redraws_one_line_on_a_terminal():
    import io

    from tmstarget.cli._common import CountProgress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = CountProgress(stream)
    for done in range(0, 101):
        progress("reading DICOM headers", done, 100)
    progress("series 5: assembling volumes", 3, 3)
    progress.close()
    text = stream.getvalue()
    assert text.count("\n") == 2  # one finished line per stage
    assert text.split("\n")[0].endswith("reading DICOM headers: 100/100")
    assert "\r" in text
