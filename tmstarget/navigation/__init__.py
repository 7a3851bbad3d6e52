"""Navigation files: writers and readers for neuronavigation systems.

Every pose crosses this package as a :class:`NavTarget` in the project
convention (SimNIBS coil axes: z into the head, y away from the handle,
handle = -y; RAS world; mm), and is converted only at the file boundary
(``shared/specs/navigation-formats.md``).
"""

# The names load on first use (``import tmstarget.navigation.formats`` stays light: issue 19).
_LAZY = {
    "NavFile": "_common",
    "NavTarget": "_common",
    "T1Reference": "_common",
    "load_t1_reference": "_common",
    "read_ant": "ant",
    "write_ant": "ant",
    "read_bids_markers": "bids",
    "write_bids_markers": "bids",
    "read_brainsight": "brainsight",
    "write_brainsight": "brainsight",
    "compare_recorded": "compare",
    "ExportResult": "export",
    "export_plan": "export",
    "load_plan": "export",
    "read_fcsv": "fcsv",
    "write_fcsv": "fcsv",
    "FORMATS": "formats",
    "detect_format": "formats",
    "read_navigation_file": "formats",
    "localite_marker_filename": "localite",
    "read_localite": "localite",
    "write_localite": "localite",
    "read_candidates_csv": "plain",
    "read_candidates_json": "plain",
    "write_candidates_csv": "plain",
    "write_candidates_json": "plain",
    "read_simnibs_csv": "simnibs",
    "write_simnibs_csv": "simnibs",
    "read_slicer_json": "slicer",
    "write_slicer_json": "slicer",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"tmstarget.navigation.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tmstarget.navigation' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = [
    "ExportResult",
    "FORMATS",
    "compare_recorded",
    "export_plan",
    "load_plan",
    "NavFile",
    "NavTarget",
    "T1Reference",
    "detect_format",
    "load_t1_reference",
    "localite_marker_filename",
    "read_ant",
    "read_bids_markers",
    "read_brainsight",
    "read_candidates_csv",
    "read_candidates_json",
    "read_fcsv",
    "read_localite",
    "read_navigation_file",
    "read_simnibs_csv",
    "read_slicer_json",
    "write_ant",
    "write_bids_markers",
    "write_brainsight",
    "write_candidates_csv",
    "write_candidates_json",
    "write_fcsv",
    "write_localite",
    "write_simnibs_csv",
    "write_slicer_json",
]
