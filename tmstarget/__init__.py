"""tmstarget: individualized TMS targets for depression from one patient's fMRI.

Stages (one module each): ingest -> clean -> rois -> connectivity -> targets
-> outputs (navigation, report).  Front ends (CLI, real-time watcher, viewer,
research mode) call the same stage functions.
"""

__version__ = "0.1.0"
