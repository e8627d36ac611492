"""The dataclasses one frame flows through: Frame -> FaceObservation -> MonitorState.

Defined once here and used by the pipeline, the monitor, the overlays, the writers and the GUI.
Coordinates are image pixels (x right, y down); z is in the same pixel scale, larger = farther
from the camera is NOT guaranteed (each model's official convention), only relative depth.
Angles are degrees in the AFLW2000 ``Pose_Para`` convention (see app.core.geometry).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Protocol, Sequence

import numpy as np


@dataclass
class Frame:
    image: np.ndarray          # H x W x 3, uint8, BGR (OpenCV order)
    timestamp: float           # seconds since the source started (source clock for files)
    index: int                 # 0-based frame number as delivered by the source
    captured: float = float("nan")  # time.perf_counter() when the source handed it over (latency)


@dataclass
class Gaze:
    """Where the eyes look (app.core.gaze): degrees in the head-pose convention (yaw > 0 towards the
    subject's right, pitch > 0 up); NaN = unknown (eyes closed, unseen or no iris points)."""
    yaw: float = float("nan")               # gaze direction in the camera frame (head + eyes)
    pitch: float = float("nan")
    direction: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))  # (3,) unit, x right, y up, z towards the camera
    eye_yaw: float = float("nan")           # eye-in-head (relative to the face), mean of the measured eyes
    eye_pitch: float = float("nan")
    eyes: np.ndarray = field(default_factory=lambda: np.full((2, 2), np.nan))   # eye-in-head [yaw, pitch] of (left, right)
    eye_directions: np.ndarray = field(default_factory=lambda: np.full((2, 3), np.nan))  # per eye, camera frame
    origins: np.ndarray = field(default_factory=lambda: np.full((2, 2), np.nan))  # iris centres (left, right), image pixels

    def resized(self, fx: float, fy: float) -> "Gaze":
        """The same gaze in an image resized by ``fx`` x ``fy``: the iris centres scaled (directions
        and angles do not depend on the image size)."""
        return replace(self, origins=np.asarray(self.origins) * np.array([fx, fy]))


@dataclass
class FaceObservation:
    box: np.ndarray                         # (4,) float: x0, y0, x1, y1 in image pixels
    landmarks: np.ndarray                   # (68, 3) float32, image pixels (iBUG 300-W order)
    model: str                              # which model produced it ("3ddfa_v2_mb05", "mediapipe_face_mesh", ...)
    vertices: Optional[np.ndarray] = None   # (V, 3) float32 dense mesh, image pixels
    triangles: Optional[np.ndarray] = None  # (T, 3) int32 indices into vertices
    rotation: Optional[np.ndarray] = None   # (3, 3) head rotation (model's P -> s, R, t)
    translation: Optional[np.ndarray] = None  # (3,) image-space translation of the model origin
    scale: float = float("nan")             # model scale s (image pixels per model unit)
    yaw: float = float("nan")               # degrees, AFLW2000 Pose_Para convention
    pitch: float = float("nan")
    roll: float = float("nan")
    eye_open: tuple[float, float] = (float("nan"), float("nan"))  # (left, right) eyelid opening ratio; nan = unknown
    mouth_open: float = float("nan")        # inner-lip opening / mouth width; nan = unknown
    score: float = float("nan")             # detector confidence when known
    roi_box: Optional[np.ndarray] = None    # (4,) the crop box [sx, sy, ex, ey] the model saw
    mesh_points: Optional[np.ndarray] = None  # (478, 3) face-mesh points (468 mesh + 10 iris) when the mesh ran
    blendshapes: Optional[dict] = None      # 52 mediapipe blendshape scores by name (eyeBlinkLeft, jawOpen ...)
    gaze: Optional[Gaze] = None             # eye gaze from the iris points when the mesh ran
    # Whether each eye (left, right) itself is seen (app.facemesh.eye_visibility): the eye patch's
    # grey-level spread over the cheek's mean in the landmark crop (nan = not measured), True /
    # False / None (not measured). An unavailable eye has eye_open nan and no gaze.
    eye_visibility: tuple[float, float] = (float("nan"), float("nan"))
    eye_available: tuple[Optional[bool], Optional[bool]] = (None, None)
    eye_unavailable_why: Optional[str] = None   # "occluded" | "too_dark" when an eye is unavailable

    # the fields in image pixels, which ``resized`` scales (every other field is a ratio, an angle,
    # a score or an index)
    PIXEL_FIELDS = ("box", "landmarks", "vertices", "translation", "scale", "roi_box", "mesh_points", "gaze")

    def resized(self, fx: float, fy: float) -> "FaceObservation":
        """This face in the image resized by ``fx`` (x) and ``fy`` (y), to draw it on the smaller
        image: the PIXEL_FIELDS scaled (x by fx, y by fy, z and the model scale by their mean)."""
        fz = (fx + fy) / 2.0

        def xyz(a):
            if a is None:
                return None
            a = np.asarray(a)
            # in the array's own type: float32 points times float32 factors (a dense mesh in
            # float64 and back made resized() take 0.42 ms per face, this 0.18 ms)
            k = np.array([fx, fy, fz][:a.shape[-1]], dtype=a.dtype if a.dtype.kind == "f" else np.float64)
            return (a * k).astype(a.dtype, copy=False)

        def box(b):
            return None if b is None else np.asarray(b) * np.array([fx, fy, fx, fy])

        return replace(self, box=box(self.box), landmarks=xyz(self.landmarks), vertices=xyz(self.vertices),
                       translation=xyz(self.translation), scale=self.scale * fz, roi_box=box(self.roi_box),
                       mesh_points=xyz(self.mesh_points),
                       gaze=None if self.gaze is None else self.gaze.resized(fx, fy))

    @property
    def center(self) -> np.ndarray:
        b = self.box
        return np.array([(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0])

    @property
    def area(self) -> float:
        b = self.box
        return float(max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]))


@dataclass
class FrameResult:
    """What Pipeline.process returns for one frame; drawing it is the caller's step
    (app.render.draw_result), skipped when nothing shows or records it."""
    frame: Frame
    observations: list[FaceObservation]            # every tracked face, smoothed
    driver: Optional[FaceObservation] = None       # the face the monitor judged (one of observations)
    state: Optional[MonitorState] = None           # None when the monitor is off
    events: list = field(default_factory=list)     # the monitor's new event records of this frame
    stage_ms: dict = field(default_factory=dict)   # stage -> milliseconds of this frame
    model: str = ""                                # the backend that ran (overlay, dump, status bar)
    provider: str = ""
    fps: float = float("nan")                      # processing rate (wall clock between frames, smoothed)


@dataclass
class FaceEstimate:
    """One face backend's output for one face crop, in image pixels, before smoothing. Fields a
    backend does not measure stay None / nan (a 3DMM has no eyelids; the face mesh no dense BFM)."""
    landmarks: Optional[np.ndarray] = None    # (68, 3) float32
    vertices: Optional[np.ndarray] = None     # (V, 3) float32
    rotation: Optional[np.ndarray] = None     # (3, 3)
    scale: float = float("nan")
    yaw: float = float("nan")
    pitch: float = float("nan")
    roll: float = float("nan")
    mesh_points: Optional[np.ndarray] = None  # (478, 3) float32
    eye_open: tuple[float, float] = (float("nan"), float("nan"))
    mouth_open: float = float("nan")
    blendshapes: Optional[dict] = None
    eye_visibility: tuple[float, float] = (float("nan"), float("nan"))  # see FaceObservation
    eye_available: tuple[Optional[bool], Optional[bool]] = (None, None)
    eye_unavailable_why: Optional[str] = None


@dataclass
class Crop:
    """Where one tracked face is cut from the frame for the backends."""
    roi: np.ndarray                        # (4,) tracker's square box [sx, sy, ex, ey] (3DDFA-V2 policies)
    mesh_box: Optional[np.ndarray] = None  # (4,) box from the face's previous 478 points (mediapipe's
    #                                        landmark ROI policy); None = use roi
    roll: float = 0.0                      # radians the face is rolled in the image (0 = level)


class FaceBackend(Protocol):
    """What the pipeline runs on the face crops of a frame: a 3DMM (app.model3dmm.Model3DMM) or the
    face landmark model (app.facemesh.MeshBackend). ``estimate`` returns one FaceEstimate per crop
    (None: no face in that crop) and its own stage times in ms; ``vertices=False`` asks for no dense
    mesh (nobody draws this frame), ``blendshapes=False`` for no blendshape scores (no output
    writes them)."""
    name: str        # shown in the overlay, the dump and the log
    provider: str    # what really runs it ("CPU", "CUDA", "LiteRT CPU")
    triangles: Optional[np.ndarray]  # (T, 3) int32 of the dense vertices, when it has them

    def estimate(self, image: np.ndarray, crops: Sequence[Crop], vertices: bool = True,
                 blendshapes: bool = True) -> tuple[list[Optional[FaceEstimate]], dict[str, float]]: ...

    def close(self) -> None: ...


@dataclass
class Alert:
    kind: str        # looking_around | time_sharing | eyes_closed | drowsy | yawning | nodding | no_driver
    level: str       # warning | critical (MonitorState.emergency: "emergency")
    since: float     # timestamp (s) the alert started
    values: dict = field(default_factory=dict)  # the values that triggered it


@dataclass
class MonitorState:
    timestamp: float = 0.0
    calibrated: bool = False
    calibrating: bool = True
    neutral_yaw: float = float("nan")
    neutral_pitch: float = float("nan")
    neutral_gaze_yaw: float = float("nan")    # the driver's straight-ahead gaze (learned with the neutral pose)
    neutral_gaze_pitch: float = float("nan")
    alerts: list[Alert] = field(default_factory=list)   # active alerts, most severe first
    counters: dict = field(default_factory=dict)        # blinks, yawns, nods, perclos, blink_rate ...
    signals: dict = field(default_factory=dict)         # current gauge values (yaw_offset, eye_open, perclos ...)
    events: tuple = ()    # the new events of this frame (start / end / unknown_start / unknown_end dicts)
    unavailable: dict = field(default_factory=dict)     # what the monitor reports it cannot see: {"eyes": "occluded", ...}
    # the unresponsive driver (kind "unresponsive", level "emergency") while it lasts: the hand-over
    # point to a car's emergency function; kept apart from ``alerts``, which it escalates
    emergency: Optional[Alert] = None

    @property
    def top_alert(self) -> Optional[Alert]:
        return self.alerts[0] if self.alerts else None


@dataclass
class SourceEvent:
    kind: str        # "lost": a live source stopped delivering; "back": it delivers again
    t: float         # source clock (seconds, like Frame.timestamp) when it happened
    message: str     # one line for the user ("camera 0: stopped delivering frames ...")
    lost_s: float = 0.0   # "back": how long the source was lost
