import numpy as np
import pytest

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


# ---------------------------------------------------------------- AFLW2000 Pose_Para convention
def test_pose_aflw_round_trip_made_up_angles():
    rng = np.random.default_rng(0)
    angles = np.concatenate([rng.uniform([-80, -85, -80], [80, 85, 80], (200, 3)),
                             [[0, 0, 0], [30, 0, 0], [0, -60, 0], [0, 0, 45], [-10, 89, 5], [3, -89.9, -2]]])
    for a in angles:
        R = g.rotation_from_pose_aflw(*a)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        np.testing.assert_allclose(g.pose_aflw_deg(R), a, atol=1e-6)


def test_pose_aflw_matches_3ddfa_matlab_rotation_matrix():
    # RotationMatrix(phi, gamma, theta) of 3DDFA's Matlab code, typed from its definition
    p, y, r = np.radians([12.0, -40.0, 7.0])
    Rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    Ry = np.array([[np.cos(y), 0, -np.sin(y)], [0, 1, 0], [np.sin(y), 0, np.cos(y)]])
    Rz = np.array([[np.cos(r), np.sin(r), 0], [-np.sin(r), np.cos(r), 0], [0, 0, 1]])
    np.testing.assert_allclose(g.rotation_from_pose_aflw(12.0, -40.0, 7.0), Rx @ Ry @ Rz, atol=1e-12)


def test_pose_aflw_gimbal_lock_keeps_rotation():
    for a in ([20.0, 90.0, 0.0], [-35.0, -90.0, 10.0]):
        R = g.rotation_from_pose_aflw(*a)
        back = g.pose_aflw_deg(R)
        assert abs(back[1]) == pytest.approx(90.0) and back[2] == 0.0
        np.testing.assert_allclose(g.rotation_from_pose_aflw(*back), R, atol=1e-9)


def _bfm_landmarks_image(pitch, yaw, roll):
    """BFM mean-face landmarks rotated by Pose_Para angles, image axes (x right, y down)."""
    d = shared("bfm", "3dmm_data")
    kp = np.load(d / "keypoints_sim.npy")
    u = (np.load(d / "u_shp.npy") + np.load(d / "u_exp.npy"))[kp].reshape(68, 3)
    u = u - u.mean(0)
    v = u @ g.rotation_from_pose_aflw(pitch, yaw, roll).T  # model space, y up
    return v * np.array([1.0, -1.0, 1.0])                     # image: y down


def test_pose_aflw_meaning_on_the_mean_face():
    nose, eyes_l, eyes_r = 30, slice(36, 42), slice(42, 48)  # iBUG: 36-41 image-left eye
    f = _bfm_landmarks_image(0, 0, 0)
    mid = lambda p: (p[eyes_l].mean(0) + p[eyes_r].mean(0)) / 2  # noqa: E731
    eye_dist = f[eyes_r, 0].mean() - f[eyes_l, 0].mean()
    assert eye_dist > 0 and abs(f[nose, 0] - mid(f)[0]) < 0.02 * eye_dist  # frontal: nose under the eyes
    yl = _bfm_landmarks_image(0, 30, 0)  # positive yaw: nose moves to the image's left
    assert yl[nose, 0] - mid(yl)[0] < -0.1 * (yl[eyes_r, 0].mean() - yl[eyes_l, 0].mean())
    up = _bfm_landmarks_image(25, 0, 0)  # positive pitch: looking up, nose tip rises towards the eyes
    assert up[nose, 1] - mid(up)[1] < 0.8 * (f[nose, 1] - mid(f)[1])
    cw = _bfm_landmarks_image(0, 0, 20)  # positive roll: image-right eye lower (clockwise in the image)
    assert cw[eyes_r, 1].mean() - cw[eyes_l, 1].mean() > 0.2 * eye_dist


def test_pose_aflw_signs_on_real_images(tddfa_onnx):
    """The real 3DDFA-V2 model's R read by pose_aflw_deg agrees in sign (and closely) with Pose_Para."""
    import cv2
    import onnxruntime as ort
    import scipy.io as sio

    from export.evaluate import crop_official
    d = shared("media", "aflw2000")
    p = np.load(d / "official_protocol.npz")
    sess = ort.InferenceSession(str(tddfa_onnx), providers=["CPUExecutionProvider"])
    crops = np.stack([crop_official(cv2.imread(str(d / f"{n}.jpg")), r) for n, r in zip(p["names"], p["roi_box"])])
    R = sess.run(["rotation"], {"image": crops})[0]
    est = np.array([g.pose_aflw_deg(r) for r in R])
    gt = np.array([np.degrees(sio.loadmat(str(d / f"{n}.mat"))["Pose_Para"][0, :3]) for n in p["names"]])
    big = np.abs(gt) > 10
    assert big.sum() >= 8  # enough clear cases: 3 pitch, 4 yaw, 1 roll among the 8 images
    np.testing.assert_array_equal(np.sign(est[big]), np.sign(gt[big]))
    mae = np.abs(est - gt).mean(0)  # measured: pitch 4.78, yaw 3.27, roll 2.02
    assert (mae < [6.0, 4.5, 3.0]).all(), mae
    # the model's R is Pose_Para's matrix, not its transpose (the other plausible reading)
    for r, a in zip(R, gt):
        Rm = g.rotation_from_pose_aflw(*a)
        assert np.linalg.norm(r - Rm) < np.linalg.norm(r - Rm.T) or abs(a).max() < 10


def test_mirror_68_is_the_ibug_left_right_map():
    M = g.MIRROR_68
    assert sorted(M) == list(range(68)) and (M[M] == np.arange(68)).all()   # a permutation, its own inverse
    # the midline points map to themselves: nose bridge and tip, chin, lip centres
    assert {int(i) for i in np.flatnonzero(M == np.arange(68))} == {8, 27, 28, 29, 30, 33, 51, 57, 62, 66}
    assert M[36] == 45 and M[39] == 42 and M[48] == 54 and M[0] == 16 and M[17] == 26


def test_unflip_rotation_mirrors_yaw_and_roll():
    for p, y, r in ((10.0, 35.0, -7.0), (-25.0, -60.0, 15.0), (3.0, 80.0, 2.0)):
        R = g.rotation_from_pose_aflw(p, y, r)
        np.testing.assert_allclose(g.unflip_rotation(R), g.rotation_from_pose_aflw(p, -y, -r), atol=1e-12)


def test_flip_average_of_an_exact_mirror_returns_the_face():
    rng = np.random.default_rng(3)
    lm = rng.uniform(20, 100, size=(68, 3))
    R = g.rotation_from_pose_aflw(12.0, -40.0, 5.0)
    # what a perfectly mirror-consistent model gives for the flipped crop
    lm_f = lm[g.MIRROR_68].copy()
    lm_f[:, 0] = g.STD_SIZE - lm_f[:, 0]
    R_f = g.rotation_from_pose_aflw(12.0, 40.0, -5.0)
    a, b = g.flip_average(lm, R, lm_f, R_f)
    np.testing.assert_allclose(a, lm, atol=1e-9)
    np.testing.assert_allclose(b, R, atol=1e-9)
    # and the mean of two different rotations is a rotation between them
    _, m = g.flip_average(lm, R, lm_f, g.rotation_from_pose_aflw(16.0, 40.0, -5.0))
    assert np.allclose(m @ m.T, np.eye(3)) and g.pose_aflw_deg(m)[0] == pytest.approx(14.0, abs=0.3)


def test_scale_roi_keeps_the_centre():
    r = g.scale_roi([10.0, 20.0, 110.0, 120.0], 0.9)
    np.testing.assert_allclose(r, [15.0, 25.0, 105.0, 115.0])
    np.testing.assert_allclose(g.scale_roi(r, 1 / 0.9), [10.0, 20.0, 110.0, 120.0])


def test_warp_source_box_holds_every_pixel_the_warp_reads():
    """Pixels outside warp_source_box do not change the bilinear warp's output (the box is all it
    reads), for turned, scaled and partly outside crops; prefetch_rows leaves the image as it is."""
    import cv2

    from app.facemesh import crop_affine_rotated

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    cases = [(np.array([400., 100., 900., 600.]), 0.0), (np.array([400., 100., 900., 600.]), 0.4),
             (np.array([-150., 500., 250., 900.]), -0.3), (np.array([1100., -80., 1400., 220.]), 1.2),
             (np.array([600., 300., 700., 400.]), 0.05)]
    for roi, roll in cases:
        M = crop_affine_rotated(roi, roll, 256)
        x0, y0, x1, y1 = g.warp_source_box(M, 256, img.shape)
        assert 0 <= x0 < x1 <= 1280 and 0 <= y0 < y1 <= 720
        ref = cv2.warpAffine(img, M, (256, 256), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        other = rng.integers(0, 256, img.shape, dtype=np.uint8)
        other[y0:y1, x0:x1] = img[y0:y1, x0:x1]
        np.testing.assert_array_equal(
            cv2.warpAffine(other, M, (256, 256), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT), ref)
        # and the box is not the whole image: it is about the crop's source square
        side = (roi[2] - roi[0]) * (abs(np.cos(roll)) + abs(np.sin(roll)))
        assert (x1 - x0) <= side + 6 and (y1 - y0) <= side + 6
        before = img.copy()
        g.prefetch_rows(img, (x0, y0, x1, y1))
        np.testing.assert_array_equal(img, before)
    # a crop entirely outside the image: an empty box, nothing read
    x0, y0, x1, y1 = g.warp_source_box(crop_affine_rotated(np.array([2000., 2000., 2300., 2300.]), 0.0, 256),
                                       256, img.shape)
    assert x1 <= x0 or y1 <= y0
    g.prefetch_rows(img, (x0, y0, x1, y1))
