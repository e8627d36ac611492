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


def decoded_frames(path) -> int:
    """Frames of a recording that decode, up to a torn end (what a player shows)."""
    import av

    n = 0
    with av.open(str(path)) as c:
        try:
            for _ in c.decode(video=0):
                n += 1
        except av.error.InvalidDataError:
            pass
    return n


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return shared()


@pytest.fixture(scope="session")
def tddfa_onnx(tmp_path_factory) -> Path:
    """The real 3DDFA-V2 x0.5 model exported once per session (fp32, dense, full mesh, verified)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from export.convert import export_checkpoint

    m = shared("models", "3ddfa_v2_mb05")
    out = tmp_path_factory.mktemp("onnx") / "3ddfa_v2_mb05.onnx"
    export_checkpoint("3ddfa-v2", m / "mb05_120x120.pth", out, bfm_dir=shared("bfm", "3dmm_data"),
                      param_stats=m / "param_mean_std_62d_120x120.pkl")
    return out


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(size)``: a folder on a tmpfs of ``size`` (e.g. "2m") that fills up for real
    (ENOSPC). Needs root (mount); skips with the reason otherwise. Unmounted after the test."""
    import subprocess

    mounts = []

    def make(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("a full disk is simulated with a tmpfs mount, which needs root")
        d = tmp_path / f"disk{len(mounts)}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounts.append(d)
        return d

    yield make
    for d in mounts:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)
