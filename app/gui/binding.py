"""The few places where the GUI reads or changes the pipeline ``Settings`` (app/settings.py) and
its ``monitor: MonitorSettings`` (app/monitor/settings.py). Everything is a dataclass; changes are
made with ``dataclasses.replace`` so the worker receives a new, consistent object.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

LAYER_NAMES = ("box", "landmarks", "mesh", "axes", "text", "fps", "model", "monitor")

# GUI threshold controls: label, minimum, maximum, step of the spin box
THRESHOLDS = {
    "alert_yaw": ("Alert yaw (deg)", 1.0, 89.0, 1.0),
    "alert_pitch": ("Alert pitch (deg)", 1.0, 89.0, 1.0),
    "alert_seconds": ("Alert after (s)", 0.1, 30.0, 0.1),
    "perclos": ("PERCLOS drowsy", 0.01, 1.0, 0.01),
}
# GUI control -> MonitorSettings field (app/monitor/settings.py)
_MONITOR_FIELDS = {
    "alert_yaw": "alert_yaw",
    "alert_pitch": "alert_pitch",
    "alert_seconds": "alert_seconds",
    "perclos": "perclos_threshold",
}


def _fields(obj) -> set:
    return {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()


def _field(obj, name: str) -> Optional[str]:
    return name if name in _fields(obj) else None


# ---- model (Settings.model: an .onnx path, MESH_MODEL = the built-in face mesh, None = app.pipeline's
# default: the first models/*.onnx, else the face mesh)
from app.settings import MESH_MODEL  # noqa: E402,F401  (re-exported for the window)


def get_model(settings) -> Optional[str]:
    v = getattr(settings, "model", None)
    return None if v in (None, "") else str(v)


def with_model(settings, model: Optional[str]):
    if _field(settings, "model") is None:
        raise AttributeError("Settings has no model field")
    return dataclasses.replace(settings, model=model)


# ---- what a UI settings change may touch (thresholds, layers, smoothing: never the model)
UI_FIELDS = ("monitor", "layers", "smoothing")


def with_ui_fields(base, update):
    """``base`` with only the UI-editable fields (UI_FIELDS) taken from ``update``: a threshold /
    layer / smoothing change made while another model loads must not undo the model switch."""
    if not (dataclasses.is_dataclass(base) and dataclasses.is_dataclass(update)):
        return update
    names = _fields(base) & _fields(update)
    return dataclasses.replace(base, **{n: getattr(update, n) for n in UI_FIELDS if n in names})


# ---- smoothing (Settings.smoothing)
def get_smoothing(settings) -> bool:
    return bool(getattr(settings, "smoothing", True))


def with_smoothing(settings, on: bool):
    return dataclasses.replace(settings, smoothing=bool(on)) if _field(settings, "smoothing") else settings


# ---- layers
def get_layers(settings):
    return getattr(settings, "layers", None)


def get_layer(settings, name: str) -> bool:
    layers = get_layers(settings)
    return bool(getattr(layers, name, True)) if layers is not None else True


def with_layer(settings, name: str, on: bool):
    layers = get_layers(settings)
    if layers is None or name not in _fields(layers):
        return settings
    return dataclasses.replace(settings, layers=dataclasses.replace(layers, **{name: bool(on)}))


# ---- mesh style (Layers.mesh_style: app.render.MESH_STYLES)
from app.render import MESH_STYLES  # noqa: E402


def get_mesh_style(settings) -> str:
    layers = get_layers(settings)
    return layers.mesh_style if layers is not None else MESH_STYLES[0]


def with_mesh_style(settings, style: str):
    """ValueError for a style that is not one of MESH_STYLES."""
    if style not in MESH_STYLES:
        raise ValueError(f"mesh style must be one of {', '.join(MESH_STYLES)}, got {style!r}")
    layers = get_layers(settings)
    if layers is None:
        return settings
    return dataclasses.replace(settings, layers=dataclasses.replace(layers, mesh_style=style))


# ---- monitor thresholds
def get_monitor(settings):
    return getattr(settings, "monitor", None)


def threshold_setting(key: str) -> str:
    """The MonitorSettings field of a GUI threshold, which is also its flag's name without the
    dashes (``perclos`` -> ``perclos_threshold`` = --perclos-threshold)."""
    return _MONITOR_FIELDS[key]


def get_threshold(settings, key: str) -> Optional[float]:
    mon = get_monitor(settings)
    n = _field(mon, _MONITOR_FIELDS[key]) if mon is not None else None
    return None if n is None else float(getattr(mon, n))


def with_threshold(settings, key: str, value: float):
    mon = get_monitor(settings)
    n = _field(mon, _MONITOR_FIELDS[key]) if mon is not None else None
    if n is None:
        return settings
    new_mon = dataclasses.replace(mon, **{n: float(value)})
    validate = getattr(new_mon, "validate", None)
    if callable(validate):
        validate()   # ValueError naming the flag: the caller shows it and keeps the old value
    return dataclasses.replace(settings, monitor=new_mon)


def pitch_down_sign(settings) -> float:
    """-1 when "looking down" is a negative pitch (AFLW Pose_Para, the monitor's default), else +1."""
    mon = get_monitor(settings)
    v = getattr(mon, "pitch_down_sign", -1.0) if mon is not None else -1.0
    return -1.0 if float(v) < 0 else 1.0


def settings_summary(settings) -> dict[str, Any]:
    out = {"model": get_model(settings), "smoothing": get_smoothing(settings)}
    for k in THRESHOLDS:
        out[k] = get_threshold(settings, k)
    return out
