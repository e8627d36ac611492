"""Eye gaze from the face mesh's iris points and the head rotation (numpy only, no state).

Two steps, so that the caller can smooth the per-eye angles in between:

- :func:`eye_angles` ``(mesh (478, 3) image pixels, R, eye_open) -> (2, 2)`` eye-in-head
  ``[[yaw, pitch] left, [yaw, pitch] right]`` in degrees for the subject's own left / right eye.
  Offsets are taken from the midpoint of the two eye corners, in the head's frame (the mesh points
  turned by R^T) and in units of the corner-to-corner eye width, and read as the rotation of an
  eyeball whose iris centre sits ``RADIUS_YAW`` / ``RADIUS_PITCH`` eye widths from its centre of
  rotation: ``sin(angle) = offset / radius``. Horizontal: the iris centre. Vertical: the mean of the
  iris centre and the centre of the lid opening (the mid upper and lower lid points), minus
  ``VERTICAL_OFFSET``: the face mesh moves its iris little in height (an eyes-down glance on
  shared clip d3 moves it 0.057 eye widths), the upper lid follows the eye down (0.14), but a
  squint or a smile lowers the upper lid too; the lid-opening centre stays put in a smile
  (the lower lid rises as the upper one falls) and drops 0.066 on the d3 glance, with the same
  frame-to-frame noise as the iris (0.01 eye widths on a steady gaze). NaN for an eye that is
  closed (openness below ``MIN_EYE_OPEN``) or on the far side of a head turned beyond
  ``FAR_EYE_MAX_YAW``.
- :func:`gaze_from_angles` ``(angles, R, mesh) -> Gaze``: each eye's direction in the head frame
  turned by R into the camera frame, and the mean of the eyes that are measured, as a gaze yaw /
  pitch in the head-pose convention (so that eyes looking straight out of the face give exactly
  the head's yaw / pitch).

:func:`blendshape_eye_angles` is a second eye-in-head source, from MediaPipe's eyeLook* blendshape
scores (gain x signal per axis, the same openness and far-eye rules); app.eval.gaze_eval scores
it against the iris source (docs/driver-monitoring.md, "Iris or eyeLook* blendshapes").

Frames and signs (the ones of app.core.geometry): the camera frame of R is x right, y up, z
towards the camera; the mesh's image coordinates (x right, y down, z away) are turned into it
first. Angles follow the AFLW2000 ``Pose_Para`` head-pose convention: yaw > 0 = towards the
subject's right (the image's left for a frontal face), pitch > 0 = up. A direction (x, y, z)
has yaw = asin(-x), pitch = atan2(y, z), as the face's forward axis has for the head pose.
"""
from __future__ import annotations

import math

import numpy as np

from app.core.types import Gaze

# mediapipe face-mesh topology with the refined iris (478 points). Subject's left / right as in
# app.facemesh (LEFT_EYE = 362/263, RIGHT_EYE = 33/133); 468 is the iris centre next to 33/133
# (the subject's right eye), 473 the one next to 362/263, each followed by its 4 ring points.
IRIS_CENTRE = (473, 468)                 # (left, right)
EYE_CORNERS = ((362, 263), (133, 33))    # (inner, outer) per eye, (left, right)
EYE_LIDS = ((386, 374), (159, 145))       # (upper, lower) mid-lid points per eye, (left, right)
NUM_POINTS = 478

# Distance from the eyeball's centre of rotation to the iris centre, in units of the eye's
# corner-to-corner width: anatomy gives ~10 mm (rotation centre ~13.5 mm behind the cornea apex,
# iris plane ~3.6 mm behind it; Gullstrand's schematic eye) over a ~28 mm palpebral fissure =
# 0.36. The face mesh's points move less than a real eye, so each axis has its own radius,
# measured by fixation: on the labelled frames where the eyes stay on the camera while the head
# moves (tests/data/gaze_labels.json "on", 4 clips, 580 frames with a gaze), the eye-in-head angle read with
# 0.36 follows the head with slope -0.79 (yaw) and -0.45 (pitch) instead of -1 (the eyes
# counter-rotate exactly), so the radii are 0.36 x 0.79 and 0.36 x 0.45. Re-measured in
# tests/test_gaze.py. [anatomy, measured]
RADIUS_YAW = 0.283
RADIUS_PITCH = 0.164

# The vertical offset (eye widths, iris and lid-opening centre averaged) of a gaze straight out of
# the face: both sit above the corner line. Mean over the frames looking into the camera with the
# head frontal on shared clips d0 (0-9), d3 (0-4), d13 and d18: 0.060-0.10 (iris), 0.051-0.079
# (lid opening). It only matters for the absolute direction (the overlay's rays); the monitor uses
# offsets from the driver's own neutral gaze. [measured]
VERTICAL_OFFSET = 0.07

# An eye whose openness (app.facemesh.eye_openness) is below this gives no gaze (NaN): the lids
# cover the iris. Shut eyes read 0.074-0.10 (one frame 0.16) and open ones 0.24-0.47 on the
# labelled clip frames (app.monitor.settings eye_shut_level); 0.15 is below every open reading
# and above the shut ones. [measured]
MIN_EYE_OPEN = 0.15

# With the head turned more than this (degrees of head yaw) the eye on the far side is hidden
# behind the nose bridge and its mesh points are guesses: only the near eye is used. [MINE]
FAR_EYE_MAX_YAW = 35.0

_FLIP = np.array([1.0, -1.0, -1.0])      # image (x right, y down, z away) -> camera (y up, z towards)
_NAN2 = (math.nan, math.nan)


def eye_angles(mesh: np.ndarray, R: np.ndarray, eye_open=_NAN2, head_yaw: float = math.nan) -> np.ndarray:
    """(2, 2) eye-in-head [[yaw, pitch] of the left eye, [yaw, pitch] of the right eye], degrees.

    ``mesh``: (478, 3) face-mesh points in image pixels (fewer points, no iris: all NaN); ``R``:
    the head rotation (columns = the face's x right, y up, z forward axes in the camera frame);
    ``eye_open``: (left, right) openness, an eye below MIN_EYE_OPEN (or NaN) is NaN here;
    ``head_yaw``: degrees, to drop the far eye of a turned head (NaN = keep both)."""
    out = np.full((2, 2), np.nan)
    if mesh is None or R is None or len(mesh) < NUM_POINTS or not np.all(np.isfinite(R)):
        return out
    Rt = np.asarray(R, dtype=np.float64).T
    mesh = np.asarray(mesh, dtype=np.float64)
    for e in (0, 1):
        op = eye_open[e]
        if not (op >= MIN_EYE_OPEN):       # NaN too
            continue
        # head yaw > 0 turns the face to the subject's right: the right eye (e = 1) goes far
        if head_yaw > FAR_EYE_MAX_YAW and e == 1 or head_yaw < -FAR_EYE_MAX_YAW and e == 0:
            continue
        inner, outer = EYE_CORNERS[e]
        up, lo = EYE_LIDS[e]
        a, b = mesh[inner], mesh[outer]
        w = math.sqrt(float((b[0] - a[0]) ** 2 + (b[1] - a[1]) ** 2 + (b[2] - a[2]) ** 2))
        if not w > 1e-6:
            continue
        mid = 0.5 * (a + b)
        k = 1.0 / w
        d_iris = Rt @ ((mesh[IRIS_CENTRE[e]] - mid) * _FLIP) * k
        d_lids = Rt @ ((0.5 * (mesh[up] + mesh[lo]) - mid) * _FLIP) * k
        sx = -d_iris[0] / RADIUS_YAW
        sy = (0.5 * (d_iris[1] + d_lids[1]) - VERTICAL_OFFSET) / RADIUS_PITCH
        out[e, 0] = math.degrees(math.asin(max(-1.0, min(1.0, sx))))
        out[e, 1] = math.degrees(math.asin(max(-1.0, min(1.0, sy))))
    return out


# MediaPipe's eyeLook* blendshapes per eye (its Left / Right = the subject's, like eye_open): the
# horizontal signal in the yaw sign (towards the subject's right > 0: the left eye looks in, the
# right one out) and the vertical one in the pitch sign (up > 0). Signs checked against the iris on
# shared clip d0's side glances: eyeLookOutLeft 0.94 / eyeLookOutRight 0.05 with the iris 52-66 deg
# towards the subject's left. [measured]
LOOK_BLENDSHAPES = (
    (("eyeLookInLeft", "eyeLookOutLeft"), ("eyeLookUpLeft", "eyeLookDownLeft")),
    (("eyeLookOutRight", "eyeLookInRight"), ("eyeLookUpRight", "eyeLookDownRight")),
)


def look_signals(blendshapes) -> np.ndarray:
    """(2, 2) [[horizontal, vertical] left, [..] right] eyeLook* differences in -1..1, signed as
    yaw / pitch (see LOOK_BLENDSHAPES); all NaN without blendshapes."""
    out = np.full((2, 2), np.nan)
    if blendshapes:
        for e, ((hp, hn), (vp, vn)) in enumerate(LOOK_BLENDSHAPES):
            out[e, 0] = blendshapes[hp] - blendshapes[hn]
            out[e, 1] = blendshapes[vp] - blendshapes[vn]
    return out


def blendshape_eye_angles(blendshapes, gain_yaw: float, gain_pitch: float, eye_open=_NAN2,
                          head_yaw: float = math.nan) -> np.ndarray:
    """(2, 2) eye-in-head [[yaw, pitch] left, [yaw, pitch] right] in degrees from the eyeLook*
    blendshapes: ``gain_yaw`` / ``gain_pitch`` (degrees per unit of look_signals) times the
    signals. Eyes are NaN by the same rules as :func:`eye_angles` (openness below MIN_EYE_OPEN,
    the far eye of a head turned beyond FAR_EYE_MAX_YAW), so both sources judge the same frames."""
    out = look_signals(blendshapes) * np.array([gain_yaw, gain_pitch])
    for e in (0, 1):
        if not (eye_open[e] >= MIN_EYE_OPEN) or (
                head_yaw > FAR_EYE_MAX_YAW and e == 1 or head_yaw < -FAR_EYE_MAX_YAW and e == 0):
            out[e] = math.nan
    return out


def direction(yaw: float, pitch: float) -> np.ndarray:
    """Unit vector (x right, y up, z forward) of a yaw / pitch in the head-pose convention: the
    forward axis (third column) of app.core.geometry.rotation_from_pose_aflw(pitch, yaw, 0)."""
    y, p = math.radians(yaw), math.radians(pitch)
    return np.array([-math.sin(y), math.sin(p) * math.cos(y), math.cos(p) * math.cos(y)])


def angles_of(v: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees of a direction, both within +-90: the inverse of :func:`direction`
    for every direction it can give (z >= 0, towards the camera's side).

    A direction pointing away from the camera (z < 0: a head turned ~70 deg with the near eye
    turned further the same way) has no (yaw, pitch) within +-90 in this convention; atan2(y, z)
    would read its pitch as ~180 deg (a gaze "187 deg down" at a 70 deg head turn). Its pitch is
    read as atan2(y, |z|), the elevation angle of the direction folded back onto the camera's
    side: continuous across z = 0, the sign of its vertical component, never beyond +-90."""
    n = float(np.linalg.norm(v))
    if not n > 0:
        return _NAN2
    x, y, z = (float(t) / n for t in v)
    return math.degrees(math.asin(max(-1.0, min(1.0, -x)))), math.degrees(math.atan2(y, abs(z)))


def gaze_from_angles(angles: np.ndarray, R: np.ndarray, mesh=None) -> Gaze:
    """The gaze of both eyes: each eye's eye-in-head direction turned by R into the camera frame;
    the gaze direction is the normalised mean of the measured eyes (NaN when neither is).
    ``mesh`` (image pixels) gives the rays' origins, the iris centres (NaN without it)."""
    angles = np.asarray(angles, dtype=np.float64).reshape(2, 2)
    dirs = np.full((2, 3), np.nan)
    ok = np.isfinite(angles).all(axis=1)
    if R is not None and np.all(np.isfinite(R)):
        Rm = np.asarray(R, dtype=np.float64)
        for e in (0, 1):
            if ok[e]:
                dirs[e] = Rm @ direction(angles[e, 0], angles[e, 1])
    seen = np.isfinite(dirs).all(axis=1)
    if seen.any():
        g = dirs[seen].sum(axis=0)
        g /= np.linalg.norm(g)
        yaw, pitch = angles_of(g)
        ey = float(np.mean(angles[seen, 0]))
        ep = float(np.mean(angles[seen, 1]))
    else:
        g = np.full(3, np.nan)
        yaw = pitch = ey = ep = math.nan
    origins = np.full((2, 2), np.nan)
    if mesh is not None and len(mesh) >= NUM_POINTS:
        origins = np.asarray(mesh, dtype=np.float64)[list(IRIS_CENTRE), :2].copy()
    return Gaze(yaw=yaw, pitch=pitch, direction=g, eye_yaw=ey, eye_pitch=ep,
                eyes=angles.copy(), eye_directions=dirs, origins=origins)
