#!/usr/bin/env bash
# CI: install the Space's requirements.txt (paddlepaddle-gpu + the nvidia-*-cu11 CUDA wheels) into a SECOND venv
# on this CPU machine and smoke-test it, so a broken Space build shows here first:
#   1. the install resolves, and paddle is the GPU build (never alongside CPU paddlepaddle);
#   2. the CUDA bootstrap links the wheels' libraries and `python -m lipsync --doctor` finds them; the doctor
#      exits 1 offline without generator weights (saying which file to put where), 0 once they are there;
#   3. tests/test_cuda.py, with the real-wheel dlopen tests required to run (not skipped);
#   4. a 1-second job on CPU through lipsync.run, with random weights, checked with ffprobe.
# Re-runs are quick: the venv is kept ($SPACE_VENV) and pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

venv="${SPACE_VENV:-${TMPDIR:-/tmp}/lipsync-space-venv}"
work="$(mktemp -d "${TMPDIR:-/tmp}/lipsync-space-smoke.XXXXXX")"
trap 'rm -rf "$work"' EXIT
py="$venv/bin/python"
export PYTHONPATH="$repo" LIPSYNC_MODELS="$work/models" LIPSYNC_CACHE="$work/cache" HF_HUB_OFFLINE=1
unset LD_LIBRARY_PATH LIPSYNC_CUDA_REEXEC
step() { printf '\n== %s\n' "$*"; }

step "1. install requirements.txt into $venv"
[ -x "$py" ] || python3 -m venv "$venv"
"$py" -m pip install -q --upgrade pip
hub_pin="$(grep -i '^huggingface_hub' requirements-cpu.txt)"  # Spaces preinstall it; this venv must too
"$py" -m pip install -q -r requirements.txt "$hub_pin" 'pytest>=8,<10'
if "$py" -m pip show -q paddlepaddle 2>/dev/null; then
    echo "FAIL: CPU paddlepaddle is installed next to paddlepaddle-gpu"; exit 1
fi
"$py" - <<'EOF'
import platform, sys
import paddle
assert paddle.is_compiled_with_cuda(), "requirements.txt must bring paddle's GPU build"
print(f"ok: python {platform.python_version()}, paddle {paddle.__version__} built for CUDA {paddle.version.cuda()} "
      f"/ cuDNN {paddle.version.cudnn()}")
EOF
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
du -sh "$site/paddle" "$site/nvidia" | sed 's/^/installed: /'

step "2. CUDA bootstrap + python -m lipsync --doctor"
code=0
LIPSYNC_MODELS="$work/no-models" "$py" -m lipsync --doctor > "$work/doctor-no-weights.txt" || code=$?
if [ "$code" = 1 ]; then  # offline, as CI is: no job could run, and the doctor must say what to put where
    expected='^generator +.*: put wav2lip_hq\.pdparams \(from https://.*\) in \$LIPSYNC_MODELS'
else  # a machine that reaches the download host: the weights come on first use
    expected='^generator +wav2lip_hq downloads on first use from '
fi
grep -E "$expected" "$work/doctor-no-weights.txt" > /dev/null \
    || { cat "$work/doctor-no-weights.txt"; echo "FAIL: doctor without weights (exit $code) lacks /$expected/"; exit 1; }
echo "ok: without weights the doctor exits $code and its generator line says why"
mkdir -p "$work/models"
"$py" - "$work/models/wav2lip_hq.pdparams" <<'EOF'
import sys

import lipsync  # first: it loads zlib before paddle (see lipsync/__init__.py)
import paddle
from lipsync.model import Wav2Lip

paddle.seed(0)
paddle.save(Wav2Lip().state_dict(), sys.argv[1])  # random weights of the real architecture
EOF
"$py" -m lipsync --doctor | tee "$work/doctor.txt"
grep -q 'on LD_LIBRARY_PATH' "$work/doctor.txt" || { echo "FAIL: the CUDA links are not on LD_LIBRARY_PATH"; exit 1; }
for lib in libcudnn.so libcublas.so libcublasLt.so; do
    grep -E "^$lib +/" "$work/doctor.txt" > /dev/null || { echo "FAIL: $lib not found through the bootstrap"; exit 1; }
done
grep -E '^generator +wav2lip_hq ready \(models dir\)' "$work/doctor.txt" > /dev/null \
    || { echo "FAIL: doctor does not see the generator weights in \$LIPSYNC_MODELS"; exit 1; }
echo "ok: doctor exit 0; cuDNN and cuBLAS found through the bootstrap folder"

step "3. tests/test_cuda.py with the real wheels (dlopen through the links)"
LIPSYNC_REQUIRE_NVIDIA=1 "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py

step "4. a 1-second job on CPU through lipsync.run (the random weights of step 2)"
ffmpeg -nostdin -loglevel error -f lavfi -i "sine=frequency=220:duration=1" -ar 16000 "$work/tone.wav"
ffmpeg -nostdin -loglevel error -f lavfi -i "testsrc=size=256x256:rate=1" -frames:v 1 "$work/face.png"
cat > "$work/job.py" <<'EOF'
import sys
from pathlib import Path

from lipsync import cuda

cuda.bootstrap()  # as app.py does: may restart this script once, with the CUDA links on LD_LIBRARY_PATH
import lipsync

work = Path(sys.argv[1])
options = lipsync.LipSyncOptions(box=(64, 192, 64, 192), device="auto")  # fixed box: no detector weights needed
result = lipsync.run(work / "face.png", work / "tone.wav", work / "out.mp4", options)
print(f"ok: {result.frames} frames at {result.fps:g} fps in {result.seconds:.1f} s on {result.device}, "
      f"paddle {result.paddle}")
EOF
"$py" "$work/job.py" "$work"  # a file, not stdin: the bootstrap's restart reads the script again
streams="$(ffprobe -v error -show_entries stream=codec_name -of csv=p=0 "$work/out.mp4" | tr '\n' ' ')"
duration="$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$work/out.mp4")"
[ "$streams" = "h264 aac " ] || { echo "FAIL: expected h264 + aac streams, got: $streams"; exit 1; }
echo "ok: out.mp4 has $streams, ${duration} s"

printf '\nspace smoke: OK in %d s\n' "$SECONDS"
