"""Training data: target algebra (flip, similarity) on the real BFM and the real teacher; distillation
crops; the per-epoch AFLW2000 NME against the official 3DDFA-V2 numbers."""
import cv2
import numpy as np
import pytest

pytest.importorskip("torch")  # the export extra (not installed on every Python)

from export import datasets as D  # noqa: E402
from export.losses import BFMArrays
from export.train import AFLWSet, nme_2d
from tests.conftest import shared


@pytest.fixture(scope="module")
def bfm():
    b = BFMArrays.from_dir(shared("bfm", "3dmm_data"))
    D.set_landmark_bfm(b)
    return b


@pytest.fixture(scope="module")
def flipper(bfm):
    return D.ParamFlipper(bfm)


@pytest.fixture(scope="module")
def fixture_params():
    return np.load(shared("fixtures", "3ddfa_v2", "mb05_parity.npz"))


def test_flip_params_give_mirrored_landmarks(bfm, flipper, fixture_params):
    p = fixture_params["params_denorm"].astype(np.float64)
    lm = D.landmarks_pixels(p)
    want = lm[D.IBUG_FLIP].copy()
    want[:, 0] = 119 - want[:, 0]
    got = D.landmarks_pixels(flipper(p))
    err = np.linalg.norm(got - want, axis=1)
    assert err.max() < 0.6 and err.mean() < 0.25, (err.max(), err.mean())   # measured 0.43 / 0.17 px
    back = D.landmarks_pixels(flipper(flipper(p)))
    assert np.abs(back - lm).max() < 0.3                                       # measured 0.11 px
    # the flipped pose keeps the row norms (scale) and mirrors the rows' dot product
    P = flipper(p)[:12].reshape(3, 4)[:, :3]
    P0 = p[:12].reshape(3, 4)[:, :3]
    np.testing.assert_allclose(np.linalg.norm(P, axis=1), np.linalg.norm(P0, axis=1), rtol=1e-9)
    assert P[0] @ P[1] == pytest.approx(-(P0[0] @ P0[1]), rel=1e-9)


def test_flip_params_agree_with_the_teacher_on_the_flipped_crop(bfm, flipper, fixture_params, tddfa_onnx):
    teacher = D.TeacherONNX(tddfa_onnx, threads=1)
    crop = fixture_params["crop_bgr"]
    p, pf = teacher(np.stack([crop, cv2.flip(crop, 1)]))
    lm_flip_target = D.landmarks_pixels(flipper(p))
    lm_teacher_flipped = D.landmarks_pixels(pf)
    # the teacher itself is not exactly mirror-symmetric; this bounds target vs teacher, in 120-px crop pixels
    nme = nme_2d(lm_flip_target[None], lm_teacher_flipped[None])[0]
    assert nme < 0.03, nme


def test_similarity_moves_landmarks_exactly(bfm, fixture_params):
    p = fixture_params["params_denorm"].astype(np.float64)
    rng = np.random.default_rng(5)
    for _ in range(5):
        M = D.random_similarity(rng, rot_deg=30, scale=0.2, shift=10)
        want = D.landmarks_pixels(p) @ M[:, :2].T + M[:, 2]
        np.testing.assert_allclose(D.landmarks_pixels(D.transform_params(p, M)), want, atol=1e-9)


def test_aflw_epoch_nme_reproduces_official_3ddfa_v2(bfm, tddfa_onnx):
    aflw = AFLWSet(shared("media", "aflw2000"))
    teacher = D.TeacherONNX(tddfa_onnx, threads=1)
    lm = np.stack([D.landmarks_pixels(p) for p in teacher(aflw.crops)])
    official = np.load(shared("media", "aflw2000", "official_protocol.npz"))["nme_3ddfa_v2_mb05"]
    np.testing.assert_allclose(aflw.nme(lm) * 100, official * 100, atol=0.01)


@pytest.mark.slow
def test_distill_cache_crops_and_holdout(bfm, tddfa_onnx, tmp_path):
    teacher = D.TeacherONNX(tddfa_onnx, threads=1)
    img_path = shared("media", "portrait_glasses.jpg")
    srcs = D.expand_sources([str(img_path), str(shared("media", "two_faces.jpg"))])
    cache = D.build_face_cache(srcs, teacher, log=lambda m: None)
    assert cache.sources == [str(s) for s in srcs]
    assert (cache.group == 0).sum() == 1 and (cache.group == 1).sum() == 2
    # the un-jittered crop from the cached context matches the detector-policy crop of the full image
    from app.core import geometry
    from app.detect import FaceDetector
    det = FaceDetector(0.6)
    img = cv2.imread(str(img_path))
    roi = geometry.roi_box_from_bbox(det(img)[0].box)
    det.close()
    direct = cv2.warpAffine(img, geometry.crop_affine(roi), (120, 120), flags=cv2.INTER_LINEAR)
    mean, std = np.zeros(62), np.ones(62)
    val = D.DistillDataset(cache, teacher, mean, std, augment=False)
    crops, targets = val.batch([0])
    assert np.abs(crops[0].astype(int) - direct.astype(int)).mean() < 8
    # teacher on both crops: landmarks within 2 % NME
    lm_a = D.landmarks_pixels(targets[0].astype(np.float64))
    lm_b = D.landmarks_pixels(teacher(direct[None])[0])
    assert nme_2d(lm_a[None], lm_b[None])[0] < 0.02
    # jittered crops keep the face: teacher landmarks mostly inside the crop, targets differ per draw
    tr = D.DistillDataset(cache, teacher, mean, std, augment=True, seed=1)
    c1, t1 = tr.batch([0, 1, 2])
    c2, t2 = tr.batch([0, 1, 2])
    assert c1.shape == (3, 120, 120, 3) and c1.dtype == np.uint8 and t1.dtype == np.float32
    assert np.abs(t1 - t2).max() > 0
    for t in t1:
        lm = D.landmarks_pixels(t.astype(np.float64))
        assert ((lm > -5) & (lm < 125)).all(axis=1).mean() > 0.9
    # hold out whole sources
    train, held = D.split_holdout(cache, ["two_faces"])
    assert set(held.group) == {1} and set(train.group) == {0}
    with pytest.raises(D.DataError, match="matches no --frames source"):
        D.split_holdout(cache, ["nothing_like_this"])
    # the cache round-trips through its file and is rebuilt for another key
    path = tmp_path / "face_cache.npz"
    D.load_or_build_cache(path, "k1", lambda: cache, log=lambda m: None)
    again = D.load_or_build_cache(path, "k1", lambda: pytest.fail("should read the cache"), log=lambda m: None)
    np.testing.assert_array_equal(again.contexts, cache.contexts)
    rebuilt = []
    D.load_or_build_cache(path, "k2", lambda: rebuilt.append(1) or cache, log=lambda m: None)
    assert rebuilt == [1]


def test_frames_bad_input(tmp_path):
    with pytest.raises(D.DataError, match="no such file or folder"):
        D.expand_sources([str(tmp_path / "missing.mp4")])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(D.DataError, match="not an image or video"):
        D.expand_sources([str(tmp_path / "notes.txt")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(D.DataError, match="holds no images or videos"):
        D.expand_sources([str(empty)])
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    with pytest.raises(D.DataError, match="does not decode"):
        list(D._iter_frames(bad, 1))


def test_frame_shift_moves_params_between_landmark_conventions(bfm, fixture_params):
    """frame_shift(src, dst): params whose dst-convention crop pixels are the src-convention pixels of p."""
    from export.train import crop_pixels, frame_shift

    p = fixture_params["params_denorm"].astype(np.float64)
    s = frame_shift("3ddfa_v2", "synergynet")
    np.testing.assert_array_equal(s[[3, 7, 11]], [-1.0, 1.0, -1.0])
    assert np.count_nonzero(s) == 3
    np.testing.assert_array_equal(s + frame_shift("synergynet", "3ddfa_v2"), np.zeros(62))
    np.testing.assert_array_equal(frame_shift("synergynet", "synergynet"), np.zeros(62))
    lm = bfm.vertices(p, bfm.landmarks)[None]
    want = crop_pixels(lm, "3ddfa_v2")
    got = crop_pixels(bfm.vertices(p + s, bfm.landmarks)[None], "synergynet")
    np.testing.assert_allclose(got, want, atol=1e-9)
    # the plain conventions differ by one pixel in x and y
    np.testing.assert_allclose(crop_pixels(lm, "synergynet") - want, np.ones_like(want), atol=1e-9)
    # 3DDFA-V2 is the default, as before
    np.testing.assert_array_equal(crop_pixels(lm), want)


def test_frames_of_a_video_stopped_early_leave_no_capture_thread():
    """The cache builder stops reading a clip (an error, a full cache): the decode thread ends too."""
    import threading

    clip = shared("media", "clips", "expressions_d18.mp4")
    name = f"capture:{clip.name}"
    gen = D._iter_frames(clip, 1)
    index, img = next(gen)
    assert index == 0 and img.ndim == 3
    assert any(t.name == name and t.is_alive() for t in threading.enumerate())
    gen.close()              # what a caller breaking out of the loop does
    assert not any(t.name == name and t.is_alive() for t in threading.enumerate())
