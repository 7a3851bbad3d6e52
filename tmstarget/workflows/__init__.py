"""Whole plans from inputs as the user gives them: MNI-space derivatives, fMRIPrep in T1w, raw/DICOM runs."""
