"""tmstarget: individualized TMS targets for depression from one patient's fMRI.

Python API::

    import tmstarget
    plan = tmstarget.plan("sample_data", participant="01", protocol="sgacc-dlpfc")
    plan.save("plan-out")
    tmstarget.load_plan("plan-out") == plan
    tmstarget.report("plan-out", rmt=52)   # plan-out/report.html

Stages (one subpackage each): ingest -> anatomy -> analysis (clean, rois,
connectivity, targets) -> outputs (plan folder) -> navigation. The workflows
(:mod:`tmstarget.workflows`) chain them; front ends (CLI, real-time watcher,
viewer, research mode) call the workflows and this API. ``import tmstarget`` is
light: the heavy modules load on first use.
"""

__version__ = "0.1.0"

__all__ = ["plan", "compare", "load_plan", "load_protocol", "revise_plan", "plan_efield", "report", "Plan",
           "Protocol", "__version__"]

_LAZY = {
    "plan": ("tmstarget._api", "plan"),
    "compare": ("tmstarget.research.compare", "compare"),
    "load_plan": ("tmstarget.outputs.plan", "load_plan"),
    "Plan": ("tmstarget.outputs.plan", "Plan"),
    "revise_plan": ("tmstarget.outputs.revise", "revise_plan"),
    "plan_efield": ("tmstarget.efield.run", "plan_efield"),
    "load_protocol": ("tmstarget.protocol", "load_protocol"),
    "report": ("tmstarget.outputs.report", "write_report"),
    "Protocol": ("tmstarget.protocol", "Protocol"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tmstarget' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


class _SourceViewerFinder:
    """In a source checkout, ``tmstarget.viewer`` is the top-level ``viewer/`` folder (pyproject's package-dir
    maps it so when installed); this import finder says so without importing anything."""

    def __init__(self, folder):
        self.folder = folder

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tmstarget.viewer":
            return None
        from importlib.util import spec_from_file_location

        return spec_from_file_location(fullname, self.folder / "__init__.py",
                                       submodule_search_locations=[str(self.folder)])


def _register_source_viewer():
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (Path(__file__).parent / "viewer").is_dir() and (root / "viewer" / "__init__.py").is_file() \
            and (root / "pyproject.toml").is_file():
        # first: an editable install of another checkout (its finder maps tmstarget.viewer) must not win
        sys.meta_path.insert(0, _SourceViewerFinder(root / "viewer"))


_register_source_viewer()
