"""`convert` output equals dcm2niix's, voxel for voxel and key for key (issue 14, items 3-5).

Every series of ../shared/data is converted to disk with
`tmstarget.ingest.dicom.series.convert` and compared, *without reorienting
anything*, with the dcm2niix reference stored next to it:

* the same on-disk data type and the same stored integers, the same
  ``scl_slope``/``scl_inter`` (float32, exact), so the scaled voxels are
  identical too (Philips: stored integers with the precise floating-point
  scale, item 3);
* the same voxel axes (so the same slice order) and the same affine within
  the float32 precision of dcm2niix's header;
* every slice time, index by index, within 1e-4 s (dcm2niix prints 6 digits);
  that covers the sagittal mosaic (item 4) and the GE series (item 5);
* every sidecar key both converters write, within dcm2niix's printed
  precision (``%g``, 6 significant digits).  Exempt: ``ConversionSoftware*``
  and ``ImageType`` (kept verbatim from (0008,0008); dcm2niix appends a
  derived ``MAGNITUDE`` and, in old versions, splits ``M_FFE``).

GE timing without the RTIA timer (DV26 files have none), with a sequential or
multi-phase protocol, a group delay and a reversed instance order is compared
with dcm2niix run on the same edited files (the pip package's binary).
"""

import gzip
import json
import logging
import struct
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest

from test_dicom import CASES
from tmstarget.ingest.dicom.series import convert, load_series

EXEMPT_KEYS = {"ConversionSoftware", "ConversionSoftwareVersion", "ImageType"}
AFFINE_ATOL_MM = 5e-4  # dcm2niix stores float32 (1e-6 of ~200 mm) and rounds the mosaic corner
GE = "dcm-qa-other/ge_epirt_singleframe/dicom"
GE_LOWEST_Z_MM = -9.68721  # ImagePositionPatient z of the lowest of the 8 slices (3.3 mm apart)


def _reference(shared_data, stem):
    nii = next(p for p in (shared_data / f"{stem}.nii.gz", shared_data / f"{stem}.nii") if p.exists())
    return nib.load(nii), json.loads((shared_data / f"{stem}.json").read_text())


def _same(ours, ref):
    """Equal, numbers within dcm2niix's ``%g`` rounding (6 significant digits)."""
    if isinstance(ref, list):
        return isinstance(ours, list) and len(ours) == len(ref) and all(_same(a, b) for a, b in zip(ours, ref))
    if isinstance(ref, (int, float)) and not isinstance(ref, bool):
        return isinstance(ours, (int, float)) and abs(ours - ref) <= 5e-6 * abs(ref) + 1e-12
    return ours == ref


def _scaling(img):
    slope, inter = img.dataobj.slope, img.dataobj.inter
    return np.float32(slope), np.float32(inter)


@pytest.fixture(scope="module")
def converted(shared_data, tmp_path_factory):
    out = {}
    for name, (dicom, _) in CASES.items():
        written = convert(shared_data / dicom, tmp_path_factory.mktemp(name), subject="01")
        nifti = next(p for p in written if p.name.endswith(".nii.gz"))
        sidecar = next(p for p in written if p.suffix == ".json" and p.parent == nifti.parent)
        out[name] = nib.load(nifti), json.loads(sidecar.read_text())
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_stored_integers_and_scaling_equal_dcm2niix(name, shared_data, converted):
    ours, _ = converted[name]
    ref, _ = _reference(shared_data, CASES[name][1])
    assert ours.get_data_dtype() == ref.get_data_dtype()
    assert nib.aff2axcodes(ours.affine) == nib.aff2axcodes(ref.affine)
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(np.asanyarray(ours.dataobj.get_unscaled()), np.asanyarray(ref.dataobj.get_unscaled()))
    assert _scaling(ours) == _scaling(ref)
    np.testing.assert_array_equal(ours.get_fdata(), ref.get_fdata())
    np.testing.assert_allclose(ours.affine, ref.affine, rtol=0, atol=AFFINE_ATOL_MM)


def test_philips_keeps_the_stored_integers_and_its_float_scale(converted, shared_data):
    """Item 3: no requantisation (the old writer stored slope 6.35, intercept 207984)."""
    ours, sidecar = converted["philips"]
    slope, inter = _scaling(ours)
    expected = np.float32(1.0 / sidecar["PhilipsScaleSlope"])  # dcm2niix's precise (FP) scale: 1 / SS
    assert slope == expected and inter == 0.0
    stored = np.asanyarray(ours.dataobj.get_unscaled())
    assert stored.dtype == np.int16 and stored.max() < 4096  # the 12-bit scanner integers


@pytest.mark.parametrize("name", list(CASES))
def test_slice_timing_and_keys_equal_dcm2niix(name, shared_data, converted):
    _, ours = converted[name]
    _, ref = _reference(shared_data, CASES[name][1])
    if "SliceTiming" in ref:
        np.testing.assert_allclose(ours["SliceTiming"], ref["SliceTiming"], rtol=0, atol=1e-4)
    else:
        assert "SliceTiming" not in ours
    different = {k: (ours[k], ref[k]) for k in set(ours) & set(ref) - EXEMPT_KEYS if not _same(ours[k], ref[k])}
    assert not different


def test_sagittal_mosaic_first_slice_is_acquired_first_as_in_dcm2niix(converted):
    """Item 4: slice 1 (second NIfTI slice) of sag_int_36sl at 0.0 s, not 2.44 s."""
    _, sidecar = converted["sag_int_36sl"]
    assert sidecar["SliceTiming"][1] == 0.0
    assert sidecar["SliceTiming"][0] == pytest.approx(1.255, abs=1e-4)


def test_philips_sidecar_says_why_there_is_no_slice_timing(converted):
    from tmstarget.anatomy.slicetiming import sidecar_slice_timing
    from tmstarget.errors import InputError

    _, sidecar = converted["philips"]
    assert "SliceTiming" not in sidecar
    assert "no slice times" in sidecar["SliceTimingUnknownReason"]
    with pytest.raises(InputError, match=r"has no SliceTiming \(the DICOM headers hold no slice times\)"):
        sidecar_slice_timing(sidecar, label="rest")


# --- GE: slice times from the Protocol Data Block (item 5) -------------------------------------------


def _edit_protocol(ds, edit):
    raw = ds[0x0025, 0x101B].value
    text = gzip.decompress(raw[4:]).decode("latin-1")
    packed = gzip.compress(edit(text).encode("latin-1"))
    ds[0x0025, 0x101B].value = struct.pack("<I", len(packed)) + packed


def _no_rtia(ds):
    del ds[0x0021, 0x105E]  # DV26 files carry no RTIA timer


def _sequential(ds):
    _no_rtia(ds)
    _edit_protocol(ds, lambda t: t.replace('SLICEORDER "1"', 'SLICEORDER "0"'))


def _multiphase_epi(ds):
    _no_rtia(ds)
    del ds[0x0043, 0x107C]
    ds[0x0019, 0x109C].value = "epi"
    _edit_protocol(ds, lambda t: t.replace('IOPT "SqP, EPI, FMRI"', 'IOPT "SqP, EPI, MPh"')
                   .replace('SLICEORDER "1"', 'SLICEORDER "0"'))


def _group_delay(ds):
    _no_rtia(ds)
    ds[0x0043, 0x107C].value = 0.1


def _reversed_instances(ds):
    """InstanceNumber counts the 8 slices of each volume from the top instead of the bottom."""
    _no_rtia(ds)
    rank = int(round((float(ds.ImagePositionPatient[2]) - GE_LOWEST_Z_MM) / 3.3))
    ds.InstanceNumber = (int(ds.InstanceNumber) - 1) // 8 * 8 + (8 - rank)


def _multiband(release):
    """HyperBand factor 2 on a given software release (8 slices: 4 excitations, even)."""
    def edit(ds):
        _no_rtia(ds)
        ds.SoftwareVersions = ["27", "LX", f"MR Software release:{release}"]
        _edit_protocol(ds, lambda t: t.replace('SLICEORDER "1"', 'SLICEORDER "1"\nMBACCEL "2"'))
    return edit


GE_VARIANTS = {"no_rtia": _no_rtia, "sequential": _sequential, "multiphase_epi": _multiphase_epi,
               "group_delay": _group_delay, "reversed_instances": _reversed_instances,
               # before 27.0 R03 an even excitation count gets one more; from R03 the last two odd ranks swap
               "multiband_dv26": _multiband("DV26.0_R01_1725.a"), "multiband_rx27r3": _multiband("RX27.0_R03_1831.a"),
               # HyperBand before software 26: dcm2niix gives no times, nor do we
               "multiband_dv24": _multiband("DV24.0_R02_1607.b")}


def _ge_copy(shared_data, folder, edit):
    files = sorted((shared_data / GE).iterdir())
    folder.mkdir(parents=True)
    for path in files:
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(folder / path.name)
    return folder


def _dcm2niix(folder, out):
    from test_mosaic_geometry import _dcm2niix_binary

    binary = _dcm2niix_binary()
    if binary is None:
        pytest.skip("dcm2niix not installed (pip install dcm2niix)")
    result = subprocess.run([binary, "-b", "y", "-z", "n", "-f", "ref", "-o", str(out), str(folder)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return nib.load(out / "ref.nii"), json.loads((out / "ref.json").read_text())


def test_ge_without_rtia_timer_gets_the_reference_slice_timing(shared_data, tmp_path):
    """The DV26 case: no (0021,105E) in any file; the shared reference's times still come out."""
    folder = _ge_copy(shared_data, tmp_path / "dicom", _no_rtia)
    assert all((0x0021, 0x105E) not in pydicom.dcmread(p, stop_before_pixels=True) for p in folder.iterdir())
    _, sidecar = load_series(folder)
    _, ref = _reference(shared_data, CASES["ge"][1])
    assert ref["SliceTiming"] == [0, 0.75, 0.1875, 0.9375, 0.375, 1.125, 0.5625, 1.3125]
    np.testing.assert_allclose(sidecar["SliceTiming"], ref["SliceTiming"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", list(GE_VARIANTS))
def test_ge_slice_timing_equals_dcm2niix_on_edited_headers(variant, shared_data, tmp_path):
    folder = _ge_copy(shared_data, tmp_path / "dicom", GE_VARIANTS[variant])
    ref_img, ref = _dcm2niix(folder, tmp_path)
    image, sidecar = load_series(folder)
    assert nib.aff2axcodes(image.affine) == nib.aff2axcodes(ref_img.affine)
    if variant == "multiband_dv24":
        assert "SliceTiming" not in ref and "SliceTiming" not in sidecar
        assert "HyperBand" in sidecar["SliceTimingUnknownReason"]
        return
    np.testing.assert_allclose(sidecar["SliceTiming"], ref["SliceTiming"], rtol=0, atol=1e-4)
    assert _same(sidecar["RepetitionTime"], ref["RepetitionTime"])
    if variant == "sequential":
        assert np.all(np.diff(sidecar["SliceTiming"]) > 0)
    if variant == "group_delay":
        assert sidecar["RepetitionTime"] == pytest.approx(1.6)  # 1.5 s TR + 0.1 s group delay between volumes


def test_ge_without_protocol_block_says_timing_is_unknown(shared_data, tmp_path, caplog):
    def strip(ds):
        _no_rtia(ds)
        del ds[0x0025, 0x101B]

    folder = _ge_copy(shared_data, tmp_path / "dicom", strip)
    caplog.set_level(logging.WARNING)
    written = convert(folder, tmp_path / "out", subject="01")
    sidecar = json.loads(next(p for p in written if p.suffix == ".json" and "bold" in p.name).read_text())
    assert "SliceTiming" not in sidecar
    assert "(0025,101B)" in sidecar["SliceTimingUnknownReason"]
    assert "slice times unknown" in caplog.text and "(0025,101B)" in caplog.text
