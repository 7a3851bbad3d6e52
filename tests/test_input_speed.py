"""Inputs read once and decoded fast, and the T1 cache (issue 19), without changing a number.

* gzip through python-isal gives the very bytes of the standard library (forced fallback compared);
* a plan opens its BOLD and brain mask once and decodes its T1 once;
* the scalp surface and tissue segmentation of a T1 come back from the cache equal to a fresh computation;
  a damaged entry is ignored and recomputed, concurrent writers leave a valid entry, another T1 (one byte
  changed) misses, ``TMSTARGET_CACHE_DIR=off`` writes nothing.
"""

import builtins
import collections
import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tmstarget.anatomy import scalp, t1_cache, tissue
from tmstarget.coil.plan_coils import cached_scalp_surface, cached_segment_t1
from tmstarget.ingest import read

REPO = Path(__file__).resolve().parents[1]
ANAT = REPO / "sample_data" / "derivatives" / "fmriprep" / "sub-01" / "anat"
FUNC = REPO / "sample_data" / "derivatives" / "fmriprep" / "sub-01" / "func"
T1 = ANAT / "sub-01_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz"
BOLD = FUNC / "sub-01_task-rumination_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
MASK = FUNC / "sub-01_task-rumination_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz"


def test_isal_and_the_standard_library_decode_the_same_bytes(monkeypatch):
    pytest.importorskip("isal")
    compressed = BOLD.read_bytes()
    fast, plain = read.gunzip(compressed, fast=True), read.gunzip(compressed, fast=False)
    assert fast == plain == gzip.decompress(compressed)
    with_isal = read.read_image(BOLD, "BOLD")
    monkeypatch.setattr(read, "_fast_gzip", None)  # the fallback, as on a machine without isal
    without = read.read_image(BOLD, "BOLD")
    reference = np.asanyarray(nib.load(BOLD).dataobj)  # nibabel's own reader, from the file
    for img in (with_isal, without):
        data = np.asanyarray(img.dataobj)
        assert data.dtype == reference.dtype and data.tobytes() == reference.tobytes()
        assert img.header.binaryblock == nib.load(BOLD).header.binaryblock
        assert img.get_filename() == str(BOLD)  # messages still name the file


def test_isal_errors_read_as_the_standard_librarys(tmp_path):
    data = bytearray(MASK.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(range(64))
    for fast in (True, False):
        with pytest.raises((OSError, __import__("zlib").error)):
            read.gunzip(bytes(data), fast=fast)
        with pytest.raises(EOFError):
            read.gunzip(MASK.read_bytes()[:200], fast=fast)


def test_a_plan_opens_its_bold_and_mask_once_and_decodes_its_t1_once(tmp_path, monkeypatch):
    from tmstarget.cli.main import main

    opened = collections.Counter()
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, Path)):
            opened[Path(file).resolve()] += 1
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    decoded = collections.Counter()
    real_gunzip = read.gunzip
    monkeypatch.setattr(read, "gunzip", lambda data, fast=None: decoded.update([len(data)]) or real_gunzip(data, fast))
    out = tmp_path / "plan"
    assert main(["plan", "sample_data", "--participant", "01", "--output", str(out), "--quiet",
                 "--navigation", "none"]) == 0
    assert opened[BOLD.resolve()] == 1 and opened[MASK.resolve()] == 1  # sha256 for provenance included
    assert decoded[T1.stat().st_size] == 1
    doc = json.loads((out / "target.json").read_text())
    assert doc["coil"] is not None  # the T1 was used (coil and tissues)


def _mesh_equal(a, b):
    return all(np.array_equal(getattr(a, k), getattr(b, k)) and getattr(a, k).dtype == getattr(b, k).dtype
               for k in ("vertices_ras_mm", "faces", "normals_ras"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(t1_cache.ENV, str(folder))
    return folder


def test_cached_scalp_and_tissues_equal_a_fresh_computation(cache):
    img = read.read_image(T1, "T1")
    fresh_mesh, fresh_tissue = scalp.scalp_surface(img), tissue.segment_t1(img)
    first = cached_scalp_surface(T1, img), cached_segment_t1(T1, img)
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["scalp", "tissue"]
    again = cached_scalp_surface(T1, None), cached_segment_t1(T1, None)  # no image: it must come from the cache
    for mesh, maps in (first, again):
        assert _mesh_equal(mesh, fresh_mesh)
        assert np.array_equal(maps.labels, fresh_tissue.labels) and maps.labels.dtype == np.uint8
        assert np.array_equal(maps.affine, fresh_tissue.affine)
        assert {k: v for k, v in maps.qc.items() if k != "seconds"} == \
            {k: v for k, v in fresh_tissue.qc.items() if k != "seconds"}


def test_a_damaged_cache_entry_is_ignored_and_recomputed(cache):
    img = read.read_image(T1, "T1")
    fresh = cached_scalp_surface(T1, img)
    (entry,) = cache.glob("scalp-*.npz")
    entry.write_bytes(entry.read_bytes()[:1000])  # cut short
    assert _mesh_equal(cached_scalp_surface(T1, img), fresh)
    assert _mesh_equal(cached_scalp_surface(T1, None), fresh)  # rewritten whole


def test_another_t1_misses_the_cache_and_off_disables_it(cache, tmp_path, monkeypatch):
    img = read.read_image(T1, "T1")
    cached_scalp_surface(T1, img)
    other = tmp_path / "other_T1w.nii.gz"
    data = np.asanyarray(img.dataobj).copy()
    data[0, 0, 0] += 1  # one voxel of the background: a different file
    nib.save(nib.Nifti1Image(data, img.affine, img.header), other)
    from tmstarget.errors import InputError

    with pytest.raises(InputError, match="must be a nibabel image"):  # a miss computes: no image to compute from
        cached_scalp_surface(other, None)
    monkeypatch.setenv(t1_cache.ENV, "off")
    cached_scalp_surface(other, read.read_image(other, "T1"))
    assert len(list(cache.glob("scalp-*.npz"))) == 1


def test_concurrent_runs_leave_a_valid_cache_entry(cache):
    code = ("from tmstarget.coil.plan_coils import cached_scalp_surface\nfrom tmstarget.ingest.read import read_image\n"
            f"cached_scalp_surface({str(T1)!r}, read_image({str(T1)!r}, 'T1'))\n")
    env = {**__import__("os").environ, t1_cache.ENV: str(cache), "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO) for _ in range(3)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    assert [p.name for p in cache.iterdir() if p.name.endswith(".tmp")] == []  # no temporary file left
    fresh = scalp.scalp_surface(read.read_image(T1, "T1"))
    assert _mesh_equal(cached_scalp_surface(T1, None), fresh)
