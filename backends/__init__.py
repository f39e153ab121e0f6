"""Job stores, chosen by URL scheme. Import name ``jobstatus_backends``."""

from __future__ import annotations

from .registry import (
    default_registry,
    recording_store_from_url,
    registry,
    serving_store_from_url,
    store_from_url,
)

__all__ = [
    "default_registry",
    "recording_store_from_url",
    "registry",
    "serving_store_from_url",
    "store_from_url",
]
