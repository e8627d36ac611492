#!/usr/bin/env bash
# docs/screenshot.png was made with exactly (the model exported from ../shared to /tmp, never committed):
#   python -m export 3ddfa-v2 --checkpoint ../shared/models/3ddfa_v2_mb05/mb05_120x120.pth \
#     --bfm-dir ../shared/bfm/3dmm_data --param-stats ../shared/models/3ddfa_v2_mb05/param_mean_std_62d_120x120.pkl \
#     --out /tmp/3ddfa_v2_mb05.onnx
#   scripts/screenshot_xvfb.sh ../shared/media/clips/expressions_d3.mp4 /tmp/shot.png 40 --model /tmp/3ddfa_v2_mb05.onnx
#   cp /tmp/shot.png docs/screenshot.png
# (40 s: the plots hold their full 30 s and PERCLOS has its 30 s of known eye time.)
#
# A real window under Xvfb on a shared clip; saves a screenshot and quits.
#   scripts/screenshot_xvfb.sh [CLIP] [OUT.png] [SECONDS] [extra app flags...]
# Needs Debian's xvfb + libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-cursor0.
set -euo pipefail
cd "$(dirname "$0")/.."
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
Xvfb ":$D" -screen 0 1600x900x24 -nolisten tcp >/tmp/xvfb-$D.log 2>&1 &
XPID=$!
trap 'kill "$XPID" 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X$D" ] && break; sleep 0.1; done

mkdir -p "$(dirname "$OUT")"
# a fresh settings folder: default window size and thresholds, not the ones of your last session
CFG=$(mktemp -d)
trap 'kill "$XPID" 2>/dev/null || true; rm -rf "$CFG"' EXIT
env -u QT_QPA_PLATFORM DISPLAY=":$D" QT_QPA_PLATFORM=xcb XDG_CONFIG_HOME="$CFG" \
  python -m app.gui --video "$CLIP" --screenshot-after "$SECS" "$OUT" "$@"
