"""Alert sound, non-blocking, with whatever audio output this machine has.

Order: sounddevice (when its PortAudio library loads and an output device exists), then the
``aplay`` (ALSA) or ``paplay`` (PulseAudio / PipeWire) command, else nothing: one log line
"no audio output available (...)" the first time, and play() returns False. Never raises for a
missing audio system. ``min_interval`` seconds between two sounds (rate limit).
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
import wave
from pathlib import Path
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)


class AlertSound:
    def __init__(self, path: str, min_interval: float = 2.0, backend: Optional[str] = None):
        """``backend``: None = auto; "sounddevice", "aplay", "paplay" or "none" to force one."""
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"alert sound {self.path} not found "
                                    f"(make it with: python assets/make_alert_sound.py)")
        with wave.open(str(self.path), "rb") as w:
            self.rate = w.getframerate()
            ch, width = w.getnchannels(), w.getsampwidth()
            raw = w.readframes(w.getnframes())
        if width != 2:
            raise ValueError(f"alert sound {self.path}: 16-bit PCM expected, got {8 * width}-bit")
        self.samples = np.frombuffer(raw, dtype="<i2").reshape(-1, ch)
        self.duration = len(self.samples) / float(self.rate)
        self.min_interval = float(min_interval)
        self._last = -float("inf")
        self._lock = threading.Lock()
        self._proc: Optional[subprocess.Popen] = None
        self._warned = False
        self.played = 0
        self.skipped = 0
        self.backend, self.reason = self._pick(backend)
        log.info("alert sound: %s (%s)", self.backend, self.reason)

    def _pick(self, want: Optional[str]):
        reasons = []
        if want in (None, "sounddevice"):
            try:
                import sounddevice as sd
                sd.query_devices(kind="output")
                self._sd = sd
                return "sounddevice", "PortAudio output device"
            except Exception as e:   # OSError: PortAudio library not found; PortAudioError: no device
                reasons.append(f"sounddevice: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        for cmd in ("aplay", "paplay"):
            if want in (None, cmd):
                exe = shutil.which(cmd)
                if exe:
                    return cmd, exe
                reasons.append(f"{cmd}: not on PATH")
        return "none", "; ".join(reasons) or "disabled"

    def play(self) -> bool:
        """Start the sound and return at once; False when rate-limited or no audio output."""
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.min_interval:
                self.skipped += 1
                return False
            self._last = now
            if self.backend == "none":
                if not self._warned:
                    log.warning("no audio output available (%s); alerts are shown, not heard", self.reason)
                    self._warned = True
                return False
            try:
                if self.backend == "sounddevice":
                    self._sd.play(self.samples, self.rate, blocking=False)
                else:
                    if self._proc is not None and self._proc.poll() is None:
                        self.skipped += 1
                        return False   # still playing the previous one
                    args = [self.backend, "-q", str(self.path)] if self.backend == "aplay" else [self.backend, str(self.path)]
                    self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL)
            except Exception as e:
                if not self._warned:
                    log.warning("alert sound via %s failed: %s; sound off", self.backend, e)
                    self._warned = True
                self.reason = f"{self.backend} failed: {e}"
                self.backend = "none"
                return False
            self.played += 1
            return True


# events that sound like a new alert: a monitor that cannot see says so, as for a lost camera
SOUNDING_EVENTS = ("start", "unavailable_start", "unresponsive")


def sound_for(state, events) -> Optional[str]:
    """Which sound a frame calls for: "emergency" while the driver is unresponsive (played again
    as soon as the emergency sound's rate limit allows, until the driver responds), "alert" on a
    new alert, an unavailable_start (the eyes / the driver cannot be seen) or the unresponsive
    event, else None. ``state``: the frame's MonitorState (or None), ``events`` its events."""
    if state is not None and state.emergency is not None:
        return "emergency"
    if any(e.get("event") in SOUNDING_EVENTS for e in events):
        return "alert"
    return None
