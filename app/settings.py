"""Pipeline settings: one dataclass, every field a CLI flag (app/cli.py), each with its source.

The driver-monitoring thresholds live in ``monitor`` (app.monitor.MonitorSettings, with its
defaults unless the CLI changes them); ``None`` means "no monitor" (--no-monitor).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from app.render import Layers

# Settings.model value (and ``--model mesh``) that always runs the built-in mediapipe face mesh
# alone, even when models/ holds an ONNX file.
MESH_MODEL = "mesh"


def _default_monitor():
    try:
        from app.monitor import MonitorSettings
    except ImportError:   # the monitor package is optional for the pipeline
        return None
    return MonitorSettings()


@dataclass
class Settings:
    # ---- model
    # Path of an ONNX file that follows the export contract (docs/export.md); MESH_MODEL ("mesh") =
    # the built-in mediapipe face mesh alone; None = the first models/*.onnx (sorted by name) when
    # there is one, else the shipped 3DDFA-V2 model (assets/models/).
    model: Optional[str] = None
    # auto: CUDA then CPU (one log line says which provider really runs); cuda: CUDA or an error
    # (never a silent CPU fallback); cpu: CPU only.
    device: str = "auto"
    # onnxruntime intra-op threads; 0 = onnxruntime's default (one per physical core). 1 because
    # the frame's other stages (decode thread, face mesh, encoder) use the other core: 3DDFA-V2 x0.5
    # batch 1 with dense vertices measured 3.7 ms median with 1 thread vs 8.0 ms with 2 on the
    # busy 2-core dev machine (docs/benchmarks.md).
    threads: int = 1

    # ---- detection and tracking
    # Run the face detector every K frames (and whenever a face is lost); in between, each face is
    # followed from its previous landmarks (3DDFA-V2's landmark crop policy). K=1 detects every
    # frame. 5 = detection cost (~2 ms with BlazeFace short range here) spread over 5 frames while a
    # new face entering the view is picked up within 0.2 s at 25 fps.
    detect_every: int = 5
    # BlazeFace score threshold; 0.5 is mediapipe's default.
    min_detection_confidence: float = 0.5
    # Most faces processed per frame (largest first); 1 is enough for driver monitoring.
    max_faces: int = 4
    # A detection continues a track when IoU(detection box, track's 68-point box) >= this. The two
    # boxes of the same face overlap at IoU 0.68-0.86 (min over the shared expression clips, face
    # mesh, every 5th frame); 0.3 leaves room for fast motion between detections.
    iou_match: float = 0.3

    # ---- face mesh (eyes and mouth in every mode, the whole model in face-mesh mode)
    # Run the mediapipe face landmark model on each face crop also in ONNX mode (per-eye openness,
    # mouth openness, iris and blendshapes come from it: 3DMM eyelids never close). Off = eye/mouth
    # unknown (NaN).
    eyes_from_mesh: bool = True
    # LiteRT threads of the landmark model: 2.7 ms with 2 vs 4.5 ms with 1 per 256 px face crop on
    # the 2-core dev machine (docs/benchmarks.md, "Eye/mouth stage"); it overlaps the 3DMM run.
    mesh_threads: int = 2

    # ---- temporal smoothing (One Euro filter, Casiez et al. CHI 2012), per tracked face
    smoothing: bool = True
    # Hz; lower = steadier at rest. 1.0 Hz is the paper's starting point.
    smooth_min_cutoff: float = 1.0
    # cutoff grows by beta x speed (px/s or deg/s): at 300 px/s the cutoff is 1 + 0.05 * 300 = 16 Hz,
    # i.e. almost no lag when the head moves fast, while sub-pixel jitter (~10 px/s) stays filtered.
    smooth_beta: float = 0.05
    # Hz, cutoff of the speed estimate (the paper's 1 Hz).
    smooth_d_cutoff: float = 1.0

    # ---- output
    layers: Layers = field(default_factory=Layers)

    # ---- driver monitoring (app.monitor.MonitorSettings, its defaults); None = monitor off
    monitor: Optional[Any] = field(default_factory=lambda: _default_monitor())

    def validate(self) -> None:
        """ValueError naming the flag of the first bad value."""
        if self.device not in ("auto", "cuda", "cpu"):
            raise ValueError(f"--device must be auto, cuda or cpu, got {self.device!r}")
        if self.mesh_threads < 1:
            raise ValueError(f"--mesh-threads must be >= 1, got {self.mesh_threads}")
        if self.detect_every < 1:
            raise ValueError(f"--detect-every must be >= 1, got {self.detect_every}")
        if self.max_faces < 1:
            raise ValueError(f"--max-faces must be >= 1, got {self.max_faces}")
        if not 0.0 < self.min_detection_confidence < 1.0:
            raise ValueError(f"--min-detection-confidence must be in (0, 1), got {self.min_detection_confidence}")
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0, got {self.threads}")
        if self.smooth_min_cutoff <= 0 or self.smooth_d_cutoff <= 0 or self.smooth_beta < 0:
            raise ValueError("--smooth-min-cutoff must be > 0 and --smooth-beta >= 0")
