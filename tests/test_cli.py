"""The command line is generated from the settings dataclasses: every field is a flag, parsed
flags come back as the same dataclasses, and only app/cli.py parses arguments or exits."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from app import cli
from app.monitor.settings import MonitorSettings
from app.settings import Layers, RunOptions, Settings, flag_of

ROOT = Path(__file__).resolve().parents[1]


def _options(parser):
    return {o for a in parser._actions for o in a.option_strings}


def test_every_field_is_a_flag():
    flags = _options(cli.build_parser())
    for cls in (Settings, RunOptions):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("flag", flag_of(f.name)) in flags, f.name
            assert f.metadata["help"], f.name
    for f in dataclasses.fields(MonitorSettings):
        assert flag_of(f.name) in flags, f.name
    # the fields that had no flag before
    assert {"--iou-match", "--smooth-d-cutoff"} <= flags


def test_defaults_round_trip():
    settings, options = cli.parse([])
    assert settings == Settings()
    assert options == RunOptions()


def test_flags_set_their_fields():
    settings, options = cli.parse([
        "--video", "clip.mp4", "--loop", "--headless", "--record", "r.mp4", "--dump", "d.jsonl",
        "--events", "e.jsonl", "--sound", "--max-frames", "7", "--quiet",
        "--model", "mesh", "--device", "cpu", "--threads", "2", "--detect-every", "3", "--mesh-threads", "1",
        "--min-detection-confidence", "0.6", "--max-faces", "2", "--iou-match", "0.45", "--no-eyes",
        "--no-smoothing", "--smooth-min-cutoff", "2.5", "--smooth-beta", "0.1", "--smooth-d-cutoff", "3",
        "--layers=-mesh,points", "--alert-yaw", "25"])
    assert options == RunOptions(video="clip.mp4", loop=True, headless=True, record="r.mp4", dump="d.jsonl",
                                 events="e.jsonl", sound=True, max_frames=7, quiet=True)
    assert options.source == "clip.mp4"
    assert settings == Settings(
        model="mesh", device="cpu", threads=2, detect_every=3, mesh_threads=1, min_detection_confidence=0.6,
        max_faces=2, iou_match=0.45, eyes_from_mesh=False, smoothing=False, smooth_min_cutoff=2.5,
        smooth_beta=0.1, smooth_d_cutoff=3.0, layers=Layers(mesh=False, mesh_style="points"),
        monitor=dataclasses.replace(MonitorSettings(), alert_yaw=25.0))
    assert cli.parse(["--no-monitor", "--camera", "1"]) == (Settings(monitor=None), RunOptions(camera=1))
    assert RunOptions(camera=1).source == 1


@pytest.mark.parametrize("argv, message", [
    (["--iou-match", "0"], "error: --iou-match must be in (0, 1], got 0.0"),
    (["--smooth-d-cutoff", "0"], "error: --smooth-min-cutoff and --smooth-d-cutoff must be > 0 and --smooth-beta >= 0"),
    (["--layers", "meshes"], "error: --layers: unknown overlay layer 'meshes'"),
    (["--alert-yaw", "95"], "error: --alert-yaw 95.0: must be < 90 degrees"),
    (["--mesh-threads", "-1"], "error: --mesh-threads must be >= 0 (0 = auto), got -1"),
    (["--landmark-crop-scale", "3"], "error: --landmark-crop-scale must be within 0.5-2, got 3.0"),
])
def test_bad_value_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as ei:
        cli.parse(argv)
    assert ei.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)


def test_headless_only_flags_come_from_the_run_options():
    assert cli.headless_only_flags(RunOptions(video="x.mp4", record="r.mp4", sound=True)) == []
    got = cli.headless_only_flags(cli.parse(["--dump", "d.jsonl", "--events", "e.jsonl", "--max-frames", "3",
                                             "--quiet"])[1])
    assert got == ["--dump", "--events", "--max-frames", "--quiet"]


def test_explicit_flags_name_fields():
    got = cli.explicit_flags(["--no-eyes", "--iou-m", "0.4", "--no-monitor", "--eye-shut-level", "0.1", "x"])
    assert got == {"eyes_from_mesh", "iou_match", "monitor", "eye_shut_level"}


def test_only_the_cli_parses_arguments_or_exits():
    for path in ("app/settings.py", "app/monitor/settings.py"):
        text = (ROOT / path).read_text()
        for word in ("argparse", "sys.exit", "SystemExit", "parse_args"):
            assert word not in text, (path, word)


def test_mesh_threads_auto_and_given():
    auto = Settings()
    assert auto.mesh_threads == 0
    assert auto.mesh_threads_for(beside_3dmm=True, cpus=2) == 1     # leaves the other core to the 3DMM
    assert auto.mesh_threads_for(beside_3dmm=False, cpus=2) == 2    # the only model
    assert auto.mesh_threads_for(beside_3dmm=True, cpus=8) == 2
    assert Settings(mesh_threads=3).mesh_threads_for(beside_3dmm=True, cpus=2) == 3


def test_3dmm_accuracy_options():
    """--flip-average (off by default) and --landmark-crop-scale (0.9 by default; issue 22)."""
    assert Settings().flip_average is False and Settings().landmark_crop_scale == 0.9
    settings, _ = cli.parse(["--flip-average", "--landmark-crop-scale", "1"])
    assert settings == Settings(flip_average=True, landmark_crop_scale=1.0)
