"""The video view: the latest annotated BGR frame, scaled to the widget keeping its aspect ratio.

The numpy buffer is scaled to the widget's size in device pixels (logical size x
``devicePixelRatioF()``, so a HiDPI screen gets a full-resolution, crisp frame) with OpenCV (bilinear, or below half size pixel-area averaging by a
whole factor then bilinear: ``scale_for_view``; 0.6-2 ms for 720p, outside the GIL) and wrapped in a QImage without conversion
(Format_BGR888) in ``paintEvent``; Qt's backing store double-buffers the widget, so there is no tearing.
The widget keeps a reference to the array it shows, so the buffer outlives the QImage.
The processing thread draws the frames at the size in device pixels that the view paints them
at when that is smaller than the frame (``device_size``; ProcessingWorker.draw_size), so such a
frame is painted as it is: the redraw took 1.1-1.2 ms instead of 2.5-2.9 ms for expressions_d13 in
``python -m app.eval.gui_bench`` (docs/benchmarks.md section 20).
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np
from PyQt6.QtCore import QPointF, QRectF, Qt
from PyQt6.QtGui import QColor, QImage, QPainter
from PyQt6.QtWidgets import QSizePolicy, QWidget

from app.render import downscale


def qimage_from_bgr(img: np.ndarray) -> QImage:
    """A QImage viewing ``img`` (H x W x 3 uint8 BGR, C-contiguous rows). Keep ``img`` alive."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {img.shape} {img.dtype}")
    if not img.flags["C_CONTIGUOUS"]:
        img = np.ascontiguousarray(img)
    h, w = img.shape[:2]
    return QImage(img.data, w, h, int(img.strides[0]), QImage.Format.Format_BGR888)


def scale_for_view(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """``img`` scaled to w x h for the screen: bilinear down to half size; below that, pixel-area
    averaging by a whole factor k and bilinear for the rest, which is then at least half
    (app.render.downscale). OpenCV's area averaging at a fractional factor costs 5-7 ms per
    720x1280 frame on one thread vs 0.6-2.2 ms for the two steps (docs/benchmarks.md section 15);
    the picture differs from it by 0.5-2 grey levels on average (more along edges near a cut
    border: a display, not a measurement). Larger sizes: bilinear."""
    if w >= img.shape[1] or h >= img.shape[0]:
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    return downscale(img, (w, h))


class VideoView(QWidget):
    PLACEHOLDER = "No source: choose a camera or open a video file"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(320, 180)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)
        self._img: Optional[np.ndarray] = None
        self._qimg: Optional[QImage] = None
        self._scaled = None   # (source array, (w, h), scaled array, its QImage)
        self._frame_size = (0, 0)   # (w, h) of the frame the shown image was drawn from
        self.placeholder = self.PLACEHOLDER
        self.frames_painted = 0
        self.drawn: Optional[tuple[int, int, float]] = None   # last frame drawn: device px w, h, its ratio

    # ---- data
    def set_image(self, img: Optional[np.ndarray], frame_size: Optional[tuple[int, int]] = None) -> None:
        """Show ``img``; ``frame_size`` (w, h): the frame it was drawn from, when it was drawn
        smaller (at ``device_size``): the view keeps that frame's aspect ratio, so an image drawn
        at the view's size is painted without scaling."""
        if img is None:
            self._img, self._qimg = None, None
        else:
            if not img.flags["C_CONTIGUOUS"]:
                img = np.ascontiguousarray(img)
            self._img = img
            self._qimg = qimage_from_bgr(img)
            self._frame_size = tuple(frame_size) if frame_size is not None else (img.shape[1], img.shape[0])
        self.update()

    @property
    def image(self) -> Optional[np.ndarray]:
        return self._img

    def _fit(self, w: int, h: int) -> QRectF:
        """Where a w x h frame is drawn inside the widget (aspect kept, centred)."""
        W, H = self.width(), self.height()
        s = min(W / w, H / h)
        dw, dh = w * s, h * s
        return QRectF((W - dw) / 2.0, (H - dh) / 2.0, dw, dh)

    def target_rect(self) -> QRectF:
        """Where the frame is drawn inside the widget (aspect kept, centred)."""
        if self._img is None:
            return QRectF(0, 0, self.width(), self.height())
        return self._fit(*self._frame_size)

    def device_size(self, w: int, h: int) -> tuple[int, int]:
        """(w, h) in device pixels that a w x h frame is painted at: an image of that size is
        painted as it is (``set_image(img, frame_size=(w, h))``)."""
        r = self._fit(w, h)
        dpr = self._dpr()
        return int(round(r.width() * dpr)), int(round(r.height() * dpr))

    def image_to_widget(self, x: float, y: float) -> QPointF:
        """A point of the frame (its pixels, whatever size the shown image was drawn at) in the widget."""
        r = self.target_rect()
        w, h = self._frame_size
        return QPointF(r.x() + x * r.width() / w, r.y() + y * r.height() / h)

    def _dpr(self) -> float:
        """Device pixels per logical pixel of the screen the widget is on (2.0 on a 200 % display)."""
        d = float(self.devicePixelRatioF())
        return d if d > 0 else 1.0

    # ---- painting
    def paintEvent(self, ev) -> None:  # noqa: N802 (Qt API)
        p = QPainter(self)
        bg = QColor(20, 20, 20)
        if self._qimg is None:
            p.fillRect(self.rect(), bg)
            p.setPen(QColor(200, 200, 200))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.placeholder)
        else:
            r = self.target_rect()
            # paint only the letterbox bars; the frame covers the rest (opaque widget)
            W, H = self.width(), self.height()
            x0, y0 = int(r.x()), int(r.y())
            x1, y1 = x0 + int(round(r.width())), y0 + int(round(r.height()))
            if y0 > 0:
                p.fillRect(0, 0, W, y0, bg)
            if y1 < H:
                p.fillRect(0, y1, W, H - y1, bg)
            if x0 > 0:
                p.fillRect(0, 0, x0, H, bg)
            if x1 < W:
                p.fillRect(x1, 0, W - x1, H, bg)
            # scale to PHYSICAL pixels (logical size x devicePixelRatio) and tag the QImage with
            # that ratio: Qt draws it 1:1 on a HiDPI screen (crisp), at the logical size
            dpr = self._dpr()
            w, h = int(round(r.width() * dpr)), int(round(r.height() * dpr))
            src_h, src_w = self._img.shape[:2]
            if (w, h) != (src_w, src_h) and w > 0 and h > 0:
                # scale with OpenCV (releases the GIL: the processing thread keeps running)
                if (self._scaled is None or self._scaled[0] is not self._img or self._scaled[1] != (w, h)
                        or self._scaled[3].devicePixelRatio() != dpr):
                    small = scale_for_view(self._img, w, h)
                    # BGRA bytes = Qt's native RGB32 on little-endian: drawn without a conversion
                    bgra = cv2.cvtColor(small, cv2.COLOR_BGR2BGRA)
                    q = QImage(bgra.data, w, h, int(bgra.strides[0]), QImage.Format.Format_RGB32)
                    q.setDevicePixelRatio(dpr)
                    self._scaled = (self._img, (w, h), bgra, q)
                q = self._scaled[3]
            else:
                q = self._qimg
                if q.devicePixelRatio() != dpr:
                    q.setDevicePixelRatio(dpr)
            p.drawImage(QPointF(x0, y0), q)
            self.drawn = (q.width(), q.height(), q.devicePixelRatio())
            self.frames_painted += 1
        p.end()
