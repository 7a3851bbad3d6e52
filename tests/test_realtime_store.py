"""The watcher's record (commit after live.json) and live.json's running QC figures."""

import json

import nibabel as nib
import numpy as np
import pytest

from tmstarget.errors import InputError
from tmstarget.realtime.live import LiveFile
from tmstarget.realtime.store import FRAME_COLUMNS, RunStore
from tmstarget.realtime.watch import RowSummary

SHAPE = (4, 5, 3)
AFFINE = np.diag([3.0, 3.0, 3.5, 1.0])


def _row(volume, fd, status="kept", missing=False, motion=(0.0,) * 6):
    row = dict(zip(("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"), motion))
    row.update(missing=missing, fd_power_mm=fd, fd_jenkinson_mm=fd / 2, white_matter=1.0, csf=2.0,
               global_signal=3.0, status=status, latency_ms=10.0)
    return row


def _volume(k):
    return np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) + 100 * k


def test_a_volume_counts_at_once_and_is_on_disk_only_after_commit(tmp_path):
    store = RunStore(tmp_path, SHAPE, AFFINE, 2.0)
    store.open()
    store.add(0, _volume(0), _row(0, 0.0))
    store.commit()
    store.add(1, _volume(1), _row(1, 0.2))
    assert [r["volume"] for r in store.rows] == [0, 1]  # live.json counts volume 1 already
    with pytest.raises(InputError, match="uncommitted"):
        store.add(2, _volume(2), _row(2, 0.1))
    # killed before the commit: a restarted watcher resumes after volume 0 and processes volume 1 again
    assert [r["volume"] for r in RunStore(tmp_path, SHAPE, AFFINE, 2.0).open()] == [0]
    store = RunStore(tmp_path, SHAPE, AFFINE, 2.0)
    store.open()
    store.add(1, _volume(1), _row(1, 0.2))
    store.seal()  # the watch ends (Ctrl-C) between add and commit: sealing commits the volume
    img = nib.load(tmp_path / "realigned.nii")
    assert img.shape == SHAPE + (2,)
    np.testing.assert_array_equal(np.asarray(img.dataobj)[..., 1], _volume(1))
    lines = (tmp_path / "frames.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["volume", *FRAME_COLUMNS] and len(lines) == 3 and lines[2].startswith("1\t0\t")


def test_row_summary_equals_a_recount(tmp_path):
    rng = np.random.default_rng(3)
    rows = []
    for v in range(40):
        status = "dummy" if v < 2 else "missing" if v in (9, 30) else "scrubbed" if v % 7 == 0 else "kept"
        rows.append({"volume": v, **_row(v, float(rng.uniform(0, 0.9)), status, status == "missing",
                                         tuple(rng.normal(0, 0.5, 3)) + tuple(rng.normal(0, 0.01, 3)))})
    summary = RowSummary(0.5)
    for row in rows:
        summary.add(row)
    counted = [r for r in rows if r["status"] not in ("dummy", "missing")]
    assert summary.fd == [round(r["fd_power_mm"], 4) for r in rows]
    assert summary.gaps == [9, 30]
    assert summary.analysable == len(counted) == 36
    assert summary.above_threshold == sum(r["fd_power_mm"] > 0.5 for r in counted) > 0
    assert summary.max_abs_translation_mm == max(abs(r[k]) for r in rows for k in ("trans_x", "trans_y", "trans_z"))
    assert summary.max_abs_rotation_rad == max(abs(r[k]) for r in rows for k in ("rot_x", "rot_y", "rot_z"))


def test_live_file_is_one_line_of_strict_json(tmp_path):
    live = LiveFile(tmp_path / "live.json", lambda: ("busy", 0.0))
    doc = {"status": "x", "qc": {"fd_power_mm": [0.0, 0.1234]}, "target": None}
    live.write(doc)
    text = (tmp_path / "live.json").read_text(encoding="utf-8")
    assert text.count("\n") == 1 and json.loads(text) == doc
    assert not [p for p in tmp_path.iterdir() if p.name != "live.json"]  # no temporary file left behind
    with pytest.raises(ValueError):
        live.write({"x": float("nan")})


def test_reslicing_in_two_parts_changes_no_value_the_stream_reads():
    """First part (analysed voxels grown by the smoothing reach, tissue masks) + the rest = the whole reslice, bit for
    bit; and the stream's smoothed values from the first part alone equal those from the whole volume."""
    from tmstarget.analysis.voxels import VoxelSet, smoothed_volume_values
    from tmstarget.anatomy.motion import reslice_volume
    from tmstarget.realtime.watch import _reslice_parts

    rng = np.random.default_rng(5)
    shape, affine = (30, 32, 20), np.diag([3.0, 3.0, 3.5, 1.0])
    vol = rng.normal(1000, 100, shape).astype(np.float32)
    mask = np.zeros(shape, bool)
    mask[8:20, 6:25, 0:12] = True  # touches the grid's edge in k
    mask[12, 6, 5] = False
    wm = np.zeros(shape, bool)
    wm[2, 2, 2] = True  # far from the analysed voxels
    voxels = VoxelSet(mask, affine)
    params = np.array([0.7, -0.4, 0.3, 0.01, -0.02, 0.015])
    first, later = _reslice_parts(voxels, 6.0, (mask, wm))
    assert 0 < len(first) < vol.size and len(first) + len(later) == vol.size
    whole = reslice_volume(vol, affine, params)
    part = reslice_volume(vol, affine, params, where=first)
    assert part.reshape(-1)[later].max() == 0 and part[2, 2, 2] == whole[2, 2, 2]
    np.testing.assert_array_equal(smoothed_volume_values(part, voxels, 6.0), smoothed_volume_values(whole, voxels, 6.0))
    np.testing.assert_array_equal(reslice_volume(vol, affine, params, where=later, out=part), whole)
    # one voxel short of the kernel's reach would change a smoothed value
    grown = np.zeros(vol.size, bool)
    grown[first] = True
    edge = np.flatnonzero(grown & ~mask.reshape(-1) & ~wm.reshape(-1))[0]
    part.reshape(-1)[edge] = 0.0
    assert not np.array_equal(smoothed_volume_values(part, voxels, 6.0), smoothed_volume_values(whole, voxels, 6.0))
