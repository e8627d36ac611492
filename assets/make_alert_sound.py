"""Synthesise assets/alert.wav: two-tone chime (880 Hz then 660 Hz, 0.2 s each), 16-bit mono 22050 Hz,
and assets/emergency.wav (the unresponsive driver): 988 / 784 Hz, 0.15 s each, three times, at
0.95 of full scale (5.6 dB louder than the chime's 0.5), played again every second while it lasts.

    python assets/make_alert_sound.py [OUT.wav]
    python assets/make_alert_sound.py --emergency [OUT.wav]

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
EMERGENCY_TONES = ((988.0, 0.15), (784.0, 0.15)) * 3
EMERGENCY_AMPLITUDE = 0.95


def synth(tones=TONES, amplitude: float = AMPLITUDE) -> np.ndarray:
    parts = []
    for f, d in tones:
        n = int(round(d * RATE))
        t = np.arange(n) / RATE
        x = np.sin(2 * np.pi * f * t)
        k = int(FADE * RATE)
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, k))
        x[:k] *= ramp
        x[-k:] *= ramp[::-1]
        parts.append(x)
    return np.round(np.concatenate(parts) * amplitude * 32767).astype("<i2")


def write(path: Path, emergency: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((synth(EMERGENCY_TONES, EMERGENCY_AMPLITUDE) if emergency else synth()).tobytes())
    os.replace(tmp, path)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    emergency = "--emergency" in argv
    argv = [a for a in argv if a != "--emergency"]
    name = "emergency.wav" if emergency else "alert.wav"
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent / name
    if not out.parent.is_dir():
        print(f"error: folder {out.parent} does not exist (choose an existing folder)", file=sys.stderr)
        return 2
    write(out, emergency)
    print(f"wrote {out} ({sum(d for _, d in (EMERGENCY_TONES if emergency else TONES)):.2f} s, {RATE} Hz, 16-bit mono)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
