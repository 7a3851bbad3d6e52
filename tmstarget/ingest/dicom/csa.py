"""Siemens CSA header parsing (the private ``SIEMENS CSA HEADER`` blocks).

Siemens stores acquisition details that have no standard DICOM tag (number of
images in a mosaic, slice normal, per-slice acquisition times, phase-encoding
polarity) in two binary blobs: the CSA *image* header (0029,1010) and the CSA
*series* header (0029,1020).  Since syngo MR B-versions both use the "CSA2"
layout, which starts with the magic ``b"SV10"``.

Layout (all integers little-endian, 4 bytes)::

    "SV10" | 4 unused bytes | n_tags (uint32) | unused (uint32, 77)
    n_tags times:
        name (64 bytes, NUL-terminated) | vm (int32) | vr (4 bytes)
        syngo data type (int32) | n_items (int32) | marker (int32, 77 or 205)
        n_items times:
            4 x int32 (the second one is the item length in bytes)
            item bytes, padded with zeros to a multiple of 4

Item bytes are text (numbers printed as decimal strings, NUL-terminated).
"""

import struct

from tmstarget.errors import DicomError

CSA2_MAGIC = b"SV10"
_TAG_HEADER = struct.Struct("<64si4siii")
_ITEM_HEADER = struct.Struct("<4i")
_INT_VRS = frozenset({"IS", "SL", "UL", "US", "SS", "UN"})
_FLOAT_VRS = frozenset({"DS", "FD", "FL"})
_MAX_TAGS = 4096
_MAX_ITEMS = 65536


def parse_csa_header(raw, *, path=None):
    """Parse a Siemens CSA2 (``SV10``) header into a dict of value lists.

    Parameters
    ----------
    raw : bytes
        The bytes of (0029,1010) or (0029,1020).
    path : str or os.PathLike, optional
        File the bytes come from, used in error messages only.

    Returns
    -------
    dict of str to list
        Tag name -> list of values (int for integer VRs, float for DS/FD/FL,
        str otherwise).  Tags without values map to an empty list.

    Raises
    ------
    DicomError
        If the blob is not CSA2 or is truncated/malformed.

    Examples
    --------
    >>> import struct
    >>> item = b"34\\x00\\x00"
    >>> raw = (b"SV10\\x04\\x03\\x02\\x01" + struct.pack("<II", 1, 77)
    ...        + struct.pack("<64si4siii", b"NumberOfImagesInMosaic", 1, b"US", 3, 1, 77)
    ...        + struct.pack("<4i", 3, 3, 77, 3) + item)
    >>> parse_csa_header(raw)
    {'NumberOfImagesInMosaic': [34]}
    """
    raw = bytes(raw)
    key = "(0029,1010) CSA header"
    if raw[:4] != CSA2_MAGIC:
        raise DicomError(
            f"expected a CSA2 header starting with b'SV10', got {raw[:4]!r} "
            "(CSA1 headers from syngo MR A-versions are not supported)",
            path=path,
            key=key,
        )
    if len(raw) < 16:
        raise DicomError(f"CSA header truncated: {len(raw)} bytes", path=path, key=key)
    (n_tags,) = struct.unpack_from("<I", raw, 8)
    if n_tags > _MAX_TAGS:
        raise DicomError(f"CSA header claims {n_tags} tags (max {_MAX_TAGS})", path=path, key=key)
    offset = 16
    tags = {}
    for _ in range(n_tags):
        if offset + _TAG_HEADER.size > len(raw):
            raise DicomError("CSA header truncated inside a tag header", path=path, key=key)
        name_b, vm, vr_b, _syngodt, n_items, _marker = _TAG_HEADER.unpack_from(raw, offset)
        offset += _TAG_HEADER.size
        if not 0 <= n_items <= _MAX_ITEMS:
            raise DicomError(f"CSA tag claims {n_items} items", path=path, key=key)
        name = _cstring(name_b)
        vr = _cstring(vr_b)
        n_values = vm if vm > 0 else n_items
        values = []
        for index in range(n_items):
            if offset + _ITEM_HEADER.size > len(raw):
                raise DicomError(f"CSA header truncated in tag {name!r}", path=path, key=key)
            item_len = _ITEM_HEADER.unpack_from(raw, offset)[1]
            offset += _ITEM_HEADER.size
            end = offset + item_len
            if item_len < 0 or end > len(raw):
                raise DicomError(
                    f"CSA item of tag {name!r} runs past the end ({item_len} bytes)",
                    path=path,
                    key=key,
                )
            if index < n_values and item_len > 0:
                text = _cstring(raw[offset:end]).strip()
                if text:
                    values.append(_convert(text, vr))
            offset += (item_len + 3) // 4 * 4
        tags[name] = values
    return tags


def _cstring(data):
    """Decode bytes up to the first NUL as latin-1 text."""
    return data.split(b"\x00", 1)[0].decode("latin-1")


def _convert(text, vr):
    """Convert an item's text to int/float according to its VR."""
    try:
        if vr in _INT_VRS:
            return int(text)
        if vr in _FLOAT_VRS:
            return float(text)
    except ValueError:
        return text
    return text
