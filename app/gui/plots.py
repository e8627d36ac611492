"""Live plots of the last 30 s (pyqtgraph): head angles with the alert thresholds and the eye gaze
(yaw / pitch of the gaze direction, app.core.gaze), eye openness per eye, PERCLOS and mouth openness.

``append(t, ...)`` only stores numbers (called once per processed frame from the worker's signal);
``redraw()`` pushes the buffers to the curves and is driven by the window's QTimer, so drawing
cost does not grow with the processing rate. Missing values are NaN and show as gaps.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Optional

import numpy as np
import pyqtgraph as pg
from PyQt6.QtWidgets import QVBoxLayout, QWidget

from app.monitor.settings import MonitorSettings

WINDOW_S = 30.0   # seconds of history shown: a glance, a yawn and a PERCLOS rise fit in one view

SERIES = ("yaw", "pitch", "roll", "gaze_yaw", "gaze_pitch", "eye_left", "eye_right", "perclos", "mouth")


class SignalPlots(QWidget):
    def __init__(self, parent=None, window_s: float = WINDOW_S):
        super().__init__(parent)
        self.window_s = float(window_s)
        self._t: deque = deque()
        self._v: dict[str, deque] = {k: deque() for k in SERIES}
        self._dirty = False
        self.redraws = 0

        pg.setConfigOptions(antialias=False, background="#1e1e1e", foreground="#d0d0d0")
        self.glw = pg.GraphicsLayoutWidget()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.glw)

        def mk(row, title, yrange=None, height=None):
            p = self.glw.addPlot(row=row, col=0, title=title)
            # no grid: pyqtgraph draws it from the axes, which would then repaint with every curve update
            p.setXRange(-self.window_s, 0, padding=0)
            p.setMouseEnabled(x=False, y=False)
            p.hideButtons()
            p.setMenuEnabled(False)
            if yrange is not None:
                p.setYRange(*yrange, padding=0.02)
            return p

        c = lambda col, txt: f'<span style="color:{col}">{txt}</span>'
        self.p_angles = mk(0, "Head pose (deg): " + c("#ff5050", "yaw") + " " + c("#50d050", "pitch")
                           + " " + c("#5090ff", "roll") + ", gaze: " + c("#ff9ad0", "yaw") + " "
                           + c("#b0ffb0", "pitch") + " " + c("#ffb000", "- - alert"), (-60, 60))
        self.p_eyes = mk(1, "Eye openness: " + c("#ffd040", "left") + " " + c("#40e0ff", "right"), (0, 0.5))
        self.p_perclos = mk(2, c("#ff9030", "PERCLOS") + " " + c("#ffb000", "- - drowsy"), (0, 0.5))
        self.p_mouth = mk(3, c("#e070ff", "Mouth openness"), (0, 1.0))
        self.p_mouth.setLabel("bottom", "seconds")
        for p in (self.p_angles, self.p_eyes, self.p_perclos):
            p.getAxis("bottom").setStyle(showValues=False)   # one time axis (bottom) is enough
        for p in (self.p_eyes, self.p_perclos, self.p_mouth):
            p.setXLink(self.p_angles)
        pen = lambda c: pg.mkPen(c, width=1)   # 1 px cosmetic pen: the fast raster path (width 2 is ~5x slower)

        def curve(plot, color):
            # a bare PlotCurveItem, not PlotItem.plot()'s PlotDataItem: its per-update bookkeeping
            # (datasets, down-sampling and bounds checks, none of which these plots use: 900
            # points in a ~420 px plot) took 1.3 of the 1.95 ms of pushing the 9 series; the
            # same pixels (docs/benchmarks.md section 17)
            c = pg.PlotCurveItem(pen=pen(color), connect="finite")
            plot.addItem(c)
            return c

        self.curves = {
            "yaw": curve(self.p_angles, "#ff5050"),
            "pitch": curve(self.p_angles, "#50d050"),
            "roll": curve(self.p_angles, "#5090ff"),
            "gaze_yaw": curve(self.p_angles, "#ff9ad0"),
            "gaze_pitch": curve(self.p_angles, "#b0ffb0"),
            "eye_left": curve(self.p_eyes, "#ffd040"),
            "eye_right": curve(self.p_eyes, "#40e0ff"),
            "perclos": curve(self.p_perclos, "#ff9030"),
            "mouth": curve(self.p_mouth, "#e070ff"),
        }
        dash = pg.mkPen("#ffb000", width=1, style=pg.QtCore.Qt.PenStyle.DashLine)
        self.lines = {
            "yaw_hi": pg.InfiniteLine(angle=0, pen=dash),
            "yaw_lo": pg.InfiniteLine(angle=0, pen=dash),
            "pitch_lo": pg.InfiniteLine(angle=0, pen=pg.mkPen("#50d050", width=1,
                                                              style=pg.QtCore.Qt.PenStyle.DashLine)),
            "perclos": pg.InfiniteLine(angle=0, pen=dash),
        }
        for k in ("yaw_hi", "yaw_lo", "pitch_lo"):
            self.p_angles.addItem(self.lines[k])
        self.p_perclos.addItem(self.lines["perclos"])
        d = MonitorSettings()
        self.set_thresholds(d.alert_yaw, d.alert_pitch, d.perclos_threshold)

    # ---- thresholds (alert lines around the neutral pose)
    def set_thresholds(self, alert_yaw: float, alert_pitch: float, perclos: float,
                       neutral_yaw: float = 0.0, neutral_pitch: float = 0.0,
                       pitch_down_sign: float = -1.0) -> None:
        ny = 0.0 if not math.isfinite(neutral_yaw) else neutral_yaw
        npi = 0.0 if not math.isfinite(neutral_pitch) else neutral_pitch
        self.lines["yaw_hi"].setValue(ny + alert_yaw)
        self.lines["yaw_lo"].setValue(ny - alert_yaw)
        self.lines["pitch_lo"].setValue(npi + pitch_down_sign * alert_pitch)
        self.lines["perclos"].setValue(perclos)
        self.thresholds = dict(alert_yaw=alert_yaw, alert_pitch=alert_pitch, perclos=perclos,
                               neutral_yaw=ny, neutral_pitch=npi)

    # ---- data
    def append(self, t: float, **values: Optional[float]) -> None:
        self._t.append(float(t))
        for k in SERIES:
            v = values.get(k)
            self._v[k].append(float("nan") if v is None else float(v))
        t_min = t - self.window_s
        while self._t and self._t[0] < t_min:
            self._t.popleft()
            for k in SERIES:
                self._v[k].popleft()
        self._dirty = True

    def clear(self) -> None:
        self._t.clear()
        for k in SERIES:
            self._v[k].clear()
        self._dirty = True

    def __len__(self) -> int:
        return len(self._t)

    def values(self, key: str) -> np.ndarray:
        return np.asarray(self._v[key], dtype=np.float64)

    def redraw(self) -> bool:
        """Push buffered data to the curves; False when nothing changed."""
        if not self._dirty:
            return False
        self._dirty = False
        if self._t:
            t = np.asarray(self._t, dtype=np.float64)
            x = t - t[-1]
        else:
            x = np.zeros(0)
        for k, c in self.curves.items():
            y = np.asarray(self._v[k], dtype=np.float64)
            if y.size and np.isfinite(y).any():
                c.setData(x, y, connect="finite")
            else:
                c.setData([], [])
        self.redraws += 1
        return True

    def curve_points(self, key: str) -> int:
        x, _ = self.curves[key].getData()
        return 0 if x is None else len(x)
