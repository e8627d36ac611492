#!/usr/bin/env bash
# The GPU path checked and measured in one command: install, then scripts/gpu_check.py (which
# prints nvidia-smi and onnxruntime's providers, exports the models, runs the gpu tests, times the
# 3DMM at batch 1..1024 with and without I/O binding, fp32 and fp16, and the 720p pipeline, and
# writes gpu_check.json + gpu_check.md into its --out folder within --budget-s, default 480 s).
#
# A machine with an NVIDIA GPU and PyPI:
#   bash scripts/gpu_check.sh -- --out gpu_check_out
#       fresh venv ($GPU_CHECK_VENV, default /tmp/face3d-gpucheck-venv), pip install -e ".[cuda,export,dev]"
#       (onnxruntime-gpu with CUDA 13 + cuDNN 9 from its extras, torch for the export), then the check.
#   bash scripts/gpu_check.sh --wheels DIR -- ...     the same install from a wheel folder, offline
#       (pip --no-index --find-links DIR; fill DIR with `pip download ".[cuda,export,dev]" -d DIR`).
#   bash scripts/gpu_check.sh --no-install [--site DIR] [--nvidia-libs] -- ...
#       no install: $PYTHON (default python3) as it is; --site DIR puts packages installed there with
#       `pip install --target DIR` first on PYTHONPATH; --nvidia-libs puts the lib folders of the
#       nvidia-* wheels of that Python (CUDA, cuBLAS, cuDNN) on LD_LIBRARY_PATH for onnxruntime.
# Any machine, no GPU (what CI runs on a tiny budget, tests/test_gpu_check.py):
#   bash scripts/gpu_check.sh --no-install -- --cpu --out gpu_check_out
#
# The workplace's GPU machine (no network; at most 64 MiB travel per call; its python3 has torch,
# onnx, onnxscript, numpy, scipy, opencv-python-headless and the CUDA 13 nvidia-* wheels, but plain
# onnxruntime, no mediapipe, no PyAV; ../shared does not travel):
#   here, with PyPI and ../shared:   bash scripts/gpu_check.sh --bundle .gpucheck
#       downloads onnxruntime-gpu, mediapipe and av wheels for CPython 3.12 manylinux x86-64 (the
#       pins of pyproject.toml), unpacks them into site/, copies the ../shared files the check
#       reads, packs it all (tar | xz) into .gpucheck/part.NN of 58 MiB and writes .gpucheck/MANIFEST
#       (the folder must be git-ignored: /.gpucheck/ is in .gitignore). It prints the calls below.
#       --bundle-core DIR: onnxruntime-gpu and the data only (one or two parts fewer; the pipeline
#       step is then left out with --no-pipeline).
#   on the device, one `run` per part, back to back (the machine stays warm 30 s between calls):
#       command "bash scripts/gpu_check.sh --stash .gpucheck /tmp/gcparts", carry [".gpucheck/part.00"]
#       ... part.01 ... up to the one before the last ...
#   and the last part runs the check (about 8 minutes: timeout_s 600):
#       command "bash scripts/gpu_check.sh --device-run .gpucheck /tmp/gcparts -- --budget-s 420",
#       carry [".gpucheck/part.NN", ".gpucheck/MANIFEST"]
#   --device-run checks every part against MANIFEST (it names the missing ones and exits 2),
#   unpacks into /tmp/face3d_gc, runs the check with --no-install --site /tmp/face3d_gc/site --nvidia-libs
#   --shared /tmp/face3d_gc/shared --out /tmp/face3d_gc/out and copies gpu_check.json, gpu_check.md and the logs
#   to $OUT (what the device tool brings back).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
VENV="${GPU_CHECK_VENV:-/tmp/face3d-gpucheck-venv}"
MODE=venv
WHEELS=""
SITE=""
NVLIBS=0
CPU=0
PART_MIB=58

die() { echo "gpu_check.sh: error: $*" >&2; exit 2; }
say() { echo "[gpu_check.sh] $*"; }

bundle() {   # bundle DIR full|core: wheels for the device + the shared files, in parts
    local dir="$1" what="$2" shared="${SHARED_DIR:-$ROOT/../shared}" stage
    [ -d "$shared/bfm/3dmm_data" ] || die "--bundle: the shared data folder $shared is missing (set SHARED_DIR)"
    stage="$(mktemp -d /tmp/gcbundle.XXXXXX)"
    mkdir -p "$dir" "$stage/wheels"
    local reqs
    reqs="$("$PY" - "$ROOT/pyproject.toml" "$what" <<'EOF'
import re, sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
want = {"onnxruntime-gpu", "mediapipe", "av"} if sys.argv[2] == "full" else {"onnxruntime-gpu"}
print(" ".join(d.replace(" ", "") for d in deps if re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() in want))
EOF
)"
    say "downloading for CPython 3.12 manylinux x86-64 (no dependencies: the device has them): $reqs"
    # shellcheck disable=SC2086
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$stage/wheels" $reqs
    mkdir -p "$stage/gc/site"
    for w in "$stage"/wheels/*.whl; do (cd "$stage/gc/site" && "$PY" -m zipfile -e "$w" .); done
    local s="$stage/gc/shared"
    mkdir -p "$s/bfm/3dmm_data" "$s/models/3ddfa_v2_mb05" "$s/fixtures/synergynet" "$s/fixtures/3ddfa_v2" \
        "$s/media/aflw2000" "$s/models/mediapipe"
    cp "$shared"/bfm/3dmm_data/{u_shp.npy,u_exp.npy,w_shp_sim.npy,w_exp_sim.npy,keypoints_sim.npy,tri.mat,param_whitening.pkl} "$s/bfm/3dmm_data/"
    cp "$shared"/models/3ddfa_v2_mb05/{mb05_120x120.pth,param_mean_std_62d_120x120.pkl} "$s/models/3ddfa_v2_mb05/"
    cp "$shared"/fixtures/synergynet/{synergynet_random_weights.pth.tar,crop_bgr.png} "$s/fixtures/synergynet/"
    cp "$shared"/fixtures/3ddfa_v2/mb05_parity.npz "$s/fixtures/3ddfa_v2/"
    cp "$shared"/media/aflw2000/*.jpg "$shared"/media/aflw2000/official_protocol.npz "$s/media/aflw2000/"
    cp "$shared"/media/talking_head_720p.mp4 "$s/media/"
    cp "$shared"/models/mediapipe/* "$s/models/mediapipe/" 2>/dev/null || true
    rm -f "$dir"/part.* "$dir"/MANIFEST
    say "packing $(du -sh "$stage/gc" | cut -f1) (xz) into $PART_MIB MiB parts in $dir"
    tar -C "$stage" -cf - gc | xz -T0 -1 | split -b "${PART_MIB}M" -d -a 2 - "$dir/part."
    (cd "$dir" && sha256sum part.* > MANIFEST)
    rm -rf "$stage"
    local parts n last
    parts=$(cd "$dir" && ls part.*)
    n=$(echo "$parts" | wc -l)
    last=$(echo "$parts" | tail -1)
    say "$n parts ($(du -ch "$dir"/part.* | tail -1 | cut -f1)). Device calls, back to back:"
    for p in $parts; do
        if [ "$p" != "$last" ]; then
            echo "  run command=\"bash scripts/gpu_check.sh --stash $dir /tmp/gcparts\" carry=[\"$dir/$p\"]"
        fi
    done
    local more=""
    [ "$what" = core ] && more=" --no-pipeline"
    echo "  run command=\"bash scripts/gpu_check.sh --device-run $dir /tmp/gcparts -- --budget-s 420$more\" carry=[\"$dir/$last\", \"$dir/MANIFEST\"] timeout_s=600"
}

stash() {   # stash DIR DEST: keep the parts that came with this call
    mkdir -p "$2"
    cp "$1"/part.* "$2"/ 2>/dev/null || true
    say "parts kept in $2: $(cd "$2" && ls part.* 2>/dev/null | tr '\n' ' ')"
}

device_run() {   # device_run DIR DEST [-- gpu_check.py args]
    local dir="$1" dest="$2"
    shift 2
    [ "${1:-}" = "--" ] && shift
    stash "$dir" "$dest"
    [ -f "$dir/MANIFEST" ] || die "$dir/MANIFEST did not come with this call (carry it with the last part)"
    local missing
    local manifest
    manifest="$(cd "$dir" && pwd)/MANIFEST"
    missing=$(cd "$dest" && sha256sum -c "$manifest" 2>/dev/null | grep -v ': OK$' | cut -d: -f1 | tr '\n' ' ' || true)
    [ -z "$missing" ] || die "parts missing or damaged in $dest: $missing(send each again with --stash)"
    rm -rf /tmp/face3d_gc
    mkdir -p /tmp/face3d_gc
    # python's lzma: the machine may have no xz program
    (cd "$dest" && cat part.* | "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)' | tar -C /tmp/face3d_gc --strip-components=1 -xf -)
    local out=/tmp/face3d_gc/out rc=0
    mkdir -p "$out"
    set +e
    PYTHON="$PY" bash "$ROOT/scripts/gpu_check.sh" --no-install --site /tmp/face3d_gc/site --nvidia-libs -- \
        --shared /tmp/face3d_gc/shared --out "$out" "$@" 2>&1 | tee "$out/run.log"
    rc=${PIPESTATUS[0]}
    set -e
    if [ -n "${OUT:-}" ]; then
        cp "$out"/gpu_check.json "$out"/gpu_check.md "$out"/tests.log "$out"/run.log "$OUT"/ 2>/dev/null || true
        say "copied the reports to $OUT"
    fi
    exit "$rc"
}

ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) WHEELS="${2:?--wheels DIR}"; shift 2 ;;
        --no-install) MODE=none; shift ;;
        --venv) VENV="${2:?--venv DIR}"; shift 2 ;;
        --site) SITE="${2:?--site DIR}"; shift 2 ;;
        --nvidia-libs) NVLIBS=1; shift ;;
        --bundle) bundle "${2:?--bundle DIR}" full; exit 0 ;;
        --bundle-core) bundle "${2:?--bundle-core DIR}" core; exit 0 ;;
        --stash) stash "${2:?--stash DIR DEST}" "${3:?--stash DIR DEST}"; exit 0 ;;
        --device-run) shift; device_run "$@" ;;
        --) shift; ARGS+=("$@"); break ;;
        *) die "unknown option $1 (options of scripts/gpu_check.py go after --)" ;;
    esac
done
for a in "${ARGS[@]+"${ARGS[@]}"}"; do [ "$a" = "--cpu" ] && CPU=1; done

cd "$ROOT"
if [ "$MODE" = venv ]; then
    extras="cuda,export,dev"
    [ "$CPU" = 1 ] && extras="export,dev"
    say "fresh venv $VENV, pip install -e \".[$extras]\"${WHEELS:+ from $WHEELS (offline)}"
    "$PY" -m venv --clear "$VENV"
    pipargs=()
    [ -n "$WHEELS" ] && pipargs=(--no-index --find-links "$WHEELS")
    "$VENV/bin/python" -m pip install -q "${pipargs[@]+"${pipargs[@]}"}" -e ".[$extras]"
    PY="$VENV/bin/python"
else
    command -v "$PY" >/dev/null || die "python $PY not found (set PYTHON)"
    say "no install: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
fi
if [ -n "$SITE" ]; then
    [ -d "$SITE" ] || die "--site $SITE is not a folder"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    say "PYTHONPATH=$PYTHONPATH"
fi
if [ "$NVLIBS" = 1 ]; then
    libs="$("$PY" -c 'import glob, os, sys
print(":".join(dict.fromkeys(d for p in sys.path for d in sorted(glob.glob(os.path.join(p, "nvidia", "*", "lib")))
                             if glob.glob(os.path.join(d, "*.so*")))))')"
    if [ -n "$libs" ]; then
        export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export FACE3D_NVIDIA_LIBS_ADDED="$libs"
        say "LD_LIBRARY_PATH += $libs"
    else
        say "--nvidia-libs: this Python has no nvidia-* wheel libraries; LD_LIBRARY_PATH unchanged"
    fi
fi
"$PY" -c 'import onnxruntime as o; print("[gpu_check.sh] onnxruntime", o.__version__, o.__file__, "providers:", o.get_available_providers())'
exec "$PY" "$ROOT/scripts/gpu_check.py" "${ARGS[@]+"${ARGS[@]}"}"
