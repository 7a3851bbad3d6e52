"""The plan folder: target.json, targets.tsv, maps and provenance, written atomically."""
