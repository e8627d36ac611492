"""The video view: the latest annotated BGR frame, scaled to the widget keeping its aspect ratio.

The numpy buffer is wrapped in a QImage without conversion (Format_BGR888) and drawn with smooth
scaling in ``paintEvent``; Qt's backing store double-buffers the widget, so there is no tearing.
The widget keeps a reference to the array it shows, so the buffer outlives the QImage.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from PyQt6.QtCore import QPointF, QRectF, Qt
from PyQt6.QtGui import QColor, QImage, QPainter
from PyQt6.QtWidgets import QSizePolicy, QWidget


def qimage_from_bgr(img: np.ndarray) -> QImage:
    """A QImage viewing ``img`` (H x W x 3 uint8 BGR, C-contiguous rows). Keep ``img`` alive."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {img.shape} {img.dtype}")
    if not img.flags["C_CONTIGUOUS"]:
        img = np.ascontiguousarray(img)
    h, w = img.shape[:2]
    return QImage(img.data, w, h, int(img.strides[0]), QImage.Format.Format_BGR888)


class VideoView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(320, 180)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)
        self._img: Optional[np.ndarray] = None
        self._qimg: Optional[QImage] = None
        self.placeholder = "No source: choose a camera or open a video file"
        self.frames_painted = 0

    # ---- data
    def set_image(self, img: Optional[np.ndarray]) -> None:
        if img is None:
            self._img, self._qimg = None, None
        else:
            if not img.flags["C_CONTIGUOUS"]:
                img = np.ascontiguousarray(img)
            self._img = img
            self._qimg = qimage_from_bgr(img)
        self.update()

    @property
    def image(self) -> Optional[np.ndarray]:
        return self._img

    def target_rect(self) -> QRectF:
        """Where the frame is drawn inside the widget (aspect kept, centred)."""
        W, H = self.width(), self.height()
        if self._img is None:
            return QRectF(0, 0, W, H)
        h, w = self._img.shape[:2]
        s = min(W / w, H / h)
        dw, dh = w * s, h * s
        return QRectF((W - dw) / 2.0, (H - dh) / 2.0, dw, dh)

    def image_to_widget(self, x: float, y: float) -> QPointF:
        r = self.target_rect()
        h, w = self._img.shape[:2]
        return QPointF(r.x() + x * r.width() / w, r.y() + y * r.height() / h)

    # ---- painting
    def paintEvent(self, ev) -> None:  # noqa: N802 (Qt API)
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(20, 20, 20))
        if self._qimg is None:
            p.setPen(QColor(200, 200, 200))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.placeholder)
        else:
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            p.drawImage(self.target_rect(), self._qimg)
            self.frames_painted += 1
        p.end()
