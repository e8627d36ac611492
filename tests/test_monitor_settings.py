"""MonitorSettings: validation names the flag, CLI flags round-trip, bad flags exit 2 with one line."""
from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.cli import add_monitor_args
from app.cli import monitor_settings_from_args as settings_from_args
from app.monitor import MonitorSettings
from app.monitor.settings import flag_of

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_valid_and_match_the_brief():
    s = MonitorSettings().validate()
    assert (s.alert_yaw, s.alert_pitch, s.alert_seconds, s.critical_seconds) == (30.0, 20.0, 2.0, 3.0)
    assert (s.vats_seconds, s.vats_window, s.clear_seconds) == (10.0, 30.0, 1.0)
    assert (s.eyes_closed_seconds, s.eyes_closed_critical_seconds, s.blink_max_seconds) == (1.0, 3.0, 0.5)
    assert (s.perclos_window, s.perclos_threshold, s.eye_closed_ratio) == (60.0, 0.15, 0.2)
    assert (s.yawn_seconds, s.yawn_count, s.yawn_window) == (1.5, 3, 300.0)
    assert (s.nod_pitch, s.nod_seconds, s.nod_count, s.nod_window) == (15.0, 1.5, 2, 60.0)
    assert (s.no_driver_seconds, s.calib_seconds, s.pitch_down_sign) == (3.0, 3.0, -1.0)


@pytest.mark.parametrize("change, flag", [
    ({"alert_yaw": -5}, "--alert-yaw"),
    ({"alert_yaw": 95}, "--alert-yaw"),
    ({"alert_pitch": 90}, "--alert-pitch"),
    ({"alert_seconds": 0}, "--alert-seconds"),
    ({"critical_seconds": 1.0}, "--critical-seconds"),           # shorter than --alert-seconds
    ({"vats_window": 8.0}, "--vats-window"),                     # window shorter than the dwell
    ({"perclos_threshold": 15}, "--perclos-threshold"),          # a percentage, not a fraction
    ({"perclos_window": 0.5}, "--perclos-window"),
    ({"eye_closed_ratio": 1.2}, "--eye-closed-ratio"),
    ({"eyes_closed_seconds": 0.3}, "--eyes-closed-seconds"),     # shorter than a blink
    ({"eyes_closed_critical_seconds": 0.8}, "--eyes-closed-critical-seconds"),
    ({"yawn_count": 0}, "--yawn-count"),
    ({"yawn_count": 2.5}, "--yawn-count"),
    ({"yawn_window": 1.0}, "--yawn-window"),
    ({"nod_window": 1.0}, "--nod-window"),
    ({"cooldown_seconds": -1}, "--cooldown-seconds"),
    ({"pitch_down_sign": 0}, "--pitch-down-sign"),
    ({"max_gap": float("nan")}, "--max-gap"),
    ({"calib_seconds": 0.2}, "--calib-seconds"),
])
def test_validation_names_the_flag(change, flag):
    s = dataclasses.replace(MonitorSettings(), **change)
    with pytest.raises(ValueError) as ei:
        s.validate()
    assert str(ei.value).startswith(flag + " ")


def test_every_field_is_a_flag_and_round_trips():
    ap = argparse.ArgumentParser()
    add_monitor_args(ap)
    s = settings_from_args(ap.parse_args([]), ap)
    assert s == MonitorSettings()
    args = ap.parse_args(["--alert-yaw", "25", "--perclos-threshold", "0.2", "--yawn-count", "4",
                          "--pitch-down-sign", "1", "--recalibrate-after", "600"])
    s = settings_from_args(args, ap)
    assert (s.alert_yaw, s.perclos_threshold, s.yawn_count, s.pitch_down_sign, s.recalibrate_after) == (
        25.0, 0.2, 4, 1.0, 600.0)
    flags = {a.option_strings[0] for a in ap._actions if a.option_strings}
    for f in dataclasses.fields(MonitorSettings):
        assert flag_of(f.name) in flags
        assert "source" not in f.name


def test_every_field_has_a_source_comment():
    # each field in settings.py is preceded by a comment line (its meaning and source)
    src = (ROOT / "app" / "monitor" / "settings.py").read_text().splitlines()
    for f in dataclasses.fields(MonitorSettings):
        i = next(k for k, line in enumerate(src) if line.strip().startswith(f"{f.name}:"))
        j = i - 1
        while src[j].strip().startswith(("calib", "alert", "vats", "perclos", "yawn", "nod")) and ":" in src[j]:
            j -= 1      # a field grouped under the previous comment
        assert src[j].strip().startswith("#"), f.name


def test_bad_flag_value_exits_2_with_one_line():
    code = textwrap.dedent("""
        import argparse
        from app.cli import add_monitor_args, monitor_settings_from_args as settings_from_args
        ap = argparse.ArgumentParser(prog="demo")
        add_monitor_args(ap)
        settings_from_args(ap.parse_args(), ap)
        print("ran")
    """)
    r = subprocess.run([sys.executable, "-c", code, "--alert-yaw", "120"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "ran" not in r.stdout
    err = [line for line in r.stderr.splitlines() if line.startswith("demo: error")]
    assert err == ["demo: error: --alert-yaw 120.0: must be < 90 degrees (offset from the neutral pose)"]
    # without a parser: one "error: ..." line, exit 2
    code2 = code.replace("settings_from_args(ap.parse_args(), ap)", "settings_from_args(ap.parse_args())")
    r = subprocess.run([sys.executable, "-c", code2, "--vats-window", "5"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: --vats-window 5.0: must be longer than --vats-seconds (10.0)"]
