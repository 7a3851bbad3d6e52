"""Raw functional runs and T1s as given (DICOM folder or NIfTI file with its BIDS sidecar).

:class:`NativeRun` describes one raw run; :func:`load_image` reads a DICOM
series or a NIfTI file into a nibabel image and its sidecar dict.
"""

from dataclasses import dataclass
from pathlib import Path

from tmstarget.errors import InputError
from tmstarget.ingest.read import read_image, read_json


@dataclass(frozen=True)
class NativeRun:
    """One raw functional run as given on the command line.

    Attributes
    ----------
    source : Path
        DICOM folder, or a 4-D NIfTI file.
    state : str or None
        State of the whole run (``"rest"``, or a separate-run state); None for
        a blocks-design task run (states from ``events``).
    label : str
        Run label used in file names (``rest_run-1``).
    events : Path, optional
        BIDS events TSV (blocks design).
    sidecar : Path, optional
        BIDS JSON sidecar of a NIfTI source (default: beside it, same stem).
    series : int or str, optional
        SeriesNumber or SeriesInstanceUID when the DICOM folder holds several.
    """

    source: Path
    state: str | None
    label: str
    events: Path | None = None
    sidecar: Path | None = None
    series: int | str | None = None



def _is_dicom_source(path):
    return Path(path).is_dir()


def _sidecar_beside(nifti_path):
    path = Path(nifti_path)
    stem = path.name[:-7] if path.name.endswith(".nii.gz") else path.stem
    candidate = path.with_name(stem + ".json")
    return candidate if candidate.is_file() else None


def load_image(source, series=None, sidecar=None, what="functional run"):
    """A NIfTI image and its sidecar dict from a DICOM folder or a NIfTI file.

    Parameters
    ----------
    source : Path
        DICOM folder (one series, or ``series`` picks one) or NIfTI file.
    series : int or str, optional
        Only used when the folder holds several series.
    sidecar : Path, optional
        JSON sidecar of a NIfTI file (default: the BIDS sibling, if any).
    what : str
        For error messages.

    Returns
    -------
    (nibabel.Nifti1Image, dict)
    """
    from tmstarget.ingest.dicom.series import find_series, load_series

    source = Path(source)
    if not source.exists():
        raise InputError(f"{what} not found", path=source)
    if _is_dicom_source(source):
        pick = series if series is not None and len(find_series(source)) > 1 else None
        return load_series(source, series=pick)
    img = read_image(source, what)
    sidecar = Path(sidecar) if sidecar is not None else _sidecar_beside(source)
    return img, ({} if sidecar is None else read_json(sidecar, "sidecar"))
