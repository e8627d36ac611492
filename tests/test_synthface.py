"""export.synthface: the rendered BFM mean face is a face to the real model, and fp16 exports are
held to the face tolerance on it."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import shared


@pytest.fixture(scope="module")
def face_crop():
    from export import bfm
    from export.synthface import rendered_face_crop

    return rendered_face_crop(bfm.load_bfm_arrays(shared("bfm", "3dmm_data"))["u"])


def test_rendered_mean_face_is_a_frontal_face_to_the_real_model(face_crop, tddfa_onnx):
    from app.core import geometry as g
    from export.convert import run_onnx

    assert face_crop.shape == (120, 120, 3) and face_crop.dtype == np.uint8
    o, _ = run_onnx(tddfa_onnx, face_crop[None])
    pitch, yaw, roll = g.pose_aflw_deg(o["rotation"][0])
    assert abs(yaw) < 8 and abs(pitch) < 8 and abs(roll) < 8, (pitch, yaw, roll)
    lm = o["landmarks"][0]
    w, h = np.ptp(lm[:, 0]), np.ptp(lm[:, 1])
    assert 45 < w < 75 and 45 < h < 75                        # the size of a face in a 3DDFA crop
    assert abs(lm[:, 0].mean() - 60) < 6 and abs(lm[:, 1].mean() - 60) < 10
    # the eyes are above the nose tip, the mouth below it (iBUG 68 order)
    eyes, nose, mouth = lm[36:48, 1].mean(), lm[30, 1], lm[48:68, 1].mean()
    assert eyes < nose < mouth
    # shading: the face is brighter than the background and not flat
    gray = face_crop.mean(-1)
    assert gray[60, 60] > gray[5, 5] + 30 and gray[40:90, 35:85].std() > 5


@pytest.mark.slow
def test_fp16_export_is_held_to_the_face_tolerance_on_the_rendered_face(tmp_path, monkeypatch):
    """A 0.3 px fp16 error passes the 1 px bound of the noise crops but not the 0.25 px face bound."""
    pytest.importorskip("torch")
    import export.convert as conv
    from export import VerificationError
    from tests.test_export_cli import _small_3ddfa_ckpt, shift_onnx_landmarks

    shift_onnx_landmarks(monkeypatch, 0.3)
    ck = _small_3ddfa_ckpt(tmp_path)
    out = tmp_path / "m16.onnx"
    with pytest.raises(VerificationError, match="rendered_face"):
        conv.export_checkpoint("3ddfa-v2", ck, out, bfm_dir=shared("bfm", "3dmm_data"), dense=False, fp16=True,
                               param_stats=shared("models", "3ddfa_v2_mb05", "param_mean_std_62d_120x120.pkl"))
    assert not out.exists() and list(tmp_path.glob("*.tmp")) == []
