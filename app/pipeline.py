"""The per-frame pipeline: Frame -> FaceObservation per face -> MonitorState -> annotated image.

``Pipeline(settings).process(frame) -> FrameResult`` (app.core.types: observations, the driver the
monitor judged, its state and new events, stage times); used by the runner (app/runner.py: headless,
benchmark, soak) and the GUI worker, which draw it with app.render.draw_result when they show or
record it. The faces of a frame go
through one FaceBackend (app.core.types): the 3DMM (app.model3dmm, one onnxruntime run for all
faces) or the face landmark model alone (app.facemesh.MeshBackend); in 3DMM mode the landmark
model also runs, as the eyes backend, in a worker thread while the 3DMM runs (eyes, mouth, iris,
blendshapes). Stages (``FrameResult.stage_ms``, milliseconds): detect (detector or landmark-crop
tracking), crop / 3dmm / post (3DMM backend), mesh/eyes (the landmark model; its own duration,
overlapped in 3DMM mode; "eye vis" is the part of it that measures whether each eye is
visible, app.facemesh.eye_visibility), mesh wait (the part the overlap did not hide), smoothing (the 3DMM's
geometry is smoothed while the eyes still run), gaze (eye gaze
from the iris points, app.core.gaze, all faces), monitor. overlay, decode and encode belong to the
caller (drawing, source and writer) and are added there.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from app import assets
from app.core.gaze import eye_angles, gaze_from_angles
from app.core.types import Crop, FaceBackend, FaceEstimate, FaceObservation, Frame, FrameResult
from app.detect import FaceDetector
from app.facemesh import MeshBackend, mesh_box_from_detection, mesh_crop
from app.model3dmm import ContractError, Model3DMM, pose_deg
from app.monitor.core import select_driver
from app.settings import MESH_MODEL, Settings
from app.smoothing import OneEuroFilter
from app.tracker import Tracker, Track, plausible

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
MESH_MODEL_NAME = MeshBackend.name

# where Settings.model = None looks for the user's models (read at call time: tests point it elsewhere)
MODELS_DIR = ROOT / "models"
# the 3DMM a clone runs when the user has none (read at call time, like MODELS_DIR)
SHIPPED_MODEL = assets.DEFAULT_3DMM


def default_model_path(models_dir: Optional[Path] = None) -> Optional[str]:
    """The first models/*.onnx by name, else the shipped 3DDFA-V2 model, else None (face mesh)."""
    models_dir = Path(MODELS_DIR if models_dir is None else models_dir)
    found = sorted(models_dir.glob("*.onnx")) if models_dir.is_dir() else []
    if found:
        return str(found[0])
    return str(SHIPPED_MODEL) if Path(SHIPPED_MODEL).is_file() else None


def resolve_model_path(model: Optional[str]) -> Optional[str]:
    """The ONNX file Settings.model runs, or None for the built-in face mesh: MESH_MODEL = the
    mesh, None = default_model_path(), anything else = that path."""
    if model == MESH_MODEL:
        return None
    return model or default_model_path()


def _orthonormal(M: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(M)
    R = u @ vt
    if np.linalg.det(R) < 0:
        u[:, -1] *= -1
        R = u @ vt
    return R


def _with_eyes(est: FaceEstimate, eyes: FaceEstimate) -> FaceEstimate:
    """The 3DMM's geometry with the landmark model's eyes, mouth, iris and blendshapes."""
    return replace(est, mesh_points=eyes.mesh_points, eye_open=eyes.eye_open, mouth_open=eyes.mouth_open,
                   blendshapes=eyes.blendshapes, eye_visibility=eyes.eye_visibility,
                   eye_available=eyes.eye_available, eye_unavailable_why=eyes.eye_unavailable_why)


class Pipeline:
    def __init__(self, settings: Optional[Settings] = None, *, monitor=None):
        self.settings = settings = settings or Settings()
        settings.validate()
        # OpenCV's own worker threads for the small per-frame operations (crops, colour conversions,
        # the overlay's blends and blurs): the pipeline already keeps the cores busy with its threads
        # (eyes, encoder, decoder), and handing rows to OpenCV's pool cost 1.7-2.4 ms of CPU per
        # frame more than doing them in place (python -m app.eval.bench, recording on, expressions_d13:
        # 38.4 / 37.7 vs 36.0 / 36.0 ms, same pixels; docs/benchmarks.md section 15). Process-wide.
        cv2.setNumThreads(1)
        self.layers = settings.layers
        path = resolve_model_path(settings.model)
        self.eyes: Optional[MeshBackend] = None
        if path:
            self.backend: FaceBackend = Model3DMM(path, settings.device, settings.threads, settings.flip_average,
                                                  mesh_detail=settings.mesh_detail)
            if settings.eyes_from_mesh:
                self.eyes = MeshBackend(threads=settings.mesh_threads_for(beside_3dmm=True))
        else:
            if settings.mesh_detail < 1.0:
                raise ContractError(f"--mesh-detail {settings.mesh_detail:g} thins a 3DMM's dense mesh, and the "
                                    "face mesh alone (--model mesh) has none: leave --mesh-detail at 1")
            self.backend = MeshBackend(threads=settings.mesh_threads_for(beside_3dmm=False))
            why = "--model mesh" if settings.model == MESH_MODEL else "no --model, no models/*.onnx, no shipped model"
            log.info("model: %s (%s), runs on the CPU (LiteRT)", MESH_MODEL_NAME, why)
        self.model_name = self.backend.name
        self.provider = self.backend.provider
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="facemesh") if self.eyes is not None else None
        self.detector = FaceDetector(settings.min_detection_confidence)
        self.tracker = Tracker(settings.detect_every, settings.max_faces, settings.iou_match,
                               landmark_crop_scale=settings.landmark_crop_scale)
        self.monitor = monitor if monitor is not None else self._make_monitor(settings)
        self._last_driver_box = None
        self.fps = float("nan")
        self._last_t = None
        self.frames = 0

    @property
    def model(self) -> Optional[Model3DMM]:
        """The 3DMM when one runs (None in face-mesh mode)."""
        return self.backend if isinstance(self.backend, Model3DMM) else None

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _make_monitor(settings: Settings):
        if settings.monitor is None:
            return None
        from app.monitor.core import DriverMonitor

        return DriverMonitor(settings.monitor)

    def prepare(self, vertices: bool) -> None:
        """Ready the models for frames processed with ``vertices`` (process's argument) before the
        first one: a run that draws nothing builds the 3DMM's graph without the mesh now."""
        if self.model is not None:
            self.model.prepare(vertices)

    def reset(self) -> None:
        """Start a new stream with the models kept loaded (app.batch runs drive after drive in one
        worker process): no tracks (their smoothing filters go with them), no driver, a fresh
        monitor of the settings (replacing one given to the constructor), no processing rate."""
        self.tracker.reset()
        self.monitor = self._make_monitor(self.settings)
        self._last_driver_box = None
        self.fps = float("nan")
        self._last_t = None
        self.frames = 0

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.tracker.reset()
        self.detector.close()
        self.backend.close()
        if self.eyes is not None:
            self.eyes.close()

    @staticmethod
    def _crop(t: Track) -> Crop:
        """The track's roi for the 3DMM; for the landmark model the box from its own last points,
        else (a face it has not seen or lost) the detector box when this frame has one."""
        if "mesh_crop" in t.state:
            return Crop(t.roi, *t.state["mesh_crop"])
        return Crop(t.roi, mesh_box_from_detection(t.box) if t.detected else None)

    # ------------------------------------------------------------------ per frame
    def process(self, frame: Frame, vertices: bool = True, blendshapes: bool = True) -> FrameResult:
        """One frame through the stages. ``vertices=False``: no dense mesh for this frame (nothing
        draws it: a run without a recording or a window, or with the mesh layer off); the 3DMM
        then runs without its mesh head and the mesh is not smoothed. ``blendshapes=False``: no
        blendshape scores (FaceObservation.blendshapes None; nothing but the dump and the batch's
        frames.parquet reads them), the blendshape model does not run. Every other output is the same."""
        st = {"crop": 0.0, "3dmm": 0.0, "post": 0.0, "mesh/eyes": 0.0, "eye vis": 0.0}
        image = frame.image
        t0 = time.perf_counter()
        tracks = self.tracker.step(image, self.detector)
        t1 = time.perf_counter()
        st["detect"] = (t1 - t0) * 1e3
        crops = [self._crop(t) for t in tracks]

        # the eyes backend (own thread; LiteRT releases the GIL) overlaps the 3DMM run in this thread
        # (the eyes backend's own 68 points and head pose are not read: the 3DMM gives them)
        eyes_job = (self._pool.submit(self.eyes.estimate, image, crops, blendshapes=blendshapes, pose=False)
                    if self.eyes is not None and tracks else None)
        ests, bst = self.backend.estimate(image, crops, vertices, blendshapes) if tracks else ([], {})
        st.update(bst)
        # what needs only the backend's estimate is done while the eyes still run: which faces are
        # kept (the 3DMM's own landmarks decide), and the smoothing of their geometry
        t4 = time.perf_counter()
        smoothed = [self._smoothed(tr, est, frame.timestamp)
                    if est is not None and plausible(est.landmarks, tr.roi, image.shape) else None
                    for tr, est in zip(tracks, ests)]
        t5 = time.perf_counter()
        eyes, est_eyes = (eyes_job.result() if eyes_job is not None else ([None] * len(tracks), {}))
        st.update(est_eyes)
        t6 = time.perf_counter()
        st["mesh wait"] = (t6 - t5) * 1e3  # what the overlap did not hide
        kept: list[tuple[Track, FaceEstimate, FaceEstimate]] = []
        for tr, est, ey, sm in zip(tracks, ests, eyes, smoothed):
            if est is None:              # no face in this crop: the track ends, detect next frame
                self.tracker.lose(tr)
                continue
            if self.eyes is not None:
                if ey is None:
                    # keep the 3DMM face (it copes with profiles the landmark model misses), eyes
                    # and mouth unknown on this frame; ask the detector to confirm it next frame
                    self.tracker.request_detection()
                else:
                    est = _with_eyes(est, ey)
            if sm is None:               # implausible landmarks: the track ends
                self.tracker.lose(tr)
                continue
            # the landmark model's next crop follows its own points; without them (lost in the
            # crop) it falls back to the tracker's box
            if est.mesh_points is not None:
                tr.state["mesh_crop"] = mesh_crop(est.mesh_points)
            else:
                tr.state.pop("mesh_crop", None)
            self.tracker.update(tr, est.landmarks, True)
            kept.append((tr, est, sm))
        t7 = time.perf_counter()

        made = [self._observation(tr, est, sm, frame.timestamp) for tr, est, sm in kept]
        observations = [o for o, _ in made]
        t8 = time.perf_counter()
        st["gaze"] = sum(g for _, g in made) * 1e3
        st["smoothing"] = (t5 - t4 + t8 - t7) * 1e3 - st["gaze"]

        # the driver: the same face while it stays in place, else the largest (app.monitor)
        driver = select_driver(observations, self._last_driver_box)
        if driver is not None:
            self._last_driver_box = driver.box
        state, events = None, []
        if self.monitor is not None:
            # without a driver, how dark the frame is tells "too dark" from "no face" (every 8th
            # pixel's mean over the channels: ~0.03 ms at 720p)
            bright = float(image[::8, ::8].mean()) if driver is None else float("nan")
            state = self.monitor.update(frame.timestamp, frame.index, driver, bright)
            events = list(state.events)
        st["monitor"] = (time.perf_counter() - t8) * 1e3

        # processing rate (wall clock between calls, smoothed), shown by the overlay
        now = time.perf_counter()
        if self._last_t is not None and now > self._last_t:
            inst = 1.0 / (now - self._last_t)
            self.fps = inst if not np.isfinite(self.fps) else 0.9 * self.fps + 0.1 * inst
        self._last_t = now
        self.frames += 1
        return FrameResult(frame=frame, observations=observations, driver=driver, state=state, events=events,
                           stage_ms=st, model=self.model_name, provider=self.provider, fps=self.fps)

    def _smoothed(self, tr: Track, est: FaceEstimate, t: float) -> FaceEstimate:
        """The estimate with its landmarks, vertices, rotation (and, in face-mesh mode, its points)
        through the track's One Euro filters, and the pose angles of the smoothed rotation."""
        lm, verts, R, mesh_pts = est.landmarks, est.vertices, est.rotation, est.mesh_points
        yaw, pitch, roll = est.yaw, est.pitch, est.roll
        s = self.settings
        if s.smoothing:
            f = tr.state.get("filters")
            if f is None:
                mk = lambda: OneEuroFilter(s.smooth_min_cutoff, s.smooth_beta, s.smooth_d_cutoff)  # noqa: E731
                f = tr.state["filters"] = {"lm": mk(), "v": mk(), "R": mk(), "mesh": mk(), "gaze": mk()}
            lm = f["lm"](lm, t)
            if verts is not None:
                verts = f["v"](verts, t)
            else:
                f["v"].reset()     # a mesh asked for again later starts fresh, not from an old one
            if mesh_pts is not None and self.model is None:
                mesh_pts = f["mesh"](mesh_pts, t)
            if R is not None:
                # smooth the 9 entries (rad-like units: x57 so beta acts on deg/s), re-orthonormalise
                R = _orthonormal(f["R"](R * 57.29577951308232, t) / 57.29577951308232)
                yaw, pitch, roll = pose_deg(R)
        return replace(est, landmarks=lm, vertices=verts, rotation=R, mesh_points=mesh_pts,
                       yaw=yaw, pitch=pitch, roll=roll)

    def _observation(self, tr: Track, est: FaceEstimate, sm: FaceEstimate, t: float) -> tuple[FaceObservation, float]:
        """The observation of one face from its estimate (with the eyes) and its smoothed geometry
        (``_smoothed``), and the seconds its gaze stage took."""
        lm, verts, R = sm.landmarks, sm.vertices, sm.rotation
        # face-mesh mode: the smoothed points; 3DMM mode: the eyes backend's points of this frame
        mesh_pts = sm.mesh_points if self.model is None else est.mesh_points
        s = self.settings
        eye_open = tuple(est.eye_open)
        gaze, gaze_s = None, 0.0
        raw_mesh = est.mesh_points
        if raw_mesh is not None and R is not None:
            tg = time.perf_counter()
            # per-eye eye-in-head angles from this frame's mesh and the (smoothed) head rotation;
            # smoothed as angles (deg, so beta acts on deg/s), then turned into the camera frame
            ang = eye_angles(raw_mesh, R, eye_open, sm.yaw)
            if s.smoothing:
                ang = tr.state["filters"]["gaze"](ang, t)
            gaze = gaze_from_angles(ang, R, mesh_pts)
            gaze_s = time.perf_counter() - tg
        box = np.array([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()], dtype=np.float64)
        return FaceObservation(
            box=box, landmarks=np.asarray(lm, np.float32), model=self.model_name,
            vertices=verts, triangles=self.backend.triangles if verts is not None else None,
            rotation=R, translation=None, scale=float(est.scale),
            yaw=float(sm.yaw), pitch=float(sm.pitch), roll=float(sm.roll),
            eye_open=eye_open, mouth_open=float(est.mouth_open),
            score=float(tr.score), roi_box=np.asarray(tr.roi, np.float64).copy(),
            mesh_points=mesh_pts, blendshapes=est.blendshapes, gaze=gaze,
            eye_visibility=tuple(est.eye_visibility), eye_available=tuple(est.eye_available),
            eye_unavailable_why=est.eye_unavailable_why), gaze_s

