#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "common/check.h"
#include "common/cuda_check.h"
#include "ops/nms/nms_cuda.cuh"
#include "ops/postprocess/postprocess.h"
#include "ops/postprocess/postprocess_math.h"

namespace fastdet {
namespace {

using gpu_nms::Candidates;
using gpu_nms::kFullMask;
using gpu_nms::Pass;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRowsPerWarp = 8;
constexpr int kRowsPerBlock = kWarps * kRowsPerWarp;
constexpr int kMaxLevels = 8;
constexpr int kMaxAnchors = 8;

__device__ __forceinline__ float load(const float* p) { return __ldg(p); }
__device__ __forceinline__ float load(const __half* p) { return __half2float(__ldg(p)); }

struct GridArgs {
  const void* data;  // [batch, rows, 5 + classes]
  int64_t rows;
  int64_t classes;
  int64_t s0, s1, s2;
};

struct RawLevelArgs {
  const void* data;  // [batch, anchors, ny, nx, 5 + classes] logits
  int64_t anchors, ny, nx;
  int64_t s[5];
  float stride;
  float anchor_w[kMaxAnchors];
  float anchor_h[kMaxAnchors];
  int64_t first_row;
};

struct RawArgs {
  RawLevelArgs level[kMaxLevels];
  int levels;
  int64_t rows;
  int64_t classes;
};

struct DamoArgs {
  const void* scores;  // [batch, rows, classes]
  const void* boxes;   // [batch, rows, 4]
  int64_t rows;
  int64_t classes;
  int64_t ss0, ss1, ss2;
  int64_t bs0, bs1, bs2;
};

// Per-call values the kernels read from device memory.
struct CallView {
  float conf;
  bool filtering;
  const uint32_t* filter;

  __device__ __forceinline__ bool allowed(int64_t k) const {
    return !filtering || ((filter[k >> 5] >> (k & 31)) & 1u);
  }
};

__device__ __forceinline__ CallView call_view(const uint8_t* params, int64_t batch) {
  const auto* call = reinterpret_cast<const gpu_nms::CallParams*>(params);
  return {call->conf, call->filter_classes != 0, gpu_nms::call_filter_words(params, batch)};
}

struct RowOutcome {
  bool emitted;     // a candidate came from the row
  bool bad;         // a candidate had a non-finite box or score, or the row a NaN score
  float bad_score;  // then: the score the CPU op's message names (NaN when the row holds one)
};

// The row of a bad candidate: its box and the score that made it bad, as the CPU op names them.
template <Pass P>
__device__ __forceinline__ void report_row(const Candidates& c, int64_t image, int64_t row,
                                           const float* box, float score) {
  const float values[5] = {box[0], box[1], box[2], box[3], score};
  gpu_nms::report_error<P>(c, uint64_t(image * c.rows + row), values, 5);
}

// The confidence rule over one row's classes, warp-wide (every lane calls it with the same row).
// Multi-label: every class with score > conf (and in the filter). Single-label: the best class,
// kept if > conf and in the filter. A candidate whose box (box_finite false) or score
// (check_score) is not finite is an error and is not emitted; so is a NaN score anywhere in the
// row (a broken engine, refused as the CPU op refuses it). The CPU op looks for a NaN in the row
// first, then checks the candidates in class order: the score it names is NaN, else the first
// bad candidate's.
template <Pass P, typename ScoreOf>
__device__ __forceinline__ RowOutcome classify_row(const Candidates& c, int64_t image, int64_t row,
                                                   int64_t num_classes, bool multi_label,
                                                   const CallView& call, bool box_finite,
                                                   bool check_score, ScoreOf score_of) {
  const int lane = int(threadIdx.x & 31u);
  const float nan = __int_as_float(0x7fc00000);
  if (multi_label) {
    bool emitted = false;
    bool bad = false;
    bool nan_in_row = false;
    float first_bad = 0.f;
    for (int64_t k0 = 0; k0 < num_classes; k0 += 32) {
      const int64_t k = k0 + lane;
      float score = 0.f;
      bool candidate = false;
      if (k < num_classes) {
        score = score_of(k);
        candidate = score > call.conf && call.allowed(k);
      }
      const bool broken =
          (candidate && (!box_finite || (check_score && !isfinite(score)))) || isnan(score);
      candidate = candidate && !broken;
      const unsigned broken_lanes = __ballot_sync(kFullMask, broken);
      if (broken_lanes != 0) {  // warp-uniform: only a bad row pays for naming its score
        if (!bad) first_bad = __shfl_sync(kFullMask, score, __ffs(broken_lanes) - 1);
        bad = true;
        nan_in_row |= __any_sync(kFullMask, isnan(score));
      }
      emitted |= __any_sync(kFullMask, candidate);
      gpu_nms::emit<P>(c, image, candidate, candidate_key(score, uint32_t(row * num_classes + k)));
    }
    return {emitted, bad, nan_in_row ? nan : first_bad};
  }
  float best = 0.f;
  int64_t best_k = -1;
  bool saw_nan = false;
  for (int64_t k = lane; k < num_classes; k += 32) {
    const float score = score_of(k);
    saw_nan |= isnan(score);
    if (!isnan(score) && (best_k < 0 || score > best)) {
      best = score;
      best_k = k;
    }
  }
  const bool nan_in_row = __any_sync(kFullMask, saw_nan);
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float other = __shfl_down_sync(kFullMask, best, offset);
    const int64_t other_k = __shfl_down_sync(kFullMask, best_k, offset);
    if (other_k >= 0 && (best_k < 0 || other > best || (other == best && other_k < best_k))) {
      best = other;
      best_k = other_k;
    }
  }
  best = __shfl_sync(kFullMask, best, 0);
  best_k = __shfl_sync(kFullMask, best_k, 0);
  bool candidate = !nan_in_row && best_k >= 0 && best > call.conf && call.allowed(best_k);
  const bool broken =
      nan_in_row || (candidate && (!box_finite || (check_score && !isfinite(best))));
  candidate = candidate && !broken;
  gpu_nms::emit<P>(c, image, candidate && lane == 0,
                   candidate_key(best, uint32_t(row * num_classes + best_k)));
  return {candidate, broken, nan_in_row ? nan : best};
}

// What a row's lane 0 keeps of its outcome: the error report of a bad row, and (count pass) the
// box and span of a row that emitted candidates.
template <Pass P>
__device__ __forceinline__ void keep_outcome(const Candidates& c, int64_t image, int64_t row,
                                             const float* box, const RowOutcome& outcome,
                                             gpu_nms::SpanAccumulator& span) {
  if ((threadIdx.x & 31u) != 0) return;
  if (outcome.bad) report_row<P>(c, image, row, box, outcome.bad_score);
  if (P == Pass::Count && outcome.emitted) {
    c.boxes[image * c.rows + row] = make_float4(box[0], box[1], box[2], box[3]);
    span.add(box);
  }
}

// A YOLOv7 row whose objectness passed, box decoded (warp-wide): a non-finite box or objectness
// is an error named with the objectness, as the CPU op names it; otherwise the confidence rule
// over score_of(k), class probability x objectness.
template <Pass P, typename ScoreOf>
__device__ __forceinline__ void yolov7_row(const Candidates& c, int64_t image, int64_t row,
                                           const float* box, float obj, int64_t num_classes,
                                           bool multi_label, const CallView& call,
                                           gpu_nms::SpanAccumulator& span, ScoreOf score_of) {
  if (!gpu_nms::finite4(box) || !isfinite(obj)) {
    if ((threadIdx.x & 31u) == 0) report_row<P>(c, image, row, box, obj);
    return;
  }
  const RowOutcome outcome =
      classify_row<P>(c, image, row, num_classes, multi_label, call, true, false, score_of);
  keep_outcome<P>(c, image, row, box, outcome, span);
}

__device__ __forceinline__ void init_block_span(uint32_t* shared) {
  if (threadIdx.x < 2) shared[threadIdx.x] = 0;
  __syncthreads();
}

// YOLOv7 --grid output: a row is looked at only when objectness > conf (docs/facts.md 4.1).
template <Pass P, typename T>
__global__ void __launch_bounds__(kThreads)
    yolov7_grid_kernel(GridArgs in, Candidates c, const uint8_t* params, int64_t batch,
                       bool multi_label) {
  __shared__ uint32_t block_span[2];
  if (P == Pass::Count) init_block_span(block_span);
  const int64_t image = blockIdx.y;
  const int lane = int(threadIdx.x & 31u);
  const int64_t row0 = (int64_t(blockIdx.x) * kWarps + threadIdx.x / 32) * kRowsPerWarp;
  const CallView call = call_view(params, batch);
  const T* base = static_cast<const T*>(in.data) + image * in.s0;
  float obj = 0.f;
  bool pass = false;
  if (lane < kRowsPerWarp && row0 + lane < in.rows) {
    obj = load(base + (row0 + lane) * in.s1 + 4 * in.s2);
    pass = obj > call.conf || isnan(obj);  // a NaN objectness is reported below
  }
  unsigned todo = __ballot_sync(kFullMask, pass);
  gpu_nms::SpanAccumulator span;
  while (todo) {
    const int r = __ffs(todo) - 1;
    todo &= todo - 1;
    const int64_t row = row0 + r;
    const float o = __shfl_sync(kFullMask, obj, r);
    const T* p = base + row * in.s1;
    const float v = lane < 4 ? load(p + lane * in.s2) : 0.f;
    float box[4];
    center_size_to_corners(__shfl_sync(kFullMask, v, 0), __shfl_sync(kFullMask, v, 1),
                           __shfl_sync(kFullMask, v, 2), __shfl_sync(kFullMask, v, 3), box);
    yolov7_row<P>(c, image, row, box, o, in.classes, multi_label, call, span,
                  [&](int64_t k) { return load(p + (5 + k) * in.s2) * o; });
  }
  if (P == Pass::Count) gpu_nms::flush_span(span, block_span, c, image);
}

// YOLOv7 raw logit maps (export without --grid): the Detect head's decode on the fly.
template <Pass P, typename T>
__global__ void __launch_bounds__(kThreads)
    yolov7_raw_kernel(RawArgs in, Candidates c, const uint8_t* params, int64_t batch,
                      bool multi_label) {
  __shared__ uint32_t block_span[2];
  if (P == Pass::Count) init_block_span(block_span);
  const int64_t image = blockIdx.y;
  const int lane = int(threadIdx.x & 31u);
  const int64_t row0 = (int64_t(blockIdx.x) * kWarps + threadIdx.x / 32) * kRowsPerWarp;
  const CallView call = call_view(params, batch);
  // Where row `row` lives: its level, and the address of its 5 + C logits.
  auto locate = [&](int64_t row, int& level, int64_t& anchor, int64_t& y, int64_t& x) -> const T* {
    level = 0;
    while (level + 1 < in.levels && row >= in.level[level + 1].first_row) ++level;
    const RawLevelArgs& l = in.level[level];
    const int64_t cell = row - l.first_row;
    anchor = cell / (l.ny * l.nx);
    y = (cell / l.nx) % l.ny;
    x = cell % l.nx;
    return static_cast<const T*>(l.data) + image * l.s[0] + anchor * l.s[1] + y * l.s[2] +
           x * l.s[3];
  };
  float obj = 0.f;
  bool pass = false;
  if (lane < kRowsPerWarp && row0 + lane < in.rows) {
    int level;
    int64_t anchor, y, x;
    const T* p = locate(row0 + lane, level, anchor, y, x);
    obj = sigmoid(load(p + 4 * in.level[level].s[4]));
    pass = obj > call.conf || isnan(obj);  // a NaN objectness is reported below
  }
  unsigned todo = __ballot_sync(kFullMask, pass);
  gpu_nms::SpanAccumulator span;
  while (todo) {
    const int r = __ffs(todo) - 1;
    todo &= todo - 1;
    const int64_t row = row0 + r;
    const float o = __shfl_sync(kFullMask, obj, r);
    int level;
    int64_t anchor, y, x;
    const T* p = locate(row, level, anchor, y, x);
    const RawLevelArgs& l = in.level[level];
    const int64_t cs = l.s[4];
    const float v = lane < 4 ? load(p + lane * cs) : 0.f;
    const float logits[4] = {__shfl_sync(kFullMask, v, 0), __shfl_sync(kFullMask, v, 1),
                             __shfl_sync(kFullMask, v, 2), __shfl_sync(kFullMask, v, 3)};
    float center_size[4], box[4];
    decode_yolov7_raw_box(logits, static_cast<float>(x), static_cast<float>(y), l.stride,
                          l.anchor_w[anchor], l.anchor_h[anchor], center_size);
    center_size_to_corners(center_size[0], center_size[1], center_size[2], center_size[3], box);
    yolov7_row<P>(c, image, row, box, o, in.classes, multi_label, call, span,
                  [&](int64_t k) { return sigmoid(load(p + (5 + k) * cs)) * o; });
  }
  if (P == Pass::Count) gpu_nms::flush_span(span, block_span, c, image);
}

// DAMO-YOLO scores + boxes: every (box, class) with score > conf (docs/facts.md 4, DAMO 1).
template <Pass P, typename T>
__global__ void __launch_bounds__(kThreads)
    damo_kernel(DamoArgs in, Candidates c, const uint8_t* params, int64_t batch, bool multi_label) {
  __shared__ uint32_t block_span[2];
  if (P == Pass::Count) init_block_span(block_span);
  const int64_t image = blockIdx.y;
  const int lane = int(threadIdx.x & 31u);
  const int64_t row0 = (int64_t(blockIdx.x) * kWarps + threadIdx.x / 32) * kRowsPerWarp;
  const CallView call = call_view(params, batch);
  const T* scores = static_cast<const T*>(in.scores) + image * in.ss0;
  const T* boxes = static_cast<const T*>(in.boxes) + image * in.bs0;
  gpu_nms::SpanAccumulator span;
  const int64_t rows_end = min(row0 + kRowsPerWarp, in.rows);
  for (int64_t row = row0; row < rows_end; ++row) {
    const float v = lane < 4 ? load(boxes + row * in.bs1 + lane * in.bs2) : 0.f;
    const float box[4] = {__shfl_sync(kFullMask, v, 0), __shfl_sync(kFullMask, v, 1),
                          __shfl_sync(kFullMask, v, 2), __shfl_sync(kFullMask, v, 3)};
    const T* p = scores + row * in.ss1;
    const RowOutcome outcome =
        classify_row<P>(c, image, row, in.classes, multi_label, call, gpu_nms::finite4(box), true,
                        [&](int64_t k) { return load(p + k * in.ss2); });
    keep_outcome<P>(c, image, row, box, outcome, span);
  }
  if (P == Pass::Count) gpu_nms::flush_span(span, block_span, c, image);
}

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

constexpr size_t kHeaderBytes = sizeof(gpu_nms::ErrorReport);  // the int32 counts follow

}  // namespace

struct PostprocessCuda::Workspace {
  // state: bins | counts | span | header (error report, out counts) | rows. Zeroed up to the rows;
  // header and rows come back to the host in one copy.
  DeviceBuffer state;
  DeviceBuffer arrays;  // keys | boxes | kept spill
  DeviceBuffer params;
  PinnedBuffer params_host;
  PinnedBuffer result_host;
  HostUploader uploader;
  CudaEvent done;
  size_t header_offset = 0;
  size_t rows_offset = 0;
  size_t result_bytes = 0;
  size_t params_bytes = 0;
  int64_t batch = 0;
  int64_t rows = 0;  // per image, all levels together (an error code is image * rows + row)
  int64_t max_keep = 0;
  int64_t num_classes = 0;
  bool ran = false;
};

PostprocessCuda::PostprocessCuda() : workspace_(std::make_unique<Workspace>()) {}
PostprocessCuda::~PostprocessCuda() = default;

void PostprocessCuda::set_call_values(const std::vector<BoxTransform>& transforms, float conf,
                                      float iou, const std::vector<int32_t>& classes) {
  Workspace& ws = *workspace_;
  FASTDET_CHECK(ws.params_bytes > 0, "postprocess: set_call_values needs an enqueue first");
  FASTDET_CHECK(int64_t(transforms.size()) == ws.batch, "postprocess: ", transforms.size(),
                " transforms for a batch of ", ws.batch);
  auto* block = static_cast<uint8_t*>(ws.params_host.data());
  std::memset(block, 0, ws.params_bytes);
  auto* call = reinterpret_cast<gpu_nms::CallParams*>(block);
  call->conf = conf;
  call->iou = iou;
  call->filter_classes = classes.empty() ? 0u : 1u;
  std::memcpy(block + sizeof(gpu_nms::CallParams), transforms.data(),
              transforms.size() * sizeof(BoxTransform));
  auto* words = reinterpret_cast<uint32_t*>(block + sizeof(gpu_nms::CallParams) +
                                            transforms.size() * sizeof(BoxTransform));
  for (int32_t k : classes) {
    if (k >= 0 && k < ws.num_classes) words[k >> 5] |= 1u << (k & 31);  // as ClassFilter
  }
}

namespace {

CudaTensor upload_layout(const CudaTensor& t, void* device) {
  CudaTensor result{device, t.half, t.shape, std::vector<int64_t>(t.shape.size(), 1)};
  for (int d = int(t.shape.size()) - 2; d >= 0; --d) {
    result.strides[d] = result.strides[d + 1] * t.shape[d + 1];
  }
  return result;
}

HostPiece host_piece(const CudaTensor& t) {
  int64_t count = 1;
  for (int64_t s : t.shape) count *= s;
  const int64_t item = t.half ? 2 : 4;
  return {
      static_cast<const uint8_t*>(t.data), {1, 1, count}, {count * item, count * item, item}, item};
}

}  // namespace

void PostprocessCuda::enqueue(const PostprocessCudaInput& input_arg,
                              const std::vector<BoxTransform>& transforms,
                              const PostprocessOptions& options, StreamHandle stream) {
  Workspace& ws = *workspace_;
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  const bool capturing = stream_is_capturing(stream);
  if (!capturing) ws.done.synchronize();  // the pinned blocks of the last run are free

  PostprocessCudaInput input = input_arg;
  if (input.on_host) {
    std::vector<HostPiece> pieces;
    for (const CudaTensor& t : input.tensors) pieces.push_back(host_piece(t));
    const std::vector<void*> device = ws.uploader.upload(pieces, stream);
    for (size_t i = 0; i < input.tensors.size(); ++i) {
      input.tensors[i] = upload_layout(input.tensors[i], device[i]);
    }
  }
  const int64_t batch = int64_t(transforms.size());
  FASTDET_CHECK(batch >= 1, "postprocess: needs at least one image");
  FASTDET_CHECK(!input.tensors.empty(), "postprocess: no outputs");
  for (const CudaTensor& t : input.tensors) {
    FASTDET_CHECK(!t.shape.empty() && t.shape[0] == batch && t.strides.size() == t.shape.size(),
                  "postprocess: an output does not hold the batch of ", batch);
  }

  // Problem shape.
  int64_t rows = 0, num_classes = 0;
  GridArgs grid{};
  RawArgs raw{};
  DamoArgs damo{};
  const CudaTensor& first = input.tensors[0];
  if (input.format == CudaOutputFormat::YoloV7) {
    FASTDET_CHECK(first.shape.size() == 3 && first.shape[2] >= 6,
                  "postprocess: a yolov7 output must be [B, N, 5 + C], C >= 1");
    rows = first.shape[1];
    num_classes = first.shape[2] - 5;
    grid = {first.data, rows, num_classes, first.strides[0], first.strides[1], first.strides[2]};
  } else if (input.format == CudaOutputFormat::YoloV7Raw) {
    const size_t levels = input.tensors.size();
    FASTDET_CHECK(levels <= size_t(kMaxLevels) && input.strides.size() == levels &&
                      input.anchors.size() == levels,
                  "postprocess: yolov7-raw takes 1 to ", kMaxLevels,
                  " levels, each with a stride and anchors");
    raw.levels = int(levels);
    for (size_t i = 0; i < levels; ++i) {
      const CudaTensor& t = input.tensors[i];
      FASTDET_CHECK(t.shape.size() == 5 && t.shape[4] >= 6 && t.shape[4] == first.shape[4],
                    "postprocess: yolov7-raw levels must be [B, A, ny, nx, 5 + C] alike");
      FASTDET_CHECK(t.shape[1] <= kMaxAnchors && int64_t(input.anchors[i].size()) == 2 * t.shape[1],
                    "postprocess: level ", i, " has ", t.shape[1], " anchors but ",
                    input.anchors[i].size() / 2, " anchor sizes were given (at most ", kMaxAnchors,
                    ")");
      RawLevelArgs& l = raw.level[i];
      l.data = t.data;
      l.anchors = t.shape[1];
      l.ny = t.shape[2];
      l.nx = t.shape[3];
      for (int d = 0; d < 5; ++d) l.s[d] = t.strides[d];
      l.stride = input.strides[i];
      for (int64_t a = 0; a < t.shape[1]; ++a) {
        l.anchor_w[a] = input.anchors[i][2 * a];
        l.anchor_h[a] = input.anchors[i][2 * a + 1];
      }
      l.first_row = rows;
      rows += t.shape[1] * t.shape[2] * t.shape[3];
    }
    num_classes = first.shape[4] - 5;
    raw.rows = rows;
    raw.classes = num_classes;
  } else {
    FASTDET_CHECK(input.tensors.size() == 2, "postprocess: damo takes scores and boxes");
    const CudaTensor& boxes = input.tensors[1];
    FASTDET_CHECK(first.shape.size() == 3 && first.shape[2] >= 1 && boxes.shape.size() == 3 &&
                      boxes.shape[1] == first.shape[1] && boxes.shape[2] == 4 &&
                      boxes.half == first.half,
                  "postprocess: damo outputs must be scores [B, N, C] and boxes [B, N, 4] of one "
                  "dtype");
    rows = first.shape[1];
    num_classes = first.shape[2];
    damo = {first.data,       boxes.data,       rows,
            num_classes,      first.strides[0], first.strides[1],
            first.strides[2], boxes.strides[0], boxes.strides[1],
            boxes.strides[2]};
  }
  const int64_t capacity = options.multi_label ? rows * num_classes : rows;
  FASTDET_CHECK(capacity < (int64_t(1) << 31) && rows * num_classes < (int64_t(1) << 32),
                "postprocess: rows x classes must stay below 2^31, got ", rows, " x ", num_classes);
  int64_t max_keep = std::min<int64_t>(options.max_det, capacity);
  if (options.max_candidates >= 0) max_keep = std::min(max_keep, options.max_candidates);
  max_keep = std::max<int64_t>(max_keep, 0);

  // Workspace.
  const size_t bins_bytes = size_t(batch) * gpu_nms::kBins * sizeof(uint32_t);
  const size_t counts_offset = bins_bytes;
  const size_t span_offset = counts_offset + align256(size_t(batch) * 4);
  const size_t header_offset = span_offset + align256(size_t(batch) * 8);
  const size_t rows_offset = header_offset + align256(kHeaderBytes + size_t(batch) * 4);
  const size_t state_bytes = rows_offset + size_t(batch * max_keep) * 6 * sizeof(float);
  ws.state.reserve(state_bytes, stream);
  auto* state = static_cast<uint8_t*>(ws.state.data());

  const bool spill = max_keep > gpu_nms::kKeptCached;
  const size_t keys_offset = 0;
  const size_t boxes_offset = align256(size_t(batch * capacity) * 8);
  const size_t spill_boxes = boxes_offset + align256(size_t(batch * rows) * 16);
  const size_t spill_areas = spill_boxes + (spill ? align256(size_t(batch * max_keep) * 16) : 0);
  const size_t spill_classes = spill_areas + (spill ? align256(size_t(batch * max_keep) * 4) : 0);
  const size_t arrays_bytes = spill_classes + (spill ? align256(size_t(batch * max_keep) * 8) : 0);
  ws.arrays.reserve(arrays_bytes, stream);
  auto* arrays = static_cast<uint8_t*>(ws.arrays.data());

  const int64_t filter_words = (num_classes + 31) / 32;
  const size_t params_bytes = gpu_nms::call_params_bytes(batch, filter_words);
  ws.params_host.reserve(params_bytes, stream);
  ws.params.reserve(params_bytes, stream);
  ws.result_bytes = rows_offset - header_offset + size_t(batch * max_keep) * 6 * sizeof(float);
  ws.result_host.reserve(ws.result_bytes, stream);
  ws.header_offset = header_offset;
  ws.rows_offset = rows_offset;
  ws.params_bytes = params_bytes;
  ws.batch = batch;
  ws.max_keep = max_keep;
  ws.rows = rows;
  ws.num_classes = num_classes;
  set_call_values(transforms, options.conf, options.iou, options.classes);

  Candidates c{};
  c.bins = reinterpret_cast<uint32_t*>(state);
  c.counts = reinterpret_cast<uint32_t*>(state + counts_offset);
  c.span = reinterpret_cast<uint32_t*>(state + span_offset);
  c.error = reinterpret_cast<gpu_nms::ErrorReport*>(state + header_offset);
  c.keys = reinterpret_cast<uint64_t*>(arrays + keys_offset);
  c.boxes = reinterpret_cast<float4*>(arrays + boxes_offset);
  c.capacity = capacity;
  c.rows = rows;
  const auto* params = static_cast<const uint8_t*>(ws.params.data());

  copy_async(ws.params.data(), ws.params_host.data(), params_bytes, stream);
  FASTDET_CUDA_CHECK(cudaMemsetAsync(state, 0, rows_offset, cuda_stream));

  const dim3 blocks(unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock), unsigned(batch));
  const bool multi = options.multi_label;
  const bool half = first.half;
  auto candidates_pass = [&](auto pass) {
    constexpr Pass P = decltype(pass)::value;
    if (rows == 0) return;
    if (input.format == CudaOutputFormat::YoloV7) {
      if (half) {
        yolov7_grid_kernel<P, __half>
            <<<blocks, kThreads, 0, cuda_stream>>>(grid, c, params, batch, multi);
      } else {
        yolov7_grid_kernel<P, float>
            <<<blocks, kThreads, 0, cuda_stream>>>(grid, c, params, batch, multi);
      }
      FASTDET_CUDA_CHECK_LAUNCH("yolov7_grid_kernel");
    } else if (input.format == CudaOutputFormat::YoloV7Raw) {
      if (half) {
        yolov7_raw_kernel<P, __half>
            <<<blocks, kThreads, 0, cuda_stream>>>(raw, c, params, batch, multi);
      } else {
        yolov7_raw_kernel<P, float>
            <<<blocks, kThreads, 0, cuda_stream>>>(raw, c, params, batch, multi);
      }
      FASTDET_CUDA_CHECK_LAUNCH("yolov7_raw_kernel");
    } else {
      if (half) {
        damo_kernel<P, __half><<<blocks, kThreads, 0, cuda_stream>>>(damo, c, params, batch, multi);
      } else {
        damo_kernel<P, float><<<blocks, kThreads, 0, cuda_stream>>>(damo, c, params, batch, multi);
      }
      FASTDET_CUDA_CHECK_LAUNCH("damo_kernel");
    }
  };
  candidates_pass(std::integral_constant<Pass, Pass::Count>{});
  gpu_nms::launch_bin_scan(c, batch, cuda_stream);
  candidates_pass(std::integral_constant<Pass, Pass::Scatter>{});

  gpu_nms::GreedyArgs greedy{};
  greedy.candidates = c;
  greedy.batch = batch;
  greedy.params = params;
  greedy.num_classes = num_classes;
  greedy.class_offset = input.format == CudaOutputFormat::Damo ? 0.f : kYoloV7ClassOffset;
  greedy.batched_nms = input.format == CudaOutputFormat::Damo;
  greedy.agnostic = options.agnostic;
  greedy.max_candidates = options.max_candidates;
  greedy.max_keep = max_keep;
  greedy.kept_boxes = spill ? reinterpret_cast<float4*>(arrays + spill_boxes) : nullptr;
  greedy.kept_areas = spill ? reinterpret_cast<float*>(arrays + spill_areas) : nullptr;
  greedy.kept_classes = spill ? reinterpret_cast<long long*>(arrays + spill_classes) : nullptr;
  greedy.out_rows = reinterpret_cast<float*>(state + rows_offset);
  greedy.out_counts = reinterpret_cast<int32_t*>(state + header_offset + kHeaderBytes);
  gpu_nms::launch_greedy_nms(greedy, cuda_stream);

  if (download_marker_) download_marker_->record(stream);
  copy_async(ws.result_host.data(), state + header_offset, ws.result_bytes, stream);
  if (!capturing) ws.done.record(stream);
  if (input_arg.on_host) ws.uploader.consumed(stream);
  ws.ran = true;
}

std::vector<DetectionList> PostprocessCuda::results() {
  Workspace& ws = *workspace_;
  FASTDET_CHECK(ws.ran, "postprocess: results() needs an enqueue first");
  const auto* result = static_cast<const uint8_t*>(ws.result_host.data());
  gpu_nms::ErrorReport error;
  std::memcpy(&error, result, sizeof error);
  if (error.code != 0) {
    // The kernels number a row image * rows + row and store its box and score (report_row).
    const uint64_t code = ~error.code;
    const float* v = error.values;
    FASTDET_CHECK(false, "postprocess: outputs hold a non-finite candidate at image ",
                  code / uint64_t(ws.rows), ", row ", code % uint64_t(ws.rows), " (box ", v[0],
                  ", ", v[1], ", ", v[2], ", ", v[3], ", score ", v[4], ")");
  }
  std::vector<DetectionList> lists(ws.batch);
  const auto* counts = reinterpret_cast<const int32_t*>(result + kHeaderBytes);
  const auto* rows = reinterpret_cast<const float*>(result + (ws.rows_offset - ws.header_offset));
  for (int64_t image = 0; image < ws.batch; ++image) {
    const int64_t n = std::min<int64_t>(counts[image], ws.max_keep);
    DetectionList& d = lists[image];
    d.boxes.resize(n * 4);
    d.scores.resize(n);
    d.classes.resize(n);
    for (int64_t k = 0; k < n; ++k) {
      const float* r = rows + (image * ws.max_keep + k) * 6;
      std::copy(r, r + 4, d.boxes.begin() + k * 4);
      d.scores[k] = r[4];
      d.classes[k] = static_cast<int32_t>(r[5]);
    }
  }
  return lists;
}

const int32_t* PostprocessCuda::device_counts() const {
  const Workspace& ws = *workspace_;
  return reinterpret_cast<const int32_t*>(static_cast<const uint8_t*>(ws.state.data()) +
                                          ws.header_offset + kHeaderBytes);
}

const float* PostprocessCuda::device_rows() const {
  const Workspace& ws = *workspace_;
  return reinterpret_cast<const float*>(static_cast<const uint8_t*>(ws.state.data()) +
                                        ws.rows_offset);
}

int64_t PostprocessCuda::batch() const { return workspace_->batch; }
int64_t PostprocessCuda::max_det() const { return workspace_->max_keep; }

}  // namespace fastdet
