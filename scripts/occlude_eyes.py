"""Make test clips whose eyes are hidden: dark sunglasses, a cap brim, a hand, painted frame by frame
from the app's own face landmarks (the 478-point landmark model on the clean frame).

    python scripts/occlude_eyes.py ../shared/media/clips/expressions_d13.mp4 out.mp4 --variant sunglasses
    python scripts/occlude_eyes.py IN OUT --variant sunglasses --on 3 --off 18 --seconds 30
    python scripts/occlude_eyes.py IN OUT --variant cap|hand|none --hold-closed 4.0:7

Variants (each from the clean frame's landmarks of the subject's eye contours and brows):
- ``sunglasses``: one dark lens per eye (an ellipse 1.7 x 1.25 eye widths around the eye centre,
  turned with the eye line) and a bridge, blended at ``--opacity`` (0.93: 7 % of the eye shows
  through, as through a dark category-3 lens) with a faint grey rim;
- ``cap``: a cap brim: an opaque dark band across the face from above the brows to 0.45 eye
  widths below the eye centres (what a peaked cap pulled low hides from a camera below the eyes);
- ``hand``: a flat hand across the eyes: the cheek's own skin colour (median below the eyes),
  from the brows to 0.5 eye widths below the eye centres, with four darker finger creases;
- ``glare``: a reflection washing the eyes out (light on glasses): per eye a white ellipse 1.4 x
  0.9 eye widths, blended at ``--opacity`` in its middle and fading to nothing at its rim;
- ``none``: nothing painted (the same clip re-encoded and looped, the control).

``--on S`` / ``--off S``: the painting starts at S s (default 0) and ends at S s (default never),
so ``--off`` half-way gives "the lenses come off". ``--seconds S`` makes the clip S s long by
playing the source forwards and backwards (ping-pong, no jump in the face's position).
``--hold-closed T:D``: from T s, the frame of the source with the lowest eyelid opening is held
for D s (eyes closed for D s; the painting, if any, is applied on top).
The output is H.264 (PyAV, libx264 crf 18) at the source's frame rate; its frame i is at i / fps.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# mediapipe face-mesh eye contours (16 points each) and brows (the subject's left / right)
EYE_CONTOUR = (
    (362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398),
    (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
)
BROWS = ((336, 296, 334, 293, 300), (70, 63, 105, 66, 107))
CORNERS = ((362, 263), (133, 33))
CHEEK = (330, 101)   # points below each eye, on the cheek

VARIANTS = ("sunglasses", "cap", "hand", "glare", "none")


def read_frames(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"error: cannot open the video {path}: check the path")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    if not frames:
        raise SystemExit(f"error: {path} holds no decodable frame")
    return frames, float(fps)


def landmarks(frames: list[np.ndarray], fps: float) -> list[np.ndarray | None]:
    """The 478 points of the largest face per frame from the app's pipeline (face-mesh mode, no
    smoothing), None where it finds no face."""
    from app.core.types import Frame
    from app.pipeline import Pipeline
    from app.settings import MESH_MODEL, Settings

    pipe = Pipeline(Settings(model=MESH_MODEL, monitor=None, smoothing=False))
    out = []
    try:
        for i, img in enumerate(frames):
            obs = pipe.process(Frame(img, i / fps, i)).observations
            o = max(obs, key=lambda f: f.area) if obs else None
            out.append(None if o is None or o.mesh_points is None else np.asarray(o.mesh_points, np.float64))
    finally:
        pipe.close()
    return out


def _eye_geometry(p: np.ndarray, e: int) -> tuple[np.ndarray, float, float]:
    """(centre, width, angle in degrees) of eye e."""
    a, b = p[CORNERS[e][0], :2], p[CORNERS[e][1], :2]
    c = p[list(EYE_CONTOUR[e]), :2].mean(axis=0)
    d = b - a if e == 0 else a - b
    return c, float(np.hypot(*d)), math.degrees(math.atan2(d[1], d[0]))


def _band(p: np.ndarray, above: float, below: float) -> np.ndarray:
    """A quadrilateral across both eyes: from ``above`` eye widths above the eye line to ``below``
    under it, 1.1 eye widths beyond each outer corner."""
    cl, wl, _ = _eye_geometry(p, 0)
    cr, wr, _ = _eye_geometry(p, 1)
    w = 0.5 * (wl + wr)
    u = cl - cr
    u /= np.linalg.norm(u)
    n = np.array([-u[1], u[0]])           # image down for an upright face
    if n[1] < 0:
        n = -n
    left, right = cl + 1.1 * w * u, cr - 1.1 * w * u
    return np.array([left - above * w * n, right - above * w * n, right + below * w * n,
                     left + below * w * n]).astype(np.int32)


def paint(img: np.ndarray, p: np.ndarray, variant: str, opacity: float) -> np.ndarray:
    if variant == "none":
        return img
    out = img.copy()
    if variant == "sunglasses":
        mask = np.zeros(img.shape[:2], np.uint8)
        cs = []
        for e in (0, 1):
            c, w, ang = _eye_geometry(p, e)
            cs.append((c, w))
            cv2.ellipse(mask, (int(round(c[0])), int(round(c[1]))), (int(0.85 * w), int(0.62 * w)),
                        ang, 0, 360, 255, -1, cv2.LINE_AA)
        (c0, w0), (c1, _) = cs
        cv2.line(mask, tuple(int(v) for v in c0), tuple(int(v) for v in c1), 255, max(2, int(0.12 * w0)))
        m = (mask.astype(np.float32) / 255.0 * opacity)[..., None]
        lens = np.full_like(img, (18, 16, 14))
        out = (img * (1 - m) + lens * m).astype(np.uint8)
        for e in (0, 1):
            c, w, ang = _eye_geometry(p, e)
            cv2.ellipse(out, (int(round(c[0])), int(round(c[1]))), (int(0.85 * w), int(0.62 * w)),
                        ang, 0, 360, (60, 60, 60), max(1, int(0.05 * w)), cv2.LINE_AA)
    elif variant == "glare":
        mask = np.zeros(img.shape[:2], np.float32)
        for e in (0, 1):
            c, w, ang = _eye_geometry(p, e)
            cv2.ellipse(mask, (int(round(c[0])), int(round(c[1]))), (int(0.7 * w), int(0.45 * w)),
                        ang, 0, 360, 1.0, -1, cv2.LINE_AA)
            k = 2 * int(0.25 * w) + 1
        mask = cv2.GaussianBlur(mask, (k, k), 0)
        m = (np.clip(mask, 0, 1) * opacity)[..., None]
        out = (img * (1 - m) + 255.0 * m).astype(np.uint8)
    elif variant == "cap":
        cv2.fillPoly(out, [_band(p, 2.5, 0.45)], (52, 40, 32), cv2.LINE_AA)
    elif variant == "hand":
        h, w_img = img.shape[:2]
        samples = []
        for k in CHEEK:
            x, y = int(p[k, 0]), int(p[k, 1])
            samples.append(img[max(0, y - 3):min(h, y + 4), max(0, x - 3):min(w_img, x + 4)].reshape(-1, 3))
        skin = np.median(np.concatenate(samples), axis=0)
        quad = _band(p, 0.9, 0.5)
        cv2.fillPoly(out, [quad], tuple(float(v) for v in skin), cv2.LINE_AA)
        for f in (0.2, 0.4, 0.6, 0.8):       # finger creases along the hand
            a = (quad[0] + f * (quad[1] - quad[0])).astype(int)
            b = (quad[3] + f * (quad[2] - quad[3])).astype(int)
            cv2.line(out, tuple(int(v) for v in a), tuple(int(v) for v in b),
                     tuple(float(v) * 0.7 for v in skin), 2, cv2.LINE_AA)
    else:
        raise ValueError(variant)
    return out


def write_h264(path: Path, frames, fps: float) -> None:
    import av
    from fractions import Fraction

    tmp = path.with_name(path.name + ".tmp.mp4")
    with av.open(str(tmp), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        h, w = frames[0].shape[:2]
        s.width, s.height, s.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        s.options = {"crf": "18", "preset": "veryfast"}
        for img in frames:
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:s.height, :s.width]), format="bgr24")
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    tmp.replace(path)


def make(src: Path, dst: Path, variant: str, on: float = 0.0, off: float = math.inf,
         seconds: float | None = None, opacity: float = 0.93, hold_closed: tuple | None = None) -> dict:
    """Write the clip; returns what was made (fps, frames, painted frame range, hold range)."""
    frames, fps = read_frames(src)
    pts = landmarks(frames, fps)
    n_src = len(frames)
    n = n_src if seconds is None else max(1, int(round(seconds * fps)))
    period = 2 * n_src - 2 if n_src > 1 else 1
    order = []
    for i in range(n):
        k = i % period
        order.append(k if k < n_src else period - k)
    hold = None
    if hold_closed is not None:
        from app.facemesh import eye_openness

        opn = [max(eye_openness(q)) if q is not None else math.inf for q in pts]
        shut = int(np.argmin(opn))
        t_h, d_h = hold_closed
        a, b = int(round(t_h * fps)), int(round((t_h + d_h) * fps))
        order = [shut if a <= i < b else k for i, k in enumerate(order)]
        hold = (a, b - 1, shut, opn[shut])
    out, painted = [], []
    for i, k in enumerate(order):
        img = frames[k]
        t = i / fps
        if variant != "none" and on - 1e-9 <= t < off - 1e-9 and pts[k] is not None:
            img = paint(img, pts[k], variant, opacity)
            painted.append(i)
        out.append(img)
    write_h264(dst, out, fps)
    return {"fps": fps, "frames": n, "painted": (painted[0], painted[-1]) if painted else None,
            "painted_frames": len(painted), "hold": hold}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--variant", choices=VARIANTS, default="sunglasses")
    ap.add_argument("--on", type=float, default=0.0, help="seconds: painting starts (default 0)")
    ap.add_argument("--off", type=float, default=math.inf, help="seconds: painting ends (default never)")
    ap.add_argument("--seconds", type=float, default=None, help="clip length (ping-pong the source)")
    ap.add_argument("--opacity", type=float, default=0.93)
    ap.add_argument("--hold-closed", default=None, help="T:D: hold the most closed frame from T s for D s")
    a = ap.parse_args(argv)
    if not a.src.is_file():
        print(f"error: no such video {a.src}: give a clip (e.g. ../shared/media/clips/expressions_d13.mp4)",
              file=sys.stderr)
        return 2
    hold = None
    if a.hold_closed:
        try:
            hold = tuple(float(v) for v in a.hold_closed.split(":"))
            assert len(hold) == 2
        except (ValueError, AssertionError):
            print(f"error: --hold-closed {a.hold_closed!r}: give T:D in seconds, e.g. 4:7", file=sys.stderr)
            return 2
    info = make(a.src, a.dst, a.variant, a.on, a.off, a.seconds, a.opacity, hold)
    print(f"{a.dst}: {info['frames']} frames at {info['fps']:g} fps, {a.variant} on frames "
          f"{info['painted']} ({info['painted_frames']} frames)"
          + (f", closed frame {info['hold'][2]} held on frames {info['hold'][0]}-{info['hold'][1]}"
             if info["hold"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
