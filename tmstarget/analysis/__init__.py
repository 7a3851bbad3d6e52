"""The analysis stages: clean -> voxels -> ROIs -> connectivity -> targets, the batch engine and its streaming twin."""
