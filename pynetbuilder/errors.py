"""Exceptions that carry a message a user can act on."""


class NetError(ValueError):
    """The network description is inconsistent (unknown blob, duplicate name ...)."""


class ShapeError(NetError):
    """Shape inference failed: a layer cannot take its input, or a shape collapsed."""


class UsageError(ValueError):
    """A knob, flag or argument has a value outside what it accepts."""


class SettingError(NetError, TypeError, AttributeError):
    """A layer setting Caffe's schema refuses: an unknown field, a value of the wrong
    type or out of the field's range.  Also a ``TypeError``/``AttributeError``, as
    protobuf's own errors for the same mistakes are."""
