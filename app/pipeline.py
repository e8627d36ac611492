"""The per-frame pipeline: Frame -> FaceObservation per face -> MonitorState -> annotated image.

``Pipeline(settings).process(frame) -> (observations, state, annotated)``; used by the headless
runner (app/headless.py), the benchmark (app/bench.py) and the GUI worker. Stages (``stage_ms``,
milliseconds of the last frame): detect (detector or landmark-crop tracking), crop (affine warps
into one batch), 3dmm (one onnxruntime run for all faces), post (crop -> image, pose), mesh/eyes
(face mesh per face crop: eyes, mouth; the whole model in face-mesh mode; in 3DMM mode it runs in
a worker thread while the 3DMM runs, and "mesh wait" is the part the overlap did not hide),
smoothing, gaze (eye gaze from the iris points, app.core.gaze, all faces), monitor, overlay.
decode / encode belong to the caller (source and writer) and are added there.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np

from app.core.gaze import eye_angles, gaze_from_angles
from app.core.types import FaceObservation, Frame, MonitorState
from app.detect import FaceDetector
from app.facemesh import FaceMesh, eye_openness, head_rotation, mouth_openness, to68
from app.model3dmm import Model3DMM, pose_deg
from app.render import annotate
from app.settings import MESH_MODEL, Settings
from app.smoothing import OneEuroFilter
from app.tracker import Tracker, Track, plausible

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
MESH_MODEL_NAME = "mediapipe_face_mesh"
STAGES = ("decode", "detect", "crop", "3dmm", "post", "mesh/eyes", "mesh wait", "smoothing", "gaze", "monitor",
          "overlay", "encode")


# where Settings.model = None looks for a model (read at call time: tests point it elsewhere)
MODELS_DIR = ROOT / "models"


def default_model_path(models_dir: Optional[Path] = None) -> Optional[str]:
    """The first models/*.onnx by name, or None (then the face mesh runs)."""
    models_dir = Path(MODELS_DIR if models_dir is None else models_dir)
    found = sorted(models_dir.glob("*.onnx")) if models_dir.is_dir() else []
    return str(found[0]) if found else None


def resolve_model_path(model: Optional[str]) -> Optional[str]:
    """The ONNX file Settings.model runs, or None for the built-in face mesh: MESH_MODEL = the
    mesh, None = default_model_path(), anything else = that path."""
    if model == MESH_MODEL:
        return None
    return model or default_model_path()


class _Done:
    """An already computed result with the Future interface."""

    def __init__(self, value):
        self._value = value

    def result(self):
        return self._value


def _orthonormal(M: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(M)
    R = u @ vt
    if np.linalg.det(R) < 0:
        u[:, -1] *= -1
        R = u @ vt
    return R


def _events_of(monitor) -> list:
    """New events of the monitor's last update (C's monitor exposes them; names tried in order)."""
    for name in ("pop_events", "take_events"):
        fn = getattr(monitor, name, None)
        if callable(fn):
            return list(fn() or [])
    ev = getattr(monitor, "last_events", None)
    if callable(ev):
        ev = ev()
    return list(ev or [])


class Pipeline:
    def __init__(self, settings: Optional[Settings] = None, *, monitor=None):
        self.settings = settings = settings or Settings()
        settings.validate()
        self.layers = settings.layers
        path = resolve_model_path(settings.model)
        self.model: Optional[Model3DMM] = None
        if path:
            self.model = Model3DMM(path, settings.device, settings.threads)
            self.model_name = self.model.name
            self.provider = self.model.provider.replace("ExecutionProvider", "")
        else:
            self.model_name = MESH_MODEL_NAME
            self.provider = "mediapipe CPU"
            why = "--model mesh" if settings.model == MESH_MODEL else "no --model and no models/*.onnx"
            log.info("model: %s (%s), runs on the CPU (TFLite)", MESH_MODEL_NAME, why)
        self.use_mesh = self.model is None or settings.eyes_from_mesh
        self._pool = (ThreadPoolExecutor(1, thread_name_prefix="facemesh")
                      if (self.model is not None and self.use_mesh) else None)
        self.detector = FaceDetector(settings.detector, settings.min_detection_confidence)
        self.tracker = Tracker(settings.detect_every, settings.max_faces, settings.iou_match, on_end=self._end_track)
        self.monitor = monitor if monitor is not None else self._make_monitor(settings)
        self._last_driver_box = None
        self.last_events: list = []
        self.stage_ms: dict[str, float] = {}
        self.fps = float("nan")
        self._last_t = None
        self.frames = 0
        self._gaze_s = 0.0          # seconds spent in the gaze stage this frame

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _make_monitor(settings: Settings):
        if settings.monitor is None:
            return None
        from app.monitor import DriverMonitor

        return DriverMonitor(settings.monitor)

    def _end_track(self, track: Track) -> None:
        mesh = track.state.pop("mesh", None)
        if mesh is not None:
            mesh.close()

    def _run_meshes(self, image: np.ndarray, tracks: list[Track]) -> tuple[list, float]:
        t = time.perf_counter()
        out = []
        for tr in tracks:
            mesh = tr.state.get("mesh")
            if mesh is None:
                mesh = tr.state["mesh"] = FaceMesh(static=False)
            out.append(mesh(image, tr.roi))
        return out, (time.perf_counter() - t) * 1e3

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.tracker.reset()
        self.detector.close()

    # ------------------------------------------------------------------ per frame
    def process(self, frame: Frame) -> tuple[list[FaceObservation], Optional[MonitorState], np.ndarray]:
        st = {}
        image = frame.image
        t0 = time.perf_counter()
        tracks = self.tracker.step(image, self.detector)
        t1 = time.perf_counter()
        st["detect"] = (t1 - t0) * 1e3

        # the face mesh (own thread, C++ releases the GIL) overlaps the 3DMM run in this thread
        mesh_job = None
        if self.use_mesh and tracks:
            if self.model is not None and self._pool is not None:
                mesh_job = self._pool.submit(self._run_meshes, image, tracks)
            else:
                mesh_job = _Done(self._run_meshes(image, tracks))

        results: list[tuple[Track, dict]] = []
        if self.model is not None and tracks:
            rois = [t.roi for t in tracks]
            batch = self.model.crops(image, rois)
            t2 = time.perf_counter()
            out = self.model.infer(batch)
            t3 = time.perf_counter()
            for k, tr in enumerate(tracks):
                results.append((tr, self.model.to_image(out, k, tr.roi)))
            t4 = time.perf_counter()
            st["crop"], st["3dmm"], st["post"] = (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t4 - t3) * 1e3
        else:
            results = [(tr, {}) for tr in tracks]
            st["crop"] = st["3dmm"] = st["post"] = 0.0

        t4 = time.perf_counter()
        meshes, mesh_ms = mesh_job.result() if mesh_job is not None else ([None] * len(tracks), 0.0)
        st["mesh/eyes"] = mesh_ms                         # its own duration (overlapped in 3DMM mode)
        st["mesh wait"] = (time.perf_counter() - t4) * 1e3  # what the overlap did not hide
        kept: list[tuple[Track, dict]] = []
        for (tr, res), pts in zip(results, meshes):
            if self.use_mesh:
                if pts is None:
                    if self.model is None:   # no face in this crop: the track ends, detect next frame
                        self.tracker.lose(tr)
                        continue
                    # 3DMM mode: keep the 3DMM face (it copes with profiles the mesh misses), eyes
                    # and mouth unknown on this frame; ask the detector to confirm it next frame
                    self.tracker.request_detection()
                else:
                    res["mesh_points"] = pts
                    res["eye_open"] = eye_openness(pts)
                    res["mouth_open"] = mouth_openness(pts)
                if pts is not None and self.model is None:
                    lm = to68(pts)
                    R = head_rotation(lm)
                    res["landmarks"] = lm
                    res["rotation"] = R
                    res["yaw"], res["pitch"], res["roll"] = pose_deg(R)
                    res["scale"] = float("nan")
            if not plausible(res.get("landmarks"), tr.roi, image.shape):
                self.tracker.lose(tr)
                continue
            self.tracker.update(tr, res["landmarks"], True)
            kept.append((tr, res))
        t5 = time.perf_counter()

        self._gaze_s = 0.0
        observations = [self._observation(tr, res, frame.timestamp) for tr, res in kept]
        t6 = time.perf_counter()
        st["gaze"] = self._gaze_s * 1e3
        st["smoothing"] = (t6 - t5) * 1e3 - st["gaze"]

        state = None
        self.last_events = []
        if self.monitor is not None:
            from app.monitor import select_driver

            driver = select_driver(observations, self._last_driver_box)
            if driver is not None:
                self._last_driver_box = driver.box
            state = self.monitor.update(frame.timestamp, frame.index, driver)
            self.last_events = _events_of(self.monitor)
        t7 = time.perf_counter()
        st["monitor"] = (t7 - t6) * 1e3

        # processing rate (wall clock between calls, smoothed), shown by the overlay
        now = time.perf_counter()
        if self._last_t is not None and now > self._last_t:
            inst = 1.0 / (now - self._last_t)
            self.fps = inst if not np.isfinite(self.fps) else 0.9 * self.fps + 0.1 * inst
        self._last_t = now
        annotated = annotate(image, observations, layers=self.layers, state=state,
                             info={"fps": self.fps, "model": self.model_name, "provider": self.provider})
        st["overlay"] = (time.perf_counter() - t7) * 1e3
        self.stage_ms = st
        self.frames += 1
        return observations, state, annotated

    def _observation(self, tr: Track, res: dict, t: float) -> FaceObservation:
        lm = res["landmarks"]
        verts = res.get("vertices")
        R = res.get("rotation")
        mesh_pts = res.get("mesh_points")
        yaw, pitch, roll = res.get("yaw", np.nan), res.get("pitch", np.nan), res.get("roll", np.nan)
        s = self.settings
        if s.smoothing:
            f = tr.state.get("filters")
            if f is None:
                mk = lambda: OneEuroFilter(s.smooth_min_cutoff, s.smooth_beta, s.smooth_d_cutoff)  # noqa: E731
                f = tr.state["filters"] = {"lm": mk(), "v": mk(), "R": mk(), "mesh": mk(), "gaze": mk()}
            lm = f["lm"](lm, t)
            if verts is not None:
                verts = f["v"](verts, t)
            if mesh_pts is not None and self.model is None:
                mesh_pts = f["mesh"](mesh_pts, t)
            if R is not None:
                # smooth the 9 entries (rad-like units: x57 so beta acts on deg/s), re-orthonormalise
                R = _orthonormal(f["R"](R * 57.29577951308232, t) / 57.29577951308232)
                yaw, pitch, roll = pose_deg(R)
        eye_open = tuple(res.get("eye_open", (np.nan, np.nan)))
        gaze = None
        raw_mesh = res.get("mesh_points")
        if raw_mesh is not None and R is not None:
            tg = time.perf_counter()
            # per-eye eye-in-head angles from this frame's mesh and the (smoothed) head rotation;
            # smoothed as angles (deg, so beta acts on deg/s), then turned into the camera frame
            ang = eye_angles(raw_mesh, R, eye_open, yaw)
            if s.smoothing:
                ang = tr.state["filters"]["gaze"](ang, t)
            gaze = gaze_from_angles(ang, R, mesh_pts)
            self._gaze_s += time.perf_counter() - tg
        box = np.array([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()], dtype=np.float64)
        return FaceObservation(
            box=box, landmarks=np.asarray(lm, np.float32), model=self.model_name,
            vertices=verts, triangles=self.model.triangles if (self.model is not None and verts is not None) else None,
            rotation=R, translation=None, scale=float(res.get("scale", np.nan)),
            yaw=float(yaw), pitch=float(pitch), roll=float(roll),
            eye_open=eye_open, mouth_open=float(res.get("mouth_open", np.nan)),
            score=float(tr.score), roi_box=np.asarray(tr.roi, np.float64).copy(),
            mesh_points=mesh_pts, gaze=gaze)
