"""Face tracks between detections: IDs, IoU matching, crop boxes (3DDFA-V2 policies).

On a detection frame each detection either continues the track whose last face box overlaps it
most (IoU >= ``iou_match``) or starts a new track; tracks no detection confirms end. The crop box
is then geometry.roi_box_from_bbox(detection box). On the frames in between, each track's crop
comes from its previous landmarks (geometry.roi_box_from_landmarks), as 3DDFA-V2's video demo
does. A track whose model output is implausible (``lost``) ends and forces a detection on the
next frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from app.core import geometry
from app.detect import Detection, iou


@dataclass
class Track:
    id: int
    roi: np.ndarray                        # crop box [sx, sy, ex, ey] for the current frame
    box: np.ndarray                        # last face box x0, y0, x1, y1
    score: float = float("nan")            # last detector score
    landmarks: Optional[np.ndarray] = None # last (68, 3) landmarks in image pixels (unsmoothed)
    detected: bool = True                  # the current roi comes from a detection
    age: int = 0                           # frames processed
    state: dict = field(default_factory=dict)  # per-track resources (filters, face-mesh graph)


def landmark_box(lm: np.ndarray) -> np.ndarray:
    return np.array([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()], dtype=np.float64)


def plausible(lm: np.ndarray, roi, image_shape) -> bool:
    """Model output that still looks like a face in its crop (the 3DMM has no confidence score)."""
    if lm is None or not np.all(np.isfinite(lm)):
        return False
    b = landmark_box(lm)
    side = float(roi[2] - roi[0])
    w, h = b[2] - b[0], b[3] - b[1]
    if side <= 0 or not (0.15 * side < max(w, h) < 1.5 * side):
        return False
    H, W = image_shape[:2]
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    return -0.25 * W < cx < 1.25 * W and -0.25 * H < cy < 1.25 * H


class Tracker:
    def __init__(self, detect_every: int = 5, max_faces: int = 4, iou_match: float = 0.3,
                 on_end: Optional[Callable[[Track], Any]] = None, landmark_crop_scale: float = 1.0):
        self.detect_every = max(1, int(detect_every))
        # the crop from the previous landmarks scaled about its centre (Settings.landmark_crop_scale)
        self.landmark_crop_scale = float(landmark_crop_scale)
        self.max_faces = max(1, int(max_faces))
        self.iou_match = float(iou_match)
        self.on_end = on_end
        self.tracks: list[Track] = []
        self._next_id = 0
        self._since_detect = None   # frames since the last detection; None = never
        self._force = True
        self.detections = 0         # detector calls

    def needs_detection(self) -> bool:
        return (self._force or not self.tracks or self._since_detect is None
                or self._since_detect >= self.detect_every)

    def step(self, image: np.ndarray, detect: Callable[[np.ndarray, int], list[Detection]]) -> list[Track]:
        """The tracks to process on this frame, each with its crop box."""
        if self.needs_detection():
            dets = detect(image, self.max_faces)
            self.detections += 1
            self._since_detect = 1
            self._force = False
            self._match(dets)
        else:
            self._since_detect += 1
            for t in self.tracks:
                t.roi = geometry.roi_box_from_landmarks(t.landmarks)
                if self.landmark_crop_scale != 1.0:
                    t.roi = geometry.scale_roi(t.roi, self.landmark_crop_scale)
                t.detected = False
        return list(self.tracks)

    def _match(self, dets: list[Detection]) -> None:
        pairs = sorted(((iou(d.box, t.box), di, ti) for di, d in enumerate(dets)
                        for ti, t in enumerate(self.tracks)), reverse=True)
        used_d, used_t, kept = set(), set(), []
        for v, di, ti in pairs:
            if v < self.iou_match or di in used_d or ti in used_t:
                continue
            used_d.add(di)
            used_t.add(ti)
            t, d = self.tracks[ti], dets[di]
            t.box, t.score, t.roi, t.detected = d.box.copy(), d.score, geometry.roi_box_from_bbox(d.box), True
            kept.append(t)
        for ti, t in enumerate(self.tracks):
            if ti not in used_t:
                self._end(t)
        for di, d in enumerate(dets):
            if di not in used_d and len(kept) < self.max_faces:
                kept.append(Track(id=self._next_id, roi=geometry.roi_box_from_bbox(d.box), box=d.box.copy(),
                                  score=d.score))
                self._next_id += 1
        kept.sort(key=lambda t: t.id)
        self.tracks = kept

    def update(self, track: Track, landmarks: Optional[np.ndarray], ok: bool) -> None:
        """Record the model output of a track; ``ok=False`` ends it and forces a detection next frame."""
        if not ok or landmarks is None:
            self.lose(track)
            return
        track.landmarks = landmarks
        track.box = landmark_box(landmarks)
        track.age += 1

    def request_detection(self) -> None:
        """Run the detector on the next frame (tracks it does not confirm end there)."""
        self._force = True

    def lose(self, track: Track) -> None:
        if track in self.tracks:
            self.tracks.remove(track)
            self._end(track)
        self._force = True

    def _end(self, track: Track) -> None:
        if self.on_end is not None:
            self.on_end(track)

    def reset(self) -> None:
        for t in list(self.tracks):
            self._end(t)
        self.tracks = []
        self._force = True
        self._since_detect = None
