"""``OUTPUT/report.html`` of a comparison: the group figures in one self-contained file.

Each strategy's targets on a glass brain, the distributions of the between-strategy and
split-half distances, the data-length curves (distance from the full-data target, split-half
distance and share significant against minutes) and the significance rates, with the summary
table. Built with :mod:`tmstarget.outputs.html` (images embedded, nothing external).
"""

from __future__ import annotations

import numpy as np

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f")


def _glass_brains(targets, names):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nilearn import plotting

    ok = targets[targets["status"] == "ok"]
    fig = plt.figure(figsize=(9.0, 2.3 * len(names)))
    for i, name in enumerate(names):
        rows = ok[ok["protocol"] == name]
        axes = fig.add_axes((0.0, 1.0 - (i + 1) / len(names), 1.0, 1.0 / len(names)))
        display = plotting.plot_glass_brain(None, display_mode="lzry", axes=axes, title=f"{name} (n={len(rows)})")
        if len(rows):
            display.add_markers(rows[["x_mni", "y_mni", "z_mni"]].to_numpy(dtype=float),
                                marker_color=COLOURS[i % len(COLOURS)], marker_size=25)
    return fig


def _box(groups, labels, ylabel, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(labels) + 2.0), 3.2))
    kept = [(np.asarray(g, dtype=float)[np.isfinite(np.asarray(g, dtype=float))], label)
            for g, label in zip(groups, labels)]
    kept = [(g, label) for g, label in kept if g.size]
    if kept:
        ax.boxplot([g for g, _ in kept], tick_labels=[label for _, label in kept], showfliers=False)
        for i, (g, _) in enumerate(kept):
            jitter = np.linspace(-0.12, 0.12, g.size) if g.size > 1 else np.zeros(1)
            ax.plot(np.full(g.size, i + 1.0) + jitter, g, "o", color="#333", markersize=3, alpha=0.6)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=20)
    return fig


def _curves(data_length, names):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11.0, 3.2))
    for i, name in enumerate(names):
        rows = data_length[data_length["protocol"] == name]
        if rows.empty:
            continue
        style = {"color": COLOURS[i % len(COLOURS)], "marker": "o", "label": name}
        axes[0].plot(rows["minutes"], rows["distance_median_mm"], **style)
        axes[1].plot(rows["minutes"], rows["split_half_median_mm"], **style)
        axes[2].plot(rows["minutes"], rows["significant_share"], **style)
    for ax, label in zip(axes, ("median distance from full-data target (mm)", "median split-half distance (mm)",
                                "share significant")):
        ax.set_xlabel("minutes of data")
        ax.set_ylabel(label)
    axes[2].set_ylim(-0.05, 1.05)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _rates(summary, names):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = summary[(summary["kind"] == "strategy") & (summary["measure"] == "significant_share")].set_index("name")
    values = [float(shares["value"].get(name, np.nan)) for name in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 2.0), 3.0))
    ax.bar(range(len(names)), np.nan_to_num(values), color=[COLOURS[i % len(COLOURS)] for i in range(len(names))])
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of participants significant")
    for i, v in enumerate(values):
        ax.text(i, (0 if np.isnan(v) else v) + 0.02, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", fontsize=8)
    return fig


def _cell(value):
    if isinstance(value, float):
        return "n/a" if np.isnan(value) else f"{value:.3g}"
    return value


def write_report(tables, names, path):
    """Write the comparison's group report.

    Parameters
    ----------
    tables : dict of str to pandas.DataFrame
        As :func:`tmstarget.research.compare.compare` returns them.
    names : list of str
        The strategies, in order.
    path : Path
        ``OUTPUT/report.html`` (written atomically).
    """
    from tmstarget import __version__
    from tmstarget._fileio import write_text_atomic
    from tmstarget.outputs.html import HtmlDocument

    targets, distances, summary = tables["targets"], tables["distances"], tables["summary"]
    participants = sorted(set(targets["participant"]))
    failed = targets[targets["status"] != "ok"]
    doc = HtmlDocument("Targeting strategies compared",
                       f"{len(participants)} participants x {len(names)} strategies; tmstarget {__version__}")
    top = doc.section("Targets", anchor="targets")
    top.paragraph("Each strategy's targets (MNI152NLin2009cAsym mm), one marker per participant.")
    top.figure(_glass_brains(targets, names))
    if len(failed):
        top.paragraph(f"{len(failed)} participant x strategy runs failed:", css_class="warning")
        top.items([f"sub-{r.participant} {r.protocol}: {r.status}" for r in failed.itertuples(index=False)])
    spread = doc.section("Distances", anchor="distances")
    pairs = [(a, b) for a, b in zip(distances["protocol_a"], distances["protocol_b"])]
    pair_labels = list(dict.fromkeys(pairs))
    spread.figure(_box([distances[(distances["protocol_a"] == a) & (distances["protocol_b"] == b)]["distance_mm"]
                        for a, b in pair_labels], [f"{a}\nvs {b}" for a, b in pair_labels], "distance (mm)",
                       "between strategies, per participant"))
    ok = targets[targets["status"] == "ok"]
    spread.figure(_box([ok[ok["protocol"] == n]["split_half_mm"] for n in names], names, "split-half distance (mm)",
                       "within person: targets of two halves of the data"))
    curves = doc.section("How much data", anchor="data-length")
    if len(tables["data_length"]):
        curves.paragraph("Targets recomputed on the first L minutes of every run (frames, confounds and events cut "
                         "together) against the full-data target.")
        curves.figure(_curves(tables["data_length"], names))
        curves.table([list(tables["data_length"].columns)]
                     + [[_cell(v) for v in row] for row in tables["data_length"].itertuples(index=False)])
    else:
        curves.paragraph("No data-length curve was computed.")
    rates = doc.section("Significance", anchor="significance")
    rates.figure(_rates(summary, names))
    table = doc.section("Summary", anchor="summary")
    table.paragraph("between_within_ratio = median distance from the strategy's group centroid / median split-half "
                    "distance (after Cash et al. 2021).")
    table.table([list(summary.columns)] + [[_cell(v) for v in row] for row in summary.itertuples(index=False)])
    write_text_atomic(path, doc.render())
