"""The evidence panel: the plan's verdict with its reasons, the DMN subsystem table, the FD trace.

Everything shown is read from the plan's ``target.json`` (``qc``; the verdict
is :func:`tmstarget.outputs.evidence.trust_verdict`, as in the report), or from
``live.json`` in live mode; nothing is computed again here.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from PySide6.QtWidgets import QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

#: Verdict level -> colour of the verdict line.
LEVEL_COLOURS = {"go": "#1a7f37", "caution": "#b35900", "no-go": "#c62828", "fixed": "#555555"}
_MARKS = {True: "✓", False: "✗", None: "•"}


def evidence_lines(document):
    """The verdict line, its level and the reasons (marked ✓ good, ✗ concern, • neutral) of a ``target.json``
    document: :func:`tmstarget.outputs.evidence.trust_verdict` (the report says the same), then every QC warning."""
    from tmstarget.outputs.evidence import trust_verdict

    verdict = trust_verdict(document)
    reasons = [f"{_MARKS[good]} {text}" for good, text in verdict.reasons]
    reasons += [f"⚠ {warning}" for warning in (document.get("qc") or {}).get("warnings", [])]
    return verdict.line, verdict.level, reasons


def fd_traces(document):
    """(run name, FD trace in mm or None, mean FD) per run, and the scrubbing threshold (mm) of a plan."""
    from tmstarget.outputs.evidence import protocol_parameters

    threshold = (protocol_parameters(document).get("clean") or {}).get("fd_threshold_mm")
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
        line, level, reasons = evidence_lines(document)
        self.verdict.setText(line)
        self.verdict.setStyleSheet(f"font-weight: bold; color: {LEVEL_COLOURS.get(level, 'black')};")
        self.reasons.setText("\n".join(reasons))
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
