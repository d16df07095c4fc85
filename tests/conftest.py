"""Shared fixtures. Real media and weights live in ../shared (never copied into the repo);
`shared` skips a test cleanly when that folder is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("VIDPIPE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ../shared folder with real media and weights; skips when absent."""
    if not (SHARED / "media").is_dir():
        pytest.skip(f"real media not available ({SHARED} absent)")
    return SHARED
