"""The few places where the GUI reads or changes the pipeline ``Settings`` (app/settings.py) and
its ``monitor: MonitorSettings`` (app/monitor/settings.py). Everything is a dataclass; changes are
made with ``dataclasses.replace`` so the worker receives a new, consistent object.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

LAYER_NAMES = ("box", "landmarks", "mesh", "axes", "text", "fps", "model", "monitor")

# GUI threshold controls -> MonitorSettings field (C's names), with the label shown
THRESHOLDS = {
    "alert_yaw": ("Alert yaw (deg)", 1.0, 89.0, 1.0),
    "alert_pitch": ("Alert pitch (deg)", 1.0, 89.0, 1.0),
    "alert_seconds": ("Alert after (s)", 0.1, 30.0, 0.1),
    "perclos": ("PERCLOS drowsy", 0.01, 1.0, 0.01),
}
# MonitorSettings field names tried for each control, first match wins
_MONITOR_FIELDS = {
    "alert_yaw": ("alert_yaw", "alert_yaw_deg", "yaw_threshold"),
    "alert_pitch": ("alert_pitch", "alert_pitch_deg", "pitch_threshold"),
    "alert_seconds": ("alert_seconds", "alert_s", "distraction_seconds"),
    "perclos": ("perclos_threshold", "perclos_alert", "perclos_warning", "perclos"),
}


def _fields(obj) -> set:
    return {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()


def _first(obj, names) -> Optional[str]:
    fs = _fields(obj)
    for n in names:
        if n in fs:
            return n
    return None


# ---- model
def get_model(settings) -> Optional[str]:
    for n in ("model", "model_path"):
        if n in _fields(settings):
            v = getattr(settings, n)
            return None if v in (None, "") else str(v)
    return None


def with_model(settings, model: Optional[str]):
    n = _first(settings, ("model", "model_path"))
    if n is None:
        raise AttributeError("Settings has no model field")
    return dataclasses.replace(settings, **{n: model})


# ---- smoothing
def get_smoothing(settings) -> bool:
    n = _first(settings, ("smoothing", "smooth"))
    return bool(getattr(settings, n)) if n else True


def with_smoothing(settings, on: bool):
    n = _first(settings, ("smoothing", "smooth"))
    return dataclasses.replace(settings, **{n: bool(on)}) if n else settings


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


# ---- monitor thresholds
def get_monitor(settings):
    return getattr(settings, "monitor", None)


def get_threshold(settings, key: str) -> Optional[float]:
    mon = get_monitor(settings)
    n = _first(mon, _MONITOR_FIELDS[key]) if mon is not None else None
    return None if n is None else float(getattr(mon, n))


def with_threshold(settings, key: str, value: float):
    mon = get_monitor(settings)
    n = _first(mon, _MONITOR_FIELDS[key]) if mon is not None else None
    if n is None:
        return settings
    new_mon = dataclasses.replace(mon, **{n: float(value)})
    validate = getattr(new_mon, "validate", None)
    if callable(validate):
        validate()   # ValueError naming the flag: the caller shows it and keeps the old value
    return dataclasses.replace(settings, monitor=new_mon)


def pitch_down_sign(settings) -> float:
    """-1 when "looking down" is a negative pitch (AFLW Pose_Para, C's default), else +1."""
    mon = get_monitor(settings)
    for n in ("pitch_down_sign", "pitch_sign"):
        if mon is not None and n in _fields(mon):
            try:
                return -1.0 if float(getattr(mon, n)) < 0 else 1.0
            except (TypeError, ValueError):
                return -1.0
    return -1.0


def settings_summary(settings) -> dict[str, Any]:
    out = {"model": get_model(settings), "smoothing": get_smoothing(settings)}
    for k in THRESHOLDS:
        out[k] = get_threshold(settings, k)
    return out
