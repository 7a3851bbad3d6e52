"""The comparison's tables from the per-participant records (pure pandas/numpy, no I/O but :func:`write_tsv`).

Definitions (all distances Euclidean, in MNI152NLin2009cAsym mm; medians and quartiles are
numpy's, linear interpolation; IQR = Q3 - Q1):

* ``distances``: for each participant and each pair of strategies (in the order given), the
  distance between the two targets; n/a when either failed.
* ``summary``, one row per (kind, name, measure):

  - strategy rows: ``split_half_mm`` (each participant's split-half distance: targets picked on
    two interleaved halves of the data), ``bootstrap_spread_mm``, ``between_person_mm`` (each
    participant's distance from the group centroid, the mean target of that strategy over its
    successful participants), ``between_within_ratio`` in ``value``: median between-person
    distance / median within-person distance, the within-person distance being the split-half
    distance, or the bootstrap spread for a strategy without split halves (after Cash et al. 2021,
    who divide the between-person spread by the within-person, test-retest one; fixed strategies
    have neither, n/a), and ``significant_share`` in ``value``: share of successful participants
    whose target is significant (``p_fwe`` below the protocol's alpha);
  - pair rows (``name`` ``"a vs b"``): ``distance_mm``.

  ``n`` counts the values summarized, ``failures`` the participants whose run failed (for a
  pair: either strategy).
* ``data_length``: per strategy and length L (minutes), over participants whose full-data run
  succeeded: ``distance_median_mm``/``distance_iqr_mm`` of the target computed on the first L
  minutes from the full-data target, ``significant_share`` (significant L-minute targets / L-minute
  targets computed), ``split_half_median_mm``, ``n`` and ``failures`` (points that failed, e.g.
  too few volumes after scrubbing).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

TARGET_COLUMNS = ["participant", "protocol", "x_mni", "y_mni", "z_mni", "score", "p_fwe", "significant",
                  "split_half_mm", "bootstrap_spread_mm", "mean_fd_mm", "usable_minutes", "status",
                  "prepare_s", "analysis_s", "write_s", "data_length_s"]
POINT_COLUMNS = ["participant", "protocol", "minutes", "x_mni", "y_mni", "z_mni", "distance_from_full_mm", "p_fwe",
                 "significant", "split_half_mm", "bootstrap_spread_mm", "status"]
SUMMARY_COLUMNS = ["kind", "name", "measure", "n", "failures", "median", "q1", "q3", "iqr", "value"]
XYZ = ["x_mni", "y_mni", "z_mni"]


def targets_table(records, protocols):
    """``targets.tsv``: one row per participant x protocol (participants sorted, protocols in the given order)."""
    order = {name: i for i, name in enumerate(protocols)}
    rows = sorted(records, key=lambda r: (str(r["participant"]), order.get(r["protocol"], len(order))))
    table = pd.DataFrame([{c: r.get(c) for c in TARGET_COLUMNS} for r in rows], columns=TARGET_COLUMNS)
    for column in TARGET_COLUMNS:
        if column not in ("participant", "protocol", "status", "significant"):
            table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    table["participant"] = table["participant"].astype(str)
    return table


def _ok(table):
    return table[table["status"] == "ok"]


def distances_table(targets, protocols):
    """``distances.tsv``: participant, protocol_a, protocol_b, distance_mm (n/a when either failed)."""
    rows = []
    by = {(r.participant, r.protocol): r for r in targets.itertuples(index=False)}
    for participant in sorted(set(targets["participant"])):
        for a, b in itertools.combinations(protocols, 2):
            ra, rb = by.get((participant, a)), by.get((participant, b))
            ok = ra is not None and rb is not None and ra.status == "ok" and rb.status == "ok"
            distance = float(np.linalg.norm(np.subtract([ra.x_mni, ra.y_mni, ra.z_mni],
                                                        [rb.x_mni, rb.y_mni, rb.z_mni]))) if ok else np.nan
            rows.append({"participant": participant, "protocol_a": a, "protocol_b": b, "distance_mm": distance})
    return pd.DataFrame(rows, columns=["participant", "protocol_a", "protocol_b", "distance_mm"])


def spread(values):
    """``n, median, q1, q3, iqr`` of the finite values (NaN when none)."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if values.size == 0:
        return {"n": 0, "median": np.nan, "q1": np.nan, "q3": np.nan, "iqr": np.nan}
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {"n": int(values.size), "median": float(median), "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1)}


def centroid_distances(ok_rows):
    """Each participant's distance from the group centroid (mean x, y, z) of the rows given."""
    xyz = ok_rows[XYZ].to_numpy(dtype=float)
    if len(xyz) == 0:
        return np.zeros(0)
    return np.linalg.norm(xyz - xyz.mean(axis=0), axis=1)


def spread_ratio(between, within):
    """Median between-person distance / median within-person distance (inf when within is 0, NaN when empty)."""
    b, w = spread(between)["median"], spread(within)["median"]
    if not (np.isfinite(b) and np.isfinite(w)):
        return np.nan
    if w == 0:
        return np.inf if b > 0 else np.nan
    return float(b / w)


def summary_table(targets, distances, protocols):
    """``summary.tsv``: per strategy and per pair (see the module docstring for every measure)."""
    rows = []
    for name in protocols:
        mine = targets[targets["protocol"] == name]
        ok = _ok(mine)
        failures = int(len(mine) - len(ok))
        between = centroid_distances(ok)
        within = ok["split_half_mm"] if ok["split_half_mm"].notna().any() else ok["bootstrap_spread_mm"]
        for measure, values in (("split_half_mm", ok["split_half_mm"]),
                                ("bootstrap_spread_mm", ok["bootstrap_spread_mm"]), ("between_person_mm", between)):
            rows.append({"kind": "strategy", "name": name, "measure": measure, "failures": failures,
                         **spread(values), "value": np.nan})
        rows.append({"kind": "strategy", "name": name, "measure": "between_within_ratio", "failures": failures,
                     **spread([]), "n": int(min(len(between), within.notna().sum())),
                     "value": spread_ratio(between, within)})
        significant = ok["significant"].dropna()
        rows.append({"kind": "strategy", "name": name, "measure": "significant_share", "failures": failures,
                     **spread([]), "n": int(len(significant)),
                     "value": float(significant.astype(bool).mean()) if len(significant) else np.nan})
    for a, b in itertools.combinations(protocols, 2):
        pair = distances[(distances["protocol_a"] == a) & (distances["protocol_b"] == b)]
        rows.append({"kind": "pair", "name": f"{a} vs {b}", "measure": "distance_mm",
                     "failures": int(pair["distance_mm"].isna().sum()), **spread(pair["distance_mm"]),
                     "value": np.nan})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def data_length_points_table(records, targets):
    """``data_length_targets.tsv``: each participant x protocol x length point, its distance from the full target."""
    full = {(r.participant, r.protocol): np.array([r.x_mni, r.y_mni, r.z_mni], dtype=float)
            for r in _ok(targets).itertuples(index=False)}
    rows = []
    for record in records:
        key = (str(record["participant"]), record["protocol"])
        if key not in full:
            continue
        for point in record.get("data_length") or []:
            distance = np.nan
            if point["status"] == "ok":
                distance = float(np.linalg.norm(np.array([point[c] for c in XYZ], dtype=float) - full[key]))
            rows.append({"participant": key[0], "protocol": key[1], **{c: point.get(c) for c in POINT_COLUMNS[2:]},
                         "distance_from_full_mm": distance})
    table = pd.DataFrame(rows, columns=POINT_COLUMNS)
    return table.sort_values(["protocol", "minutes", "participant"], kind="stable").reset_index(drop=True)


def data_length_table(points, protocols):
    """``data_length.tsv``: per strategy and length, distance from the full-data target and share significant."""
    rows = []
    for name in protocols:
        mine = points[points["protocol"] == name]
        for length in sorted(set(mine["minutes"])):
            at = mine[mine["minutes"] == length]
            ok = _ok(at)
            distance = spread(ok["distance_from_full_mm"].astype(float))
            significant = ok["significant"].dropna()
            rows.append({"protocol": name, "minutes": float(length), "n": int(len(ok)),
                         "failures": int(len(at) - len(ok)), "distance_median_mm": distance["median"],
                         "distance_iqr_mm": distance["iqr"],
                         "significant_share": float(significant.astype(bool).mean()) if len(significant) else np.nan,
                         "split_half_median_mm": spread(ok["split_half_mm"].astype(float))["median"]})
    return pd.DataFrame(rows, columns=["protocol", "minutes", "n", "failures", "distance_median_mm", "distance_iqr_mm",
                                       "significant_share", "split_half_median_mm"])


def write_tsv(table, path):
    """Write a table as TSV (``n/a`` for missing values) in one atomic step."""
    from tmstarget._fileio import write_text_atomic

    write_text_atomic(path, table.to_csv(sep="\t", index=False, na_rep="n/a", lineterminator="\n"))
