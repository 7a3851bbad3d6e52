"""The evidence panel: the plan's verdict with its reasons, the DMN subsystem table, the FD trace.

Everything shown is read from the plan's ``target.json`` (``qc``), or from
``live.json`` in live mode; nothing is computed again here.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from PySide6.QtWidgets import QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget


def evidence_lines(document):
    """The verdict line and the reasons (plain text) of a ``target.json`` document.

    Returns
    -------
    verdict : str
        ``qc.inference.verdict`` (significance, bootstrap spread), or the fixed-target note.
    reasons : list of str
        Split-half distance, per-run motion, usable minutes and seed tSNR,
        scalp-to-cortex depth, then every QC warning.
    """
    qc = document.get("qc") or {}
    inference = qc.get("inference")
    verdict = inference["verdict"] if inference else "fixed target: no individual evidence (group-average site)"
    reasons = []
    split = (qc.get("stability") or {}).get("split_half_distance_mm")
    if split is not None:
        reasons.append(f"split halves {split:.1f} mm apart")
    for run in qc.get("runs", []):
        usable = run["frames_kept"] * run["t_r_s"] / 60 if run.get("frames_kept") and run.get("t_r_s") else None
        text = f"{run['run']}: mean FD {run.get('mean_fd_power_mm', float('nan')):.2f} mm, " \
               f"{run.get('frames_scrubbed', 0)} frames scrubbed"
        if usable is not None:
            text += f", {usable:.1f} usable min"
        if run.get("tsnr_seed_median") is not None:
            text += f", seed tSNR {run['tsnr_seed_median']:.0f} (brain {run.get('tsnr_brain_median', 0):.0f})"
        reasons.append(text)
    coil = document.get("coil")
    if coil and coil.get("scalp_to_cortex_mm") is not None:
        reasons.append(f"scalp-to-cortex depth {coil['scalp_to_cortex_mm']:.1f} mm")
    reasons += [f"warning: {w}" for w in qc.get("warnings", []) if not inference or w != inference.get("verdict")]
    return verdict, reasons


def fd_traces(document):
    """(run name, FD trace in mm or None, mean FD) per run, and the scrubbing threshold (mm) of a plan."""
    protocol = (document.get("provenance") or {}).get("protocol") or {}
    threshold = (protocol.get("clean") or {}).get("fd_threshold_mm")
    runs = [(run["run"], run.get("fd_power_trace_mm"), run.get("mean_fd_power_mm"))
            for run in (document.get("qc") or {}).get("runs", [])]
    return runs, threshold


class FdPlot(FigureCanvasQTAgg):
    """Framewise displacement with the scrubbing threshold (matplotlib in Qt)."""

    def __init__(self, parent=None):
        self.figure = Figure(figsize=(4, 1.6), layout="constrained")
        super().__init__(self.figure)
        self.setParent(parent)
        self.ax = self.figure.add_subplot(1, 1, 1)

    def show_traces(self, runs, threshold_mm, title="framewise displacement"):
        """``runs``: (name, trace or None, mean); a run without a trace is drawn as its mean."""
        ax = self.ax
        ax.clear()
        start = 0
        for name, trace, mean in runs:
            if trace:
                frames = np.arange(start, start + len(trace))
                ax.plot(frames, trace, linewidth=0.8, label=name)
                start += len(trace)
            elif mean is not None:
                ax.bar([name], [mean], label=f"{name} (mean)")
        if threshold_mm is not None:
            ax.axhline(threshold_mm, color="red", linestyle="--", linewidth=0.8, label=f"threshold {threshold_mm:g}")
        ax.set_ylabel("FD (mm)", fontsize=8)
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=6, loc="upper right")
        self.draw_idle()


class EvidencePanel(QWidget):
    """Verdict, reasons, DMN subsystem table and FD plot of a plan (and the live status in live mode)."""

    def __init__(self, document=None, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        self.verdict.setStyleSheet("font-weight: bold;")
        self.reasons = QLabel()
        self.reasons.setWordWrap(True)
        self.table = QTableWidget()
        self.fd = FdPlot(self)
        self.status = QLabel()
        self.status.setWordWrap(True)
        for widget in (self.verdict, self.reasons, self.table, self.fd, self.status):
            layout.addWidget(widget)
        if document is not None:
            self.show_plan(document)

    def show_plan(self, document):
        """Fill the panel from a ``target.json`` document."""
        verdict, reasons = evidence_lines(document)
        self.verdict.setText(verdict)
        self.reasons.setText("\n".join(f"• {r}" for r in reasons))
        self.show_subsystems((document.get("qc") or {}).get("subsystem_fc"))
        self.fd.show_traces(*fd_traces(document))

    def show_subsystems(self, table):
        """DMN subsystem connectivity (Fisher z): rows = pairs, columns = states."""
        self.table.clear()
        if not table:
            self.table.setRowCount(0)
            self.table.setColumnCount(0)
            return
        states = list(table)
        pairs = list(dict.fromkeys(p for state in states for p in table[state]))
        self.table.setColumnCount(len(states))
        self.table.setRowCount(len(pairs))
        self.table.setHorizontalHeaderLabels(states)
        self.table.setVerticalHeaderLabels(pairs)
        for row, pair in enumerate(pairs):
            for col, state in enumerate(states):
                value = table[state].get(pair)
                self.table.setItem(row, col, QTableWidgetItem("" if value is None else f"{value:+.3f}"))
        self.table.resizeColumnsToContents()

    def show_live(self, summary, doc):
        """Live mode: the watcher's status, stability, verdict so far, subsystems and FD trace."""
        self.status.setText(f"live: {summary['status']}" + (f" | {summary['stability']}" if summary["stability"]
                                                            else ""))
        inference = (doc or {}).get("inference") or {}
        if inference.get("verdict"):
            self.verdict.setText(f"live: {inference['verdict']}")
        if doc is not None and doc.get("subsystem_fc"):
            self.show_subsystems(doc["subsystem_fc"])
        self.fd.show_traces([("live run", summary["fd_mm"], None)], summary["fd_threshold_mm"],
                            title="framewise displacement (live)")
