"""BIDS-style sidecar fields from a DICOM header, by whitelist only.

Only the acquisition fields named in `fields_from_dataset` are ever copied;
patient and site fields (name, ID, birth date, institution, device serial)
are never read here.  Times are converted to seconds (BIDS), lengths stay mm.
"""

import numpy as np

import tmstarget

_MANUFACTURERS = (("SIEMENS", "Siemens"), ("GE", "GE"), ("PHILIPS", "Philips"))
_TEXT_FIELDS = (
    ("Modality", "Modality"),
    ("ManufacturerModelName", "ManufacturersModelName"),
    ("SeriesDescription", "SeriesDescription"),
    ("ProtocolName", "ProtocolName"),
    ("MRAcquisitionType", "MRAcquisitionType"),
    ("SequenceName", "SequenceName"),
    ("PulseSequenceName", "PulseSequenceName"),
    ("PatientPosition", "PatientPosition"),
)
_JOINED_FIELDS = (
    ("SoftwareVersions", "SoftwareVersions", "\\"),
    ("ScanningSequence", "ScanningSequence", "\\"),
    ("SequenceVariant", "SequenceVariant", "\\"),
)
_NUMBER_FIELDS = (
    ("MagneticFieldStrength", "MagneticFieldStrength"),
    ("FlipAngle", "FlipAngle"),
    ("SliceThickness", "SliceThickness"),
    ("SpacingBetweenSlices", "SpacingBetweenSlices"),
    ("PixelBandwidth", "PixelBandwidth"),
)
_MS_FIELDS = (("RepetitionTime", "RepetitionTime"), ("EchoTime", "EchoTime"), ("InversionTime", "InversionTime"))
_INTEGER_FIELDS = (("SeriesNumber", "SeriesNumber"), ("AcquisitionNumber", "AcquisitionNumber"))
REDACTED = "REDACTED"


def fields_from_dataset(ds, csa=None):
    """Whitelisted acquisition fields of one DICOM header, BIDS names and units.

    Parameters
    ----------
    ds : pydicom.Dataset
        Header (pixels not needed).  Enhanced multi-frame headers are read
        through their first per-frame and shared functional groups.
    csa : dict, optional
        Parsed Siemens CSA image header (unused keys are ignored).

    Returns
    -------
    dict
        JSON-serialisable values: RepetitionTime/EchoTime/InversionTime in
        s, lengths in mm, FlipAngle in degrees.
    """
    groups = _functional_groups(ds)
    out = {}
    manufacturer = str(ds.get("Manufacturer", "")).strip()
    if manufacturer:
        upper = manufacturer.upper()
        out["Manufacturer"] = next((name for prefix, name in _MANUFACTURERS if upper.startswith(prefix)), manufacturer)
    for keyword, name in _TEXT_FIELDS:
        value = _lookup(ds, groups, keyword)
        if value not in (None, ""):
            out[name] = str(value).strip()
    for keyword, name, sep in _JOINED_FIELDS:
        value = _lookup(ds, groups, keyword)
        if value not in (None, ""):
            out[name] = sep.join(str(v).strip() for v in _as_list(value))
    for keyword, name in _NUMBER_FIELDS:
        number = _number(_lookup(ds, groups, keyword))
        if number is not None:
            out[name] = number
    for keyword, name in _INTEGER_FIELDS:
        number = _number(_lookup(ds, groups, keyword))
        if number is not None:
            out[name] = int(number)
    for keyword, name in _MS_FIELDS:
        number = _number(_lookup(ds, groups, keyword))
        if keyword == "EchoTime" and number is None:
            number = _number(_lookup(ds, groups, "EffectiveEchoTime"))
        if number is not None:
            out[name] = round(number / 1000.0, 9)
    image_type = _lookup(ds, groups, "ImageType")
    if image_type:
        out["ImageType"] = [str(v) for v in _as_list(image_type)]
    pe_dir = _lookup(ds, groups, "InPlanePhaseEncodingDirection")
    if pe_dir:
        out["InPlanePhaseEncodingDirectionDICOM"] = {"COLUMN": "COL"}.get(str(pe_dir).upper(), str(pe_dir).upper())
    orientation = _lookup(ds, groups, "ImageOrientationPatient")
    if orientation:
        out["ImageOrientationPatientDICOM"] = [float(v) for v in _as_list(orientation)]
    acq_time = ds.get("AcquisitionTime") or str(ds.get("AcquisitionDateTime", ""))[8:]
    if acq_time:
        text = str(acq_time).strip()
        if len(text) >= 6 and text[:6].isdigit():
            try:
                seconds = float(text[4:])
            except ValueError:
                seconds = None
            if seconds is not None:
                out["AcquisitionTime"] = f"{text[0:2]}:{text[2:4]}:{seconds:09.6f}"  # as dcm2niix
    out.update(_philips_scaling(ds))
    return out


def build_sidecar(meta, *, slice_timing_s=None, slice_timing_reason=None, phase_encoding=None, phi_tokens=()):
    """Assemble the final sidecar of a series.

    Parameters
    ----------
    meta : dict
        Output of `fields_from_dataset` for the series' first volume.
    slice_timing_s : sequence of float, optional
        Acquisition time of each slice, in NIfTI (spatial) slice order, s.
    slice_timing_reason : str, optional
        Why a time series has no slice times; written as
        ``SliceTimingUnknownReason`` (not a BIDS key) so that readers and
        ``--slice-timing`` can say so.
    phase_encoding : tuple of (str, bool), optional
        (axis "i"/"j"/"k", polarity known); when the polarity is not known
        only ``PhaseEncodingAxis`` is written.
    phi_tokens : iterable of str
        Patient identifiers (held in memory only) that must not appear in
        any text value; a text containing one is replaced by "REDACTED".

    Returns
    -------
    dict
    """
    sidecar = dict(meta)
    if slice_timing_s is not None:
        sidecar["SliceTiming"] = [round(float(t), 6) for t in slice_timing_s]
    elif slice_timing_reason:
        sidecar["SliceTimingUnknownReason"] = slice_timing_reason
    if phase_encoding is not None:
        direction, polarity_known = phase_encoding
        if polarity_known:
            sidecar["PhaseEncodingDirection"] = direction
        else:
            sidecar["PhaseEncodingAxis"] = direction.rstrip("-")
    sidecar["ConversionSoftware"] = "tmstarget"
    sidecar["ConversionSoftwareVersion"] = tmstarget.__version__
    return redact(sidecar, phi_tokens)


def redact(value, phi_tokens):
    """Replace any text holding a patient identifier by "REDACTED" (recursively)."""
    tokens = [t.lower() for t in phi_tokens if t]
    if not tokens:
        return value
    if isinstance(value, str):
        low = value.lower()
        return REDACTED if any(t in low for t in tokens) else value
    if isinstance(value, dict):
        return {k: redact(v, tokens) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, tokens) for v in value]
    return value


def _philips_scaling(ds):
    try:
        scale_slope = ds.get_private_item(0x2005, 0x0E, "Philips MR Imaging DD 001").value
    except KeyError:
        return {}
    scale_slope = _number(scale_slope)
    if scale_slope is None or scale_slope == 0:
        return {}
    slope = _number(ds.get("RescaleSlope"))
    intercept = _number(ds.get("RescaleIntercept"))
    return {
        "PhilipsRescaleSlope": 1.0 if slope is None else slope,
        "PhilipsRescaleIntercept": 0.0 if intercept is None else intercept,
        "PhilipsScaleSlope": scale_slope,
        "UsePhilipsFloatNotDisplayScaling": 1,
    }


def _functional_groups(ds):
    """First per-frame group item and the shared one, for enhanced headers."""
    items = []
    for keyword in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        seq = ds.get(keyword)
        if seq:
            items.append(seq[0])
    return items


def _lookup(ds, groups, keyword):
    """A keyword from the top level, else from any functional group's first item."""
    value = ds.get(keyword)
    if value not in (None, ""):
        return value
    for group in groups:
        for elem in group:
            if elem.VR == "SQ" and elem.value:
                inner = elem.value[0].get(keyword)
                if inner not in (None, ""):
                    return inner
    return None


def _number(value):
    if value is None:
        return None
    if not isinstance(value, (str, bytes)):
        values = _as_list(value)
        if not values:
            return None
        value = values[0]
    if isinstance(value, bytes):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(number):
        return None
    return int(number) if number.is_integer() and abs(number) < 2**53 and isinstance(value, int) else number


def _as_list(value):
    if isinstance(value, (str, bytes)):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]
