"""Overlays on a real face: the official 3DDFA-V2 x0.5 outputs for media/portrait_glasses.jpg."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import scipy.io as sio

from app.core.geometry import P2sRt, matrix2angle_3ddfa_v2
from app.core.types import Alert, FaceObservation, MonitorState
from app.render import (C_CRITICAL, C_WARNING, Layers, annotate, axes_endpoints, decimated_edges,
                        _ui_scale, gauge_over, gauge_rows, mesh_edges)
from tests.conftest import shared

LAYER_NAMES = ["box", "landmarks", "mesh", "axes", "text", "fps", "model", "monitor"]


def _only(name=None, **kw) -> Layers:
    lay = Layers(**{n: False for n in LAYER_NAMES}, **kw)
    if name:
        setattr(lay, name, True)
    return lay


@pytest.fixture(scope="module")
def face():
    d = np.load(shared("fixtures", "3ddfa_v2", "mb05_parity.npz"))
    img = cv2.imread(str(shared("media", "portrait_glasses.jpg")))
    tri = sio.loadmat(str(shared("bfm", "3dmm_data", "tri.mat")))["tri"].T.astype(np.int32) - 1
    s, R, t = P2sRt(d["params_denorm"][:12])
    yaw, pitch, roll = matrix2angle_3ddfa_v2(R)
    obs = FaceObservation(box=np.asarray(d["face_box"][:4], float),
                          landmarks=d["landmarks68_image"].T.astype(np.float32), model="3ddfa_v2_mb05",
                          vertices=d["dense_vertices_image"].T.astype(np.float32), triangles=tri,
                          rotation=R, yaw=yaw, pitch=pitch, roll=roll)
    return img, obs, d


def _changed(a, b):
    return np.any(a != b, axis=2)


def test_axes_convention_matches_official_landmarks(face):
    """Model axis k appears in the image along (R[0,k], -R[1,k]): fit the official image landmarks
    against the model landmarks projected that way -> a positive multiple of the identity."""
    _, obs, d = face
    bfm = shared("bfm", "3dmm_data")
    p = d["params_denorm"]
    u = (np.load(bfm / "u_shp.npy") + np.load(bfm / "u_exp.npy"))[:, 0]
    shape = u + np.load(bfm / "w_shp_sim.npy") @ p[12:52] + np.load(bfm / "w_exp_sim.npy") @ p[52:62]
    kp = np.load(bfm / "keypoints_sim.npy")
    lm_model = shape.reshape(-1, 3)[kp[::3] // 3]
    R = obs.rotation
    dm = lm_model - lm_model.mean(0)
    ends = axes_endpoints(R, np.zeros(2), 1.0)      # (3, 2): image direction of model x, y, z
    pred = dm @ ends                                 # model displacement -> image displacement
    di = obs.landmarks[:, :2] - obs.landmarks[:, :2].mean(0)
    M = np.linalg.lstsq(pred, di, rcond=None)[0]
    c = M[0, 0]
    assert c > 0
    np.testing.assert_allclose(M / c, np.eye(2), atol=0.03)
    resid = di - pred @ M
    assert np.abs(resid).max() < 1.0                 # pixels


def test_all_layers_off_leaves_the_image_untouched(face):
    img, obs, _ = face
    out = annotate(img, [obs], layers=_only(), state=MonitorState(alerts=[Alert("drowsy", "warning", 0)]),
                   info={"fps": 30, "model": "x"})
    np.testing.assert_array_equal(out, img)


def test_annotate_copies_unless_inplace(face):
    img, obs, _ = face
    before = img.copy()
    out = annotate(img, [obs])
    np.testing.assert_array_equal(img, before)
    assert out is not img and _changed(out, img).any()
    work = img.copy()
    assert annotate(work, [obs], inplace=True) is work
    assert _changed(work, img).any()


def test_landmarks_drawn_at_the_landmarks_and_nowhere_far(face):
    img, obs, _ = face
    out = annotate(img, [obs], layers=_only("landmarks"))
    ch = _changed(out, img)
    for x, y in np.rint(obs.landmarks[:, :2]).astype(int):
        assert ch[y - 2:y + 3, x - 2:x + 3].any(), (x, y)
    # nothing more than a few pixels away from the landmark hull
    lm = obs.landmarks[:, :2]
    x0, y0 = np.floor(lm.min(0)).astype(int) - 4
    x1, y1 = np.ceil(lm.max(0)).astype(int) + 4
    outside = ch.copy()
    outside[y0:y1, x0:x1] = False
    assert not outside.any()


def test_mesh_inside_the_face_and_covering_it(face):
    img, obs, _ = face
    for style in ("wire", "points"):
        out = annotate(img, [obs], layers=_only("mesh", mesh_style=style))
        ch = _changed(out, img)
        v = obs.vertices[:, :2]
        x0, y0 = np.floor(v.min(0)).astype(int)
        x1, y1 = np.ceil(v.max(0)).astype(int) + 2
        inside = ch[y0:y1, x0:x1]
        assert inside.sum() == ch.sum(), style            # nothing outside the mesh's extent
        # the face region (box) is well covered
        bx0, by0, bx1, by1 = obs.box.astype(int)
        assert ch[by0:by1, bx0:bx1].mean() > 0.15, style
        assert not ch[:y0 - 1].any() and not ch[y1 + 1:].any()


def test_each_layer_switch_removes_its_pixels(face):
    img, obs, _ = face
    state = MonitorState(calibrating=False, alerts=[Alert("looking_around", "warning", 0.0)],
                         signals={"yaw_offset": 40.0, "yaw_threshold": 30.0, "perclos": 0.1})
    info = {"fps": 24.5, "model": "3ddfa_v2_mb05", "provider": "CPUExecutionProvider"}
    full = annotate(img, [obs], state=state, info=info)
    for name in LAYER_NAMES:
        lay = Layers()
        setattr(lay, name, False)
        off = annotate(img, [obs], layers=lay, state=state, info=info)
        assert _changed(full, off).any(), f"layer {name} drew nothing"
        alone = annotate(img, [obs], layers=_only(name), state=state, info=info)
        assert _changed(alone, img).any(), f"layer {name} alone drew nothing"


def test_box_pixels_on_the_box_edges(face):
    img, obs, _ = face
    ch = _changed(annotate(img, [obs], layers=_only("box")), img)
    x0, y0, x1, y1 = obs.box.astype(int)
    assert ch[y0 - 1:y0 + 2, x0 + 5:x1 - 5].mean() > 0.9       # top edge
    assert not ch[y0 + 5:y1 - 5, x0 + 5:x1 - 5].any()          # interior untouched


def test_axes_point_the_right_way(face):
    img, obs, _ = face
    out = annotate(img, [obs], layers=_only("axes"))
    nose = obs.landmarks[30, :2]
    length = 0.5 * max(obs.box[2] - obs.box[0], obs.box[3] - obs.box[1])
    ends = axes_endpoints(obs.rotation, nose, length)
    # this face looks at the camera: x to the image right, y up
    assert ends[0, 0] > nose[0] + 0.9 * length and ends[1, 1] < nose[1] - 0.9 * length
    for k, bgr in enumerate([(0, 0, 255), (0, 255, 0)]):
        mid = np.rint((nose + ends[k]) / 2).astype(int)
        patch = out[mid[1] - 2:mid[1] + 3, mid[0] - 2:mid[0] + 3].reshape(-1, 3).astype(int)
        assert np.any(np.abs(patch - bgr).sum(1) < 60), k


def _top_rows(img, n=10):
    return img[:n].reshape(-1, 3).astype(float).mean(0)


@pytest.mark.parametrize("level,color", [("critical", C_CRITICAL), ("warning", C_WARNING)])
def test_banner_present_with_an_alert(face, level, color):
    img, obs, _ = face
    state = MonitorState(calibrating=False, alerts=[Alert("eyes_closed", level, 1.0)])
    out = annotate(img, [obs], layers=_only("monitor"), state=state)
    # banner blended at 0.8 over the photo: the top band takes the alert colour
    mean = _top_rows(out)
    assert np.abs(mean - np.asarray(color, float)).max() < 0.3 * 255
    quiet = annotate(img, [obs], layers=_only("monitor"), state=MonitorState(calibrating=False))
    np.testing.assert_array_equal(quiet[:60], img[:60])


def test_calibrating_banner_and_gauges(face):
    img, obs, _ = face
    h = img.shape[0]
    out = annotate(img, [], layers=_only("monitor"), state=MonitorState(calibrating=True))
    assert _changed(out[:30], img[:30]).any()
    assert not _changed(out[h // 2:], img[h // 2:]).any()          # no gauges without signals
    st = MonitorState(calibrating=False, signals={"yaw_offset": 12.0, "yaw_threshold": 30.0,
                                                  "eye_open_rel": float("nan"), "perclos": 0.05})
    out = annotate(img, [], layers=_only("monitor"), state=st)
    ch = _changed(out, img)
    assert ch[h - 80:].any() and not ch[: h // 2].any()              # gauges bottom-left only


def test_no_crash_on_nan_and_empty(face):
    img, obs, _ = face
    out = annotate(img, [], state=None, info=None)
    np.testing.assert_array_equal(out, img)
    nan = float("nan")
    bad = FaceObservation(box=np.array([nan, 10, 50, 60.0]), landmarks=np.full((68, 3), nan, np.float32),
                          model="m", vertices=np.full((100, 3), nan, np.float32),
                          triangles=np.array([[0, 1, 2]], np.int32), rotation=np.full((3, 3), nan))
    annotate(img, [bad], state=MonitorState(signals={"yaw_offset": nan, "perclos": None}),
             info={"fps": nan, "model": None})
    # partial NaN: some landmarks / vertices unknown, angles unknown
    lm = obs.landmarks.copy()
    lm[:10] = nan
    v = obs.vertices.copy()
    v[::7] = nan
    part = FaceObservation(box=obs.box, landmarks=lm, model="m", vertices=v, triangles=obs.triangles,
                           rotation=obs.rotation)
    out = annotate(img, [part])
    assert _changed(out, img).any()
    # faces partly or fully outside the image
    far = FaceObservation(box=obs.box + 5000, landmarks=obs.landmarks + 5000, model="m",
                          vertices=obs.vertices - 5000, triangles=obs.triangles, rotation=obs.rotation)
    annotate(img, [far], info={"fps": 10.0})


def test_angle_text_shows_unknown_angles(face):
    img, obs, _ = face
    known = annotate(img, [obs], layers=_only("text"))
    unknown_obs = FaceObservation(box=obs.box, landmarks=obs.landmarks, model="m")
    unknown = annotate(img, [unknown_obs], layers=_only("text"))
    assert _changed(known, img).any() and _changed(unknown, img).any()
    assert _changed(known, unknown).any()


def test_edge_lists(face):
    _, obs, _ = face
    tri = obs.triangles
    e = mesh_edges(tri, obs.vertices)
    assert e is mesh_edges(tri, obs.vertices)                     # cached
    assert e is mesh_edges(tri.astype(np.int64), obs.vertices)    # a copy of the topology too
    assert 5000 < len(e) < 20000 and e.min() >= 0 and e.max() < len(obs.vertices)
    assert np.all(e[:, 0] != e[:, 1])
    # small meshes: every edge of every triangle
    small = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4]], np.int32)
    es = mesh_edges(small, np.zeros((5, 3)))
    assert {tuple(x) for x in es} == {(0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (3, 4)}
    # coarser grid -> fewer edges
    assert len(decimated_edges(tri, obs.vertices, 20)) < len(decimated_edges(tri, obs.vertices, 40))


def test_mediapipe_mesh_points_drawn_with_its_tessellation(face):
    pytest.importorskip("mediapipe")
    from app.render import mediapipe_edges

    e = mediapipe_edges()
    assert e is not None and e.shape[1] == 2 and e.max() == 467 and len(e) > 2000
    img, obs, _ = face
    # 468 points spread over the face box (a synthetic layout: the test is about drawing)
    rng = np.random.default_rng(0)
    x0, y0, x1, y1 = obs.box
    pts = np.c_[rng.uniform(x0, x1, 468), rng.uniform(y0, y1, 468), np.zeros(468)].astype(np.float32)
    mp_obs = FaceObservation(box=obs.box, landmarks=obs.landmarks, model="mediapipe_face_mesh",
                             mesh_points=pts)
    ch = _changed(annotate(img, [mp_obs], layers=_only("mesh")), img)
    assert ch.sum() > 5000
    assert not ch[: int(y0) - 2].any() and not ch[int(y1) + 3:].any()


def test_layers_from_cli_spec():
    assert Layers.from_spec("all") == Layers()
    assert not any(getattr(Layers.from_spec("none"), n) for n in Layers.NAMES)
    lay = Layers.from_spec("box,landmarks")
    assert [n for n in Layers.NAMES if getattr(lay, n)] == ["box", "landmarks"]
    lay = Layers.from_spec("-mesh,-fps,points")
    assert not lay.mesh and not lay.fps and lay.box and lay.monitor and lay.mesh_style == "points"
    with pytest.raises(ValueError, match="unknown overlay layer 'meshes'"):
        Layers.from_spec("meshes")
    assert tuple(LAYER_NAMES) == Layers.NAMES


def test_grayscale_input_becomes_bgr(face):
    img, obs, _ = face
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    out = annotate(gray, [obs], layers=_only("box"))
    assert out.shape == img.shape
    ref = annotate(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), [obs], layers=_only("box"))
    np.testing.assert_array_equal(out, ref)


def _monitor_panel_state(**signals):
    return MonitorState(calibrating=False, signals=signals)


def _new_red(out, img):
    red = np.all(out == np.asarray(C_CRITICAL, np.uint8), axis=2)
    return red & ~np.all(img == np.asarray(C_CRITICAL, np.uint8), axis=2)


def test_pitch_gauge_red_only_when_looking_down(face):
    """Only looking down counts as looking away (app/monitor/core.py): the pitch gauge shows
    pitch_down and turns red above +threshold, never for looking up; yaw turns red both ways."""
    img, _, _ = face
    rows = [r[0] for r in gauge_rows(_monitor_panel_state(pitch_down=30.0, pitch_threshold=20.0,
                                                          pitch_offset=-30.0))]
    assert rows == ["down"]
    red = {}
    for v in (30.0, -30.0, 10.0, -10.0):
        st = _monitor_panel_state(pitch_down=v, pitch_threshold=20.0, pitch_offset=-v)
        out = annotate(img, [], layers=_only("monitor"), state=st)
        red[v] = int(_new_red(out, img).sum())
    assert red[30.0] > 50                       # down by 30 > 20: a red bar
    assert red[-30.0] == red[10.0] == red[-10.0] == 0   # up by 30, or within 20: not red
    for v in (40.0, -40.0):
        st = _monitor_panel_state(yaw_offset=v, yaw_threshold=30.0)
        assert _new_red(annotate(img, [], layers=_only("monitor"), state=st), img).sum() > 50, v
    # the rule of each gauge (the same test the monitor applies)
    assert gauge_over(25.0, 20.0, "above") and not gauge_over(-25.0, 20.0, "above")
    assert gauge_over(-35.0, 30.0, "abs") and gauge_over(0.1, 0.2, "below")
    assert not gauge_over(5.0, None, None) and not gauge_over(math.nan, 20.0, "above")


def test_pitch_gauge_follows_the_real_monitor_rule(face):
    """A real DriverMonitor: after calibrating, the head goes 30 deg up, then 30 deg down
    (AFLW convention: down = negative pitch). The gauge is red exactly when the monitor counts
    the frame as away."""
    from app.monitor import DriverMonitor

    img, _, _ = face
    mon = DriverMonitor()

    def obs(pitch):
        return FaceObservation(box=np.array([0, 0, 100, 100.]), landmarks=np.zeros((68, 3)), model="x",
                               yaw=0.0, pitch=pitch, eye_open=(0.3, 0.3), mouth_open=0.1)
    for i in range(120):                         # 4 s at 30 fps: calibrated at pitch -4
        st = mon.update(i / 30, i, obs(-4.0))
    assert st.calibrated
    red = {}
    for name, pitch in (("up", 26.0), ("down", -34.0)):
        st = mon.update(4.0, 120, obs(pitch))
        out = annotate(img, [], layers=_only("monitor"), state=st)
        red[name] = int(_new_red(out, img).sum())
        mon = DriverMonitor()
        for i in range(120):
            mon.update(i / 30, i, obs(-4.0))
    assert red["up"] == 0 and red["down"] > 50


def test_blink_rate_is_drawn_in_the_monitor_panel(face):
    """The blink rate (counters["blink_rate_per_min"]) of a real DriverMonitor is a row of the
    monitor panel, its value changes the pixels of that row only."""
    from app.monitor import DriverMonitor

    img, _, _ = face
    h = img.shape[0]
    mon = DriverMonitor()

    def obs(eyes):
        return FaceObservation(box=np.array([0, 0, 100, 100.]), landmarks=np.zeros((68, 3)), model="x",
                               yaw=0.0, pitch=0.0, eye_open=eyes, mouth_open=0.1)
    # 20 s at 30 fps, a 0.2 s blink every 2 s from t = 4 s: 8 blinks -> 8 / 20 s = 24 per minute
    for i in range(600):
        t = i / 30
        shut = t >= 4.0 and (t - 4.0) % 2.0 < 0.2 - 1e-9
        st = mon.update(t, i, obs((0.09, 0.09) if shut else (0.3, 0.3)))
    rate = st.counters["blink_rate_per_min"]
    assert st.counters["blinks"] == 8 and rate == pytest.approx(8 * 60 / (599 / 30))
    rows = gauge_rows(st)
    labels = [r[0] for r in rows]
    assert "blinks" in labels
    row = rows[labels.index("blinks")]
    assert row[1] == rate and row[5].format(row[1]) == "24/min"

    with_rate = annotate(img, [], layers=_only("monitor"), state=st)
    no_counters = MonitorState(calibrating=False, signals=st.signals, counters={})
    without = annotate(img, [], layers=_only("monitor"), state=no_counters)
    assert len(gauge_rows(no_counters)) == len(rows) - 1
    ch = _changed(with_rate, without)
    assert ch[h - 40:].any()                      # the last row (bottom of the panel) is the blink rate
    other = MonitorState(calibrating=False, signals=st.signals, counters=dict(st.counters, blink_rate_per_min=5.0))
    diff = _changed(annotate(img, [], layers=_only("monitor"), state=other), with_rate)
    ys = np.nonzero(diff.any(1))[0]
    sc = _ui_scale(img)
    last_row_top = h - int(12 * sc) - int(22 * sc)        # draw_gauges' layout: the bottom row
    assert len(ys) and ys.min() >= last_row_top - 1       # 24/min vs 5/min: only the blinks row differs
    # before 10 s the rate is NaN: the row is there with "--", no bar
    nan_state = MonitorState(calibrating=False, signals=st.signals, counters={"blink_rate_per_min": math.nan})
    assert [r[0] for r in gauge_rows(nan_state)][-1] == "blinks"
    d2 = _changed(annotate(img, [], layers=_only("monitor"), state=nan_state), with_rate)
    assert d2[h - 40:].any()


def test_overlay_kind_follows_what_the_mesh_is_drawn_as():
    from app.render import overlay_kind
    from app.settings import Layers

    assert overlay_kind(Layers(), triangles=True) == "surface"                      # shaded 3DMM mesh
    assert overlay_kind(Layers(mesh_style="wire"), triangles=True) == "lines"
    assert overlay_kind(Layers(mesh_style="points"), triangles=True) == "lines"
    assert overlay_kind(Layers(), triangles=False) == "lines"                       # the 468-point wireframe
    assert overlay_kind(Layers(mesh=False, mesh_style="wire"), triangles=False) == "surface"   # no mesh at all
