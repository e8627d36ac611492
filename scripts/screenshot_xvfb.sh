#!/usr/bin/env bash
# A real window under Xvfb on a shared clip, on a virtual screen of the given size (default
# 1600x900); saves a screenshot of the window and quits.
#   scripts/screenshot_xvfb.sh [--size WxH] [CLIP] [OUT.png] [SECONDS] [extra app flags...]
# Needs Debian's xvfb + libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-cursor0.
# The window sizes itself from the screen (no window manager: no frame), with fresh settings.
#
# The model for the screenshots in docs/ (exported from ../shared to /tmp, never committed):
#   python -m export 3ddfa-v2 --checkpoint ../shared/models/3ddfa_v2_mb05/mb05_120x120.pth \
#     --bfm-dir ../shared/bfm/3dmm_data --param-stats ../shared/models/3ddfa_v2_mb05/param_mean_std_62d_120x120.pkl \
#     --mesh noneck --out /tmp/3ddfa_v2_noneck.onnx
# docs/screenshot.png (40 s: the plots hold their full 30 s and PERCLOS has its 30 s of known eye time):
#   scripts/screenshot_xvfb.sh --size 1920x1080 ../shared/media/clips/expressions_d3.mp4 docs/screenshot.png 40 \
#     --model /tmp/3ddfa_v2_noneck.onnx
# docs/window_1280x720.png, docs/window_1366x768.png, docs/window_1920x1080.png (the same, 15 s):
#   for s in 1280x720 1366x768 1920x1080; do
#     scripts/screenshot_xvfb.sh --size $s ../shared/media/clips/expressions_d3.mp4 docs/window_$s.png 15 \
#       --model /tmp/3ddfa_v2_noneck.onnx; done
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=1600x900
if [ "${1:-}" = "--size" ]; then
  SIZE=${2:-}
  shift 2 || true
fi
if ! [[ "$SIZE" =~ ^[0-9]{3,5}x[0-9]{3,5}$ ]]; then
  echo "error: --size must be WIDTHxHEIGHT in pixels (e.g. 1366x768), got '$SIZE'" >&2
  exit 2
fi
CLIP=${1:-../shared/media/talking_head_720p.mp4}
OUT=${2:-docs/screenshot.png}
SECS=${3:-6}
shift $(( $# < 3 ? $# : 3 ))

if ! command -v Xvfb >/dev/null; then
  echo "error: Xvfb not found; install it: apt-get install xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-cursor0" >&2
  exit 2
fi
if [ ! -f "$CLIP" ]; then
  echo "error: clip not found: $CLIP (pass a video path as the first argument)" >&2
  exit 2
fi

# a free display number
D=99
while [ -e "/tmp/.X11-unix/X$D" ] || [ -e "/tmp/.X$D-lock" ]; do D=$((D + 1)); done
Xvfb ":$D" -screen 0 "${SIZE}x24" -nolisten tcp >/tmp/xvfb-$D.log 2>&1 &
XPID=$!
trap 'kill "$XPID" 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X$D" ] && break; sleep 0.1; done

mkdir -p "$(dirname "$OUT")"
# a fresh settings folder: default window size and thresholds, not the ones of your last session
CFG=$(mktemp -d)
trap 'kill "$XPID" 2>/dev/null || true; rm -rf "$CFG"' EXIT
env -u QT_QPA_PLATFORM DISPLAY=":$D" QT_QPA_PLATFORM=xcb XDG_CONFIG_HOME="$CFG" \
  python -m app.gui --video "$CLIP" --screenshot-after "$SECS" "$OUT" "$@"
