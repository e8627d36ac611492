"""app.runner.Outputs: the recording of a run that only records is drawn on the encoder's thread."""
from __future__ import annotations

import threading

import av
import cv2
import numpy as np

from app import runner
from app.core.types import FaceObservation, Frame, FrameResult
from app.io.capture import open_source
from app.render import draw_result
from app.settings import Layers, RunOptions, Settings
from tests.conftest import shared


def _results(n: int) -> list[FrameResult]:
    src = open_source(shared("media", "talking_head_720p.mp4"))
    out = []
    for f in src:
        img = cv2.resize(f.image, (640, 360), interpolation=cv2.INTER_AREA)
        box = np.array([250.0, 60.0, 390.0, 230.0])
        lm = np.zeros((68, 3), np.float32)
        lm[:, 0] = np.linspace(260, 380, 68)
        lm[:, 1] = 140 + 40 * np.sin(np.linspace(0, 6.28, 68))
        obs = FaceObservation(box=box, landmarks=lm, model="test", yaw=10.0, pitch=-3.0, roll=1.0)
        out.append(FrameResult(frame=Frame(img, f.timestamp, f.index), observations=[obs], model="test",
                               provider="CPU", fps=25.0))
        if len(out) == n:
            break
    src.stop()
    return out


def test_outputs_draw_the_recording_on_the_encoder_thread(tmp_path, monkeypatch):
    drawn_on = []

    def spy(result, layers=None, **kw):
        drawn_on.append(threading.current_thread().name)
        return draw_result(result, layers, **kw)

    monkeypatch.setattr(runner, "draw_result", spy)
    results = _results(12)
    layers = Layers(mesh=False)
    rec = tmp_path / "r.mp4"
    out = runner.Outputs(RunOptions(record=str(rec), record_quality="high"), fps=25.0, size=(640, 360), live=False)
    for r in results:
        out.write(r, layers=layers)
    assert out.render_ms > 0.0
    assert out.close() == [f"recording {rec}"]
    assert drawn_on == ["encoder"] * 12
    with av.open(str(rec)) as c:
        got = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(got) == 12
    for r, g in zip(results, got):
        want = draw_result(r, layers).astype(np.float64)
        raw = r.frame.image.astype(np.float64)
        # over the pixels the overlay changed (box, landmarks, text) the file holds the drawn frame
        drawn = np.abs(want - raw).max(axis=2) > 60
        assert drawn.sum() > 500
        assert np.abs(g - want)[drawn].mean() < 0.3 * np.abs(g - raw)[drawn].mean()


def test_a_frame_the_caller_drew_is_recorded_as_given(tmp_path):
    results = _results(5)
    rec = tmp_path / "g.mp4"
    out = runner.Outputs(RunOptions(record=str(rec)), fps=25.0, size=(640, 360), live=False)
    for r in results:
        img = r.frame.image.copy()
        img[:60, :120] = (0, 255, 0)
        out.write(r, img)
    assert out.render_ms == 0.0
    out.close()
    with av.open(str(rec)) as c:
        got = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(got) == 5 and all(float(g[10:50, 10:110, 1].mean()) > 200 for g in got)


def test_overlay_kind_for_settings():
    assert runner.overlay_kind_for(Settings()) == "surface"                # shipped 3DMM, shaded
    assert runner.overlay_kind_for(Settings(model="mesh")) == "lines"      # the 468-point wireframe
    assert runner.overlay_kind_for(Settings(layers=Layers(mesh_style="wire"))) == "lines"


def _run_clip(tmp_path, name, record, n=30):
    """The first n frames of a real clip through Runner with the shipped 3DMM: the dump's lines
    and whether each result had a dense mesh."""
    from app.pipeline import Pipeline

    class Seen(runner.RunHooks):
        meshes: list = []
        cut_ready_before_first_frame = None

        def between_frames(self, r):
            if self.cut_ready_before_first_frame is None:   # the run's first call: no frame read yet
                self.cut_ready_before_first_frame = r.pipe.model._no_vertices_sess is not None
            return True

        def on_result(self, r, result, annotated, stage_ms):
            self.meshes.append([o.vertices is not None for o in result.observations])

    src = open_source(str(shared("media", "talking_head_720p.mp4")))
    pipe = Pipeline(Settings(device="cpu"))
    dump = tmp_path / f"{name}.jsonl"
    opts = RunOptions(dump=str(dump), record=str(tmp_path / f"{name}.mp4") if record else None)
    out = runner.Outputs(opts, fps=src.fps, size=src.size, live=False)
    hooks = Seen()
    hooks.meshes = []
    rep = runner.Runner(src, pipe, out, max_frames=n, quiet=True, say=lambda m: None, hooks=hooks).run()
    assert rep.rc == 0 and rep.frames == n
    # a run that draws nothing builds the graph without the mesh before its first frame
    assert hooks.cut_ready_before_first_frame is (not record)
    return dump.read_text().splitlines(), hooks.meshes


def test_dense_mesh_only_when_drawn_and_the_dump_is_the_same(tmp_path):
    """Without a recording (nothing drawn) the pipeline skips the 3DMM's dense mesh; with one it
    computes it for every frame. The per-frame dump is the same, line for line."""
    plain, mesh_plain = _run_clip(tmp_path, "plain", record=False)
    rec, mesh_rec = _run_clip(tmp_path, "rec", record=True)
    assert sum(map(len, mesh_rec)) >= 25
    assert all(all(m) for m in mesh_rec) and not any(any(m) for m in mesh_plain)
    assert plain == rec


class _CountingInterpreter:
    """The blendshape model's interpreter with its invocations counted."""

    def __init__(self, it):
        self.it, self.calls = it, 0

    def set_tensor(self, index, value):
        self.it.set_tensor(index, value)

    def invoke(self):
        self.calls += 1
        self.it.invoke()

    def get_tensor(self, index):
        return self.it.get_tensor(index)


def test_blendshapes_only_when_an_output_writes_them(tmp_path):
    """Without the dump nothing reads the blendshape scores: the model that gives them does not
    run (FaceObservation.blendshapes None) and everything else is the same: every measure of every
    face, the recording frame for frame, the events but for their wall-clock time."""
    import json

    from app.pipeline import Pipeline

    class Seen(runner.RunHooks):
        def on_result(self, r, result, annotated, stage_ms):
            for o in result.observations:
                self.bs.append(o.blendshapes)
                self.measures.append((o.yaw, o.pitch, o.roll, o.eye_open, o.mouth_open, o.eye_visibility,
                                      o.eye_available, None if o.gaze is None else (o.gaze.yaw, o.gaze.pitch),
                                      o.landmarks.tobytes(), o.mesh_points.tobytes()))

    runs = {}
    for name, dump in (("dump", True), ("none", False)):
        src = open_source(str(shared("media", "talking_head_720p.mp4")))
        pipe = Pipeline(Settings(device="cpu", layers=Layers.from_spec("-fps")))   # fps: the wall clock's
        counter = pipe.eyes.landmarker._bs = _CountingInterpreter(pipe.eyes.landmarker._bs)
        opts = RunOptions(record=str(tmp_path / f"{name}.mp4"), events=str(tmp_path / f"{name}.ev.jsonl"),
                          dump=str(tmp_path / f"{name}.jsonl") if dump else None)
        out = runner.Outputs(opts, fps=src.fps, size=src.size, live=False)
        hooks = Seen()
        hooks.bs, hooks.measures = [], []
        rep = runner.Runner(src, pipe, out, max_frames=30, quiet=True, say=lambda m: None, hooks=hooks).run()
        assert rep.rc == 0 and rep.frames == 30
        runs[name] = (hooks, counter.calls)
    (with_dump, calls_dump), (without, calls_none) = runs["dump"], runs["none"]
    assert len(with_dump.bs) >= 25 and all(b is not None and len(b) == 52 for b in with_dump.bs)
    assert calls_dump == len(with_dump.bs) and calls_none == 0
    assert all(b is None for b in without.bs)
    assert with_dump.measures == without.measures
    frames = [[f.to_ndarray(format="bgr24") for f in av.open(str(tmp_path / f"{n}.mp4")).decode(video=0)]
              for n in ("dump", "none")]
    assert len(frames[0]) == len(frames[1]) == 30
    assert all(np.array_equal(a, b) for a, b in zip(*frames))
    ev = [[{k: v for k, v in json.loads(ln).items() if k != "time"}
           for ln in (tmp_path / f"{n}.ev.jsonl").read_text().splitlines()] for n in ("dump", "none")]
    assert ev[0] == ev[1] and ev[0][-1]["event"] == "summary"
