"""scripts/tflite_to_onnx.py: the landmark model converted to ONNX gives LiteRT's outputs."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.assets import task_member
from app.facemesh import LANDMARK_MODEL
from tests.conftest import shared

pytest.importorskip("tflite")
ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("tflite_to_onnx", ROOT / "scripts" / "tflite_to_onnx.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_converted_landmark_model_matches_litert_on_a_real_face():
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    m = _script().convert(task_member(LANDMARK_MODEL))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    lite = Interpreter(model_content=task_member(LANDMARK_MODEL), num_threads=1)
    lite.allocate_tensors()
    img = cv2.imread(str(shared("media", "portrait_glasses.jpg")))
    h, w = img.shape[:2]
    side = min(h, w)
    crop = cv2.resize(img[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2], (256, 256),
                      interpolation=cv2.INTER_AREA)
    x = (crop[None, :, :, ::-1] / 255.0).astype(np.float32)
    lite.set_tensor(lite.get_input_details()[0]["index"], x)
    lite.invoke()
    want = {d["name"]: lite.get_tensor(d["index"]) for d in lite.get_output_details()}
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": x})))
    assert set(got) == set(want)
    pts_name = next(k for k, v in want.items() if v.size == 478 * 3)
    pts_w, pts_g = want[pts_name].reshape(478, 3), got[pts_name].reshape(478, 3)
    assert np.ptp(pts_w[:, 0]) > 60                      # a face fills the crop: real points
    assert np.abs(pts_g - pts_w).max() < 1e-2            # crop pixels (measured: 2e-4)
    for k, v in want.items():
        assert got[k].shape == v.shape
        np.testing.assert_allclose(got[k], v, atol=1e-3 * max(1.0, float(np.abs(v).max())))


def test_command_writes_the_file(tmp_path):
    out = tmp_path / "lm.onnx"
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "tflite_to_onnx.py"), str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert out.stat().st_size > 2_000_000 and [x.name for x in tmp_path.iterdir()] == ["lm.onnx"]
