"""The shaded mesh style (app.render.draw_shaded): lit, z-buffered, blended over the image.

Synthetic spheres, whose visible surface and its normals are known in closed form, check the
lighting (brighter where the normal faces the light, the intensity of Phong's formula pixel by
pixel), the z-buffer (a sphere behind another does not show through it, a back hemisphere never
shows) and that pixels off the surface are left exactly as they were. A real face (3DDFA-V2's
official dense mesh on portrait_glasses.jpg) is checked against a slow exact reference: every
triangle filled at full resolution with cv2.fillPoly in depth order, lit from the area-weighted
normals."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import scipy.io as sio

from app import render
from app.core.types import FaceObservation
from app.render import Layers, annotate, draw_shaded, shaded_layer
from tests.conftest import shared


def sphere(cx, cy, r, z0=0.0, cap_deg=150.0, n_lat=90, n_lon=180):
    """A sphere cap in image coordinates (x right, y down, z towards the camera): the points up
    to ``cap_deg`` from the direction of the camera, an open shell like a face mask. Beyond 90 deg
    its outer side faces away from the camera, hidden behind the front."""
    th = np.radians(np.linspace(0, cap_deg, n_lat + 1))[1:]
    ph = np.linspace(0, 2 * math.pi, n_lon, endpoint=False)
    t, f = np.meshgrid(th, ph, indexing="ij")
    p = np.stack([np.sin(t) * np.cos(f), np.sin(t) * np.sin(f), np.cos(t)], -1).reshape(-1, 3)
    p = np.vstack([p, [[0.0, 0.0, 1.0]]])
    pole = len(p) - 1
    idx = np.arange(n_lat * n_lon).reshape(n_lat, n_lon)
    a, b = idx[:-1], np.roll(idx[:-1], -1, axis=1)
    c, d = idx[1:], np.roll(idx[1:], -1, axis=1)
    tri = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([b, d, c], -1).reshape(-1, 3),
                          np.stack([np.full(n_lon, pole), idx[0], np.roll(idx[0], -1)], -1)])
    v = p * r + (cx, cy, z0)
    return v.astype(np.float32), tri.astype(np.int32)


def phong(n):
    """The module's lighting formula for unit camera-frame normals (..., 3)."""
    light = np.asarray(render.SHADE_LIGHT, float)
    light /= np.linalg.norm(light)
    cos = n @ light
    spec = np.where(cos > 0, np.clip(2 * cos * n[..., 2] - light[2], 0, 1) ** render.SHADE_SHININESS, 0)
    return np.clip(render.SHADE_AMBIENT + render.SHADE_DIFFUSE * np.clip(cos, 0, 1)
                   + render.SHADE_SPECULAR * spec, 0, 1)


def analytic(shape, cx, cy, r):
    """Per pixel: inside the disk, and the front hemisphere's unit normal there."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    dx, dy = (xx - cx) / r, (yy - cy) / r
    rr = dx * dx + dy * dy
    n = np.stack([dx, dy, np.sqrt(np.clip(1 - rr, 0, 1))], -1)
    return rr, n


@pytest.fixture(autouse=True)
def _fresh_caches():
    render._STENCIL_CACHE.clear()
    render._CAMERA_SIDE.clear()


def test_sphere_is_lit_by_phong_and_leaves_the_rest_untouched():
    cx, cy, r = 120.3, 110.7, 80.0
    v, tri = sphere(cx, cy, r)
    img = np.random.default_rng(0).integers(0, 256, (240, 250, 3), dtype=np.uint8)
    out = img.copy()
    lay = draw_shaded(out, v, tri)
    assert lay is not None and 1.0 <= lay.cell < 6.0
    rr, n = analytic(img.shape, cx, cy, r)
    changed = np.any(out != img, axis=2)
    # off the disk (beyond one grid cell's diagonal from its outline): exactly the input
    assert not changed[rr > ((r + math.sqrt(2) * lay.cell + 1) / r) ** 2].any()
    # the disk is covered without holes (inside one cell of the outline)
    inner = rr < ((r - lay.cell - 1) / r) ** 2
    m = np.zeros(img.shape[:2], np.uint8)
    m[lay.y0:lay.y0 + lay.mask.shape[0], lay.x0:lay.x0 + lay.mask.shape[1]] = lay.mask
    assert (m[inner] == 255).all()
    # the grey layer is Phong's intensity of the front hemisphere's normal, pixel by pixel
    # (the back hemisphere, which projects onto the same disk, would be ambient-dark)
    g = np.zeros(img.shape[:2], np.float32)
    g[lay.y0:lay.y0 + lay.grey.shape[0], lay.x0:lay.x0 + lay.grey.shape[1]] = lay.grey
    want = phong(n) * 255
    err = np.abs(g - want)[rr < 0.9 ** 2]
    assert np.median(err) < 3 and np.percentile(err, 99) < 15, (np.median(err), np.percentile(err, 99))
    # brightest where the normal faces the light, darkest on the far side
    light = np.asarray(render.SHADE_LIGHT, float) / np.linalg.norm(render.SHADE_LIGHT)
    lit_at = (int(cy + 0.97 * r * light[1]), int(cx + 0.97 * r * light[0]))
    away = (int(cy - 0.8 * r * light[1]), int(cx - 0.8 * r * light[0]))
    assert g[lit_at] > g[int(cy), int(cx)] > g[away]
    assert g[lit_at] > 0.95 * 255 * (render.SHADE_AMBIENT + render.SHADE_DIFFUSE)
    # the blend itself: alpha x grey + (1 - alpha) x image where covered
    a = render.SHADE_ALPHA
    blend = a * g[..., None] + (1 - a) * img.astype(np.float32)
    assert np.abs(out[inner].astype(np.float32) - blend[inner]).max() <= 1.0


def test_either_z_convention_and_winding_give_the_same_image():
    v, tri = sphere(100, 100, 70, n_lat=60, n_lon=120)
    base = np.full((200, 200, 3), 60, np.uint8)
    ref = base.copy()
    draw_shaded(ref, v, tri)
    for vv, tt in ((v * (1, 1, -1), tri), (v, tri[:, ::-1]), (v * (1, 1, -1), tri[:, ::-1])):
        render._STENCIL_CACHE.clear()
        render._CAMERA_SIDE.clear()
        out = base.copy()
        draw_shaded(out, np.ascontiguousarray(vv, np.float32), np.ascontiguousarray(tt))
        np.testing.assert_array_equal(out, ref)


def test_a_sphere_behind_another_is_hidden_where_they_overlap():
    shape = (220, 300, 3)
    big = sphere(170, 110, 90, z0=0.0)
    small = sphere(80, 110, 50, z0=0.0)
    base = np.zeros(shape, np.uint8)

    def render_pair(z_small):
        v = np.vstack([big[0], small[0] + (0, 0, z_small)])
        tri = np.vstack([big[1], small[1] + len(big[0])])
        render._STENCIL_CACHE.clear()
        lay = shaded_layer(v, tri, shape)
        g = np.zeros(shape[:2], np.float32)
        g[lay.y0:lay.y0 + lay.grey.shape[0], lay.x0:lay.x0 + lay.grey.shape[1]] = lay.grey
        return g

    rr_b, n_b = analytic(shape, 170, 110, 90)
    rr_s, n_s = analytic(shape, 80, 110, 50)
    overlap = (rr_b < 0.8 ** 2) & (rr_s < 0.8 ** 2)
    assert overlap.sum() > 500
    # small sphere in front (its centre 200 px nearer the camera): the overlap shows its surface
    g = render_pair(200.0)
    assert np.median(np.abs(g - phong(n_s) * 255)[overlap]) < 3
    # behind (200 px farther): the big sphere covers it; the small one shows only off the big disk
    g = render_pair(-200.0)
    assert np.median(np.abs(g - phong(n_b) * 255)[overlap]) < 3
    only_small = (rr_s < 0.8 ** 2) & (rr_b > 1.1 ** 2)
    assert np.median(np.abs(g - phong(n_s) * 255)[only_small]) < 3


def test_unknown_vertices_and_faces_off_the_image():
    v, tri = sphere(100, 100, 60, n_lat=40, n_lon=80)
    img = np.full((200, 200, 3), 90, np.uint8)
    assert draw_shaded(img.copy(), np.full_like(v, np.nan), tri) is None
    part = v.copy()
    part[::5] = np.nan
    out = img.copy()
    assert draw_shaded(out, part, tri) is not None and np.any(out != img)
    out = img.copy()
    assert draw_shaded(out, v + (5000, 0, 0), tri) is None
    np.testing.assert_array_equal(out, img)
    half = img.copy()
    draw_shaded(half, v + (-100, 0, 0), tri)            # the left half of the sphere is off the image
    ch = np.any(half != img, axis=2)
    assert ch[:, :50].mean() > 0.4 and not ch[:, 70:].any()


# ------------------------------------------------------------------------------ a real face
@pytest.fixture(scope="module")
def face():
    d = np.load(shared("fixtures", "3ddfa_v2", "mb05_parity.npz"))
    img = cv2.imread(str(shared("media", "portrait_glasses.jpg")))
    tri = sio.loadmat(str(shared("bfm", "3dmm_data", "tri.mat")))["tri"].T.astype(np.int32) - 1
    return img, d["dense_vertices_image"].T.astype(np.float32), tri, np.asarray(d["face_box"][:4], float)


def reference_render(shape, v, tri):
    """Slow and exact: each triangle whose three vertices face the camera filled at full
    resolution (cv2.fillPoly, 1/8 px precision), far to near, in the mean intensity of its
    vertices lit from the area-weighted normals (not the renderer's stencil normals)."""
    n = render.area_weighted_normals(v, tri).astype(np.float32)
    nx, ny, nz = (np.ascontiguousarray(n[:, k]) for k in range(3))
    outward, camera, _ = render.camera_side(v, nx, ny, nz)
    inten, front, depth = render.shade_normals(v, nx, ny, nz, outward, camera)
    keep = front[tri].all(1)
    t = tri[keep]
    order = np.argsort(depth[t].mean(1))                 # far first, near last
    grey = np.zeros(shape[:2], np.uint8)
    mask = np.zeros(shape[:2], np.uint8)
    pts = np.rint(v[:, :2] * 8).astype(np.int32)
    col = (inten[t].mean(1) * 255 + 0.5).astype(np.uint8)
    for i in order:
        poly = pts[t[i]][None]
        cv2.fillPoly(grey, poly, int(col[i]), cv2.LINE_8, shift=3)
        cv2.fillPoly(mask, poly, 255, cv2.LINE_8, shift=3)
    return grey, mask


def test_real_face_matches_the_exact_reference(face):
    img, v, tri, box = face
    lay = shaded_layer(v, tri, img.shape)
    grey = np.zeros(img.shape[:2], np.uint8)
    mask = np.zeros(img.shape[:2], np.uint8)
    sl = np.s_[lay.y0:lay.y0 + lay.grey.shape[0], lay.x0:lay.x0 + lay.grey.shape[1]]
    grey[sl], mask[sl] = lay.grey, lay.mask
    ref_grey, ref_mask = reference_render(img.shape, v, tri)
    a, b = mask > 0, ref_mask > 0
    assert (a & b).sum() / (a | b).sum() > 0.97          # the same outline
    err = np.abs(grey.astype(int) - ref_grey.astype(int))[a & b]
    # (measured: median 2, 90th percentile 14 of 255: one vertex per cell against triangles'
    # flat means)
    assert np.median(err) <= 3 and np.percentile(err, 90) <= 16, (np.median(err), np.percentile(err, 90))
    # the face box is covered as much as the reference covers it, and the shading has relief
    x0, y0, x1, y1 = box.astype(int)
    assert a[y0:y1, x0:x1].mean() > b[y0:y1, x0:x1].mean() - 0.02 > 0.7
    assert np.percentile(grey[a], 95) - np.percentile(grey[a], 5) > 60


def test_real_face_shaded_is_the_default_style_and_blends_only_on_the_surface(face):
    img, v, tri, box = face
    obs = FaceObservation(box=box, landmarks=np.full((68, 3), np.nan, np.float32), model="m",
                          vertices=v, triangles=tri)
    only_mesh = Layers(**{n: False for n in Layers.NAMES})
    only_mesh.mesh = True
    assert only_mesh.mesh_style == "shaded" and Layers.from_spec("-box").mesh_style == "shaded"
    out = annotate(img, [obs], layers=only_mesh)
    lay = shaded_layer(v, tri, img.shape)
    m = np.zeros(img.shape[:2], bool)
    m[lay.y0:lay.y0 + lay.mask.shape[0], lay.x0:lay.x0 + lay.mask.shape[1]] = lay.mask > 0
    np.testing.assert_array_equal(out[~m], img[~m])
    assert np.any(out[m] != img[m], axis=1).mean() > 0.9
    # no triangles (a model without that output): the points style instead
    pts = annotate(img, [FaceObservation(box=box, landmarks=obs.landmarks, model="m", vertices=v)],
                   layers=only_mesh)
    assert np.any(pts != img, axis=2).sum() > 1000


def test_mesh_style_from_the_command_line():
    assert Layers.from_spec("wire").mesh_style == "wire"
    assert Layers.from_spec("-mesh,points").mesh_style == "points"
    lay = Layers.from_spec("box,mesh,shaded")
    assert lay.mesh and lay.box and not lay.landmarks and lay.mesh_style == "shaded"
    with pytest.raises(ValueError, match="mesh styles shaded, wire, points"):
        Layers.from_spec("+flat")


def _plain_shade(v, nx, ny, nz, outward, camera, light=render.SHADE_LIGHT):
    """shade_normals' formulas over whole arrays (the power everywhere), as first written."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.float32(outward) / np.sqrt(nx * nx + ny * ny + nz * nz)
        nx, ny, nz = nx * inv, ny * inv, nz * inv * np.float32(camera)
        lx, ly, lz = (np.asarray(light, np.float64) / np.linalg.norm(light)).astype(np.float32)
        cos = nx * lx + ny * ly + nz * lz
        lit = np.clip(cos, 0.0, 1.0)
        spec = np.clip(2.0 * cos * nz - lz, 0.0, 1.0) ** render.SHADE_SHININESS
        spec[~(cos > 0)] = 0.0
        intensity = np.clip(render.SHADE_AMBIENT + render.SHADE_DIFFUSE * lit + render.SHADE_SPECULAR * spec, 0.0, 1.0)
        front = nz > 0
    front &= np.isfinite(v).all(1)
    return intensity.astype(np.float32), front, v[:, 2] * np.float32(camera), spec


def _plain_camera_side(v, nx, ny, nz):
    """camera_side over a boolean selection of the known vertices, as first written."""
    sub = slice(None, None, 7)
    sx, sy, sz, vs = nx[sub], ny[sub], nz[sub], v[sub]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.sqrt(sx * sx + sy * sy + sz * sz)
        ok = np.isfinite(inv) & np.isfinite(vs.sum(1))
    inv, vs = inv[ok], vs[ok].astype(np.float64)
    sx, sy, sz = sx[ok] * inv, sy[ok] * inv, sz[ok] * inv
    c = vs.mean(0)
    out = 1.0 if (np.dot(vs[:, 0] - c[0], sx) + np.dot(vs[:, 1] - c[1], sy) + np.dot(vs[:, 2] - c[2], sz)) >= 0 else -1.0
    toward = out * float(sz.sum())
    return out, (1.0 if toward >= 0 else -1.0), abs(toward) / max(float(np.abs(sz).sum()), 1e-12)


@pytest.mark.parametrize("unknown", [False, True])
def test_shading_and_camera_side_equal_the_plain_formulas_bit_for_bit(face, unknown):
    """The shading takes the specular power only where it is not 0, and the camera side skips the
    selection when every vertex is known: both give exactly the values of the plain formulas,
    on the real face mesh with and without unknown vertices (NaN normals around them)."""
    _, v, tri, _ = face
    v = v.copy()
    if unknown:
        v[::11] = np.nan
    nx, ny, nz = render.vertex_normals(v, render.normal_stencil(tri, np.nan_to_num(v)))
    side = render.camera_side(v, nx, ny, nz)
    assert side == _plain_camera_side(v, nx, ny, nz)
    outward, camera, _ = side
    got = render.shade_normals(v, nx.copy(), ny.copy(), nz.copy(), outward, camera)
    *want, spec = _plain_shade(v, nx.copy(), ny.copy(), nz.copy(), outward, camera)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
    # both sides of the selection are exercised: a highlight on part of the face, none elsewhere
    assert 0.02 < np.mean(spec[got[1]] > 0) < 0.9
