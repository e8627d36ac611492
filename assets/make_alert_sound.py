"""Synthesise assets/alert.wav: two-tone chime (880 Hz then 660 Hz, 0.2 s each), 16-bit mono 22050 Hz.

    python assets/make_alert_sound.py [OUT.wav]

Deterministic (same bytes every run); 10 ms raised-cosine fades so the tones do not click.
Written to OUT.tmp then os.replace'd.
"""
from __future__ import annotations

import os
import sys
import wave
from pathlib import Path

import numpy as np

RATE = 22050
TONES = ((880.0, 0.2), (660.0, 0.2))   # Hz, seconds
AMPLITUDE = 0.5                         # of full scale
FADE = 0.010                            # seconds


def synth() -> np.ndarray:
    parts = []
    for f, d in TONES:
        n = int(round(d * RATE))
        t = np.arange(n) / RATE
        x = np.sin(2 * np.pi * f * t)
        k = int(FADE * RATE)
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, k))
        x[:k] *= ramp
        x[-k:] *= ramp[::-1]
        parts.append(x)
    return np.round(np.concatenate(parts) * AMPLITUDE * 32767).astype("<i2")


def write(path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(synth().tobytes())
    os.replace(tmp, path)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent / "alert.wav"
    if not out.parent.is_dir():
        print(f"error: folder {out.parent} does not exist (choose an existing folder)", file=sys.stderr)
        return 2
    write(out)
    print(f"wrote {out} ({sum(d for _, d in TONES):.2f} s, {RATE} Hz, 16-bit mono)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
