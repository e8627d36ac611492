"""Head pose from the 3DMM and the face landmark model combined, on AFLW2000-3D:
``python -m app.eval.aflw_mesh_pose --data ../shared/media/aflw2000_full [--model M.onnx]``.

An option tried for issue 22: the live pipeline runs MediaPipe's 478-point landmark model on every
face anyway (eyes), and app.facemesh.head_rotation turns its points into a rotation; is the
rotation nearest to the mean of that and the 3DMM's (single pass, or flip-averaged) closer to
Pose_Para? The landmark model runs on the crop the live pipeline gives it for a face it has not
seen (app.facemesh.mesh_box_from_detection of the 3DMM's 68-point box), then once more on the box
of its own points (the next frame's crop). Images where it finds no face keep the 3DMM's pose.
Prints pose MAE (the +-99 deg subset) for even-, odd-indexed and all images, on the images the
landmark model finds and on all.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv=None) -> int:
    from app import assets
    from app.core import geometry as g
    from app.facemesh import MeshLandmarker, head_rotation, mesh_box_from_detection, mesh_crop, to68
    from app.tracker import landmark_box
    from export import evaluate as ev

    ap = argparse.ArgumentParser(prog="python -m app.eval.aflw_mesh_pose", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="AFLW2000-3D folder (export.evaluate layouts)")
    ap.add_argument("--model", default=str(assets.DEFAULT_3DMM))
    a = ap.parse_args(argv)
    try:
        samples = ev.load_aflw2000(a.data)
        imgs, _, poses = ev._read_samples(samples)
        if any(p is None for p in poses):
            raise ev.EvalInputError(f"{a.data}: Pose_Para missing for some images (.mat files needed)")
        pred, R1, _, _ = ev._protocol_predictions(a.model, samples, imgs, 64, ("CPUExecutionProvider",), "single")
        _, R2, _, _ = ev._protocol_predictions(a.model, samples, imgs, 64, ("CPUExecutionProvider",), "flip")
    except ev.EvalInputError as e:
        print(f"aflw_mesh_pose: error: {e}", file=sys.stderr)
        return 2
    gt = np.stack(poses)
    ml = MeshLandmarker(threads=1, blendshapes=False)
    Rm = np.full((len(samples), 3, 3), np.nan)
    for i, (img, p) in enumerate(zip(imgs, pred)):
        r = ml(img, mesh_box_from_detection(landmark_box(p)))
        if r is not None:
            r = ml(img, *mesh_crop(r.points)) or r
            Rm[i] = head_rotation(to68(r.points))
    found = np.isfinite(Rm).all(axis=(1, 2))
    sub = np.all(np.abs(gt) <= ev.POSE_LIMIT_DEG, axis=1)

    def comb(R):
        return np.stack([g.orthonormal(x + y) if ok else x for x, y, ok in zip(R, Rm, found)])

    rows = {"3DMM": R1, "3DMM flip": R2, "face mesh": Rm, "3DMM + face mesh": comb(R1),
            "3DMM flip + face mesh": comb(R2)}
    n = len(samples)
    for split in ev.SPLITS:
        idx = ev._split_index(n, split)
        for label, sel in (("images the face mesh finds", idx[sub[idx] & found[idx]]), ("all", idx[sub[idx]])):
            print(f"split {split}, {label}: {len(sel)} images within +-99 deg")
            for name, R in rows.items():
                if name == "face mesh" and label == "all":
                    continue
                e = ev.angle_diff_deg(np.stack([g.pose_aflw_deg(x) for x in R[sel]]), gt[sel]).mean(0)
                print(f"  {name:24s} pitch {e[0]:.2f}  yaw {e[1]:.2f}  roll {e[2]:.2f}  mean {e.mean():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
