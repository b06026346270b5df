#!/usr/bin/env bash
# fastdet on a GPU machine: build for Hopper, run the CUDA tests, run them under
# compute-sanitizer memcheck, measure the machine's ceilings, run the GPU benchmarks; every log
# and a summary go to $OUT (at most 8 files, the device tool's limit).
#
#   bash benchmarks/gpu/run.sh [STAGE ...]      STAGE: build test memcheck ceilings bench summary
#                                                (default: all of them, in that order)
#
# One device call may run 10 minutes and a fresh machine is bare, so two calls cover it all:
#   bash benchmarks/gpu/run.sh build test
#   bash benchmarks/gpu/run.sh build memcheck ceilings bench summary
# `build` is skipped when this tree's fastdet is already installed with CUDA. Each stage has its
# own time limit (FASTDET_GPU_<STAGE>_TIMEOUT seconds) and a failing stage does not stop the
# others; the exit status is that of the first failing stage.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO="$PWD"
OUT="${OUT:-$REPO/benchmarks/results/gpu-$(date +%Y-%m-%d-%H%M%S)}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(build test memcheck ceilings bench summary)
STATUS=0

note() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/machine.txt"; }

# Runs a stage with its time limit; its output goes to $OUT/<log>.
stage() {
  local name="$1" limit="$2" log="$3"
  shift 3
  note "stage $name (limit ${limit}s) -> $log"
  timeout --signal=INT --kill-after=30 "$limit" "$@" >"$OUT/$log" 2>&1
  local rc=$?
  note "stage $name: exit $rc"
  tail -n 15 "$OUT/$log"
  if [ $rc -ne 0 ] && [ $STATUS -eq 0 ]; then STATUS=$rc; fi
  return $rc
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
} >>"$OUT/machine.txt"

# The memcheck subset: every kernel and path (bins larger than a chunk, the spilled kept list,
# fp16 inputs, uploads, graph capture, errors) on small workloads, as memcheck runs ~50x slower.
MEMCHECK_K="(test_random_boxes and 1000 and gpu-inputs) or (score_ties and big-bins) \
or (test_max_det and 513) or non_finite or (test_yolov7 and batch3 and float32 and map) \
or (test_yolov7_raw and batch3 and detect) or (test_damo and batch3 and float16) \
or (candidate_cap and 257) or graph_capture or batch_array_and_views or out_is_written \
or (test_gpu_images_match_reference and letterbox and 1081x1919 and to640) \
or (test_numpy_images_upload and stretch and float16) or dlpack_only or stream_argument"

for s in "${STAGES[@]}"; do
  case "$s" in
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
      (cd /tmp && python3 -c "import fastdet; print('fastdet', fastdet.__version__, fastdet.__file__, 'WITH_CUDA', fastdet.WITH_CUDA, 'GPU', fastdet.cuda_is_available())") 2>&1 | tee -a "$OUT/machine.txt"
      ;;
    test)
      # The CUDA tests, plus the CPU op tests on this build (same package, other device).
      stage test "${FASTDET_GPU_TEST_TIMEOUT:-480}" tests.log \
        python3 -m pytest tests/test_cuda_interop.py tests/test_cuda_preprocess.py \
        tests/test_cuda_nms.py tests/test_cuda_postprocess.py tests/test_nms.py \
        tests/test_postprocess.py tests/test_preprocess.py -q -p no:cacheprovider -rfEs \
        --durations 15 "${TIMEOUT_ARGS[@]}"
      ;;
    memcheck)
      stage memcheck "${FASTDET_GPU_MEMCHECK_TIMEOUT:-420}" memcheck.log \
        compute-sanitizer --tool memcheck --leak-check no --error-exitcode 99 --print-limit 50 \
        python3 -m pytest tests/test_cuda_interop.py tests/test_cuda_preprocess.py \
        tests/test_cuda_nms.py tests/test_cuda_postprocess.py -q -p no:cacheprovider -rfEs \
        -k "$MEMCHECK_K"
      ;;
    ceilings)
      stage ceilings "${FASTDET_GPU_CEILINGS_TIMEOUT:-120}" ceilings.log \
        python3 benchmarks/gpu/ceilings.py "$OUT/ceilings.json"
      ;;
    bench)
      stage bench "${FASTDET_GPU_BENCH_TIMEOUT:-480}" bench.log \
        python3 -m pytest benchmarks/bench_gpu.py -o python_files='bench_*.py' -p no:cacheprovider \
        --benchmark-only --benchmark-json="$OUT/bench_gpu.json" --benchmark-columns=median,iqr,rounds -q
      ;;
    summary)
      python3 benchmarks/gpu/summary.py "$OUT" >"$OUT/summary.md" 2>&1
      cat "$OUT/summary.md"
      ;;
    *)
      echo "run.sh: unknown stage '$s' (build test memcheck ceilings bench summary)" >&2
      exit 2
      ;;
  esac
done
note "done: exit $STATUS; files in $OUT"
ls -la "$OUT"
exit $STATUS
