"""DICOM -> NIfTI: series discovery, headers (CSA, enhanced multi-frame), pixels, assembly and BIDS sidecars."""
