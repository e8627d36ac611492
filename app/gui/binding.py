"""The few places where the GUI reads or changes the pipeline ``Settings`` (app/settings.py) and
its ``monitor: MonitorSettings`` (app/monitor/settings.py). A control is bound to a field by the
field's name (a threshold spin box to ``MonitorSettings.<name>``, a layer check box to
``Layers.<name>``); changes are made with ``dataclasses.replace`` so the worker receives a new,
consistent object.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from app.settings import MESH_MODEL, MESH_STYLES, Layers, Settings

__all__ = ["MESH_MODEL", "THRESHOLDS", "UI_FIELDS", "get_model", "with_model", "with_ui_fields",
           "get_smoothing", "with_smoothing", "get_layer", "with_layer", "get_threshold", "with_threshold",
           "pitch_down_sign"]

# GUI threshold controls, by MonitorSettings field: label, minimum, maximum, step of the spin box
THRESHOLDS = {
    "alert_yaw": ("Alert yaw (deg)", 1.0, 89.0, 1.0),
    "alert_pitch": ("Alert pitch (deg)", 1.0, 89.0, 1.0),
    "alert_seconds": ("Alert after (s)", 0.1, 30.0, 0.1),
    "perclos_threshold": ("PERCLOS drowsy", 0.01, 1.0, 0.01),
}


# ---- model (Settings.model: an .onnx path, MESH_MODEL = the built-in face mesh, None = app.pipeline's
# default: the first models/*.onnx, else the face mesh)
def get_model(settings: Settings) -> Optional[str]:
    return settings.model or None


def with_model(settings: Settings, model: Optional[str]) -> Settings:
    return dataclasses.replace(settings, model=model)


# ---- what a UI settings change may touch (thresholds, layers, smoothing: never the model)
UI_FIELDS = ("monitor", "layers", "smoothing")


def with_ui_fields(base: Settings, update: Settings) -> Settings:
    """``base`` with only the UI-editable fields (UI_FIELDS) taken from ``update``: a threshold /
    layer / smoothing change made while another model loads must not undo the model switch."""
    return dataclasses.replace(base, monitor=update.monitor, layers=update.layers, smoothing=update.smoothing)


# ---- smoothing (Settings.smoothing)
def get_smoothing(settings: Settings) -> bool:
    return settings.smoothing


def with_smoothing(settings: Settings, on: bool) -> Settings:
    return dataclasses.replace(settings, smoothing=bool(on))


# ---- layers (Settings.layers, one check box per Layers.NAMES)
def get_layer(settings: Settings, name: str) -> bool:
    if name not in Layers.NAMES:
        raise KeyError(f"no overlay layer {name!r} (Layers.NAMES: {', '.join(Layers.NAMES)})")
    return bool(getattr(settings.layers, name))


def with_layer(settings: Settings, name: str, on: bool) -> Settings:
    if name not in Layers.NAMES:
        raise KeyError(f"no overlay layer {name!r} (Layers.NAMES: {', '.join(Layers.NAMES)})")
    return dataclasses.replace(settings, layers=dataclasses.replace(settings.layers, **{name: bool(on)}))


# ---- mesh style (Layers.mesh_style, one of MESH_STYLES)
def get_mesh_style(settings: Settings) -> str:
    return settings.layers.mesh_style


def with_mesh_style(settings: Settings, style: str) -> Settings:
    """ValueError for a style that is not one of MESH_STYLES."""
    if style not in MESH_STYLES:
        raise ValueError(f"mesh style must be one of {', '.join(MESH_STYLES)}, got {style!r}")
    return dataclasses.replace(settings, layers=dataclasses.replace(settings.layers, mesh_style=style))


# ---- monitor thresholds (Settings.monitor; None = the monitor is off)
def get_threshold(settings: Settings, name: str) -> Optional[float]:
    """The MonitorSettings field ``name`` (a THRESHOLDS key), None while the monitor is off."""
    return None if settings.monitor is None else float(getattr(settings.monitor, name))


def with_threshold(settings: Settings, name: str, value: float) -> Settings:
    """``settings`` with MonitorSettings.<name> = value; ValueError naming the flag when the new
    thresholds are inconsistent (the caller shows it and keeps the old value)."""
    if settings.monitor is None:
        return settings
    new_mon = dataclasses.replace(settings.monitor, **{name: float(value)}).validate()
    return dataclasses.replace(settings, monitor=new_mon)


def pitch_down_sign(settings: Settings) -> float:
    """-1 when "looking down" is a negative pitch (AFLW Pose_Para, the monitor's default), else +1."""
    mon = settings.monitor
    return -1.0 if mon is None or mon.pitch_down_sign < 0 else 1.0
