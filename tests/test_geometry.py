import numpy as np

from app.core import geometry as g
from tests.conftest import shared


def test_P2sRt_matches_synergynet_official():
    d = np.load(shared("fixtures", "synergynet", "synergynet_parity.npz"))
    s, R, t = g.P2sRt(d["params_denorm"][:12])
    np.testing.assert_allclose(R, d["pose_P"][:, :3], atol=1e-6)
    np.testing.assert_allclose(t, d["pose_P"][:, 3], rtol=1e-6)
    np.testing.assert_allclose(g.matrix2angle_synergynet(R), d["pose_euler_deg"], atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(R[:2], axis=1), 1.0, atol=1e-6)


def test_matrix2angle_3ddfa_v2_official():
    d = np.load(shared("fixtures", "3ddfa_v2", "mb05_parity.npz"))
    _, R, _ = g.P2sRt(d["params_denorm"][:12])
    np.testing.assert_allclose(R, d["pose_P"][:, :3], atol=1e-6)
    np.testing.assert_allclose(g.matrix2angle_3ddfa_v2(R), d["pose_euler_deg_3ddfa_v2"], atol=1e-4)


def test_roi_box_from_bbox_official():
    d = np.load(shared("fixtures", "3ddfa_v2", "mb05_parity.npz"))
    np.testing.assert_allclose(g.roi_box_from_bbox(d["face_box"]), d["roi_box"], atol=1e-3)


def test_crop_affine_reproduces_official_crop():
    import cv2
    d = np.load(shared("fixtures", "3ddfa_v2", "mb05_parity.npz"))
    img = cv2.imread(str(shared("media", str(d["image_path"]))))
    crop = cv2.warpAffine(img, g.crop_affine(d["roi_box"]), (120, 120), flags=cv2.INTER_LINEAR)
    diff = np.abs(crop.astype(int) - d["crop_bgr"].astype(int))
    # the official crop rounds the roi box to whole pixels first; sub-pixel shift only
    assert diff.mean() < 6.0, diff.mean()


def test_crop_to_image_roundtrip_made_up_box():
    pts = np.array([[0.0, 0.0, 10.0], [120.0, 60.0, -4.0]])
    out = g.crop_to_image(pts, [10, 20, 250, 260])
    np.testing.assert_allclose(out, [[10, 20, 20], [250, 140, -8]])


def test_roi_box_from_landmarks_square_of_diagonal():
    pts = np.array([[0, 0], [100, 50]], dtype=float)
    roi = g.roi_box_from_landmarks(pts)
    side = np.hypot(100, 100)
    np.testing.assert_allclose(roi, [50 - side / 2, 25 - side / 2, 50 + side / 2, 25 + side / 2])
