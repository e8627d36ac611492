"""python -m app.eval.bench: the pipeline benchmark runs the real path and reports every stage."""
from __future__ import annotations

import json

import pytest

from app.eval import bench
from tests.conftest import shared


@pytest.mark.slow
def test_bench_reports_stages_and_fps(tmp_path, tddfa_onnx, capsys):
    out = tmp_path / "b.json"
    rc = bench.main(["--video", str(shared("media", "talking_head_720p.mp4")), "--model", str(tddfa_onnx),
                     "--device", "cpu", "--frames", "12", "--warmup", "3", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["frames"] == 12 and res["frames_with_face"] >= 11
    assert res["model"] == "3ddfa_v2_mb05" and res["provider"] == "CPU"
    assert 0 < res["fps"] < 1000 and res["cpu_ms_per_frame"] > 0
    for k in ("decode", "detect", "crop", "3dmm", "post", "mesh/eyes", "smoothing", "overlay", "encode", "total"):
        s = res["stage_ms"][k]
        assert 0 <= s["median"] <= s["p95"], k
    # the 3DMM stage really ran, and the total covers the stages on the main thread
    assert res["stage_ms"]["3dmm"]["median"] > 0.1
    assert res["stage_ms"]["total"]["median"] >= res["stage_ms"]["3dmm"]["median"]
    table = capsys.readouterr().out
    assert "3dmm" in table and "end-to-end" in table and "fps" in table
    assert list(tmp_path.iterdir()) == [out]      # the benchmark's recording is not left behind


def test_bench_bad_input_exit_2(tmp_path, capsys):
    assert bench.main(["--video", str(tmp_path / "none.mp4"), "--frames", "2"]) == 2
    assert "none.mp4" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_realtime_reports_latency_of_a_paced_clip(tmp_path, capsys):
    """--realtime paces the clip at its own 25 fps: the loop can only run as fast as the frames come,
    and every measured frame has a capture -> outputs latency, well under one second."""
    out = tmp_path / "r.json"
    rc = bench.main(["--video", str(shared("media", "talking_head_720p.mp4")), "--device", "cpu",
                     "--frames", "20", "--warmup", "3", "--no-record", "--realtime", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["realtime"] is True and res["frames"] == 20
    assert 15.0 < res["fps"] <= 26.0                      # paced at 25 fps, not faster
    lat = res["latency_ms"]
    assert 0 < lat["median"] <= lat["p95"] <= lat["p99"] <= lat["max"] < 1000
    assert res["stale_dropped"] >= 0
    assert "latency capture -> outputs" in capsys.readouterr().out


@pytest.mark.slow
def test_gui_bench_reports_the_windows_own_cost(tmp_path, capsys):
    """python -m app.eval.gui_bench: headless and the real window on the same clip, with the UI
    thread's CPU per processed frame (median over the rounds) and the plots' update time."""
    from app.eval import gui_bench

    out = tmp_path / "g.json"
    rc = gui_bench.main(["--video", str(shared("media", "talking_head_720p.mp4")), "--frames", "30",
                         "--rounds", "1", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    h, g = res["headless"], res["gui"]
    assert h["frames"] == 30 and g["frames"] >= 30
    assert 0 < h["fps"] < 1000 and 0 < g["fps"] < 1000
    assert h["cpu_ms_per_frame"] > 0 and g["cpu_ms_per_frame"] > 0
    assert g["frames_shown"] > 0 and g["plot_redraw_hz"] > 0
    assert g["ui_ms_per_frame"] > 0 and g["ui_ms_per_frame_runs"] == [g["ui_ms_per_frame"]]
    assert 0 < g["plot_ms_median"] <= g["plot_ms_p95"]
    # the plots are painted where the window paints them, once per update (no extra repaint)
    assert 0 < g["plot_paints_per_update"] <= 1.5
    assert not g["errors"] and res["gui_realtime"]["frames"] >= 30
    printed = capsys.readouterr().out
    assert "ms per processed frame" in printed and "GUI / headless" in printed


def test_gui_bench_bad_input_exit_2(tmp_path, capsys):
    from app.eval import gui_bench

    assert gui_bench.main(["--video", str(tmp_path / "none.mp4")]) == 2
    assert "none.mp4" in capsys.readouterr().err
