"""Argument checks shared by legos: one clear UsageError naming what was wrong."""

from __future__ import annotations

from pynetbuilder.errors import UsageError


def check_positive(what: str, value: object) -> None:
    """``value`` must be an int >= 1 (not a bool)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"{what} must be a positive integer, got {value!r}")


def check_stride(name: str, stride: object) -> None:
    """Residual blocks downsample by 2 or not at all."""
    if stride not in (1, 2):
        raise UsageError(f"{name}: stride must be 1 or 2, got {stride!r}")


def check_quarter(name: str, kind: str, num_output: int) -> None:
    """A bottleneck's inner width is a quarter of its output width."""
    if num_output % 4:
        raise UsageError(f"{name}: a {kind} block needs num_output divisible by 4 "
                         f"(its inner width is num_output/4), got {num_output}")
