"""Shared test helpers: the ../shared data folder (read in place, never copied)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared")).resolve()

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def shared(*parts: str) -> Path:
    """Path inside ../shared; skips the calling test when it is absent."""
    p = SHARED_DIR.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not available: {p} (clone the project beside ../shared)")
    return p


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return shared()
