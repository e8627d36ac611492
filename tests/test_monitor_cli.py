"""Driver monitoring through the real program: ``python main.py --video FILE --headless --events``
(subprocess) on video files built from / read in ../shared, the events JSONL parsed and checked.

- A head turn: a frontal AFLW2000 face, then the same-size clip of a face turned by -54.7 deg for
  4 s, then frontal again -> exactly one looking-around warning at turn + --alert-seconds, its
  escalation (a second "start", level critical) at turn + --critical-seconds, one end at
  return + --clear-seconds.
- talking_head_720p.mp4 looped: a person talking to the camera raises no alert at all.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io as sio

from conftest import shared

ROOT = Path(__file__).resolve().parents[1]

FPS = 15
FRONTAL = "image00050"     # AFLW2000 Pose_Para yaw +0.9 deg, pitch -4.7 deg
# turned faces: yaw -54.7 deg (found on every frame), +70.9 deg (a near-profile face the detector
# finds only on every other frame: the looking-around timer must bridge the misses)
TURNED = ["image00251", "image02420"]
T_TURN, T_BACK = 5.0, 9.0  # 5 s frontal (calibration needs 3 s of a stable face), 4 s turned, 3 s frontal


def segments(turned):
    return [(FRONTAL, T_TURN), (turned, T_BACK - T_TURN), (FRONTAL, 3.0)]


def aflw_yaw(name: str) -> float:
    p = sio.loadmat(str(shared("media", "aflw2000", name + ".mat")))["Pose_Para"][0]
    return math.degrees(float(p[1]))


def write_clip(path: Path, segments, fps: int = FPS, width: int = 450) -> int:
    """An H.264 (else MPEG-4) file playing each AFLW2000 image for its seconds at ``fps``, frame i
    at pts i / fps exactly. Returns the number of frames."""
    import av

    imgs = []
    for name, sec in segments:
        im = cv2.imread(str(shared("media", "aflw2000", name + ".jpg")))
        if im.shape[1] != width:
            im = cv2.resize(im, (width, round(im.shape[0] * width / im.shape[1])), interpolation=cv2.INTER_AREA)
        imgs.append((im, int(round(sec * fps))))
    h, w = imgs[0][0].shape[:2]
    with av.open(str(path), "w") as out:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        st = out.add_stream(codec, rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.time_base = Fraction(1, fps)
        if codec == "libx264":
            st.options = {"crf": "12", "preset": "veryfast"}
        else:
            st.bit_rate = 8_000_000
        i = 0
        for im, n in imgs:
            assert im.shape[:2] == (h, w)
            for _ in range(n):
                fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(im[:, :, ::-1]), format="rgb24")
                fr.pts = i
                for pkt in st.encode(fr):
                    out.mux(pkt)
                i += 1
        for pkt in st.encode():
            out.mux(pkt)
    return i


def run_main(*args, timeout=240):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    t = time.perf_counter()
    p = subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, env=env, cwd=str(ROOT))
    return p, time.perf_counter() - t


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module", params=TURNED)
def head_turn(request, tmp_path_factory):
    pytest.importorskip("av")
    turned = request.param
    d = tmp_path_factory.mktemp("turn")
    clip = d / f"head_turn_{turned}.mp4"
    n = write_clip(clip, segments(turned))
    ev, dump = d / "ev.jsonl", d / "dump.jsonl"
    p, wall = run_main("--video", clip, "--headless", "--alert-yaw", "30", "--events", ev, "--dump", dump,
                       "--quiet")
    assert p.returncode == 0, p.stderr[-3000:]
    print(f"head turn clip ({turned}): {n} frames at {FPS} fps, main.py ran {wall:.1f} s")
    return turned, n, read_jsonl(ev), read_jsonl(dump)


def yaw_series(dump):
    return np.array([r["faces"][0]["yaw"] if r["faces"] and r["faces"][0]["yaw"] is not None else np.nan
                     for r in dump], float)


def test_the_clip_really_turns_the_face_away(head_turn):
    """The premise: the pipeline sees a frontal face, then a face turned by more than 45 deg
    (AFLW2000 label) on at least every other frame of the 4 s turn, beyond 30 deg as measured."""
    turned, n, _, dump = head_turn
    assert abs(aflw_yaw(FRONTAL)) < 5 and abs(aflw_yaw(turned)) > 45
    assert len(dump) == n == FPS * 12
    assert [round(r["t"] * FPS) for r in dump] == list(range(n))          # timestamps i / fps
    yaw = yaw_series(dump)
    turn = slice(int(T_TURN * FPS) + 2, int(T_BACK * FPS))                   # after the first 2 frames
    front = np.r_[0:int(T_TURN * FPS), int(T_BACK * FPS) + 2:n]
    assert np.all(np.isfinite(yaw[front])) and np.all(np.abs(yaw[front]) < 12)
    found = yaw[turn][np.isfinite(yaw[turn])]
    print(f"{turned}: yaw around the turn:", yaw[int(T_TURN * FPS) - 2:int(T_TURN * FPS) + 6], "back:",
          yaw[int(T_BACK * FPS) - 2:int(T_BACK * FPS) + 6], f"found on {len(found)} of {len(yaw[turn])} turned frames, "
          f"yaw {found.min()} ... {found.max()}")
    # measured: image00251 every frame, -41 ... -55 deg (the 5-frame pattern is the re-detection
    # cycle); image02420 every other frame, +56.6 deg
    assert len(found) >= len(yaw[turn]) // 2
    assert np.all(np.abs(found) > 38) and np.all(np.sign(found) == np.sign(aflw_yaw(turned)))


def test_head_turn_gives_exactly_one_looking_around_warning_at_the_right_time(head_turn):
    turned, n, events, dump = head_turn
    yaw = yaw_series(dump)
    starts = [e for e in events if e["event"] == "start"]
    ends = [e for e in events if e["event"] == "end"]
    assert {e["kind"] for e in starts + ends} == {"looking_around"}, events
    warn = [e for e in starts if e["level"] == "warning"]
    crit = [e for e in starts if e["level"] == "critical"]
    assert len(warn) == 1 and len(crit) == 1 and len(starts) == 2 and len(ends) == 1, events
    w, c, e = warn[0], crit[0], ends[0]
    print(f"{turned}: looking_around warning t={w['t']:.4f} (frame {w['frame']}), critical t={c['t']:.4f}, "
          f"end t={e['t']:.4f} duration {e['duration_s']} s, unknown_frames {e['unknown_frames']}")
    # +-1 frame; +1 more where the detector misses every other turned frame (an alert fires on a
    # frame with a measured pose)
    misses = int(np.isnan(yaw[int(T_TURN * FPS) + 2:int(T_BACK * FPS)]).any())
    tol = (1 + misses) / FPS + 1e-6
    # warning after --alert-seconds (2 s) away, escalation after --critical-seconds (3 s): a new
    # "start" with level critical and escalated_from (docs/driver-monitoring.md), no end in between
    assert w["t"] == pytest.approx(T_TURN + 2.0, abs=tol), w
    assert c["t"] == pytest.approx(T_TURN + 3.0, abs=tol) and c["escalated_from"] == "warning", c
    assert w["alert_yaw"] == 30.0 and abs(w["yaw_offset"]) > 30 and w["away_s"] == pytest.approx(2.0, abs=tol)
    # ... and exactly where the rule puts it on this dump: the first frame with a pose at or after
    # 2 s after the first turned frame with a pose
    i0 = next(i for i in range(int(T_TURN * FPS), n) if np.isfinite(yaw[i]))
    i_w = next(i for i in range(n) if dump[i]["t"] >= dump[i0]["t"] + 2.0 - 1e-6 and np.isfinite(yaw[i]))
    assert w["frame"] == i_w
    # the values that triggered it are the frame's own (dump) yaw minus the neutral
    assert w["yaw"] == pytest.approx(yaw[w["frame"]], abs=0.01)
    assert w["yaw_offset"] == pytest.approx(yaw[w["frame"]] - w["neutral_yaw"], abs=0.02)
    # the alert ends once the gaze has been back for --clear-seconds (1 s), at its last level
    assert e["t"] == pytest.approx(T_BACK + 1.0, abs=tol) and e["level"] == "critical", e
    # ... exactly: 1 s after the first of the frames that are all measured and back (an unknown
    # frame restarts the clearing; image02420: the first frontal frames read 40.7 deg, then none)
    back = np.isfinite(yaw) & (np.abs(yaw - w["neutral_yaw"]) <= 30)
    i_back = next(i for i in range(w["frame"], n) if back[i:i + FPS].all())
    assert e["frame"] == next(i for i in range(i_back, n) if dump[i]["t"] >= dump[i_back]["t"] + 1.0 - 1e-6)
    assert e["duration_s"] == pytest.approx(e["t"] - w["t"], abs=1e-3)
    # frames during the alert without a pose (the detector re-finding the face on the first frame
    # of the new image; image02420: every other turned frame) are counted in the end event
    assert e["unknown_frames"] == int(np.isnan(yaw[w["frame"]:e["frame"] + 1]).sum())
    assert w["frame"] < c["frame"] < e["frame"] < n
    assert w["frame"] == round(w["t"] * FPS) and e["frame"] == round(e["t"] * FPS)
    # no "unknown" stretch either: a face found always came with pose, eyes and mouth
    assert [x for x in events if x["event"] not in ("start", "end", "summary")] == []


def test_head_turn_summary(head_turn):
    turned, n, events, dump = head_turn
    yaw = yaw_series(dump)
    summ = events[-1]
    assert summ["event"] == "summary" and sum(e["event"] == "summary" for e in events) == 1
    assert summ["frames"] == n and summ["calibrations"] == 1
    assert summ["alerts"] == {"looking_around": {"warning": 1, "critical": 1}}
    front_yaw = np.median(yaw[: int(3 * FPS)])
    assert summ["neutral_yaw"] == pytest.approx(front_yaw, abs=1.0)
    # time distracted: each frame measured away holds until the next frame (unknown frames: not counted)
    away = np.abs(yaw - summ["neutral_yaw"]) > 30
    assert summ["time_distracted_s"] == pytest.approx(away.sum() / FPS, abs=1.0 / FPS + 1e-6)
    assert summ["signal_unknown"]["no_face_frames"] == sum(1 for r in dump if not r["faces"])
    assert summ["signal_unknown"]["logged"] == {"pose": 0, "eyes": 0, "mouth": 0}


TALKING_SECONDS = 40.0     # > eye baseline (2 s) + PERCLOS' 30 s of known eyes: every eye rule is live


@pytest.mark.slow
def test_talking_head_raises_no_alert(tmp_path):
    """talking_head_720p.mp4 (55 frames, 2.2 s: a man talking, turning his head from ~+30 deg to
    ~-30 deg yaw and back at the loop) looped for 40 s through main.py: no alert of any kind
    starts. Measured (2-core CPU): 1000 frames in ~13 s; 30 blinks, PERCLOS max 5 %, no yawn.

    No 3 s window of this head is stable enough for the calibration rule (90 % of the yaw samples
    within 6 deg of their median: the head sweeps 60 deg every 2.2 s; checked from the dump), so
    the neutral pose comes from the fallback after 20 s of face: the median of those 20 s (~+28
    deg: he faces +30 for 1.4 s of every 2.2 s). From then on the pose rules are armed, and his
    0.7 s turns to -31 deg (58 deg from neutral) are counted as distraction but stay far below
    the 2 s dwell and the 10-s-in-30 time-sharing rule."""
    clip = shared("media", "talking_head_720p.mp4")
    import av

    with av.open(str(clip)) as c:
        fps = float(c.streams.video[0].average_rate)
    frames = int(round(TALKING_SECONDS * fps))
    ev, dump = tmp_path / "ev.jsonl", tmp_path / "dump.jsonl"
    p, wall = run_main("--video", clip, "--loop", "--max-frames", frames, "--headless", "--events", ev,
                       "--dump", dump, "--quiet", "--layers", "none", timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    events = read_jsonl(ev)
    summ = events[-1]
    print(f"talking head: {frames} frames ({summ['duration_s']} s) in {wall:.1f} s; summary {summ}")
    assert summ["event"] == "summary" and summ["frames"] == frames
    assert summ["duration_s"] >= TALKING_SECONDS - 1.0                       # timestamps keep rising
    # no alert: no start event of any kind (and so no end), none counted in the summary
    assert [e for e in events if e["event"] in ("start", "end")] == []
    assert summ["alerts"] == {}
    # the eye / mouth rules were live and saw a real face: blinks counted, PERCLOS computed
    assert summ["signal_unknown"]["no_face_frames"] == 0 and summ["blinks"] >= 10
    assert summ["perclos_max"] is not None and summ["perclos_max"] < 0.15
    assert summ["yawns"] == 0 and summ["closures"] == 0
    # no 3 s window of this head is stable enough to calibrate ...
    rows = read_jsonl(dump)
    t = np.array([r["t"] for r in rows])
    yaw = np.array([r["faces"][0]["yaw"] for r in rows], float)
    n = int(round(3.0 * fps))
    spread = [np.percentile(np.abs(yaw[i:i + n] - np.median(yaw[i:i + n])), 90) for i in range(0, len(yaw) - n, 5)]
    assert min(spread) > 6.0 and np.ptp(yaw) > 50, (min(spread), np.ptp(yaw))
    # ... so the fallback set the neutral to the median of the first 20 s, and the pose rules ran
    assert summ["calibrations"] == 1 and summ["calibrated_by"] == "fallback"
    first20 = yaw[t <= 20.0 + 1e-6]
    assert summ["neutral_yaw"] == pytest.approx(np.median(first20), abs=0.5)
    away = np.abs(yaw[t > 20.0 + 1e-6] - summ["neutral_yaw"]) > 30.0
    assert summ["time_distracted_s"] == pytest.approx(away.sum() / fps, abs=1.0) and away.sum() > 0
    assert np.all(np.diff(t) > 0)
