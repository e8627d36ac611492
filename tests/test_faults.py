"""Faults a recorder of evidence must survive: kill -9, a full disk, a camera that goes away.

The outputs are read back as a user would: frames that decode from the recording, lines that parse
in the dump and the event log."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.io.files import read_jsonl
from tests.conftest import ROOT, decoded_frames, shared
from tests.test_capture import FlakyCamera
from tests.test_headless import err_lines, run_main

CLIP = ("media", "talking_head_720p.mp4")   # 25 fps


def strict_lines(path) -> tuple[int, bool]:
    """(complete lines, every one parses): all but a torn last line must be JSON."""
    import json

    data = Path(path).read_bytes()
    lines = data.split(b"\n")
    lines.pop()                     # b"" after the last newline, or a torn line
    for ln in lines:
        json.loads(ln)
    return len(lines), True


@pytest.mark.slow
def test_kill_9_mid_run_keeps_the_dump_the_events_and_all_but_2_s_of_video(tmp_path):
    rec, ev, dump = tmp_path / "r.mp4", tmp_path / "e.jsonl", tmp_path / "d.jsonl"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # thresholds low enough that alerts start and end during the run
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--video", str(shared(*CLIP)), "--loop",
                             "--headless", "--record", str(rec), "--events", str(ev), "--dump", str(dump),
                             "--calib-seconds", "1", "--alert-yaw", "2", "--alert-pitch", "2",
                             "--alert-seconds", "0.5", "--critical-seconds", "1", "--clear-seconds", "0.2",
                             "--cooldown-seconds", "0.5"],
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
    deadline = time.time() + 120
    for line in proc.stderr:        # frames are flowing
        if line.startswith("frame ") or time.time() > deadline:
            break
    t_end = time.time() + 120     # at least 5 s of video (125 frames) in, then the kill
    while time.time() < t_end and proc.poll() is None and (
            not dump.exists() or dump.read_bytes().count(b"\n") < 125):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "e.jsonl", "r.mp4"]
    n_dump, _ = strict_lines(dump)
    rows = read_jsonl(dump)
    assert len(rows) == n_dump and rows[-1]["frame"] == n_dump - 1 and n_dump >= 125
    n_ev, _ = strict_lines(ev)
    events = read_jsonl(ev)
    assert n_ev == len(events) >= 1 and any(e["event"] == "start" for e in events)
    assert all(e["frame"] <= rows[-1]["frame"] + 1 for e in events)
    played = decoded_frames(rec)
    # every fragment but the one being written: at most 2 s (50 frames at 25 fps) + the encoder's
    # lookahead (< 20 frames) + the frames in flight between the encoder and the dump line
    assert n_dump - 50 - 25 <= played <= n_dump + 3, (played, n_dump)


@pytest.mark.slow
def test_full_disk_with_a_file_source_stops_with_one_line_and_keeps_the_recording(tmp_path, small_disk):
    disk = small_disk("3m")
    rec, dump = disk / "r.mp4", tmp_path / "d.jsonl"
    p = run_main("--video", shared(*CLIP), "--loop", "--headless", "--record", rec, "--dump", dump,
                 "--quiet", "--no-monitor", timeout=300)
    assert p.returncode == 1, p.stderr
    errs = [ln for ln in err_lines(p) if ln.startswith("error")]
    assert len(errs) == 1, p.stderr
    assert errs[0].startswith("error: disk full: cannot write the recording") and str(rec) in errs[0]
    assert f"no space left in {disk}" in errs[0]
    written = int(re.search(r"before frame (\d+)", errs[0]).group(1))
    played = decoded_frames(rec)
    assert written - 50 - 20 <= played <= written, (played, written)
    assert played >= 25                              # at least one complete 2 s fragment fitted
    rows = read_jsonl(dump)
    assert written <= len(rows) <= written + 5       # the run stopped at the failure
    assert f"wrote recording {rec} (up to the failure)" in p.stderr


def _headless(argv, monkeypatch, capsys):
    from app import cli, headless

    args = cli.build_parser().parse_args(argv)
    rc = headless.run(cli.settings_from_args(args), cli.run_options_from_args(args))
    return rc, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def test_camera_lost_and_back_headless_logs_camera_events(tmp_path, monkeypatch, capsys):
    dev = FlakyCamera(first=20, down=3, size=(160, 120), period=0.005).install(monkeypatch)
    ev = tmp_path / "e.jsonl"
    rc, err = _headless(["--camera", "0", "--headless", "--events", str(ev), "--max-frames", "60", "--quiet"],
                        monkeypatch, capsys)
    assert rc == 0, err
    assert dev.failed_opens == 3
    assert "warning: camera 0: stopped delivering frames (unplugged or in use?); retrying" in err
    assert any(ln.startswith("camera 0: delivering frames again after") for ln in err)
    events = read_jsonl(ev)
    cam = [e for e in events if e.get("kind") == "camera"]
    assert [e["event"] for e in cam] == ["camera_lost", "camera_back"]
    assert cam[1]["lost_s"] > 0 and cam[1]["t"] >= cam[0]["t"] and cam[0]["source"] == "camera 0"
    assert 0 <= cam[0]["frame"] < 60
    summary = events[-1]
    assert summary["event"] == "summary" and summary["camera_lost"] == 1
    assert summary["camera_lost_s"] == pytest.approx(cam[1]["lost_s"], abs=0.05)
    assert summary["frames"] == 60


def test_full_disk_with_a_live_camera_monitoring_and_alerts_go_on(tmp_path, small_disk, monkeypatch, capsys):
    """The recording's disk fills; the camera run goes on to its end, the alert (no driver: the
    frames are noise) is logged on the other disk, and the recording keeps what fitted."""
    disk = small_disk("512k")
    FlakyCamera(first=10 ** 9, down=0, size=(320, 240), noise=True, period=0.01).install(monkeypatch)
    rec, ev = disk / "r.mp4", tmp_path / "e.jsonl"
    rc, err = _headless(["--camera", "0", "--headless", "--record", str(rec), "--events", str(ev),
                         "--max-frames", "450", "--quiet"], monkeypatch, capsys)
    assert rc == 1, err                              # an output failed
    full = [ln for ln in err if ln.startswith("error: disk full")]
    assert len(full) == 1 and str(rec) in full[0] and full[0].endswith("monitoring goes on without it"), err
    assert any(ln.startswith("done: 450 frames") for ln in err), err
    events = read_jsonl(ev)
    assert any(e["event"] == "start" and e["kind"] == "no_driver" for e in events)
    assert events[-1]["event"] == "summary" and events[-1]["frames"] == 450
    assert rec.exists()
