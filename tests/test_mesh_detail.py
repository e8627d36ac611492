"""--mesh-detail (the 3DMM's dense mesh on a subset of its vertices) and --record-scale (a smaller
recording): what they change (the drawn 3D face, the recording's size) and what they must not
(every other output of the run, value for value)."""
from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pytest

from app.assets import DEFAULT_3DMM
from app.core.geometry import decimate_mesh
from app.core.types import FaceObservation, Frame, Gaze
from app.model3dmm import ContractError, Model3DMM
from app.pipeline import Pipeline
from app.render import draw_result, shaded_layer
from app.settings import Settings
from tests.conftest import shared
from tests.test_headless import err_lines, run_main

N_VERTICES = 38365      # the shipped model's neck-less BFM


def grid_mesh(n: int = 60):
    """A bump on an n x n grid seen from +z: two triangles per square, all wound towards +z."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    z = 20.0 * np.exp(-((x - n / 2) ** 2 + (y - n / 2) ** 2) / 300.0)
    v = np.stack([x.ravel(), y.ravel(), z.ravel()], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return v, np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])


def signed_xy_area(v, tri):
    p = v[tri]
    return np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])[:, 2] / 2.0


@pytest.mark.parametrize("fraction", [0.5, 0.25, 0.1])
def test_decimate_mesh_keeps_about_the_fraction_the_surface_and_the_winding(fraction):
    v, tri = grid_mesh()
    keep, t = decimate_mesh(v, tri, fraction)
    assert 0.8 * fraction * len(v) <= len(keep) <= fraction * len(v)
    assert np.all(np.diff(keep) > 0) and keep[0] >= 0 and keep[-1] < len(v)
    assert t.dtype == np.int32 and t.min() >= 0 and t.max() == len(keep) - 1   # every kept vertex is used
    assert np.all((t[:, 0] != t[:, 1]) & (t[:, 1] != t[:, 2]) & (t[:, 0] != t[:, 2]))
    assert len(np.unique(np.sort(t, 1), axis=0)) == len(t)
    area = signed_xy_area(v[keep], t)
    assert area.min() >= 0.0                       # no triangle turned over
    assert area.sum() >= 0.9 * signed_xy_area(v, tri).sum()   # no holes: the border shrinks a little


def test_decimate_mesh_at_1_is_the_mesh_and_at_0_an_error():
    v, tri = grid_mesh(10)
    keep, t = decimate_mesh(v, tri, 1.0)
    assert np.array_equal(keep, np.arange(len(v))) and np.array_equal(t, tri)
    with pytest.raises(ValueError, match="fraction must be > 0"):
        decimate_mesh(v, tri, 0.0)


@pytest.fixture(scope="module")
def face_crops():
    """Two 120x120 crops of real faces (the two faces of two_faces.jpg, from the pipeline's own
    detection and crop)."""
    img = cv2.imread(str(shared("media", "two_faces.jpg")))
    pipe = Pipeline(Settings(monitor=None, smoothing=False))
    res = pipe.process(Frame(img, 0.0, 0), vertices=False)
    assert len(res.observations) == 2
    return pipe.model.crops(img, [o.roi_box for o in res.observations]).copy()


def test_the_thinned_model_gives_every_other_output_bit_for_bit_and_the_same_kept_vertices(face_crops):
    full = Model3DMM(str(DEFAULT_3DMM), "cpu")
    thin = Model3DMM(str(DEFAULT_3DMM), "cpu", mesh_detail=0.25)
    a, b = full.infer(face_crops), thin.infer(face_crops)
    assert sorted(a) == sorted(b)
    for name in a:
        if name != "vertices":
            assert np.array_equal(a[name], b[name]), name
    keep = thin.mesh_keep
    assert 0.2 * N_VERTICES <= len(keep) <= 0.25 * N_VERTICES
    assert b["vertices"].shape == (2, len(keep), 3)
    np.testing.assert_allclose(b["vertices"], a["vertices"][:, keep], rtol=0, atol=1e-3)
    assert thin.triangles.max() == len(keep) - 1 and 0.45 * len(full.triangles) <= len(thin.triangles) * 2 <= len(full.triangles)
    assert thin.metadata["vertex_count"] == str(len(keep))
    assert full.mesh_keep is None and full.triangles.max() == N_VERTICES - 1


def test_a_full_mesh_fp32_export_thins_the_same_way(tddfa_onnx, face_crops):
    """A model exported without --store-fp16 (the basis as float32 ``dense_wc``) and with the neck
    (53,215 vertices): the same kept vertices as its full mesh, the other outputs bit for bit."""
    full = Model3DMM(str(tddfa_onnx), "cpu")
    thin = Model3DMM(str(tddfa_onnx), "cpu", mesh_detail=0.5)
    a, b = full.infer(face_crops), thin.infer(face_crops)
    n = a["vertices"].shape[1]
    assert 0.4 * n <= len(thin.mesh_keep) <= 0.5 * n
    np.testing.assert_allclose(b["vertices"], a["vertices"][:, thin.mesh_keep], rtol=0, atol=1e-3)
    assert sorted(a) == sorted(b)
    for name in a:
        if name != "vertices":
            assert np.array_equal(a[name], b[name]), name


def test_a_model_without_the_contract_dense_basis_is_one_error(tmp_path):
    import onnx

    cut = onnx.utils.Extractor(onnx.load(str(DEFAULT_3DMM))).extract_model(
        ["image"], ["params", "landmarks", "rotation", "translation", "scale"])
    path = tmp_path / "no_mesh.onnx"
    onnx.save(cut, str(path))
    with pytest.raises(ContractError, match="--mesh-detail: .*no dense basis 'dense_uc'"):
        Model3DMM(str(path), "cpu", mesh_detail=0.5)
    assert Model3DMM(str(path), "cpu").has_vertices is False      # at 1 it loads as before


@pytest.mark.parametrize("image", ["portrait_glasses.jpg", "two_faces.jpg"])
def test_the_shaded_face_of_a_quarter_of_the_vertices_covers_the_same_pixels_in_the_same_greys(image):
    """The overlay's z-buffer cells follow the vertex spacing: a quarter of the vertices draws cells
    twice as large, over the same face (outline within a few pixels, grey levels within a few of 255)."""
    img = cv2.imread(str(shared("media", image)))
    layers = {}
    for f in (1.0, 0.25):
        pipe = Pipeline(Settings(mesh_detail=f, smoothing=False, monitor=None))
        o = pipe.process(Frame(img, 0.0, 0)).observations[0]
        layers[f] = shaded_layer(o.vertices, o.triangles, img.shape)

    def whole(lay):
        mask, grey = np.zeros(img.shape[:2], bool), np.zeros(img.shape[:2], np.float32)
        h, w = lay.grey.shape
        mask[lay.y0:lay.y0 + h, lay.x0:lay.x0 + w] = lay.mask > 0
        grey[lay.y0:lay.y0 + h, lay.x0:lay.x0 + w] = lay.grey
        return mask, grey

    (ma, ga), (mb, gb) = whole(layers[1.0]), whole(layers[0.25])
    both = ma & mb
    assert both.sum() / (ma | mb).sum() >= 0.96                   # measured 0.978-0.984
    assert float(np.abs(ga - gb)[both].mean()) <= 6.0               # measured 3.5-4.0
    assert 1.8 <= layers[0.25].cell / layers[1.0].cell <= 2.2


def test_downscale_is_area_averaging_at_whole_factors_and_close_to_it_between():
    from app.render import downscale

    src = av.open(str(shared("media", "clips", "expressions_d13.mp4")))
    img = next(src.decode(video=0)).to_ndarray(format="bgr24")      # 720 x 1280
    src.close()
    for size in ((360, 640), (180, 320)):
        assert np.array_equal(downscale(img, size), cv2.resize(img, size, interpolation=cv2.INTER_AREA))
    for size in ((288, 512), (540, 960), (238, 422)):                 # x0.4, x0.75, x0.33
        got, want = downscale(img, size), cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        assert got.shape == want.shape
        psnr = 10 * np.log10(255.0 ** 2 / np.mean((got.astype(np.float64) - want) ** 2))
        assert psnr > 30.0, (size, psnr)                             # measured 32.5-51.8 dB


def test_resized_scales_exactly_the_fields_in_pixels():
    o = FaceObservation(box=np.array([10.0, 20.0, 110.0, 220.0]), landmarks=np.ones((68, 3), np.float32),
                        model="m", vertices=np.full((5, 3), 4.0, np.float32), triangles=np.zeros((1, 3), np.int32),
                        rotation=np.eye(3), translation=np.array([2.0, 4.0, 6.0]), scale=3.0, yaw=5.0,
                        roi_box=np.array([0.0, 10.0, 200.0, 210.0]), mesh_points=np.full((478, 3), 8.0, np.float32),
                        gaze=Gaze(yaw=1.0, origins=np.array([[100.0, 50.0], [140.0, 50.0]])), eye_open=(0.3, 0.4))
    r = o.resized(0.5, 0.25)
    np.testing.assert_array_equal(r.box, [5.0, 5.0, 55.0, 55.0])
    np.testing.assert_array_equal(r.roi_box, [0.0, 2.5, 100.0, 52.5])
    for name in ("landmarks", "vertices", "mesh_points"):
        a, b = getattr(o, name), getattr(r, name)
        assert b.dtype == np.float32
        np.testing.assert_allclose(b, a * np.array([0.5, 0.25, 0.375], np.float32))
    np.testing.assert_allclose(r.translation, [1.0, 1.0, 2.25])
    assert r.scale == pytest.approx(1.125)
    np.testing.assert_array_equal(r.gaze.origins, [[50.0, 12.5], [70.0, 12.5]])
    assert r.gaze.yaw == 1.0 and r.yaw == 5.0 and r.eye_open == (0.3, 0.4) and r.triangles is o.triangles
    # every other field is not in pixels: a new field must be sorted into PIXEL_FIELDS or this list
    others = {"model", "triangles", "rotation", "yaw", "pitch", "roll", "eye_open", "mouth_open", "score",
              "blendshapes", "eye_visibility", "eye_available", "eye_unavailable_why"}
    import dataclasses
    assert {f.name for f in dataclasses.fields(FaceObservation)} == others | set(FaceObservation.PIXEL_FIELDS)


def test_an_overlay_drawn_at_half_size_is_the_frame_averaged_down_with_the_faces_scaled():
    """draw_result(size=): off the overlay the pixels are exactly the frame averaged down
    (cv2.INTER_AREA); on it, the drawing is the full-size one's at half the size."""
    src = av.open(str(shared("media", "clips", "expressions_d13.mp4")))
    pipe = Pipeline(Settings(mesh_detail=0.25))
    results = []
    for i, f in enumerate(src.decode(video=0)):
        results.append(pipe.process(Frame(f.to_ndarray(format="bgr24"), i / 30.0, i)))
        if i == 45:
            break
    src.close()
    for r in results[30::5]:
        raw = r.frame.image
        h, w = raw.shape[:2]
        full = draw_result(r, pipe.layers)
        half = draw_result(r, pipe.layers, size=(w // 2, h // 2))
        assert half.shape == (h // 2, w // 2, 3)
        assert np.array_equal(draw_result(r, pipe.layers, size=(w, h)), full)   # the frame's own size: as before
        # pixels of the full-size drawing more than 6 px from anything drawn, taken 2 x 2
        touched = cv2.dilate((full != raw).any(2).astype(np.uint8), np.ones((13, 13), np.uint8))
        off = cv2.resize(touched, (w // 2, h // 2), interpolation=cv2.INTER_NEAREST) == 0
        off &= cv2.resize(touched, (w // 2, h // 2), interpolation=cv2.INTER_AREA) == 0
        assert off.mean() > 0.5                # measured 0.69
        averaged = cv2.resize(raw, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        assert np.array_equal(half[off], averaged[off])
        down = cv2.resize(full, (w // 2, h // 2), interpolation=cv2.INTER_AREA).astype(np.float64)
        on = ~off
        psnr = 10 * np.log10(255.0 ** 2 / np.mean((down[on] - half[on]) ** 2))
        assert psnr > 18.0, psnr        # measured 21.0-21.6 dB: 1-pixel lines drawn at either size


@pytest.mark.slow
def test_the_lean_options_change_the_recording_and_nothing_else(tmp_path):
    """The same 40 frames with and without --mesh-detail 0.25 --record-scale 0.5: the dump is the
    same byte for byte and the events the same but for their wall-clock time; the recording is half
    the size, its overlay drawn at that size (FaceObservation.resized; the drawing itself is checked
    in test_an_overlay_drawn_at_half_size_...)."""
    clip = shared("media", "clips", "expressions_d13.mp4")
    runs = {}
    for name, extra in (("full", []), ("lean", ["--mesh-detail", "0.25", "--record-scale", "0.5"])):
        d = tmp_path / name
        d.mkdir()
        p = run_main("--video", clip, "--headless", "--quiet", "--max-frames", 40, "--record", d / "r.mp4",
                     "--dump", d / "d.jsonl", "--events", d / "e.jsonl", *extra)
        assert p.returncode == 0, p.stderr
        runs[name] = d
    full, lean = runs["full"], runs["lean"]
    assert (full / "d.jsonl").read_bytes() == (lean / "d.jsonl").read_bytes()
    ev = [[{k: v for k, v in json.loads(ln).items() if k != "time"} for ln in (d / "e.jsonl").read_text().splitlines()]
          for d in (full, lean)]
    assert ev[0] == ev[1] and ev[0][-1]["event"] == "summary"
    frames = [[f.to_ndarray(format="bgr24") for f in av.open(str(d / "r.mp4")).decode(video=0)] for d in (full, lean)]
    assert len(frames[0]) == len(frames[1]) == 40
    assert frames[0][0].shape == (1280, 720, 3) and frames[1][0].shape == (640, 360, 3)
    psnr = []
    for a, b in zip(*frames):
        a = cv2.resize(a, (360, 640), interpolation=cv2.INTER_AREA).astype(np.float64)
        psnr.append(10 * np.log10(255.0 ** 2 / np.mean((a - b) ** 2)))
    assert min(psnr) > 23.0             # measured 24.5-25.4 dB (1-pixel lines drawn at either size)


@pytest.mark.parametrize("args, says", [
    (["--mesh-detail", "0"], "--mesh-detail must be in (0, 1], got 0.0"),
    (["--mesh-detail", "1.5"], "--mesh-detail must be in (0, 1], got 1.5"),
    (["--mesh-detail", "0.5", "--model", "mesh"], "--mesh-detail 0.5 thins a 3DMM's dense mesh"),
    (["--record-scale", "0"], "--record-scale must be in (0, 1], got 0"),
])
def test_bad_values_are_one_line_exit_2_and_no_file(tmp_path, args, says):
    out = tmp_path / "r.mp4"
    p = run_main("--video", shared("media", "two_faces.jpg"), "--headless", "--record", out, *args)
    lines = err_lines(p)
    assert p.returncode == 2 and len(lines) == 1 and says in lines[0], p.stderr
    assert list(tmp_path.iterdir()) == []
