"""Synthetic data with known answers (a patient in fMRIPrep layout, DICOM series) for tests, benchmarks and demos."""
