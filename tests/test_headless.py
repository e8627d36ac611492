"""main.py --headless end to end (subprocess) and its bad-input behaviour."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import assets
from app.pipeline import default_model_path
from tests.conftest import ROOT, shared

CLIP = ("media", "talking_head_720p.mp4")


def run_main(*args, env_drop=(), timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=str(ROOT))


def err_lines(p):
    """stderr without mediapipe / absl / TFLite chatter."""
    noise = ("W0000", "I0000", "INFO: Created TensorFlow", "WARNING: All log messages")
    return [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith(noise)]


def read_dump(path):
    return [json.loads(ln) for ln in Path(path).read_text().splitlines()]


@pytest.mark.slow
def test_default_backend_dump(tmp_path):
    """No --model: the face mesh (or the first models/*.onnx) runs the clip; one JSON line per frame."""
    out = tmp_path / "d.jsonl"
    p = run_main("--video", shared(*CLIP), "--headless", "--dump", out, "--quiet")
    assert p.returncode == 0, p.stderr
    rows = read_dump(out)
    assert [r["frame"] for r in rows] == list(range(55))
    assert rows[1]["t"] == pytest.approx(0.04, abs=1e-3)
    with_face = [r for r in rows if r["faces"]]
    assert len(with_face) >= 0.95 * 55
    f = with_face[0]["faces"][0]
    assert len(f["landmarks"]) == 68 and all(len(pt) == 3 for pt in f["landmarks"])
    x0, y0, x1, y1 = f["box"]
    assert 0 <= x0 < x1 <= 1280 and 0 <= y0 < y1 <= 720
    assert all(x0 - 1 <= pt[0] <= x1 + 1 for pt in f["landmarks"])
    for k in ("yaw", "pitch", "roll", "mouth_open"):
        assert isinstance(f[k], float)
    assert len(f["eye_open"]) == 2
    expected = "mediapipe_face_mesh" if default_model_path() is None else Path(default_model_path()).stem
    assert f["model"].startswith(expected)
    # a clone runs the shipped 3DDFA-V2 with eyes, iris and blendshapes
    if default_model_path() == str(assets.DEFAULT_3DMM):
        assert f["model"] == "3ddfa_v2_mb05_noneck"
        assert len(f["iris"]) == 10 and all(len(pt) == 3 for pt in f["iris"])
        assert len(f["blendshapes"]) == 51 and 0.0 <= f["blendshapes"]["eyeBlinkLeft"] <= 1.0
        assert all(v is not None for v in f["eye_open"])
    log = "\n".join(err_lines(p))
    assert "done: 55 frames" in log and expected in log


@pytest.mark.slow
def test_onnx_record_dump_events(tmp_path, tddfa_onnx):
    import av

    rec, dump, ev = tmp_path / "o.mp4", tmp_path / "o.jsonl", tmp_path / "e.jsonl"
    p = run_main("--video", shared(*CLIP), "--headless", "--model", tddfa_onnx, "--device", "cpu",
                 "--record", rec, "--dump", dump, "--events", ev)
    assert p.returncode == 0, p.stderr
    with av.open(str(rec)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 55
    rows = read_dump(dump)
    assert len(rows) == 55 and sum(bool(r["faces"]) for r in rows) >= 53
    assert rows[0]["faces"][0]["model"] == "3ddfa_v2_mb05"
    events = [json.loads(ln) for ln in ev.read_text().splitlines()]
    assert events[-1]["event"] == "summary"
    log = "\n".join(err_lines(p))
    assert "CPUExecutionProvider" in log and "stage ms" in log
    assert sorted(x.name for x in tmp_path.iterdir()) == ["e.jsonl", "o.jsonl", "o.mp4"]


def test_two_faces_image(tmp_path, tddfa_onnx):
    dump = tmp_path / "d.jsonl"
    p = run_main("--video", shared("media", "two_faces.jpg"), "--headless", "--model", tddfa_onnx,
                 "--device", "cpu", "--dump", dump, "--no-monitor")
    assert p.returncode == 0, p.stderr
    rows = read_dump(dump)
    assert len(rows) == 1 and len(rows[0]["faces"]) == 2


def _bad(tmp_path, *args, env_drop=()):
    """A run that must fail: exit 2, one error line on stderr, nothing left in tmp_path."""
    before = sorted(tmp_path.iterdir())
    p = run_main(*args, "--dump", tmp_path / "d.jsonl", env_drop=env_drop)
    lines = err_lines(p)
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and lines[0].startswith(("error", "main.py: error")), p.stderr
    assert sorted(tmp_path.iterdir()) == before, "outputs left behind"
    return lines[0]


def test_missing_file(tmp_path):
    line = _bad(tmp_path, "--video", tmp_path / "nope.mp4", "--headless")
    assert "nope.mp4" in line


def test_unreadable_file(tmp_path):
    bad = tmp_path / "junk.mp4"
    bad.write_bytes(os.urandom(4096))
    line = _bad(tmp_path, "--video", bad, "--headless")
    assert "junk.mp4" in line


def test_onnx_not_following_contract(tmp_path):
    from tests.test_model3dmm import make_onnx

    m = make_onnx(tmp_path / "bad.onnx")
    line = _bad(tmp_path, "--video", shared(*CLIP), "--headless", "--model", m)
    assert "bad.onnx" in line and "'rotation'" in line


def test_unwritable_record(tmp_path):
    line = _bad(tmp_path, "--video", shared(*CLIP), "--headless", "--record", tmp_path / "no" / "such" / "o.mp4")
    assert "o.mp4" in line


def test_device_cuda_without_cuda(tmp_path, tddfa_onnx):
    from app.model3dmm import DeviceError, Model3DMM

    try:
        Model3DMM(str(tddfa_onnx), "cuda")
        pytest.skip("CUDA works on this machine")
    except DeviceError:
        pass
    line = _bad(tmp_path, "--video", shared(*CLIP), "--headless", "--model", tddfa_onnx, "--device", "cuda")
    assert "--device cuda" in line


def test_no_input(tmp_path):
    line = _bad(tmp_path, "--headless")
    assert "--video" in line


def test_bad_flag_value(tmp_path):
    line = _bad(tmp_path, "--video", shared(*CLIP), "--headless", "--detect-every", "0")
    assert "--detect-every" in line


def test_gui_without_display(tmp_path):
    line = _bad(tmp_path, "--video", shared(*CLIP), env_drop=("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))
    assert "--headless" in line


@pytest.mark.slow
def test_ctrl_c_finalizes_outputs(tmp_path):
    """SIGINT during a looping run: the recording and the dump are finalized and agree."""
    import signal
    import time

    import av

    rec, dump = tmp_path / "o.mp4", tmp_path / "d.jsonl"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--video", str(shared(*CLIP)), "--loop",
                             "--headless", "--record", str(rec), "--dump", str(dump), "--no-monitor"],
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
    # the dump is written line by line under its final name: wait for 21 frames in it (a loaded
    # machine may run at a few fps), then interrupt
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if dump.exists() and len(dump.read_text().splitlines()) > 20:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[1]
    assert proc.returncode == 0, rest
    assert "interrupted" in rest
    n = len(dump.read_text().splitlines())
    assert n > 20
    with av.open(str(rec)) as c:
        assert sum(1 for _ in c.decode(video=0)) == n
    assert sorted(x.name for x in tmp_path.iterdir()) == ["d.jsonl", "o.mp4"]


def test_error_midway_finalizes_outputs(tmp_path, monkeypatch):
    """A processing error at frame 5: exit 1, the 5 frames before it are recorded and dumped."""
    import av

    from app import cli, headless
    from app.pipeline import Pipeline

    real = Pipeline.process

    def failing(self, frame, vertices=True, blendshapes=True):
        if frame.index == 5:
            raise RuntimeError("simulated failure")
        return real(self, frame, vertices, blendshapes)

    monkeypatch.setattr(Pipeline, "process", failing)
    rec, dump = tmp_path / "o.mp4", tmp_path / "d.jsonl"
    args = cli.build_parser().parse_args(["--video", str(shared(*CLIP)), "--headless", "--record", str(rec),
                                          "--dump", str(dump), "--quiet", "--no-monitor"])
    rc = headless.run(cli.settings_from_args(args), cli.run_options_from_args(args))
    assert rc == 1
    assert len(dump.read_text().splitlines()) == 5
    with av.open(str(rec)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 5
    assert sorted(x.name for x in tmp_path.iterdir()) == ["d.jsonl", "o.mp4"]


@pytest.mark.parametrize("flag", ["--dump", "--events"])
def test_unwritable_dump_and_events(tmp_path, flag):
    args = ["--video", shared(*CLIP), "--headless", flag, tmp_path / "no" / "such" / "x.jsonl"]
    if flag == "--dump":
        args = ["--video", shared(*CLIP), "--headless", "--record", tmp_path / "o.mp4"]
        p = run_main(*args, "--dump", tmp_path / "no" / "such" / "x.jsonl")
        lines = err_lines(p)
        assert p.returncode == 2 and len(lines) == 1 and "x.jsonl" in lines[0], p.stderr
        assert list(tmp_path.iterdir()) == []      # the recording opened first was discarded
        return
    line = _bad(tmp_path, *args)
    assert "x.jsonl" in line


def test_folder_as_output_path(tmp_path):
    (tmp_path / "out").mkdir()
    p = run_main("--video", shared(*CLIP), "--headless", "--events", tmp_path / "out")
    lines = err_lines(p)
    assert p.returncode == 2 and len(lines) == 1 and "out" in lines[0], p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out"] and not any((tmp_path / "out").iterdir())


def test_file_breaking_off_midway_keeps_what_was_recorded(tmp_path):
    """A .mkv cut in half: the run stops at the break with a warning and exit 1, and the recording
    and the dump hold exactly the frames that decoded."""
    import av
    import cv2

    from app.io.capture import open_source

    frames = [cv2.resize(f.image, (320, 180), interpolation=cv2.INTER_AREA)
              for f in open_source(shared(*CLIP))][:40]
    full = tmp_path / "clip.mkv"
    with av.open(str(full), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 320, 180, "yuv420p"
        for img in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    rec, dump = tmp_path / "o.mp4", tmp_path / "d.jsonl"
    p = run_main("--video", cut, "--headless", "--record", rec, "--dump", dump, "--quiet", "--no-monitor")
    assert p.returncode == 1, p.stderr
    assert any(ln.startswith("warning:") and "cut.mkv" in ln for ln in err_lines(p)), p.stderr
    n = len(dump.read_text().splitlines())
    assert 0 < n < 40
    with av.open(str(rec)) as c:
        assert sum(1 for _ in c.decode(video=0)) == n
    assert sorted(x.name for x in tmp_path.iterdir()) == ["cut.mkv", "d.jsonl", "o.mp4"]


def test_app_runs_without_torch(tmp_path, tddfa_onnx):
    """The app needs no torch: with torch made unimportable, main.py runs an exported model."""
    dump = tmp_path / "d.jsonl"
    code = ("import sys, runpy; sys.modules['torch'] = None; sys.argv = ['main.py'] + sys.argv[1:]; "
            "runpy.run_path('main.py', run_name='__main__')")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", code, "--video", str(shared("media", "two_faces.jpg")), "--headless",
                        "--model", str(tddfa_onnx), "--device", "cpu", "--dump", str(dump)],
                       capture_output=True, text=True, timeout=300, env=env, cwd=str(ROOT))
    assert p.returncode == 0, p.stderr
    assert "import of torch halted" not in p.stderr and "ImportError" not in p.stderr
    assert len(read_dump(dump)[0]["faces"]) == 2


def test_no_frame_leaves_no_output(tmp_path, monkeypatch, capsys):
    """A source that delivers nothing after opening: exit 2, no recording, dump or event log."""
    from app import cli, headless
    from app.io.capture import Source

    monkeypatch.setattr(Source, "read", lambda self, timeout=None: None)
    monkeypatch.setattr(Source, "finished", property(lambda self: True))
    args = cli.build_parser().parse_args(["--video", str(shared(*CLIP)), "--headless", "--quiet",
                                          "--record", str(tmp_path / "o.mp4"), "--dump", str(tmp_path / "d.jsonl"),
                                          "--events", str(tmp_path / "e.jsonl")])
    assert headless.run(cli.settings_from_args(args), cli.run_options_from_args(args)) == 2
    assert "gave no frames" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
