"""Event log (JSON lines under the final name, fsync policy, full disk), alert sound (file, playback
fallback, rate limit)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from app.io.sound import AlertSound
from app.monitor import DriverMonitor, EventLog, read_events
from app.core.types import FaceObservation
from app.io.files import OutputError

ROOT = Path(__file__).resolve().parents[1]
WAV = ROOT / "assets" / "alert.wav"


# ----------------------------------------------------------------------------- event log
def test_event_log_lines_are_in_the_file_at_once_and_valid_jsonl(tmp_path):
    p = tmp_path / "run.events.jsonl"
    log = EventLog(p)
    assert not p.exists()                        # created by the first line
    log.write({"event": "start", "kind": "eyes_closed", "t": 1.0, "x": float("nan"),
               "arr": np.array([1.5, np.inf]), "n": np.int64(3)})
    first = json.loads(p.read_text())            # complete in the file while the log is open
    assert first["x"] is None and first["arr"] == [1.5, None] and first["n"] == 3
    log.write({"event": "end", "kind": "eyes_closed", "t": 2.0})
    assert len(p.read_text().splitlines()) == 2
    log.close()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["run.events.jsonl"]
    assert read_events(p)[1]["event"] == "end"
    log.close()     # idempotent
    with pytest.raises(ValueError):
        log.write({"event": "late"})


def test_event_log_fsyncs_alert_starts_at_once_and_other_lines_within_a_second(tmp_path, monkeypatch):
    import app.io.files as files

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    clock = [100.0]
    monkeypatch.setattr(files.time, "monotonic", lambda: clock[0])
    log = EventLog(tmp_path / "e.jsonl")
    log.write({"event": "unknown_start"})
    assert synced == []                          # flushed to the file, not yet to the disk
    log.write({"event": "start", "kind": "drowsy"})
    assert len(synced) == 1                      # an alert start: at once
    clock[0] += 0.5
    log.write({"event": "end", "kind": "drowsy"})
    log.tick()
    assert len(synced) == 1
    clock[0] += 0.6                              # 1.1 s after the last fsync
    log.tick()
    assert len(synced) == 2
    log.tick()
    assert len(synced) == 2                      # nothing new to sync
    log.write({"event": "camera_lost"})
    assert len(synced) == 3
    log.close()


def test_event_log_torn_last_line_is_skipped_by_the_reader(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text('{"event":"start","kind":"drowsy"}\n{"event":"end","ki')   # killed mid-write
    assert read_events(p) == [{"event": "start", "kind": "drowsy"}]


def test_event_log_leaves_an_existing_file_alone_until_its_first_line(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text('{"old": true}\n')
    log = EventLog(p)
    assert read_events(p) == [{"old": True}]
    log.discard()                                # nothing was written: the old file stays
    assert read_events(p) == [{"old": True}]
    log2 = EventLog(p)
    log2.write({"event": "x"})
    assert read_events(p) == [{"event": "x"}]
    log2.discard()                               # a run that failed before it started
    assert not p.exists()


def test_event_log_bad_paths(tmp_path):
    with pytest.raises(OutputError, match="folder .* does not exist"):
        EventLog(tmp_path / "missing" / "e.jsonl")
    with pytest.raises(OutputError, match="is a folder"):
        EventLog(tmp_path)
    with pytest.raises(OutputError, match="cannot write the event log"):
        EventLog(tmp_path / "bad\0name.jsonl")
    assert list(tmp_path.iterdir()) == []
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user that can write to read-only folders (root)")
        with pytest.raises(OutputError, match="cannot write the event log"):
            EventLog(ro / "e.jsonl")
    finally:
        ro.chmod(0o700)


def test_event_log_on_a_full_disk_keeps_its_complete_lines(small_disk):
    disk = small_disk("64k")
    p = disk / "e.jsonl"
    log = EventLog(p)
    ev = {"event": "start", "kind": "drowsy", "pad": "x" * 1000}
    with pytest.raises(OutputError) as ei:
        for i in range(1000):
            log.write(dict(ev, i=i))
    assert ei.value.disk_full and str(ei.value).startswith("disk full") and str(p) in str(ei.value)
    n = log.lines
    assert n >= 10
    log.close()
    rows = read_events(p)                        # no torn line: cut back to the last complete one
    assert [r["i"] for r in rows] == list(range(n)) and p.read_bytes().endswith(b"\n")


def test_monitor_events_end_to_end_into_the_log(tmp_path):
    mon = DriverMonitor()
    p = tmp_path / "drive.events.jsonl"
    with EventLog(p) as log:
        for i in range(30 * 12):
            t = i / 30
            yaw = 45.0 if 5 <= t < 9 else 0.0
            f = FaceObservation(box=np.array([0, 0, 100, 100.]), landmarks=np.zeros((68, 3)),
                                model="synthetic", yaw=yaw, pitch=0.0, eye_open=(0.3, 0.3), mouth_open=0.1)
            mon.update(t, i, f)
            log.write_all(mon.last_events)
        log.write(mon.summary())
    ev = read_events(p)
    assert [(e["event"], e.get("kind"), e.get("level")) for e in ev] == [
        ("start", "looking_around", "warning"), ("start", "looking_around", "critical"),
        ("end", "looking_around", "critical"), ("summary", None, None)]
    assert ev[-1]["time_distracted_s"] == pytest.approx(4.0, abs=1e-6)
    assert all(isinstance(e["time"], str) and e["frame"] >= 0 for e in ev)


# ----------------------------------------------------------------------------- sound
def test_alert_wav_format_and_tones():
    with wave.open(str(WAV), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 22050)
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(float)
    assert len(x) == pytest.approx(0.4 * 22050, abs=2)
    assert 0.3 * 32767 < np.abs(x).max() <= 0.55 * 32767
    half = len(x) // 2
    for seg, f in ((x[:half], 880.0), (x[half:], 660.0)):
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
        peak = np.fft.rfftfreq(len(seg), 1 / 22050)[np.argmax(spec)]
        assert abs(peak - f) < 10
    assert abs(x[0]) < 50 and abs(x[-1]) < 50        # faded: no click


def test_make_alert_sound_reproduces_the_committed_file(tmp_path):
    out = tmp_path / "a.wav"
    r = subprocess.run([sys.executable, str(ROOT / "assets" / "make_alert_sound.py"), str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == WAV.read_bytes()
    r = subprocess.run([sys.executable, str(ROOT / "assets" / "make_alert_sound.py"),
                        str(tmp_path / "no" / "a.wav")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr


def test_alert_sound_without_audio_output_logs_once_and_never_raises(caplog):
    snd = AlertSound(str(WAV), min_interval=0.0, backend="none")
    assert snd.duration == pytest.approx(0.4, abs=1e-3)
    with caplog.at_level(logging.WARNING, logger="app.io.sound"):
        assert snd.play() is False
        assert snd.play() is False
    msgs = [r.getMessage() for r in caplog.records if "no audio output available" in r.getMessage()]
    assert len(msgs) == 1


def test_alert_sound_auto_backend_reports_what_runs():
    snd = AlertSound(str(WAV))
    assert snd.backend in ("sounddevice", "aplay", "paplay", "none")
    assert snd.reason
    snd.play()     # must not raise, whatever this machine has


def test_alert_sound_rate_limit_with_a_fake_player(tmp_path, monkeypatch):
    # a stand-in "aplay" on PATH that records its calls: play() starts it without waiting
    log = tmp_path / "calls.txt"
    fake = tmp_path / "aplay"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\nsleep 0.2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    snd = AlertSound(str(WAV), min_interval=30.0, backend="aplay")
    assert snd.backend == "aplay"
    import time
    t = time.monotonic()
    assert snd.play() is True
    assert time.monotonic() - t < 0.15            # non-blocking
    assert snd.play() is False and snd.skipped == 1   # rate-limited
    snd._proc.wait(timeout=10)
    assert log.read_text().split() == ["-q", str(WAV)]


def test_alert_sound_missing_file():
    with pytest.raises(FileNotFoundError, match="make_alert_sound.py"):
        AlertSound("/nonexistent/alert.wav")
