"""The time window of ``jobs/status``: which "last written" times are recent."""

from __future__ import annotations


def cutoff(now: float, since_seconds: float) -> float:
    """The earliest "last written" time inside the window (inclusive)."""
    return now - since_seconds


def in_window(last_written: float, cutoff: float) -> bool:
    return last_written >= cutoff
