"""Eye/mouth stage options, timed on the same face crops of one clip: prints a table (ms per face).

    python scripts/bench_landmarks.py --video ../shared/media/clips/expressions_d13.mp4 --frames 150

Rows (each where its runtime is importable in this Python):
- LiteRT: the bare face_landmarks_detector.tflite of the shipped face_landmarker.task on the
  tracker-style 256 x 256 crop (what the app runs), 1 and 2 threads, with / without the
  blendshape model (app.facemesh.MeshLandmarker);
- the bare model on the same prepared inputs, LiteRT vs onnxruntime CPU (converted to ONNX by
  scripts/tflite_to_onnx.py, when the tflite package is installed), 1 and 2 threads;
- mediapipe Tasks FaceLandmarker (VIDEO mode, the same .task) on the ~500 px face crop, on a
  256 px crop and on the whole frame;
- legacy mediapipe.solutions FaceMesh(refine_landmarks=True) on the ~500 px crop (mediapipe
  0.10.x only: run this script with such a venv's python for that row).
The face box comes from the app's detector on the first frame and is kept for every frame.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def frames_of(path: str, n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(path)
    out = []
    while len(out) < n:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    if not out:
        raise SystemExit(f"bench_landmarks: no frame could be read from {path}")
    return out


def timed(fn, items, warm: int = 10) -> list[float]:
    for x in items[:warm]:
        fn(x)
    ms = []
    for x in items:
        t = time.perf_counter()
        fn(x)
        ms.append((time.perf_counter() - t) * 1e3)
    return ms


def square_box(box, scale: float) -> np.ndarray:
    x0, y0, x1, y1 = box
    c = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    half = scale * max(x1 - x0, y1 - y0) / 2
    return np.r_[c - half, c + half]


def crop(img, box, size):
    from app.core import geometry

    return cv2.warpAffine(img, geometry.crop_affine(box, size), (size, size))


def bare_rows(frames, mbox, add) -> None:
    """The bare landmark model on the same prepared 256 px inputs: LiteRT vs onnxruntime (the model
    converted by scripts/tflite_to_onnx.py; rows only where the tflite package is installed)."""
    from ai_edge_litert.interpreter import Interpreter

    from app.assets import task_member
    from app.core import geometry
    from app.facemesh import CROP_SIZE, LANDMARK_MODEL

    M = geometry.crop_affine(mbox, CROP_SIZE)
    xs = [(cv2.warpAffine(f, M, (CROP_SIZE, CROP_SIZE))[None, :, :, ::-1] / 255.0).astype(np.float32) for f in frames]
    model = task_member(LANDMARK_MODEL)
    for threads in (1, 2):
        it = Interpreter(model_content=model, num_threads=threads)
        it.allocate_tensors()
        i_in = it.get_input_details()[0]["index"]

        def run_lite(x):
            it.set_tensor(i_in, x)
            it.invoke()
        add(f"bare landmark model, LiteRT, {threads} thread{'s' * (threads > 1)}", timed(run_lite, xs),
            "prepared input, model only")
    try:
        import tflite  # noqa: F401
    except ImportError:
        print("(onnxruntime rows skipped: pip install tflite for scripts/tflite_to_onnx.py)", file=sys.stderr)
        return
    import importlib.util

    import onnxruntime as ort

    spec = importlib.util.spec_from_file_location("tflite_to_onnx", ROOT / "scripts" / "tflite_to_onnx.py")
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    onnx_bytes = conv.convert(model).SerializeToString()
    for threads in (1, 2):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
        add(f"bare landmark model, onnxruntime CPU (converted), {threads} thread{'s' * (threads > 1)}",
            timed(lambda x: sess.run(None, {"image": x}), xs), "prepared input, model only")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench_landmarks.py", description=__doc__.splitlines()[0])
    ap.add_argument("--video", required=True)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args(argv)
    frames = frames_of(a.video, a.frames)
    rows = []

    def add(name, ms, note=""):
        rows.append({"option": name, "median_ms": statistics.median(ms),
                     "p95_ms": float(np.percentile(ms, 95)), "n": len(ms), "note": note})

    box = None
    try:
        import ai_edge_litert  # noqa: F401  (the app's runtime; absent in a mediapipe 0.10 venv)

        from app.detect import FaceDetector
        from app.facemesh import MeshLandmarker, mesh_box_from_detection
    except ImportError as e:   # an older checkout / venv: only the rows its mediapipe can run
        print(f"(app's LiteRT rows skipped: {e})", file=sys.stderr)
    else:
        det = FaceDetector()
        dets = det(frames[0])
        if not dets:
            raise SystemExit("bench_landmarks: no face on the first frame")
        box = dets[0].box
        mbox = mesh_box_from_detection(box)
        for threads in (1, 2):
            for bs in (False, True):
                lm = MeshLandmarker(threads=threads, blendshapes=bs)
                add(f"LiteRT landmarks 256 px crop, {threads} thread{'s' * (threads > 1)}"
                    + (" + blendshapes" if bs else ""), timed(lambda f: lm(f, mbox), frames),
                    "warp + model (+ 146-point blendshape model)")
        bare_rows(frames, mbox, add)
    if box is None:
        from mediapipe.python.solutions.face_detection import FaceDetection

        with FaceDetection(model_selection=0) as fd:
            h, w = frames[0].shape[:2]
            rb = fd.process(cv2.cvtColor(frames[0], cv2.COLOR_BGR2RGB)).detections[0].location_data.relative_bounding_box
            box = np.array([rb.xmin * w, rb.ymin * h, (rb.xmin + rb.width) * w, (rb.ymin + rb.height) * h])
    big = square_box(box, 1.2)   # the ~500 px face crop of the earlier measurement on d13
    side = int(round(big[2] - big[0]))

    import mediapipe as mp

    try:
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError:
        vision = None
    task = ROOT / "assets" / "models" / "face_landmarker.task"
    if vision is not None and task.is_file():
        for label, prep in ((f"{side} px face crop", lambda f: crop(f, big, side)),
                            ("256 px face crop", lambda f: crop(f, big, 256)),
                            ("whole frame", lambda f: f)):
            fl = vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(task)), running_mode=vision.RunningMode.VIDEO,
                output_face_blendshapes=True, num_faces=1))
            ts = [0]
            imgs = [np.ascontiguousarray(cv2.cvtColor(prep(f), cv2.COLOR_BGR2RGB)) for f in frames]

            def run(img):
                ts[0] += 33
                fl.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=img), ts[0])
            add(f"mediapipe Tasks FaceLandmarker (VIDEO), {label}", timed(run, imgs), "landmarks + blendshapes")
            fl.close()
    if hasattr(mp, "solutions"):
        fm = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
        imgs = [cv2.cvtColor(crop(f, big, side), cv2.COLOR_BGR2RGB) for f in frames]
        add(f"legacy mediapipe {mp.__version__} FaceMesh(refine), {side} px face crop", timed(fm.process, imgs),
            "478 points, no blendshapes")
        fm.close()

    print(f"{'option':70s} {'median ms':>10s} {'p95 ms':>8s} {'n':>5s}")
    for r in rows:
        print(f"{r['option']:70s} {r['median_ms']:10.2f} {r['p95_ms']:8.2f} {r['n']:5d}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
