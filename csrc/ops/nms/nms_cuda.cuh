// The GPU NMS stage shared by the nms and postprocess ops (CUDA sources only).
//
// A problem is a set of candidates per image, each a 64-bit key (common/score_key.h: score
// descending, then index ascending; unique within an image). The stage runs, all on one stream,
// with no host synchronisation and a fixed launch sequence (so a CUDA graph can capture it):
//   1. count pass (the op's candidate kernel, Pass::Count): applies the confidence rule, counts
//      candidates per bin of the key's top 16 bits, writes the boxes of candidate rows, the span
//      of their coordinates (YOLOv7's class-offset mode) and the code of the first bad input;
//   2. bin_scan_kernel: per image, bin counts -> bin starts, and the candidate count;
//   3. scatter pass (the same kernel, Pass::Scatter): each key goes to its bin, so keys are
//      grouped in score order, unordered within a bin; the first bad input, now known, writes
//      the values its error message names;
//   4. greedy_nms_kernel, one block per image: walks the bins in order in chunks of up to 256
//      keys, sorts each chunk in shared memory, drops the candidates that a kept box of their
//      class suppresses, resolves the rest among themselves (IoU bit masks, then a serial scan)
//      and appends the kept ones, until max_keep are kept or max_candidates were visited. A bin
//      larger than a chunk is taken 256 keys at a time by radix selection.
// Per-call values (thresholds, transforms, class filter) are read from a device block that the
// caller uploads from pinned memory at every call: a replayed graph picks up new values.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "common/box_transform.h"
#include "common/score_key.h"

namespace fastdet {
namespace gpu_nms {

constexpr int kBinBits = 16;
constexpr uint32_t kBins = 1u << kBinBits;
constexpr unsigned kFullMask = 0xffffffffu;

// The device block of per-call values: this header, BoxTransform[batch], class-filter words.
struct CallParams {
  float conf;
  float iou;
  uint32_t filter_classes;  // 1: keep only classes whose bit is set in the filter words
};

constexpr size_t call_params_bytes(int64_t batch, int64_t filter_words) {
  return sizeof(CallParams) + size_t(batch) * sizeof(BoxTransform) +
         size_t(filter_words) * sizeof(uint32_t);
}

__host__ __device__ inline const BoxTransform* call_transforms(const uint8_t* params) {
  return reinterpret_cast<const BoxTransform*>(params + sizeof(CallParams));
}

__host__ __device__ inline const uint32_t* call_filter_words(const uint8_t* params, int64_t batch) {
  return reinterpret_cast<const uint32_t*>(params + sizeof(CallParams) +
                                           size_t(batch) * sizeof(BoxTransform));
}

// The first bad input of a problem and what its error message names, so that the host builds
// the message from this block alone (the op's inputs may be gone by then). An op numbers its
// inputs in the order its CPU counterpart checks them; the smallest code is the CPU's error.
struct ErrorReport {
  unsigned long long code;  // ~(smallest error code); 0: no error
  float values[5];  // the op's values for that code (nms: the value; postprocess: box, score)
};

// Device workspace of one problem (all per-image arrays are image-major).
struct Candidates {
  uint32_t* bins;      // [batch][kBins]: counts, then bin starts, then bin ends
  uint32_t* counts;    // [batch] candidates per image
  uint32_t* span;      // [batch][2]: max and inverted min of ordered box coordinates
  ErrorReport* error;  // zeroed before the count pass
  uint64_t* keys;      // [batch][capacity], grouped by bin
  float4* boxes;       // [batch][rows] x1 y1 x2 y2 of rows holding candidates
  int64_t capacity;    // the most candidates an image can have
  int64_t rows;        // input rows per image
};

enum class Pass { Count, Scatter };

// Floats as unsigned ints of the same order (for atomicMax on coordinates).
__device__ __forceinline__ uint32_t ordered_bits(float value) {
  const uint32_t bits = __float_as_uint(value);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

__device__ __forceinline__ float from_ordered_bits(uint32_t ordered) {
  return __uint_as_float((ordered & 0x80000000u) ? (ordered & 0x7fffffffu) : ~ordered);
}

// Adds one candidate per lane where `valid`; every lane of the warp must call it together.
// Lanes with keys in the same bin share one atomic.
template <Pass P>
__device__ __forceinline__ void emit(const Candidates& c, int64_t image, bool valid, uint64_t key) {
  const unsigned active = __ballot_sync(kFullMask, valid);
  if (!valid) return;
  const uint32_t bin = uint32_t(key >> (64 - kBinBits));
  const unsigned peers = __match_any_sync(active, bin);
  const int leader = __ffs(peers) - 1;
  const int lane = int(threadIdx.x & 31u);
  uint32_t base = 0;
  if (lane == leader) base = atomicAdd(c.bins + image * kBins + bin, uint32_t(__popc(peers)));
  if (P == Pass::Scatter) {
    base = __shfl_sync(peers, base, leader);
    const uint32_t slot = base + uint32_t(__popc(peers & ((1u << lane) - 1u)));
    if (slot < c.capacity) c.keys[image * c.capacity + slot] = key;
  }
}

// A bad input: the count pass keeps the smallest code; the scatter pass, which runs after it on
// the stream, finds the input holding that code and stores its `count` values. Both passes
// meet the same bad inputs, and a code is one input's, so exactly one thread writes them.
template <Pass P>
__device__ __forceinline__ void report_error(const Candidates& c, uint64_t code,
                                             const float* values, int count) {
  if (P == Pass::Count) {
    atomicMax(&c.error->code, ~static_cast<unsigned long long>(code));
  } else if (~c.error->code == code) {
    for (int i = 0; i < count; ++i) c.error->values[i] = values[i];
  }
}

__device__ __forceinline__ bool finite4(const float* v) {
  return isfinite(v[0]) && isfinite(v[1]) && isfinite(v[2]) && isfinite(v[3]);
}

// Block-level span of candidate box coordinates: shared slots, then one global atomic per block.
struct SpanAccumulator {
  uint32_t high = 0;  // ordered max
  uint32_t low = 0;   // inverted ordered min
  __device__ __forceinline__ void add(const float* box) {
    for (int i = 0; i < 4; ++i) {
      high = max(high, ordered_bits(box[i]));
      low = max(low, ~ordered_bits(box[i]));
    }
  }
};

__device__ __forceinline__ void flush_span(const SpanAccumulator& warp_span, uint32_t* shared,
                                           const Candidates& c, int64_t image) {
  // shared[0..1] were zeroed before the block's first __syncthreads.
  if (warp_span.high) atomicMax(shared, warp_span.high);
  if (warp_span.low) atomicMax(shared + 1, warp_span.low);
  __syncthreads();
  if (threadIdx.x == 0) {
    if (shared[0]) atomicMax(c.span + 2 * image, shared[0]);
    if (shared[1]) atomicMax(c.span + 2 * image + 1, shared[1]);
  }
}

// What the greedy kernel needs besides the candidates.
struct GreedyArgs {
  Candidates candidates;
  int64_t batch;
  const uint8_t* params;  // device CallParams block (iou, transforms)
  // A key's low 32 bits are an index: row * num_classes + class, or (classes given) the row.
  int64_t num_classes;
  const void* classes;  // per row, int32 or int64; nullptr: from the index
  bool classes_int64;
  int64_t class_stride;
  float class_offset;      // YOLOv7 max_wh: IoU on boxes shifted by class * offset; 0: none
  bool batched_nms;        // DAMO-YOLO: the offset is batched_nms_class_offset (nms_math.h)
  bool agnostic;           // every candidate meets every other (one class)
  int64_t max_candidates;  // only the first this many in key order; -1: all
  int64_t max_keep;
  float4* kept_boxes;       // [batch][max_keep] spill of the kept list past the shared cache
  float* kept_areas;        // [batch][max_keep]
  long long* kept_classes;  // [batch][max_keep]
  float* out_rows;          // [batch][max_keep][6]: x1 y1 x2 y2 (mapped back) score class, or null
  int64_t* out_indices;     // [batch][max_keep] kept indices, or null
  int32_t* out_counts;      // [batch]
};

// The kept list entries that live in shared memory; past this the list spills to kept_boxes...
constexpr int64_t kKeptCached = 512;

void launch_bin_scan(const Candidates& candidates, int64_t batch, cudaStream_t stream);
void launch_greedy_nms(const GreedyArgs& args, cudaStream_t stream);

}  // namespace gpu_nms
}  // namespace fastdet
