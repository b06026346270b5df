#!/usr/bin/env bash
# fastdet on a GPU machine: build for Hopper, run the CUDA tests, run them under
# compute-sanitizer memcheck and racecheck, check the Detector on the GPU against the CPU one,
# measure the machine's ceilings, run the GPU benchmarks and the Detector's timings; every log
# and a summary go to $LOGS.
#
#   bash benchmarks/gpu/run.sh [STAGE ...]
#
# STAGE: build probe test memcheck racecheck parity ceilings bench detector summary pack; the
# default is `build test+memcheck+racecheck parity ceilings bench detector summary pack`. Stages
# joined by '+' run at the same time (correctness checks that time nothing); timed stages, and
# parity (its CPU Detector needs the cores), run alone.
# `build` is skipped when this tree's fastdet is already installed with CUDA. Each stage has its
# own time limit (FASTDET_GPU_<STAGE>_TIMEOUT seconds) and a failing stage does not stop the
# others; the exit status is that of the first failing stage.
#
# Files: logs go to $LOGS (default $OUT, else benchmarks/results/gpu-<date>). The device tool
# brings back at most 8 files from $OUT, so there set LOGS elsewhere and end with `pack`: it
# copies summary.md and machine.txt to $OUT and everything else as $OUT/logs.tar.gz.
# The Detector stages read the coco-mini photos from $FASTDET_COCO_MINI.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO="$PWD"
OUT="${OUT:-$REPO/benchmarks/results/gpu-$(date +%Y-%m-%d-%H%M%S)}"
LOGS="${LOGS:-$OUT}"
mkdir -p "$OUT" "$LOGS"
export PYTHONUNBUFFERED=1
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(build test+memcheck+racecheck parity ceilings bench detector summary pack)
STATUS=0

note() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOGS/machine.txt"; }

# Runs a stage with its time limit; its output goes to $LOGS/<log>.
stage() {
  local name="$1" limit="$2" log="$3"
  shift 3
  note "stage $name (limit ${limit}s) -> $log"
  local began=$SECONDS
  timeout --signal=INT --kill-after=30 "$limit" "$@" >"$LOGS/$log" 2>&1
  local rc=$?
  note "stage $name: exit $rc after $((SECONDS - began)) s"
  tail -n 15 "$LOGS/$log"
  echo "$rc" >"$LOGS/.rc-$name"
  return $rc
}

# Resolves the fastdet frames of a crash backtrace in a log (addr2line on the unstripped build).
symbolize() {
  local so
  so="$(find "$REPO/build" -name '_core*.so' -path '*build*' 2>/dev/null | head -n 1)"
  [ -n "$so" ] || return 0
  grep -o 'fastdet-backtrace: [^ ]*_core[^ ]* +0x[0-9a-f]*' "$1" | awk '{print $NF}' |
    while read -r offset; do
      echo "fastdet-frame $offset $(addr2line -f -C -e "$so" "$offset" | paste -sd' ')"
    done >>"$1"
}

# A digest of the sources: `build` is skipped when the installed fastdet was built from them.
source_digest() {
  find csrc python/fastdet CMakeLists.txt pyproject.toml -type f \
    \( -name '*.cu' -o -name '*.cuh' -o -name '*.h' -o -name '*.cpp' -o -name '*.py' \
    -o -name '*.pyi' -o -name '*.txt' -o -name '*.toml' \) -print0 | sort -z | xargs -0 sha1sum |
    sha1sum | cut -d' ' -f1
}
STAMP="$REPO/build/.fastdet-gpu-build"
TIMEOUT_ARGS=()
python3 -c "import pytest_timeout" >/dev/null 2>&1 && TIMEOUT_ARGS=(--timeout 600)

{
  echo "# fastdet GPU run, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown) $(git status --short 2>/dev/null | wc -l) changed files"
  echo "stages: ${STAGES[*]}"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1
  nvcc --version 2>&1 | tail -n 2
  python3 -c "import sys, numpy, torch, torchvision; print('python', sys.version.split()[0], 'numpy', numpy.__version__, 'torch', torch.__version__, 'torchvision', torchvision.__version__)" 2>&1
  command -v compute-sanitizer >/dev/null && compute-sanitizer --version 2>&1 | tail -n 1
} >>"$LOGS/machine.txt"

# pytest-benchmark refuses to run beside xdist, and warnings are errors here: tests need neither.
XDIST_ARGS=()
python3 -c "import xdist" >/dev/null 2>&1 && XDIST_ARGS=(-n 4 -p no:benchmark)
# A native backtrace of a crash in the sanitizer runs (see crash_backtrace.c); built by `build`.
BACKTRACE_LIB="$REPO/build/libfastdet_crash_backtrace.so"

# The sanitizer subset: every kernel and path (bins larger than a chunk, the spilled kept list,
# fp16 inputs, uploads, graph capture, errors) on small workloads, as memcheck runs ~50x slower.
# The CUDA cases only (needs_cuda), each once (not the skipped threads2 twin of a CUDA case).
SANITIZER_K="needs_cuda and not threads2 and ((test_random_boxes and cuda-1000) \
or (score_ties and big-bins) or (test_max_det and 513) or non_finite \
or (test_yolov7_map_settings and batch3 and float32) or (test_yolov7_raw and batch3 and detect) \
or (test_damo and batch3 and float16) or (candidate_cap and 257) or graph_capture \
or batch_array_and_views or out_is_written \
or (test_single_image_matches_reference and letterbox and 1081x1919 and to640) \
or (test_mixed_size_batch_matches_reference and stretch and float16) or dlpack_only \
or stream_argument)"

run_stage() {
  case "$1" in
    build)
      digest="$(source_digest)"
      if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$digest" ]; then
        note "build: fastdet already installed from these sources, skipped"
      else
        export CMAKE_CUDA_ARCHITECTURES=90 FASTDET_CUDA=ON
        if stage build "${FASTDET_GPU_BUILD_TIMEOUT:-420}" build.log \
          python3 -m pip install --no-build-isolation --no-deps -v .; then
          mkdir -p "$(dirname "$STAMP")" && echo "$digest" >"$STAMP"
        fi
      fi
      mkdir -p "$REPO/build"
      gcc -shared -fPIC -O1 -o "$BACKTRACE_LIB" benchmarks/gpu/crash_backtrace.c -ldl ||
        note "build: crash_backtrace.c did not build (sanitizer crashes will have no native frames)"
      (cd /tmp && python3 -c "import fastdet; print('fastdet', fastdet.__version__, fastdet.__file__, 'WITH_CUDA', fastdet.WITH_CUDA, 'GPU', fastdet.cuda_is_available())") 2>&1 | tee -a "$LOGS/machine.txt"
      ;;
    test)
      # The ops' tests on both devices (CUDA, and the CPU on this build), the GPU pipeline's.
      # Tests that read the device's free memory run alone afterwards: parallel workers
      # allocate beside them.
      stage test "${FASTDET_GPU_TEST_TIMEOUT:-480}" tests.log bash -c '
        set -o pipefail
        files=(tests/test_interop.py tests/test_preprocess.py tests/test_nms.py
          tests/test_postprocess.py tests/test_pipeline.py)
        python3 -m pytest "${files[@]}" -q -p no:cacheprovider -rfEs --durations 15 \
          -k "not steady_state" "$@"; first=$?
        python3 -m pytest "${files[@]}" -q -p no:cacheprovider -rfEs -k steady_state; second=$?
        exit $(( first ? first : second ))' _ "${TIMEOUT_ARGS[@]}" "${XDIST_ARGS[@]}"
      ;;
    memcheck | racecheck)
      preload=()
      [ -f "$BACKTRACE_LIB" ] && preload=(env "LD_PRELOAD=$BACKTRACE_LIB")
      stage "$1" "${FASTDET_GPU_SANITIZER_TIMEOUT:-420}" "$1.log" \
        "${preload[@]}" compute-sanitizer --tool "$1" --error-exitcode 99 --print-limit 50 \
        python3 -X faulthandler -m pytest tests/test_interop.py \
        tests/test_preprocess.py tests/test_nms.py tests/test_postprocess.py \
        -v -p no:cacheprovider -rfEs -k "$SANITIZER_K"
      symbolize "$LOGS/$1.log"
      ;;
    probe)
      preload=()
      [ -f "$BACKTRACE_LIB" ] && preload=(env "LD_PRELOAD=$BACKTRACE_LIB")
      stage probe "${FASTDET_GPU_PROBE_TIMEOUT:-120}" probe.log \
        "${preload[@]}" python3 benchmarks/gpu/probe.py
      symbolize "$LOGS/probe.log"
      cat "$LOGS/probe.log"
      ;;
    parity)
      stage parity "${FASTDET_GPU_PARITY_TIMEOUT:-300}" parity.log \
        python3 -X faulthandler benchmarks/gpu/detector.py "$LOGS/parity.json" --parts parity
      ;;
    ceilings)
      stage ceilings "${FASTDET_GPU_CEILINGS_TIMEOUT:-120}" ceilings.log \
        python3 benchmarks/gpu/ceilings.py "$LOGS/ceilings.json"
      ;;
    bench)
      stage bench "${FASTDET_GPU_BENCH_TIMEOUT:-480}" bench.log \
        python3 -m pytest benchmarks/bench_gpu.py -o python_files='bench_*.py' -p no:cacheprovider \
        --benchmark-only --benchmark-json="$LOGS/bench_gpu.json" --benchmark-columns=median,iqr,rounds -q
      ;;
    detector)
      stage detector "${FASTDET_GPU_DETECTOR_TIMEOUT:-300}" detector.log \
        python3 -X faulthandler benchmarks/gpu/detector.py "$LOGS/detector.json" \
          --parts timing,memory
      ;;
    summary)
      python3 benchmarks/gpu/summary.py "$LOGS" >"$LOGS/summary.md" 2>&1
      cat "$LOGS/summary.md"
      ;;
    pack)
      if [ "$LOGS" != "$OUT" ]; then
        cp "$LOGS/summary.md" "$LOGS/machine.txt" "$OUT/" 2>/dev/null
        tar -czf "$OUT/logs.tar.gz" -C "$LOGS" --exclude '.rc-*' .
      fi
      ;;
    *)
      echo "run.sh: unknown stage '$1' (build test memcheck racecheck parity ceilings bench" \
        "detector summary pack)" >&2
      exit 2
      ;;
  esac
}

for group in "${STAGES[@]}"; do
  IFS=+ read -r -a parallel <<<"$group"
  if [ ${#parallel[@]} -eq 1 ]; then
    run_stage "$group"
  else
    for s in "${parallel[@]}"; do run_stage "$s" & done
    wait
  fi
done
for rc_file in "$LOGS"/.rc-*; do
  [ -f "$rc_file" ] || continue
  rc="$(cat "$rc_file")"
  if [ "$rc" -ne 0 ] && [ $STATUS -eq 0 ]; then STATUS=$rc; fi
done
note "done: exit $STATUS; files in $LOGS"
ls -la "$LOGS" "$OUT"
exit $STATUS
