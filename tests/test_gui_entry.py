"""GUI entry points as a user runs them (subprocess): main.py without a display, and
``python -m app.gui`` with --record and --screenshot-after on a real clip (offscreen platform)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, shared

pytest.importorskip("PyQt6")


def _env(tmp_path, **extra):
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")   # QSettings of this run stay in tmp
    env["HOME"] = str(tmp_path)
    env.update(extra)
    return env


def test_main_without_display_says_use_headless(tmp_path):
    env = _env(tmp_path)
    env.pop("QT_QPA_PLATFORM", None)
    p = subprocess.run([sys.executable, "main.py", "--video", str(shared("media", "clips", "expressions_d18.mp4"))],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "--headless" in lines[0] and "display" in lines[0]


@pytest.mark.slow
def test_module_entry_records_and_saves_screenshot(tmp_path):
    import av
    import cv2

    out_png = tmp_path / "shot.png"
    out_mp4 = tmp_path / "rec.mp4"
    p = subprocess.run([sys.executable, "-m", "app.gui", "--video", str(shared("media", "clips", "expressions_d18.mp4")),
                        "--record", str(out_mp4), "--screenshot-after", "4", str(out_png),
                        "--events", str(tmp_path / "ignored.jsonl"), "--quiet"],
                       cwd=ROOT, env=_env(tmp_path, QT_QPA_PLATFORM="offscreen"),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    # the flags the window does not use: one warning line, naming them and where events go
    warn = [l for l in p.stderr.splitlines() if "headless-only" in l]
    assert len(warn) == 1 and warn[0].startswith("WARNING"), p.stderr[-2000:]
    assert "--events" in warn[0] and "--quiet" in warn[0] and "beside each recording" in warn[0]
    assert not (tmp_path / "ignored.jsonl").exists()
    assert f"screenshot saved: {out_png}" in p.stdout
    img = cv2.imread(str(out_png))
    assert img is not None and img.shape[0] > 400 and img.shape[1] > 800
    assert img.std() > 20                      # a real window, not a blank grab
    # closing the window (after the screenshot) finalized the recording started by --record
    with av.open(str(out_mp4)) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n >= 25                             # ~4 s of a 25-30 fps clip, paced in real time
    assert (tmp_path / "rec.events.jsonl").exists()
    assert {"rec.mp4", "rec.events.jsonl", "shot.png"} <= {x.name for x in tmp_path.iterdir()}


def test_bad_screenshot_seconds_is_a_usage_error(tmp_path):
    p = subprocess.run([sys.executable, "-m", "app.gui", "--screenshot-after", "soon", "x.png"],
                       cwd=ROOT, env=_env(tmp_path, QT_QPA_PLATFORM="offscreen"),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "--screenshot-after" in p.stderr


@pytest.mark.slow
def test_main_py_opens_the_window_and_ctrl_c_finalizes_the_recording(tmp_path):
    import signal
    import time

    import av

    out = tmp_path / "ctrlc.mp4"
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        p = subprocess.Popen([sys.executable, "main.py", "--video",     # main.py routes to the GUI
                              str(shared("media", "clips", "expressions_d18.mp4")), "--record", str(out)],
                             cwd=ROOT, env=_env(tmp_path, QT_QPA_PLATFORM="offscreen"), stdout=f, stderr=f)
        try:
            t0 = time.monotonic()
            while "recording to" not in log.read_text() and time.monotonic() - t0 < 120:
                time.sleep(0.2)
            time.sleep(1.5)
            p.send_signal(signal.SIGINT)
            rc = p.wait(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
    assert rc == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert "recorded" in text and "INFO app.gui.window: model: " in text
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) >= 10
    assert out.with_name("ctrlc.events.jsonl").exists()      # beside it, with the summary line
