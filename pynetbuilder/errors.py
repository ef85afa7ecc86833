"""Exceptions that carry a message a user can act on."""


class NetError(ValueError):
    """The network description is inconsistent (unknown blob, duplicate name ...)."""


class ShapeError(NetError):
    """Shape inference failed: a layer cannot take its input, or a shape collapsed."""


class UsageError(ValueError):
    """A knob, flag or argument has a value outside what it accepts."""
