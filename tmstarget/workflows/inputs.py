"""The inputs of a plan request exist: checked after the options, before the output folder rules."""

from pathlib import Path

from tmstarget.errors import InputError

#: Role of each path field of a PlanRequest, for "... not found" messages; True: a folder.
_INPUT_ROLES = {
    "dataset": ("dataset folder", True), "bids_dir": ("BIDS folder", True), "rest_bold": ("BOLD", False),
    "rest_confounds": ("confounds", False), "task_bold": ("BOLD", False), "task_confounds": ("confounds", False),
    "events": ("events", False), "mask": ("brain mask", False), "t1": ("T1", False),
    "rest_dicom": ("DICOM folder", True), "task_dicom": ("DICOM folder", True), "t1_dicom": ("T1 DICOM folder", True),
}


def check_inputs_exist(request) -> None:
    """Every input path of a :class:`~tmstarget.workflows.PlanRequest` exists.

    Datasets and DICOM series are folders, every other input a file.

    Raises
    ------
    InputError
        ``<path>: BOLD file not found`` (the role named).
    """
    for name, (role, folder) in _INPUT_ROLES.items():
        value = getattr(request, name)
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            path = item[1] if isinstance(item, tuple) else item  # (state, path) pairs
            if path is None:
                continue
            if folder and not Path(path).is_dir():
                raise InputError(f"{role} not found" if not Path(path).exists() else f"{role} is not a folder",
                                 path=path)
            if not folder and not Path(path).exists():
                raise InputError(f"{role} file not found", path=path)
