"""One error hierarchy for tmstarget.

Every error carries where the problem is (``path``, ``key``, ``volume``) so the
CLI can print one line that says what is wrong and where.
"""


class TmsTargetError(Exception):
    """Root of all tmstarget errors.

    Parameters
    ----------
    message : str
        What is wrong, what was expected, what was received.
    path : str or os.PathLike, optional
        File or folder the problem is in.
    key : str, optional
        Protocol key, column or header field concerned.
    volume : int, optional
        Zero-based volume index concerned.
    """

    def __init__(self, message, *, path=None, key=None, volume=None):
        self.message = message
        self.path = None if path is None else str(path)
        self.key = key
        self.volume = volume
        super().__init__(self.__str__())

    def __str__(self):
        where = []
        if self.path:
            where.append(self.path)
        if self.key:
            where.append(f"[{self.key}]")
        if self.volume is not None:
            where.append(f"volume {self.volume}")
        prefix = " ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class InputError(TmsTargetError, ValueError):
    """An input file or option is missing, malformed or inconsistent."""


class ProtocolError(TmsTargetError, ValueError):
    """A protocol file is invalid (unknown key, wrong type, impossible value)."""


class OrientationError(TmsTargetError, ValueError):
    """Geometry is ambiguous or inconsistent (affines, qform/sform, poses)."""


class InvalidPoseError(OrientationError):
    """A pose matrix is not a rigid transform (mirror, shear, scaling, NaN)."""


class XformMismatchError(OrientationError):
    """A T1's qform and sform disagree and no choice between them was made."""


class DicomError(InputError):
    """A DICOM file or series cannot be converted faithfully."""


class NavigationFormatError(TmsTargetError, ValueError):
    """A navigation file cannot be written or read faithfully."""


class OutputError(TmsTargetError, OSError):
    """The output folder cannot be used (exists, not writable, inside inputs)."""


class NotSignificantError(TmsTargetError):
    """A reliable target was required but the data hold none (``qc.inference.significant`` is false).

    Attributes
    ----------
    plan : tmstarget.outputs.plan.Plan or None
        The plan computed anyway (its target marked), for inspection.
    """

    def __init__(self, message, *, plan=None, **where):
        super().__init__(message, **where)
        self.plan = plan
