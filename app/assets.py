"""Files shipped in the repository's assets/ folder and read in place (nothing is downloaded).

- ``assets/models/face_landmarker.task``: MediaPipe Face Landmarker bundle (Apache-2.0, Google),
  a zip holding ``face_detector.tflite`` (BlazeFace short range), ``face_landmarks_detector.tflite``
  (478 points with iris), ``face_blendshapes.tflite`` (52 scores). Its members are read from the
  zip into memory: the runtimes take model bytes.
- ``assets/models/3ddfa_v2_mb05_noneck.onnx``: 3DDFA-V2 MobileNet-V1 x0.5 (MIT weights) with the
  neck-less BFM mesh, exported by ``python -m export 3ddfa-v2`` (README "Models and licences").
"""
from __future__ import annotations

import zipfile
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS_DIR = ROOT / "assets"
MODELS_DIR = ASSETS_DIR / "models"
FACE_LANDMARKER_TASK = MODELS_DIR / "face_landmarker.task"
DEFAULT_3DMM = MODELS_DIR / "3ddfa_v2_mb05_noneck.onnx"
# sha256 of the official face_landmarker.task (float16 v1, the bytes in ../shared/models/mediapipe)
FACE_LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"


class AssetError(RuntimeError):
    """A shipped model file is missing or unreadable (the message names it and what to do)."""


@lru_cache(maxsize=None)
def task_member(name: str, task: str = str(FACE_LANDMARKER_TASK)) -> bytes:
    """The bytes of one model inside the face_landmarker.task zip."""
    p = Path(task)
    if not p.is_file():
        raise AssetError(f"shipped model {p} is missing: restore it with `git checkout -- {p}`")
    try:
        with zipfile.ZipFile(p) as z:
            return z.read(name)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise AssetError(f"shipped model {p} is unreadable ({e}): restore it with `git checkout -- {p}`") from e
