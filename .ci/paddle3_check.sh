#!/usr/bin/env bash
# CI: the engine's tests on paddle 3.x too, in a SECOND venv: requirements-cpu.txt with the paddlepaddle pin swapped
# for PADDLE3 (paddle 3 exports PIR programs and changed Paddle Inference; README says both lines work).
# Re-runs are quick: the venv is kept ($PADDLE3_VENV) and pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PADDLE3="${PADDLE3:-3.3.1}"
ENGINE_TESTS=(tests/test_model.py tests/test_runtime.py tests/test_weights.py tests/test_checkpoint.py
              tests/test_s3fd.py tests/test_faces.py tests/test_audio.py tests/test_video.py tests/test_encoding.py
              tests/test_end_to_end.py tests/test_faults.py tests/test_engine.py tests/test_cpu.py
              tests/test_geometry.py tests/test_picture.py tests/test_ffmpeg.py tests/test_enhance.py
              tests/test_facecrop.py tests/test_precision.py tests/test_who_speaks.py tests/test_batching.py
              tests/test_paddlelib.py)
venv="${PADDLE3_VENV:-${TMPDIR:-/tmp}/lipsync-paddle3-venv}"
py="$venv/bin/python"
requirements="$(mktemp "${TMPDIR:-/tmp}/lipsync-paddle3.XXXXXX.txt")"
trap 'rm -f "$requirements"' EXIT

sed "s/^paddlepaddle==.*/paddlepaddle==$PADDLE3/" requirements-cpu.txt > "$requirements"
grep -q "^paddlepaddle==$PADDLE3\$" "$requirements" || { echo "FAIL: no paddlepaddle pin in requirements-cpu.txt"; exit 1; }
[ -x "$py" ] || python3 -m venv "$venv"
"$py" -m pip install -q --upgrade pip
"$py" -m pip install -q -r "$requirements" $(grep -E '^(pytest|scikit-image)' requirements-dev.txt | cut -d' ' -f1)
"$py" -c "import paddle; assert paddle.__version__ == '$PADDLE3', paddle.__version__; print('paddle', paddle.__version__)"
"$py" -m pytest -q -p no:cacheprovider "${ENGINE_TESTS[@]}"
