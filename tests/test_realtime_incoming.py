"""Real-time input: `replay` (scanner simulator) into a folder read by `IncomingSeries.poll()`.

References: the source series converted whole by `load_series` (itself checked
against dcm2niix in test_dicom.py) and, for the synthetic series, the
original nibabel image; the replayed bytes are compared with the source files.
"""

import argparse
import logging
import math
import shutil
import threading
import time

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tmstarget.errors import InputError
from tmstarget.ingest.dicom.series import load_series
from tmstarget.realtime import incoming as incoming_module
from tmstarget.realtime.incoming import Gap, IncomingSeries, Volume
from tmstarget.realtime.replay import add_parser, replay, run
from tmstarget.testing.dicom import rescale_tolerance, write_dicom_series

N_SYNTHETIC = 10
TIMEOUT_S = 60.0  # whole-replay deadline: generous for a loaded 2-core machine
GAP_TIMEOUT_S = 2.0
FAST = {"speed": math.inf, "chunks": 4, "chunk_pause_s": 0.002}
REAL_RUN = "pydecnef-sub1/dicom/func-run1"
N_REAL_SUBSET = 16


def _synthetic_image(seed, shape=(7, 8, 9, N_SYNTHETIC)):
    """Float data, oblique LAS-stored affine (negative determinant, as the readers give back)."""
    rng = np.random.default_rng(seed)
    angle = np.deg2rad(8.0)
    turn = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = turn @ np.diag([-3.0, 3.2, 3.5])
    affine[:3, 3] = [90.0, -100.0, -40.0]
    return nib.Nifti1Image(rng.normal(800.0, 150.0, shape).astype(np.float32), affine)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Two synthetic slice-per-file series (1 and 2) in separate folders, with their images."""
    root = tmp_path_factory.mktemp("synthetic")
    images = {1: _synthetic_image(1), 2: _synthetic_image(2)}
    times_s = np.array([0.0, 1.0, 0.25, 1.25, 0.5, 1.5, 0.75, 1.75, 0.1])
    for number, img in images.items():
        write_dicom_series(img, root / f"series{number}", series_number=number, t_r_s=2.0, slice_times_s=times_s,
                           seed=number)
    return {"root": root, "images": images}


@pytest.fixture(scope="module")
def real_subset(shared_data, tmp_path_factory):
    """The first volumes of the real Siemens mosaic run (keeps the fault tests short)."""
    source = tmp_path_factory.mktemp("real") / "func"
    source.mkdir()
    for path in sorted((shared_data / REAL_RUN).glob("*.dcm"))[:N_REAL_SUBSET]:
        shutil.copy(path, source / path.name)
    return source


@pytest.fixture(params=["synthetic", "real"])
def source(request):
    """(source folder, volumes per load_series, files per volume, independent image or None)."""
    if request.param == "synthetic":
        synthetic = request.getfixturevalue("synthetic")
        folder = synthetic["root"] / "series1"
        return folder, 9, synthetic["images"][1]
    return request.getfixturevalue("real_subset"), 1, None


def _replay_and_poll(source, incoming, expected, replay_kwargs=(), series_kwargs=()):
    """Run `replay` in a thread while polling; return (items, IncomingSeries, written files)."""
    series_kwargs = {"settle_s": 0.0, "retries": 5, "gap_timeout_s": GAP_TIMEOUT_S, **dict(series_kwargs)}
    reader = IncomingSeries(incoming, **series_kwargs)
    result = {}

    def target():
        try:
            result["written"] = replay(source, incoming, **{**FAST, **dict(replay_kwargs)})
        except Exception as exc:  # surfaced in the test thread below
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    items = []
    deadline = time.monotonic() + TIMEOUT_S
    while len(items) < expected and time.monotonic() < deadline:
        items += reader.poll()
        time.sleep(0.005)
    thread.join(TIMEOUT_S)
    if "error" in result:
        raise result["error"]
    for _ in range(3):  # drain: every file written has now been seen twice
        items += reader.poll()
        time.sleep(0.01)
    return items, reader, result.get("written", [])


def _check_volumes(items, source, image):
    reference, _ = load_series(source)
    ref_data = reference.get_fdata()
    volumes = [item for item in items if isinstance(item, Volume)]
    assert volumes, "no volume released"
    for volume in volumes:
        assert volume.data.dtype == np.float32 and volume.data.shape == reference.shape[:3]
        np.testing.assert_allclose(volume.data, ref_data[..., volume.index], rtol=1e-6, atol=1e-4,
                                   err_msg=f"volume {volume.index}")
        np.testing.assert_array_equal(volume.affine, reference.affine)
        assert volume.t_r_s == pytest.approx(2.0)
        assert volume.seen_s <= volume.completed_s
        if image is not None:  # independent of our DICOM reader: the image the series was written from
            np.testing.assert_allclose(volume.data, image.get_fdata()[..., volume.index], rtol=0,
                                       atol=rescale_tolerance(image))
            np.testing.assert_allclose(volume.affine, image.affine, atol=1e-4)
    return volumes


def test_replay_delivers_the_series_in_order(source, tmp_path):
    folder, files_per_volume, image = source
    n_volumes = load_series(folder)[0].shape[3]
    incoming = tmp_path / "incoming"
    items, reader, written = _replay_and_poll(folder, incoming, n_volumes)
    assert [item.index for item in items] == list(range(n_volumes))
    assert [item.number for item in items] == list(range(1, n_volumes + 1))
    _check_volumes(items, folder, image)
    assert all(len(item.files) == files_per_volume for item in items)
    assert reader.skipped == [] and reader.duplicates == [] and reader.gaps == []
    # The replay copies bytes verbatim, in acquisition order.
    assert len(written) == n_volumes * files_per_volume
    for path in written:
        assert path.read_bytes() == (folder / path.name).read_bytes()
    assert [sorted(p.name for p in written[i * files_per_volume : (i + 1) * files_per_volume]) for i in
            range(n_volumes)] == [[p.name for p in item.files] for item in items]


def test_faults(source, tmp_path, caplog):
    folder, files_per_volume, image = source
    n_volumes = load_series(folder)[0].shape[3]
    drop, duplicate, corrupt, delayed = 3, 5, 7, 8
    faults = {"drop": [drop], "duplicate": [duplicate], "corrupt": [corrupt], "delay": {delayed: 2.5}}
    caplog.set_level(logging.INFO, logger="tmstarget.realtime")
    items, reader, written = _replay_and_poll(folder, tmp_path / "in", n_volumes, faults)
    assert [item.index for item in items] == list(range(n_volumes)), "every index once, in order"
    gaps = [item for item in items if isinstance(item, Gap)]
    assert [(g.index, g.number) for g in gaps] == [(drop - 1, drop), (corrupt - 1, corrupt)]
    assert all(g.waited_s >= GAP_TIMEOUT_S for g in gaps)
    volumes = _check_volumes(items, folder, image)
    assert len(volumes) == n_volumes - 2
    # Duplicate: ignored and counted, one per file of the volume.
    assert len(reader.duplicates) == files_per_volume
    assert all("_dup" in p.name for p in reader.duplicates)
    assert not any("_dup" in p.name for v in volumes for p in v.files)
    # Corrupt: skipped after the retries, logged with the file name; nothing else skipped.
    corrupt_names = {p.name for p in folder.iterdir() if _acquisition_number(p) == corrupt}
    assert len(corrupt_names) == files_per_volume
    assert {p.name for p, _ in reader.skipped} == corrupt_names
    assert all("unreadable after 5 attempts" in reason for _, reason in reader.skipped)
    for name in corrupt_names:
        assert sum(name in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records) == 1
    # Delayed: written after later volumes, released in its place.
    order = [p.name for p in written]
    delayed_file = next(v for v in volumes if v.number == delayed).files[0].name
    assert order.index(delayed_file) > order.index(next(v for v in volumes if v.number == delayed + 1).files[0].name)


def _acquisition_number(path):
    return int(pydicom.dcmread(path, stop_before_pixels=True).AcquisitionNumber)


def test_partial_file_is_retried_never_skipped(synthetic, tmp_path, caplog):
    """A file read while it is written fails to parse, is retried and never skipped (no timing involved)."""
    source = sorted((synthetic["root"] / "series1").glob("*.dcm"))
    data = source[0].read_bytes()
    incoming = tmp_path / "in"
    incoming.mkdir()
    caplog.set_level(logging.DEBUG, logger="tmstarget.realtime")
    reader = IncomingSeries(incoming, settle_s=0.0, retries=3, poll_s=0.0)
    target = incoming / source[0].name
    sizes = [100, 1000] + list(range(2000, len(data), 300)) + [len(data)]
    for start, end in zip([0] + sizes[:-1], sizes):
        with open(target, "ab") as handle:
            handle.write(data[start:end])
        if end < len(data):
            for _ in range(3):  # first sight, then 2 failed attempts: one fewer than the retries
                assert reader.poll() == []
    n_failed = sum("not readable yet" in r.getMessage() for r in caplog.records)
    assert n_failed == 2 * (len(sizes) - 1), "each partial state was parsed and failed twice"
    for path in source[1:9]:
        shutil.copy(path, incoming / path.name)
    items = reader.wait(10.0)
    assert reader.skipped == []
    assert [item.index for item in items] == [0]
    np.testing.assert_allclose(items[0].data, synthetic["images"][1].get_fdata()[..., 0],
                               atol=rescale_tolerance(synthetic["images"][1]))


def test_whole_real_run_read_in_place(shared_data):
    """A watcher started on a folder already holding the 120 volumes (restart) reads them all, in order."""
    folder = shared_data / REAL_RUN
    reader = IncomingSeries(folder, settle_s=0.0)
    items = reader.poll() + reader.poll()
    assert [item.index for item in items] == list(range(120))
    _check_volumes(items, folder, None)
    assert reader.skipped == [] and reader.duplicates == []


def test_stable_unparseable_file_is_skipped_after_retries(tmp_path):
    incoming = tmp_path / "in"
    incoming.mkdir()
    (incoming / "junk.dcm").write_bytes(b"\x00" * 4000)
    reader = IncomingSeries(incoming, settle_s=0.0, retries=3, poll_s=0.0)
    for _ in range(2 + 3):  # first sight, then one attempt per poll
        assert reader.poll() == []
    assert [(p.name, r.split(":")[0]) for p, r in reader.skipped] == [("junk.dcm", "unreadable after 3 attempts")]
    reader.poll()
    assert len(reader.skipped) == 1, "logged and recorded once"


@pytest.mark.parametrize("selection", [None, 1, "uid"])
def test_second_series(synthetic, tmp_path, caplog, selection):
    """Series 2 is already in the folder: followed when unselected (first seen), else ignored."""
    incoming = tmp_path / "in"
    shutil.copytree(synthetic["root"] / "series2", incoming)
    n_other = len(list(incoming.iterdir()))
    series1_uid = _series_uid(synthetic["root"] / "series1")
    wanted = series1_uid if selection == "uid" else selection
    caplog.set_level(logging.INFO, logger="tmstarget.realtime")
    expected = N_SYNTHETIC
    items, reader, _ = _replay_and_poll(synthetic["root"] / "series1", incoming, expected,
                                        series_kwargs={"series": wanted})
    followed = 2 if selection is None else 1
    assert reader.series_number == followed
    assert [item.index for item in items] == list(range(N_SYNTHETIC))
    _check_volumes(items, synthetic["root"] / f"series{followed}", synthetic["images"][followed])
    ignored = 1 if selection is None else 2
    assert len(reader.skipped) == (N_SYNTHETIC * 9 if selection is None else n_other)
    assert all(f"series {ignored}" in reason for _, reason in reader.skipped)
    warnings = [r for r in caplog.records if "ignoring the files of another series" in r.getMessage()]
    assert len(warnings) == 1, "logged once per ignored series"


def _series_uid(folder):
    return str(pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).SeriesInstanceUID)


def test_first_index_skips_processed_volumes(source, tmp_path):
    folder, files_per_volume, image = source
    n_volumes = load_series(folder)[0].shape[3]
    items, reader, _ = _replay_and_poll(folder, tmp_path / "in", n_volumes - 4, series_kwargs={"first_index": 4})
    assert [item.index for item in items] == list(range(4, n_volumes))
    assert reader.n_before_first_index == 4 * files_per_volume
    _check_volumes(items, folder, image)


def test_consumed_files_are_never_read_again(synthetic, tmp_path, monkeypatch):
    incoming = tmp_path / "in"
    shutil.copytree(synthetic["root"] / "series1", incoming)
    calls = []
    original = incoming_module.read_file_header
    monkeypatch.setattr(incoming_module, "read_file_header", lambda path: calls.append(path) or original(path))
    reader = IncomingSeries(incoming, settle_s=0.0)
    items = reader.poll() + reader.poll()
    assert len(items) == N_SYNTHETIC and len(calls) == N_SYNTHETIC * 9
    for _ in range(5):
        assert reader.poll() == []
    assert len(calls) == N_SYNTHETIC * 9


def test_repeat_renumbers_into_one_long_series(source, tmp_path):
    folder, files_per_volume, _ = source
    n_volumes = load_series(folder)[0].shape[3]
    incoming = tmp_path / "in"
    items, _, written = _replay_and_poll(folder, incoming, 2 * n_volumes, {"repeat": 2})
    assert [item.number for item in items] == list(range(1, 2 * n_volumes + 1))
    assert len({p.name for p in written}) == len(written) == 2 * n_volumes * files_per_volume
    assert sorted(p.name for p in written) == [p.name for item in items for p in item.files]
    first, second = items[:n_volumes], items[n_volumes:]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.data, b.data)
    # The renumbered folder is one valid series for an independent reader pass (whole-series load).
    whole, _ = load_series(incoming)
    assert whole.shape[3] == 2 * n_volumes
    np.testing.assert_allclose(whole.get_fdata()[..., n_volumes:], whole.get_fdata()[..., :n_volumes])


def test_privacy(synthetic, tmp_path, caplog):
    folder = tmp_path / "phi"
    write_dicom_series(synthetic["images"][1], folder, series_description="JANE rest", participant_name="DOE^JANE",
                       birth_date="19700101", seed=5)
    caplog.set_level(logging.DEBUG)
    reader = IncomingSeries(folder, settle_s=0.0)
    items = reader.poll() + reader.poll()
    assert len(items) == N_SYNTHETIC
    assert items[0].description == "REDACTED"
    text = caplog.text + repr([{k: v for k, v in vars(i).items() if k != "data"} for i in items])
    text += repr(reader.skipped) + repr(reader.duplicates)
    for token in ("DOE", "JANE", "19700101", "SYNTH"):
        assert token not in text


def test_cli(synthetic, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="tmstarget")
    add_parser(parser.add_subparsers(dest="command"))
    source = synthetic["root"] / "series1"
    incoming = tmp_path / "in"
    args = parser.parse_args(["replay", str(source), str(incoming), "--fast", "--drop", "2", "--delay", "3:2.5",
                              "--chunks", "2"])
    assert args.handler(args) == 0
    assert f"{(N_SYNTHETIC - 1) * 9} file(s) written" in capsys.readouterr().out
    assert not list(incoming.glob("IM_0001_000002_*"))
    with pytest.raises(SystemExit):
        parser.parse_args(["replay", str(source), str(incoming), "--fast", "--speed", "2"])
    with pytest.raises(SystemExit):
        parser.parse_args(["replay", str(source), str(incoming), "--delay", "3"])
    args = parser.parse_args(["replay", str(source), str(tmp_path / "other"), "--fast", "--drop", "99"])
    with pytest.raises(InputError, match="--drop 99: volumes are numbered 1 to 10"):
        run(args)
    assert not (tmp_path / "other").exists()
    args = parser.parse_args(["replay", str(source), str(incoming), "--fast"])
    with pytest.raises(InputError, match="already holds"):
        run(args)
