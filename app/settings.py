"""Every setting as plain data: ``Settings`` (the pipeline), ``Layers`` (the overlays, a part of
Settings) and ``RunOptions`` (input and outputs of one run). app/cli.py makes one flag per field
from the field's metadata (``help``, ``group``, ``flag``, ``metavar``, ``choices``); the window
binds its controls to the fields by name.

The driver-monitoring thresholds live in ``monitor`` (app.monitor.settings.MonitorSettings, its
defaults unless the CLI changes them); ``None`` means "no monitor" (--no-monitor).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from app.monitor.settings import MonitorSettings, flag_of

__all__ = ["MESH_MODEL", "MESH_STYLES", "Layers", "Settings", "RunOptions", "MonitorSettings", "flag_of"]

# Settings.model value (and ``--model mesh``) that always runs the built-in mediapipe face mesh
# alone, even when models/ holds an ONNX file.
MESH_MODEL = "mesh"


def _flag(help: str, group: str, **more) -> dict:
    """Field metadata for app/cli.py: the flag's help text, its group in --help and, optionally,
    ``flag`` (when it is not --field-name), ``metavar``, ``choices``."""
    return {"help": help, "group": group, **more}


# --record-quality: libx264 preset, crf and tune of the recording (app/io/writer.py), chosen by
# measurement with python -m app.eval.record_bench on the overlaid clips (docs/benchmarks.md sections 8 and
# 10). What the overlay is made of sets the size: thin dense lines (the wire / points mesh, the
# landmark model's wireframe) cost bits, a shaded surface (the default) costs no more than the
# video under it (expressions_d13 720x1280 30 fps, ultrafast crf 23: 16.2 Mbit/s with the
# wireframe, 5.05 with the shaded mesh, 5.09 with no mesh at all). So each quality has two
# settings, chosen when a recording starts by what it will draw (app.render.overlay_kind):
# - "lines": veryfast is 2.4x smaller than ultrafast at the same crf for ~6 ms more CPU per frame;
#   crf 26 keeps the mesh lines distinct (landmarks, contours and axes stay sharp) at 5.7 Mbit/s.
# - "surface": ultrafast, which already meets the 6 Mbit/s goal there, for 6-8 ms less CPU per
#   frame than veryfast (encoder CPU 8.6 vs 14.9 ms), at the same PSNR over the overlay pixels
#   (26.0 vs 25.9 dB at crf 23 vs 26; talking_head_720p 1280x720 25 fps: 4.6 Mbit/s).
# zerolatency (no lookahead, sliced threads): every frame leaves the encoder at once, so a crash
# loses only the fragment being written, for 8 % more bits than veryfast's 11-frame lookahead.
RECORD_QUALITIES = {
    "small": {"surface": {"preset": "ultrafast", "crf": 26, "tune": "zerolatency"},   # 3.5 Mbit/s
              "lines": {"preset": "veryfast", "crf": 28, "tune": "zerolatency"}},     # 4.1 Mbit/s
    "medium": {"surface": {"preset": "ultrafast", "crf": 23, "tune": "zerolatency"},  # 5.1 Mbit/s
               "lines": {"preset": "veryfast", "crf": 26, "tune": "zerolatency"}},    # 5.7 Mbit/s
    "high": {"surface": {"preset": "ultrafast", "crf": 20, "tune": "zerolatency"},    # 7.0 Mbit/s
             "lines": {"preset": "veryfast", "crf": 23, "tune": "zerolatency"}},      # 8.3 Mbit/s
}
# the two kinds of overlay (the keys of each RECORD_QUALITIES entry)
OVERLAY_KINDS = ("surface", "lines")


# the mesh overlay's styles (Layers.mesh_style; app.render draws them), the default first
MESH_STYLES = ("shaded", "wire", "points")


@dataclass
class Layers:
    """The overlay switches (app/render.py draws them; --layers, the window's check boxes)."""
    box: bool = True
    landmarks: bool = True
    mesh: bool = True
    axes: bool = True
    text: bool = True       # yaw / pitch / roll per face
    fps: bool = True
    model: bool = True
    monitor: bool = True
    # "shaded" (lit, z-buffered grey surface), "wire" (decimated wireframe) or "points" (every
    # vertex); a mesh without triangles (the face mesh's 468 points) is drawn as its wireframe
    mesh_style: str = "shaded"

    NAMES = ("box", "landmarks", "mesh", "axes", "text", "fps", "model", "monitor")

    @classmethod
    def from_spec(cls, spec: str) -> "Layers":
        """CLI form: "all", "none", a comma list ("box,landmarks"), or changes to the defaults
        ("-mesh,+points"; "shaded"/"wire"/"points" pick the mesh style). ValueError names a bad item."""
        spec = (spec or "").strip().lower()
        items = [x.strip() for x in spec.split(",") if x.strip()]
        if items == ["all"]:
            return cls()
        if items == ["none"]:
            return cls(**{n: False for n in cls.NAMES})
        relative = all(x[0] in "+-" for x in items if x not in MESH_STYLES)
        lay = cls() if relative else cls(**{n: False for n in cls.NAMES})
        for x in items:
            if x.lstrip("+") in MESH_STYLES:
                lay.mesh_style = x.lstrip("+")
                continue
            on = not x.startswith("-")
            name = x.lstrip("+-")
            if name not in cls.NAMES:
                raise ValueError(f"unknown overlay layer {name!r} (choose from {', '.join(cls.NAMES)}, all, none; "
                                 f"mesh styles {', '.join(MESH_STYLES)})")
            setattr(lay, name, on)
        return lay


@dataclass
class Settings:
    # ---- model
    # Path of an ONNX file that follows the export contract (docs/export.md); MESH_MODEL ("mesh") =
    # the built-in mediapipe face mesh alone; None = the first models/*.onnx (sorted by name) when
    # there is one, else the shipped 3DDFA-V2 model (assets/models/).
    model: Optional[str] = field(default=None, metadata=_flag(
        '3DMM model following the export contract, or "mesh" for the built-in mediapipe face mesh alone '
        '(default: the first models/*.onnx, else the shipped 3DDFA-V2)', "model", metavar="M.onnx|mesh"))
    # auto: CUDA then CPU (one log line says which provider really runs); cuda: CUDA or an error
    # (never a silent CPU fallback); cpu: CPU only.
    device: str = field(default="auto", metadata=_flag(
        "onnxruntime device: auto = CUDA if it starts, else CPU", "model", choices=("auto", "cuda", "cpu")))
    # onnxruntime intra-op threads; 0 = onnxruntime's default (one per physical core). 1 because
    # the frame's other stages (decode thread, face mesh, encoder) use the other core: 3DDFA-V2 x0.5
    # batch 1 with dense vertices measured 3.7 ms median with 1 thread vs 8.0 ms with 2 on the
    # busy 2-core dev machine (docs/benchmarks.md).
    threads: int = field(default=1, metadata=_flag(
        "onnxruntime intra-op threads, 0 = its default", "model", metavar="N"))
    # Horizontal-flip averaging: each face crop and its mirror image go through one onnxruntime run
    # and the 68 points (mirror-renamed) and the rotation (yaw and roll mirrored) are averaged; the
    # dense mesh stays the unflipped crop's. AFLW2000-3D, shipped model, official crops (python -m
    # export.evaluate aflw2000 --option flip; docs/benchmarks.md section 11): mean NME of the yaw
    # bins 3.806 -> 3.654 %, pose MAE 3.91 -> 3.78 deg (pitch 5.31 -> 5.11), for 1.38x the 3DMM
    # stage's CPU time per face (python -m app.eval.stage_cost). Off by default: the whole pipeline
    # then costs 11.9 % more CPU per frame (python -m app.eval.ab_cpu --b=--flip-average on
    # expressions_d13), over the 5 % a new default may cost.
    flip_average: bool = field(default=False, metadata=_flag(
        "3DMM: average each face with its mirror image (one batched run; ~1.4x the 3DMM's cost)", "model"))
    # The dense mesh (what the 3D-face overlay draws) on about this fraction of the 3DMM's vertices:
    # vertex clustering on the model's mean face (app.core.geometry.decimate_mesh), done once when the
    # model loads; the session then computes only the kept vertices, and the app maps, smooths and
    # draws only those. It changes the drawn face only: every other output (68 points, pose, eyes,
    # gaze, monitor, dump) is the same, value for value (tests/test_mesh_detail.py). The shaded
    # overlay's cells follow the vertex spacing, so 0.25 draws the face half as finely: at half the
    # size (--record-scale 0.5) it looks as 1 does at full size. 0.25 with --record-scale 0.5: 0.70-0.78
    # of the default's CPU per recorded frame in alternating rounds (22.6-27.5 ms against 29.8-39.5 on
    # the 2-core dev machine, whose speed drifted: docs/benchmarks.md section 18). The 3DMM run: 1.57
    # vs 3.64 ms per face at 0.25. 1 = every vertex.
    mesh_detail: float = field(default=1.0, metadata=_flag(
        "3DMM: compute and draw the dense mesh on about this fraction of its vertices (0-1]; "
        "only the drawn 3D face changes", "model", metavar="F"))

    # ---- detection and tracking
    # Run the face detector every K frames (and whenever a face is lost); in between, each face is
    # followed from its previous landmarks (3DDFA-V2's landmark crop policy). K=1 detects every
    # frame. 5 = detection cost (~2 ms with BlazeFace short range here) spread over 5 frames while a
    # new face entering the view is picked up within 0.2 s at 25 fps.
    detect_every: int = field(default=5, metadata=_flag(
        "run the face detector every K frames and when a face is lost", "detection and tracking", metavar="K"))
    # The 3DMM's crop between detections (3DDFA-V2's box from the previous frame's 68 points, the
    # same rule that makes AFLW2000-3D's official boxes from the ground truth) scaled about its
    # centre; 1 = that rule. 0.9, chosen on the even-indexed AFLW2000-3D images through the app's own
    # tracked crop (python -m export.evaluate aflw2000 --crop pipeline-tracked --crop-scale S;
    # docs/benchmarks.md section 11): mean NME of the yaw bins 4.262 -> 4.245 %, pose MAE 3.98 ->
    # 3.90 deg (even); 4.148 -> 4.094 %, 3.92 -> 3.82 deg on all 2,000 (on the official boxes too:
    # 0.85-0.95 all beat 1, 0.9 best with --flip-average). Same work per frame; gaze_eval with the
    # 3DMM head pose keeps every agreement / glance / head-rule / turned count (noise within 0.3 deg).
    landmark_crop_scale: float = field(default=0.9, metadata=_flag(
        "scale of the 3DMM's crop from the previous landmarks (tracked frames)", "detection and tracking",
        metavar="S"))
    # BlazeFace score threshold; 0.5 is mediapipe's default.
    min_detection_confidence: float = field(default=0.5, metadata=_flag(
        "detector score threshold", "detection and tracking", metavar="P"))
    # Most faces processed per frame (largest first); 1 is enough for driver monitoring.
    max_faces: int = field(default=4, metadata=_flag(
        "most faces per frame, largest-score first", "detection and tracking", metavar="N"))
    # A detection continues a track when IoU(detection box, track's 68-point box) >= this. The two
    # boxes of the same face overlap at IoU 0.68-0.86 (min over the shared expression clips, face
    # mesh, every 5th frame); 0.3 leaves room for fast motion between detections.
    iou_match: float = field(default=0.3, metadata=_flag(
        "a detection continues a track at IoU >= this with its box", "detection and tracking", metavar="IOU"))

    # ---- face mesh (eyes and mouth in every mode, the whole model in face-mesh mode)
    # Run the mediapipe face landmark model on each face crop also in ONNX mode (per-eye openness,
    # mouth openness, iris and blendshapes come from it: 3DMM eyelids never close). Off = eye/mouth
    # unknown (NaN).
    eyes_from_mesh: bool = field(default=True, metadata=_flag(
        "3DMM mode: skip the face landmark model per face (eye / mouth openness unknown)",
        "detection and tracking", flag="--no-eyes"))
    # LiteRT threads of the landmark model; 0 = auto (mesh_threads_for). Alone it takes 4.6 ms with
    # 2 threads vs 7.4 ms with 1 per 256 px face crop (with blendshapes) on the 2-core dev machine;
    # beside the 3DMM, which runs at the same time on the other thread, one LiteRT thread leaves
    # that core to the 3DMM and the encoder: the default pipeline ran 0.1-4.1 fps faster with one
    # in six alternating pairs on two clips (docs/benchmarks.md section 10).
    mesh_threads: int = field(default=0, metadata=_flag(
        "LiteRT threads of the face landmark model, 0 = auto (1 beside the 3DMM on <= 2 cores, else 2)",
        "detection and tracking", metavar="N"))

    # ---- temporal smoothing (One Euro filter, Casiez et al. CHI 2012), per tracked face
    # On: every face's landmarks, mesh and pose go through the filter; off: raw per-frame outputs.
    smoothing: bool = field(default=True, metadata=_flag(
        "raw per-frame outputs", "smoothing (One Euro filter)", flag="--no-smoothing"))
    # Hz; lower = steadier at rest. 1.0 Hz is the paper's starting point.
    smooth_min_cutoff: float = field(default=1.0, metadata=_flag(
        "cutoff at rest", "smoothing (One Euro filter)", metavar="HZ"))
    # cutoff grows by beta x speed (px/s or deg/s): at 300 px/s the cutoff is 1 + 0.05 * 300 = 16 Hz,
    # i.e. almost no lag when the head moves fast, while sub-pixel jitter (~10 px/s) stays filtered.
    smooth_beta: float = field(default=0.05, metadata=_flag(
        "speed coefficient: higher = less lag when moving", "smoothing (One Euro filter)", metavar="B"))
    # Hz, cutoff of the speed estimate (the paper's 1 Hz).
    smooth_d_cutoff: float = field(default=1.0, metadata=_flag(
        "cutoff of the speed estimate", "smoothing (One Euro filter)", metavar="HZ"))

    # ---- output
    # Which overlays are drawn (all by default: the window's check boxes and --layers turn them off).
    layers: Layers = field(default_factory=Layers, metadata=_flag(
        'overlays: "all", "none", a list "box,landmarks,mesh,axes,text,fps,model,monitor", '
        'or changes "-mesh,+axes"; mesh style "shaded" (default), "wire" or "points"', "output", metavar="SPEC",
        parse=Layers.from_spec, default_text="all"))

    # ---- driver monitoring (app.monitor.settings.MonitorSettings, its defaults); None = monitor off
    monitor: Optional[MonitorSettings] = field(default_factory=MonitorSettings, metadata=_flag(
        "turn driver monitoring off", "driver monitoring (docs/driver-monitoring.md)", flag="--no-monitor"))

    def mesh_threads_for(self, beside_3dmm: bool, cpus: Optional[int] = None) -> int:
        """The landmark model's LiteRT threads: ``mesh_threads``, or for 0 (auto) 1 when it runs
        beside the 3DMM on a machine with at most 2 cores, else 2."""
        if self.mesh_threads:
            return self.mesh_threads
        cpus = os.cpu_count() if cpus is None else cpus
        return 1 if beside_3dmm and (cpus or 1) <= 2 else 2

    def validate(self) -> None:
        """ValueError naming the flag of the first bad value."""
        if self.device not in ("auto", "cuda", "cpu"):
            raise ValueError(f"--device must be auto, cuda or cpu, got {self.device!r}")
        if self.mesh_threads < 0:
            raise ValueError(f"--mesh-threads must be >= 0 (0 = auto), got {self.mesh_threads}")
        if not 0.5 <= self.landmark_crop_scale <= 2.0:
            raise ValueError(f"--landmark-crop-scale must be within 0.5-2, got {self.landmark_crop_scale}")
        if self.detect_every < 1:
            raise ValueError(f"--detect-every must be >= 1, got {self.detect_every}")
        if self.max_faces < 1:
            raise ValueError(f"--max-faces must be >= 1, got {self.max_faces}")
        if not 0.0 < self.min_detection_confidence < 1.0:
            raise ValueError(f"--min-detection-confidence must be in (0, 1), got {self.min_detection_confidence}")
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0, got {self.threads}")
        if not 0.0 < self.mesh_detail <= 1.0:
            raise ValueError(f"--mesh-detail must be in (0, 1], got {self.mesh_detail}")
        if not 0.0 < self.iou_match <= 1.0:
            raise ValueError(f"--iou-match must be in (0, 1], got {self.iou_match}")
        if self.smooth_min_cutoff <= 0 or self.smooth_d_cutoff <= 0 or self.smooth_beta < 0:
            raise ValueError("--smooth-min-cutoff and --smooth-d-cutoff must be > 0 and --smooth-beta >= 0")


@dataclass
class RunOptions:
    """Input and outputs of one run (main.py, python -m app.gui): not pipeline settings, they
    never reach the Pipeline. ``headless_only``: the window ignores the field (it says so)."""
    # ---- input (one of)
    # A video file (or an image: a one-frame clip).
    video: Optional[str] = field(default=None, metadata=_flag(
        "video file (or an image: a one-frame clip)", "input (one of)", metavar="FILE"))
    # A camera index (0 = the first camera).
    camera: Optional[int] = field(default=None, metadata=_flag(
        "camera index (0 = first camera)", "input (one of)", metavar="N", type=int))
    # Restart the video at its end (the window always loops files).
    loop: bool = field(default=False, metadata=_flag(
        "restart the video at its end (until Ctrl-C)", "input (one of)"))

    # ---- outputs
    # Run without the window (main.py; python -m app.gui always opens it).
    headless: bool = field(default=False, metadata=_flag(
        "no window: process, record, dump, print progress", "output"))
    # The annotated video (H.264, fragmented .mp4: app/io/writer.py).
    record: Optional[str] = field(default=None, metadata=_flag(
        "write the annotated video (H.264, fragmented MP4)", "output", metavar="OUT.mp4"))
    # The recording's encoder settings, one of RECORD_QUALITIES (measured there).
    record_quality: str = field(default="medium", metadata=_flag(
        "recording size vs detail: " + ", ".join(
            f"{k} = libx264 {v['surface']['preset']} crf {v['surface']['crf']} (wire / points mesh: "
            f"{v['lines']['preset']} crf {v['lines']['crf']})" for k, v in RECORD_QUALITIES.items())
        + "; about 3.5, 5, 7 Mbit/s at 720p30 with the shaded overlay", "output", choices=tuple(RECORD_QUALITIES)))
    # The recording at this fraction of the source's width and height: the frame made smaller
    # (app.render.downscale: area averaging by a whole factor, then bilinear) and the overlay drawn
    # on it at that size. 0.5 is a quarter of the pixels to draw, convert and encode: with
    # --mesh-detail 0.25, 0.70-0.78 of the default's CPU per recorded frame (docs/benchmarks.md
    # section 18), and a third of the file. The analysis runs on the full frames either way. The
    # window records at full size.
    record_scale: float = field(default=1.0, metadata=_flag(
        "record at this fraction of the source's size (0-1]", "output", metavar="S", type=float,
        headless_only=True))
    # One JSON line per frame with every face (README: --dump).
    dump: Optional[str] = field(default=None, metadata=_flag(
        "one JSON line per frame with every face", "output", metavar="OUT.jsonl", headless_only=True))
    # The driver-monitoring events as JSON lines (the window writes them beside each recording).
    events: Optional[str] = field(default=None, metadata=_flag(
        "driver-monitoring events (JSON lines)", "output", metavar="OUT.jsonl", headless_only=True))
    # Play the alert sound on new alerts (always on in the window).
    sound: bool = field(default=False, metadata=_flag("play the alert sound on new alerts", "output"))
    # Stop after this many frames (None = until the input ends).
    max_frames: Optional[int] = field(default=None, metadata=_flag(
        "stop after N frames", "output", metavar="N", type=int, headless_only=True))
    # No progress lines (the summary is still printed).
    quiet: bool = field(default=False, metadata=_flag(
        "no progress lines (the summary is still printed)", "output", headless_only=True))

    @property
    def source(self):
        """The input the options name: the --video path, the --camera index, or None."""
        if self.video not in (None, ""):
            return str(self.video)
        return None if self.camera is None else int(self.camera)
