"""Start-up stays light (issue 19): what ``import tmstarget``, ``tmstarget --help`` and a plan load.

Heavy or GUI libraries (ANTs, pyvista/VTK, Qt, dask, matplotlib) are imported inside the functions
that need them, never at package import time nor by the modules the ``plan`` command imports. Each
check runs a fresh interpreter: ``python -X importtime`` lists every module an import really loads,
and ``sys.modules`` after a command says what the command loaded.
"""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Never loaded by ``import tmstarget``, ``tmstarget --help`` or an MNI plan (the viewer, the E-field and
#: research front ends load them when used; a native plan loads ``ants`` for its registrations).
FORBIDDEN = ("ants", "antspyx", "pyvista", "pyvistaqt", "vtk", "vtkmodules", "PySide6", "dask", "distributed",
             "matplotlib")
#: Not needed to print help: the scientific stack loads when a command runs.
NOT_FOR_HELP = FORBIDDEN + ("numpy", "scipy", "nibabel", "nilearn", "pandas", "sklearn", "skimage", "pydicom")
#: The modules the ``plan`` command imports (eagerly or on its way to a plan in MNI space).
PLAN_MODULES = ("tmstarget.cli.main", "tmstarget.workflows", "tmstarget.workflows.mni", "tmstarget.analysis.engine",
                "tmstarget.outputs.plan", "tmstarget.navigation.export", "tmstarget.coil.plan_coils",
                "tmstarget.anatomy.scalp", "tmstarget.anatomy.tissue", "tmstarget.ingest.read")


def _run(code, *args):
    done = subprocess.run([sys.executable, *args, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _loaded_after(code, names):
    """The top-level packages among ``names`` in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    report = f"\nimport sys\nprint('loaded:', *sorted({{m.split('.')[0] for m in sys.modules}} & set({names!r})))"
    return _run(code + report).stdout.splitlines()[-1].split()[1:]


def _importtime_packages(code):
    """Top-level packages ``python -X importtime -c code`` reports as imported (its stderr lists every module)."""
    done = _run(code, "-X", "importtime")
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the header line
                names.add(name.split(".")[0])
    assert "tmstarget" in names, "python -X importtime reported no tmstarget import: the check would be blind"
    return names


def test_import_tmstarget_loads_no_heavy_library():
    loaded = _importtime_packages("import tmstarget")
    assert sorted(loaded & set(NOT_FOR_HELP)) == []


def test_the_api_names_load_no_heavy_library_until_used():
    code = "import tmstarget\nfor name in tmstarget.__all__:\n    getattr(tmstarget, name)"
    assert _loaded_after(code, FORBIDDEN) == []


@pytest.mark.parametrize("command", [[], ["plan"], ["export"], ["watch"], ["replay"], ["convert"], ["sample"],
                                     ["navigation", "import"], ["protocols"]])
def test_help_loads_neither_the_scientific_stack_nor_heavy_libraries(command):
    code = ("from tmstarget.cli.main import main\n"
            f"try:\n    main({[*command, '--help']!r})\nexcept SystemExit as exc:\n    assert exc.code == 0\n")
    assert _loaded_after(code, NOT_FOR_HELP) == []


def test_help_prints_every_command():
    done = subprocess.run([sys.executable, "-m", "tmstarget.cli", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0
    for command in ("plan", "export", "watch", "replay", "convert", "sample", "navigation", "protocols"):
        assert command in done.stdout


def test_the_plan_modules_load_no_heavy_library():
    assert _loaded_after("\n".join(f"import {m}" for m in PLAN_MODULES), FORBIDDEN) == []


def test_a_whole_plan_loads_no_heavy_library(tmp_path):
    """A plan in MNI space with its coil, every navigation format and its report: no ANTs, GUI, cluster or
    plotting library in the command's process (the report draws with numpy and SVG; its 3D view comes from the
    viewer's renderer in a child process)."""
    args = ["plan", "sample_data", "--participant", "01", "--output", str(tmp_path / "out"), "--quiet"]
    code = f"from tmstarget.cli.main import main\nassert main({args!r}) == 0"
    assert _loaded_after(code, FORBIDDEN) == []
    assert (tmp_path / "out" / "navigation").is_dir()  # the run went as far as the navigation files
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert '<section id="map">' in page and "<svg" in page
    if _run("import importlib.util\nprint(importlib.util.find_spec('pyvista') is not None)").stdout.strip() == "True":
        assert "rendered off-screen by the viewer" in page


_HUGEPAGE_SETTING = ("\nimport numpy\ncore = getattr(numpy, '_core', None) or numpy.core\n"
                     "print('hugepage:', core.multiarray._set_madvise_hugepage(True))")


@pytest.mark.parametrize("numpy_first", [False, True])
def test_commands_ask_numpy_for_ordinary_pages(numpy_first, monkeypatch):
    # numpy's MADV_HUGEPAGE marking costs seconds of compaction stalls per BOLD where huge pages are scarce;
    # the command turns it off whether numpy was imported before it or after (the setter returns the old value)
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    code = ("import numpy\n" if numpy_first else "") + \
        "from tmstarget.cli.main import main\nmain(['protocols'])" + _HUGEPAGE_SETTING
    assert _run(code).stdout.splitlines()[-1] == "hugepage: False"


def test_the_users_hugepage_setting_wins(monkeypatch):
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    code = "import numpy\nfrom tmstarget.cli.main import main\nmain(['protocols'])" + _HUGEPAGE_SETTING
    assert _run(code).stdout.splitlines()[-1] == "hugepage: True"
