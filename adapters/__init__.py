"""HTTP adapters and the ``jobstatus`` command. Import name ``jobstatus_adapters``."""

from __future__ import annotations

from .service import make_service

__all__ = ["make_service"]
