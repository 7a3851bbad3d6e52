"""Siemens MOSAIC geometry with non-square pixels and non-square tiles (issue 20, item 2a).

A known NIfTI image (known voxels, known oblique affine) is written as a
MOSAIC series by `tmstarget.testing.dicom.write_mosaic_series`, then read
back by three readers that must all give the known image:

* tmstarget's `load_series` (the reader under test),
* dcm2niix (independent converter; the pip package is a test dependency),
* nibabel's ``MosaicWrapper`` (independent Python implementation of the
  Siemens mosaic convention).

The tiles are 64 columns x 52 rows (and 40 x 56), the pixels 3.5 x 2.5 mm
(and 2.2 x 3.1 mm), so swapping row and column pixel spacing, or tile rows
and columns, anywhere in the mosaic geometry changes the affine or the
voxels.  Both slice-normal signs are covered (tiles stored along
``row x column``, and against it as in Siemens Head>>Feet storage), with an
odd number of slices so the mosaic has empty tiles.

The writer's Siemens conventions (tile layout, ImagePositionPatient of the
mosaic corner, CSA contents) are checked against a real Siemens Prisma
mosaic of ../shared/data.

Tolerances: voxel values exact (integer data); affines 1e-4 mm (DICOM
decimal strings carry 10+ significant digits; dcm2niix stores float32, 1e-5
of ~130 mm); slice times 1e-6 s for tmstarget (CSA text with 8 decimals in
ms), 1e-4 s for dcm2niix's JSON.
"""

import json
import shutil
import subprocess
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

from tmstarget.ingest.dicom.series import load_series
from tmstarget.testing.dicom import write_mosaic_series

AFFINE_ATOL_MM = 1e-4
TR_S = 2.0
N_VOLUMES = 3
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# shape (columns = i, rows = j, slices); voxel sizes (i = between columns, j = between rows, k)
CASES = {
    # PixelSpacing [2.5, 3.5]; negative determinant: tiles stored along row x column (ascending)
    "64colx52row_las": {
        "shape": (64, 52, 7),
        "zooms": (3.5, 2.5, 4.0),
        "flip_i": True,
        "angles": (12.0, -9.0, 17.0),
        "phase_encoding": "COL",
        "times": [0.0, 1.0, 0.25, 1.25, 0.5, 1.5, 0.75],
    },
    # PixelSpacing [3.1, 2.2]; positive determinant: tiles stored against row x column (Head>>Feet)
    "40colx56row_ras": {
        "shape": (40, 56, 10),
        "zooms": (2.2, 3.1, 3.6),
        "flip_i": False,
        "angles": (-20.0, 14.0, -8.0),
        "phase_encoding": "ROW",
        "times": [0.0, 0.95, 0.19, 1.14, 0.38, 1.33, 0.57, 1.52, 0.76, 1.71],
    },
}


def _rotation(angles_deg):
    x, y, z = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _known_image(case, rng):
    """Oblique 4-D integer image; every voxel value distinct enough that any reordering shows."""
    affine = np.diag([*case["zooms"], 1.0])
    if case["flip_i"]:
        affine[0, 0] *= -1.0
    affine[:3, 3] = [104.25, -93.5, -41.75]
    turn = np.eye(4)
    turn[:3, :3] = _rotation(case["angles"])
    data = rng.integers(1, 4000, (*case["shape"], N_VOLUMES)).astype(np.int16)
    img = nib.Nifti1Image(data, turn @ affine)
    img.header.set_zooms((*case["zooms"], TR_S))
    return img


def _in_known_axes(data, affine, known_affine, slice_values=None):
    """A reader's voxels, affine and per-slice values brought to the known image's voxel axes (nibabel).

    Returns (data, affine, slice_values, transform); ``transform`` is the
    nibabel orientation transform that was applied (identity: same voxel order).
    """
    transform = ornt_transform(io_orientation(affine), io_orientation(known_affine))
    moved = apply_orientation(np.asarray(data), transform)
    moved_affine = affine @ inv_ornt_aff(transform, data.shape[:3])
    moved_slices = None
    if slice_values is not None:
        k_index = np.broadcast_to(np.arange(data.shape[2])[None, None, :], data.shape[:3])
        k_in_known = apply_orientation(k_index, transform)
        assert np.all(k_in_known == k_in_known[:1, :1, :]), "the slice axis must stay the slice axis"
        moved_slices = np.asarray(slice_values, dtype=float)[k_in_known[0, 0, :]]
    return moved, moved_affine, moved_slices, transform


def _dcm2niix_binary():
    try:
        import dcm2niix

        binary = Path(dcm2niix.__file__).parent / "dcm2niix"
        if binary.is_file():
            return str(binary)
    except ImportError:
        pass
    return shutil.which("dcm2niix")


@pytest.fixture(scope="module", params=list(CASES))
def written(request, tmp_path_factory):
    """The known image of one case and its MOSAIC series (one file per volume)."""
    case = CASES[request.param]
    img = _known_image(case, np.random.default_rng(20))
    folder = tmp_path_factory.mktemp(request.param) / "dicom"
    files = write_mosaic_series(
        img, folder, series_number=9, series_description="ep2d_bold", t_r_s=TR_S,
        slice_times_s=case["times"], phase_encoding=case["phase_encoding"],
    )
    return {"name": request.param, "case": case, "img": img, "folder": folder, "files": files}


def test_series_is_a_siemens_mosaic_with_non_square_tiles(written):
    """The files are what the readers below must cope with: one MOSAIC per volume, tiles not square."""
    case = written["case"]
    n_i, n_j, n_k = case["shape"]
    grid = int(np.ceil(np.sqrt(n_k)))
    assert len(written["files"]) == N_VOLUMES
    ds = pydicom.dcmread(written["files"][0], stop_before_pixels=True)
    assert "MOSAIC" in ds.ImageType and ds.Manufacturer == "SIEMENS"
    assert (ds.Rows, ds.Columns) == (grid * n_j, grid * n_i)
    assert n_i != n_j and ds.Rows != ds.Columns
    np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [case["zooms"][1], case["zooms"][0]])
    assert grid * grid > n_k  # empty tiles at the end


def test_load_series_gives_the_known_image(written):
    img, case = written["img"], written["case"]
    ours, sidecar = load_series(written["folder"])
    assert ours.shape == img.shape
    data, affine, times, transform = _in_known_axes(ours.get_fdata(), ours.affine, img.affine,
                                                    sidecar["SliceTiming"])
    np.testing.assert_array_equal(data, img.get_fdata())
    np.testing.assert_allclose(affine, img.affine, rtol=0, atol=AFFINE_ATOL_MM)
    np.testing.assert_allclose(times, case["times"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.header.get_zooms(), (*case["zooms"], TR_S), rtol=0, atol=1e-5)
    assert sidecar["RepetitionTime"] == pytest.approx(TR_S)
    if case["flip_i"]:  # negative determinant: same voxel order as the known image, no reordering at all
        assert np.array_equal(transform, [[0, 1], [1, 1], [2, 1]])
        np.testing.assert_allclose(ours.affine, img.affine, rtol=0, atol=AFFINE_ATOL_MM)
        np.testing.assert_array_equal(ours.get_fdata(), img.get_fdata())


def test_dcm2niix_gives_the_known_image(written, tmp_path):
    binary = _dcm2niix_binary()
    if binary is None:
        pytest.skip("dcm2niix not installed (pip install dcm2niix)")
    img, case = written["img"], written["case"]
    result = subprocess.run(
        [binary, "-o", str(tmp_path), "-f", "ref", "-z", "n", "-b", "y", str(written["folder"])],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    ref = nib.load(tmp_path / "ref.nii")
    meta = json.loads((tmp_path / "ref.json").read_text())
    assert ref.shape == img.shape
    data, affine, times, _ = _in_known_axes(np.asarray(ref.dataobj), ref.affine, img.affine, meta["SliceTiming"])
    np.testing.assert_array_equal(data, img.get_fdata())
    np.testing.assert_allclose(affine, img.affine, rtol=0, atol=AFFINE_ATOL_MM)
    np.testing.assert_allclose(times, case["times"], rtol=0, atol=1e-4)
    # tmstarget and dcm2niix agree on the phase-encoding direction in the world
    ours, sidecar = load_series(written["folder"])

    def world(direction, affine):
        vector = affine[:3, "ijk".index(direction[0])] * (-1.0 if direction.endswith("-") else 1.0)
        return vector / np.linalg.norm(vector)

    assert world(sidecar["PhaseEncodingDirection"], ours.affine) @ world(meta["PhaseEncodingDirection"],
                                                                         ref.affine) > 0.999


@pytest.mark.filterwarnings("ignore:The DICOM readers are highly experimental")
def test_nibabel_mosaic_wrapper_gives_the_known_image(written):
    """nibabel's MosaicWrapper (Siemens corner convention, CSA slice normal), file by file."""
    from nibabel.nicom.dicomwrappers import MosaicWrapper, wrapper_from_data

    img = written["img"]
    volumes, affines = [], []
    for path in written["files"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wrapper = wrapper_from_data(pydicom.dcmread(path))
        assert isinstance(wrapper, MosaicWrapper)
        volumes.append(wrapper.get_data())  # (rows, columns, tiles)
        affines.append(LPS_TO_RAS @ wrapper.affine)
    for affine in affines[1:]:
        np.testing.assert_allclose(affine, affines[0], rtol=0, atol=1e-9)
    stacked = np.stack(volumes, axis=-1)
    assert stacked.shape == (img.shape[1], img.shape[0], *img.shape[2:])
    data, affine, _, _ = _in_known_axes(stacked, affines[0], img.affine)
    np.testing.assert_array_equal(data, img.get_fdata())
    np.testing.assert_allclose(affine, img.affine, rtol=0, atol=AFFINE_ATOL_MM)


@pytest.mark.filterwarnings("ignore:The DICOM readers are highly experimental")
def test_writer_reproduces_a_real_siemens_mosaic(shared_data, tmp_path):
    """dcm2niix's reference of a real Prisma run, written back as MOSAIC, gives the scanner's own file.

    Same mosaic pixels (tile layout, row reversal, empty tiles), same
    ImagePositionPatient (the Siemens mosaic-corner convention), orientation,
    spacing and CSA values, within the precision of the scanner's decimal
    strings (6-8 significant digits) and of the float32 reference affine.
    """
    from nibabel.nicom import csareader

    sub = shared_data / "pydecnef-sub1"
    ref = nib.load(sub / "reference" / "func-run1.nii.gz")
    meta = json.loads((sub / "reference" / "func-run1.json").read_text())
    img = nib.Nifti1Image(np.asarray(ref.dataobj[..., :2]), ref.affine)
    files = write_mosaic_series(img, tmp_path, series_number=5, t_r_s=meta["RepetitionTime"],
                                slice_times_s=meta["SliceTiming"], phase_encoding="COL")
    for index, path in enumerate(files):
        mine = pydicom.dcmread(path)
        real = pydicom.dcmread(sub / "dicom" / "func-run1" / f"001_000005_{index + 1:06d}.dcm")
        assert path.name == f"001_000005_{index + 1:06d}.dcm"
        assert (mine.Rows, mine.Columns) == (real.Rows, real.Columns)
        np.testing.assert_array_equal(mine.pixel_array, real.pixel_array)
        for keyword, atol in (("ImagePositionPatient", 1e-3), ("ImageOrientationPatient", 2e-6),
                              ("PixelSpacing", 1e-6), ("SpacingBetweenSlices", 1e-6)):
            np.testing.assert_allclose(np.asarray(mine.get(keyword), float), np.asarray(real.get(keyword), float),
                                       rtol=0, atol=atol, err_msg=keyword)
        assert list(mine.AcquisitionMatrix) == list(real.AcquisitionMatrix)
        assert mine.InPlanePhaseEncodingDirection == real.InPlanePhaseEncodingDirection
        csa_mine, csa_real = csareader.get_csa_header(mine), csareader.get_csa_header(real)
        assert csareader.get_n_mosaic(csa_mine) == csareader.get_n_mosaic(csa_real) == 34
        np.testing.assert_allclose(csareader.get_slice_normal(csa_mine), csareader.get_slice_normal(csa_real),
                                   rtol=0, atol=1e-6)
        times_mine = np.asarray(csa_mine["tags"]["MosaicRefAcqTimes"]["items"], float)
        times_real = np.asarray(csa_real["tags"]["MosaicRefAcqTimes"]["items"], float)
        np.testing.assert_allclose(times_mine, times_real, rtol=0, atol=0.01)
        for tag in ("PhaseEncodingDirectionPositive", "AcquisitionMatrixText"):
            assert csa_mine["tags"][tag]["items"] == csa_real["tags"][tag]["items"], tag
