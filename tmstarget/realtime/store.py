"""What a watcher has processed, on disk: the realigned run and one committed row per volume.

``realigned.nii`` is an uncompressed NIfTI whose volumes are appended as they
are realigned (NIfTI stores time slowest, so appending a volume is appending
bytes); its header's time dimension is rewritten to the committed count.
``frames.tsv`` is the commit log: a volume counts once its row, written after
its bytes, ends with a newline.  A watcher killed at any point restarts from
the committed rows: a torn last row and any bytes beyond the committed
volumes are cut off, so nothing is lost or counted twice.
"""

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget.errors import InputError

#: Columns of ``frames.tsv`` after ``volume``.
FRAME_COLUMNS = ("missing", "trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z",
                 "fd_power_mm", "fd_jenkinson_mm", "white_matter", "csf", "global_signal", "status", "latency_ms")
_HEADER_BYTES = 352  # NIfTI-1 header (348) + the empty extension flag (4)


class RunStore:
    """Append-only record of a watched run.

    Parameters
    ----------
    folder : Path
        The watcher's state folder.
    shape : tuple of 3 int
    affine : array (4, 4)
        Voxel -> scanner RAS mm of the EPI grid.
    t_r : float
        Repetition time (s), written into the header.
    """

    def __init__(self, folder, shape, affine, t_r):
        self.folder = Path(folder)
        self.data_path = self.folder / "realigned.nii"
        self.rows_path = self.folder / "frames.tsv"
        self.shape = tuple(int(v) for v in shape)
        self.affine = np.asarray(affine, dtype=float)
        self.t_r = float(t_r)
        self.volume_bytes = int(np.prod(self.shape)) * 4
        self.rows = []
        self._uncommitted = None  # (data, row) taken by add(), not yet written

    def _header(self, n_volumes):
        header = nib.Nifti1Header()
        header.set_data_dtype(np.float32)
        header.set_data_shape(self.shape + (max(n_volumes, 1),))
        header.set_qform(self.affine, code=1)
        header.set_sform(self.affine, code=1)
        header.set_xyzt_units("mm", "sec")
        zooms = list(header.get_zooms())
        zooms[3] = self.t_r
        header.set_zooms(zooms)
        header["vox_offset"] = _HEADER_BYTES
        return header.binaryblock + b"\0\0\0\0"

    def open(self):
        """Start a new record, or resume one: returns the committed rows (dicts)."""
        if not self.rows_path.exists():
            with open(self.data_path, "wb") as handle:
                handle.write(self._header(0))
            with open(self.rows_path, "w", encoding="utf-8") as handle:
                handle.write("volume\t" + "\t".join(FRAME_COLUMNS) + "\n")
            self.rows = []
            return self.rows
        text = self.rows_path.read_text(encoding="utf-8")
        lines = text.split("\n")
        complete = lines[:-1]  # the part after the last newline is a torn row (or empty)
        names = complete[0].split("\t")
        self.rows = [self._parse(dict(zip(names, line.split("\t")))) for line in complete[1:]]
        for expected, row in enumerate(self.rows):
            if row["volume"] != expected:
                raise InputError(f"state record is inconsistent: row {expected} holds volume {row['volume']}",
                                 path=self.rows_path)
        n = len(self.rows)
        size = self.data_path.stat().st_size
        needed = _HEADER_BYTES + n * self.volume_bytes
        if size < needed:
            raise InputError(f"state record has {n} committed volumes but only {size} bytes of data "
                             f"({needed} needed)", path=self.data_path)
        with open(self.data_path, "r+b") as handle:
            handle.truncate(needed)
        with open(self.rows_path, "w", encoding="utf-8") as handle:  # drop the torn row
            handle.write("\n".join(complete) + "\n")
        return self.rows

    @staticmethod
    def _parse(raw):
        row = {"volume": int(raw["volume"]), "missing": raw["missing"] == "1", "status": raw["status"]}
        for key in FRAME_COLUMNS:
            if key not in row:
                row[key] = float(raw[key])
        return row

    def add(self, volume, data, row):
        """Take one processed volume: its row is in :attr:`rows` at once, on disk after :meth:`commit`.

        The watcher rewrites ``live.json`` between the two: the fsyncs stay off the latency path.
        """
        if self._uncommitted is not None or volume != len(self.rows):
            raise InputError(f"volume {volume} arrives after {len(self.rows)} volumes "
                             f"({'one' if self._uncommitted is not None else 'none'} of them uncommitted)",
                             volume=volume)
        row = {"volume": volume, **row}
        self._uncommitted = (np.asarray(data, dtype=np.float32), row)
        self.rows.append(row)

    def commit(self):
        """Write the volume :meth:`add` took: its realigned data, then its row (the commit)."""
        data, row = self._uncommitted
        with open(self.data_path, "ab") as handle:
            handle.write(data.tobytes(order="F"))
            handle.flush()
            os.fsync(handle.fileno())
        values = [str(row["volume"])] + [("1" if row["missing"] else "0") if k == "missing" else
                                         row[k] if k == "status" else repr(float(row[k])) for k in FRAME_COLUMNS]
        with open(self.rows_path, "a", encoding="utf-8") as handle:
            handle.write("\t".join(values) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._uncommitted = None

    def read_volume(self, volume):
        """A committed realigned volume (float32, (I, J, K))."""
        with open(self.data_path, "rb") as handle:
            handle.seek(_HEADER_BYTES + volume * self.volume_bytes)
            raw = handle.read(self.volume_bytes)
        return np.frombuffer(raw, dtype=np.float32).reshape(self.shape, order="F")

    def seal(self):
        """Commit a volume still uncommitted (the watch was interrupted between :meth:`add` and :meth:`commit`),
        write the committed volume count into the header; return the image path."""
        if self._uncommitted is not None:
            self.commit()
        with open(self.data_path, "r+b") as handle:
            handle.write(self._header(len(self.rows)))
        return self.data_path

    def column(self, key):
        return np.array([row[key] for row in self.rows])
