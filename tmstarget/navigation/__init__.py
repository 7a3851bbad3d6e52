"""Navigation files: writers and readers for neuronavigation systems.

Every pose crosses this package as a :class:`NavTarget` in the project
convention (SimNIBS coil axes: z into the head, y away from the handle,
handle = -y; RAS world; mm), and is converted only at the file boundary
(``shared/specs/navigation-formats.md``).
"""

from tmstarget.navigation._common import NavFile, NavTarget, T1Reference, load_t1_reference
from tmstarget.navigation.ant import read_ant, write_ant
from tmstarget.navigation.bids import read_bids_markers, write_bids_markers
from tmstarget.navigation.brainsight import read_brainsight, write_brainsight
from tmstarget.navigation.compare import compare_recorded
from tmstarget.navigation.export import ExportResult, export_plan, load_plan
from tmstarget.navigation.fcsv import read_fcsv, write_fcsv
from tmstarget.navigation.formats import FORMATS, detect_format, read_navigation_file
from tmstarget.navigation.localite import localite_marker_filename, read_localite, write_localite
from tmstarget.navigation.plain import (
    read_candidates_csv,
    read_candidates_json,
    write_candidates_csv,
    write_candidates_json,
)
from tmstarget.navigation.simnibs import read_simnibs_csv, write_simnibs_csv
from tmstarget.navigation.slicer import read_slicer_json, write_slicer_json

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
