#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cub/block/block_scan.cuh>

#include "common/check.h"
#include "common/cuda_check.h"
#include "ops/nms/nms.h"
#include "ops/nms/nms_cuda.cuh"
#include "ops/nms/nms_math.h"

namespace fastdet {
namespace gpu_nms {
namespace {

constexpr int kScanThreads = 1024;
constexpr int kThreads = 256;
constexpr int kChunk = 256;  // candidates resolved together; one per thread
constexpr int kWords = kChunk / 64;
static_assert(kThreads == kChunk, "the greedy kernel maps one thread to one chunk entry");

__global__ void __launch_bounds__(kScanThreads) bin_scan_kernel(Candidates c) {
  using Scan = cub::BlockScan<uint32_t, kScanThreads>;
  __shared__ typename Scan::TempStorage temp;
  constexpr int kQuads = int(kBins) / kScanThreads / 4;
  const int64_t image = blockIdx.x;
  uint4* quads = reinterpret_cast<uint4*>(c.bins + image * kBins) + threadIdx.x * kQuads;
  uint32_t sum = 0;
#pragma unroll 4
  for (int i = 0; i < kQuads; ++i) {
    const uint4 q = quads[i];
    sum += q.x + q.y + q.z + q.w;
  }
  uint32_t start = 0;
  uint32_t total = 0;
  Scan(temp).ExclusiveSum(sum, start, total);
#pragma unroll 4
  for (int i = 0; i < kQuads; ++i) {
    const uint4 q = quads[i];
    uint4 starts;
    starts.x = start;
    starts.y = starts.x + q.x;
    starts.z = starts.y + q.y;
    starts.w = starts.z + q.z;
    start = starts.w + q.w;
    quads[i] = starts;
  }
  if (threadIdx.x == 0) c.counts[image] = total;
}

struct Shared {
  uint64_t chunk[kChunk];   // keys as loaded
  uint64_t sorted[kChunk];  // the same keys in order
  float4 box[kChunk];       // boxes shifted by the class offset, as the IoU sees them
  float area[kChunk];
  long long cls[kChunk];
  int suppressed[kChunk];         // by a box kept in an earlier chunk
  uint64_t mask[kChunk][kWords];  // mask[i] bit j: i suppresses j (j > i), within the chunk
  int newly[kChunk];
  uint32_t removed[kChunk / 32];
  float4 kept_box[kKeptCached];
  float kept_area[kKeptCached];
  long long kept_cls[kKeptCached];
  uint32_t hist[256];
  uint64_t select_prefix;
  uint32_t select_rank;
  uint32_t span[2];
  int chunk_len;
  int new_count;
  // Chunk cursor: keys before `pos` are consumed. A bin larger than a chunk ("big") is consumed
  // 256 keys at a time: the keys of [big_lo, big_hi) above big_floor.
  uint32_t pos;
  uint32_t load_lo;
  uint32_t load_hi;
  int big_active;
  uint32_t big_lo;
  uint32_t big_hi;
  uint32_t big_bin;
  uint32_t big_left;
  uint64_t big_floor;
};

__device__ __forceinline__ void row_and_class(const GreedyArgs& a, uint32_t index, int64_t& row,
                                              long long& cls) {
  if (a.classes != nullptr) {
    row = index;
    cls =
        a.classes_int64
            ? static_cast<const long long*>(a.classes)[row * a.class_stride]
            : static_cast<long long>(static_cast<const int32_t*>(a.classes)[row * a.class_stride]);
  } else {
    row = index / a.num_classes;
    cls = index % a.num_classes;
  }
}

// The m-th smallest (1-based) key among keys[lo, hi) greater than `floor`, where all those keys
// share their top `known_bits` bits, `prefix`; m must not exceed their number. Block-wide.
__device__ uint64_t block_select(const uint64_t* keys, uint32_t lo, uint32_t hi, uint64_t floor,
                                 uint32_t m, uint64_t prefix, int known_bits, Shared& s) {
  uint64_t mask = known_bits > 0 ? ~0ull << (64 - known_bits) : 0ull;
  for (int shift = 64 - known_bits - 8; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += kThreads) s.hist[i] = 0;
    if (threadIdx.x == 0) {
      s.select_prefix = prefix;
      s.select_rank = m;
    }
    __syncthreads();
    for (uint32_t i = lo + threadIdx.x; i < hi; i += kThreads) {
      const uint64_t k = keys[i];
      if (k > floor && (k & mask) == prefix) atomicAdd(&s.hist[(k >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      const int lane = int(threadIdx.x);
      uint32_t local[8];
      uint32_t sum = 0;
#pragma unroll
      for (int d = 0; d < 8; ++d) {
        local[d] = s.hist[lane * 8 + d];
        sum += local[d];
      }
      uint32_t inclusive = sum;
#pragma unroll
      for (int offset = 1; offset < 32; offset <<= 1) {
        const uint32_t v = __shfl_up_sync(kFullMask, inclusive, offset);
        if (lane >= offset) inclusive += v;
      }
      const unsigned hit = __ballot_sync(kFullMask, inclusive >= m);
      if (hit != 0 && lane == __ffs(hit) - 1) {
        uint32_t before = inclusive - sum;
        bool found = false;
#pragma unroll
        for (int d = 0; d < 8; ++d) {
          if (!found && before + local[d] >= m) {
            s.select_prefix = prefix | (uint64_t(lane * 8 + d) << shift);
            s.select_rank = m - before;
            found = true;
          }
          before += local[d];
        }
      }
    }
    __syncthreads();
    prefix = s.select_prefix;
    m = s.select_rank;
    mask |= 0xffull << shift;
    __syncthreads();
  }
  return prefix;
}

// The first bin whose end passes `reach` (bin ends are non-decreasing; the last one is the
// candidate count, which must pass `reach`). Two block-wide counts, over the 256 groups of 256
// bins, then within the group: no serial search. Block-wide.
__device__ uint32_t first_bin_ending_after(const uint32_t* ends, uint32_t reach) {
  static_assert(kBins == uint32_t(kThreads) * kThreads, "two levels of kThreads bins");
  const uint32_t t = threadIdx.x;
  const int groups = __syncthreads_count(ends[t * kThreads + kThreads - 1] <= reach);
  const uint32_t group = uint32_t(groups) * kThreads;
  const int inside = __syncthreads_count(ends[group + t] <= reach);
  return group + uint32_t(inside);
}

// The next chunk of keys, in key order, into s.sorted[0, s.chunk_len). Block-wide; only called
// while keys remain. Whole bins are taken while they fit in a chunk; a bin larger than a chunk
// is taken kChunk keys at a time by radix selection.
__device__ void load_chunk(const uint32_t* ends, const uint64_t* keys, uint32_t count, Shared& s) {
  if (!s.big_active) {
    const uint32_t pos = s.pos;  // keys before pos are consumed; pos is a bin boundary
    // Every thread has read the cursor before thread 0 moves it (racecheck found the read and
    // the write unordered here).
    __syncthreads();
    if (count - pos <= uint32_t(kChunk)) {
      if (threadIdx.x == 0) {
        s.load_lo = pos;
        s.load_hi = count;
        s.pos = count;
      }
    } else {
      const uint32_t last = first_bin_ending_after(ends, pos + uint32_t(kChunk));
      if (threadIdx.x == 0) {
        const uint32_t end = last > 0 ? ends[last - 1] : 0;
        if (end > pos) {  // bins up to `last` fit
          s.load_lo = pos;
          s.load_hi = end;
          s.pos = end;
        } else {  // the next non-empty bin, `last`, is larger than a chunk
          s.big_active = 1;
          s.big_lo = pos;
          s.big_hi = ends[last];
          s.big_bin = last;
          s.big_left = ends[last] - pos;
          s.big_floor = 0;  // keys are never 0 (score_key.h)
          s.pos = ends[last];
        }
      }
    }
  }
  __syncthreads();
  if (s.big_active) {
    const uint32_t m = min(uint32_t(kChunk), s.big_left);
    const uint64_t floor = s.big_floor;
    const uint64_t kth = block_select(keys, s.big_lo, s.big_hi, floor, m,
                                      uint64_t(s.big_bin) << (64 - kBinBits), kBinBits, s);
    if (threadIdx.x == 0) s.chunk_len = 0;
    __syncthreads();
    for (uint32_t i = s.big_lo + threadIdx.x; i < s.big_hi; i += kThreads) {
      const uint64_t k = keys[i];
      if (k > floor && k <= kth) s.chunk[atomicAdd(&s.chunk_len, 1)] = k;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      s.big_floor = kth;
      s.big_left -= m;
      if (s.big_left == 0) s.big_active = 0;
    }
  } else {
    const uint32_t lo = s.load_lo;
    const int len = int(s.load_hi - lo);
    for (int i = threadIdx.x; i < len; i += kThreads) s.chunk[i] = keys[lo + i];
    if (threadIdx.x == 0) s.chunk_len = len;
  }
  __syncthreads();
  // Rank sort: keys are unique, so each key's rank is the number of smaller keys.
  const int len = s.chunk_len;
  for (int t = threadIdx.x; t < len; t += kThreads) {
    const uint64_t k = s.chunk[t];
    int rank = 0;
    for (int j = 0; j < len; ++j) rank += s.chunk[j] < k ? 1 : 0;
    s.sorted[rank] = k;
  }
  __syncthreads();
}

__global__ void __launch_bounds__(kThreads) greedy_nms_kernel(GreedyArgs a) {
  __shared__ Shared s;
  const int64_t image = blockIdx.x;
  const Candidates& c = a.candidates;
  const uint32_t count = c.counts[image];
  const int64_t limit = a.max_candidates >= 0 ? min(int64_t(count), a.max_candidates) : count;
  const float threshold = reinterpret_cast<const CallParams*>(a.params)->iou;
  const BoxTransform transform = call_transforms(a.params)[image];
  const uint32_t* ends = c.bins + image * kBins;
  const uint64_t* keys = c.keys + image * c.capacity;
  const float4* boxes = c.boxes + image * c.rows;
  // The span of all candidates' coordinates (lowest, highest), kept where an offset is used.
  const bool spans = !a.agnostic && (a.batched_nms || a.class_offset > 0.f);
  const float low = spans ? from_ordered_bits(~c.span[2 * image + 1]) : 0.f;
  const float high = spans ? from_ordered_bits(c.span[2 * image]) : 0.f;
  const float class_offset = a.batched_nms
                                 ? batched_nms_class_offset(high, static_cast<long long>(count))
                                 : a.class_offset;
  const bool offset_classes = spans && class_offset > 0.f;
  int64_t kept = 0;
  if (limit > 0 && a.max_keep > 0) {
    bool cross = a.agnostic;
    if (offset_classes) {
      // Classes meet only through the class offset. Boxes shifted by class * offset can
      // overlap across classes only when the boxes span at least the offset; nms_cpu.cpp then
      // runs one NMS over all of them. It decides on the considered candidates; the span of
      // all candidates bounds theirs, and where it differs cross-class IoUs are 0 either way.
      cross = high - low >= class_offset;
    }
    if (threadIdx.x == 0) {
      s.pos = 0;
      s.big_active = 0;
    }
    __syncthreads();
    int64_t rank = 0;
    while (rank < limit && kept < a.max_keep) {
      load_chunk(ends, keys, count, s);
      const int len = s.chunk_len;
      const int eligible = int(min(int64_t(len), limit - rank));
      const int t = int(threadIdx.x);

      // Each candidate against the boxes kept so far.
      if (t < eligible) {
        const uint64_t key = s.sorted[t];
        int64_t row;
        long long cls;
        row_and_class(a, uint32_t(key), row, cls);
        const float4 b = boxes[row];
        const float shift = offset_classes ? class_offset * static_cast<float>(cls) : 0.f;
        const float4 sb = make_float4(b.x + shift, b.y + shift, b.z + shift, b.w + shift);
        const float area = box_area(sb.x, sb.y, sb.z, sb.w);
        s.box[t] = sb;
        s.area[t] = area;
        s.cls[t] = cls;
        bool suppressed = false;
        const int64_t cached = min(kept, kKeptCached);
        for (int64_t j = 0; j < cached && !suppressed; ++j) {
          if (!cross && s.kept_cls[j] != cls) continue;
          const float4 k = s.kept_box[j];
          suppressed = iou_above(k.x, k.y, k.z, k.w, s.kept_area[j], sb.x, sb.y, sb.z, sb.w, area,
                                 threshold);
        }
        for (int64_t j = kKeptCached; j < kept && !suppressed; ++j) {
          const int64_t g = image * a.max_keep + j;
          if (!cross && a.kept_classes[g] != cls) continue;
          const float4 k = a.kept_boxes[g];
          suppressed = iou_above(k.x, k.y, k.z, k.w, a.kept_areas[g], sb.x, sb.y, sb.z, sb.w, area,
                                 threshold);
        }
        s.suppressed[t] = suppressed ? 1 : 0;
      }
      __syncthreads();

      // Which survivor suppresses which later survivor within the chunk.
      for (int item = t; item < eligible * kWords; item += kThreads) {
        const int i = item / kWords;
        const int w = item % kWords;
        uint64_t bits = 0;
        if (!s.suppressed[i]) {
          const float4 bi = s.box[i];
          const float ai = s.area[i];
          const long long ci = s.cls[i];
          const int j_end = min(eligible, w * 64 + 64);
          for (int j = max(i + 1, w * 64); j < j_end; ++j) {
            if (s.suppressed[j] || (!cross && s.cls[j] != ci)) continue;
            const float4 bj = s.box[j];
            if (iou_above(bi.x, bi.y, bi.z, bi.w, ai, bj.x, bj.y, bj.z, bj.w, s.area[j],
                          threshold)) {
              bits |= 1ull << (j - w * 64);
            }
          }
        }
        s.mask[i][w] = bits;
      }
      const unsigned gone = __ballot_sync(kFullMask, t >= eligible || s.suppressed[t]);
      if ((t & 31) == 0) s.removed[t / 32] = gone;
      __syncthreads();

      // The greedy scan itself: serial, over bit masks.
      if (t == 0) {
        uint64_t removed[kWords];
#pragma unroll
        for (int w = 0; w < kWords; ++w) {
          removed[w] = uint64_t(s.removed[2 * w]) | (uint64_t(s.removed[2 * w + 1]) << 32);
        }
        const int64_t room = a.max_keep - kept;
        int n = 0;
#pragma unroll
        for (int w = 0; w < kWords; ++w) {
          while (n < room) {
            const uint64_t available = ~removed[w];
            if (available == 0) break;
            const int b = __ffsll(static_cast<long long>(available)) - 1;
            const int i = w * 64 + b;
            s.newly[n++] = i;
            removed[w] |= 1ull << b;
#pragma unroll
            for (int w2 = 0; w2 < kWords; ++w2) {
              if (w2 >= w) removed[w2] |= s.mask[i][w2];
            }
          }
        }
        s.new_count = n;
      }
      __syncthreads();

      const int added = s.new_count;
      for (int q = t; q < added; q += kThreads) {
        const int i = s.newly[q];
        const int64_t slot = kept + q;
        if (slot < kKeptCached) {
          s.kept_box[slot] = s.box[i];
          s.kept_area[slot] = s.area[i];
          s.kept_cls[slot] = s.cls[i];
        } else {
          const int64_t g = image * a.max_keep + slot;
          a.kept_boxes[g] = s.box[i];
          a.kept_areas[g] = s.area[i];
          a.kept_classes[g] = s.cls[i];
        }
        const uint64_t key = s.sorted[i];
        const int64_t out = image * a.max_keep + slot;
        if (a.out_rows != nullptr) {
          int64_t row;
          long long cls;
          row_and_class(a, uint32_t(key), row, cls);
          const float4 b = boxes[row];
          float box[4] = {b.x, b.y, b.z, b.w};
          box_to_original(transform, box);
          float* o = a.out_rows + out * 6;
          o[0] = box[0];
          o[1] = box[1];
          o[2] = box[2];
          o[3] = box[3];
          o[4] = score_from_descending_key(uint32_t(key >> 32));
          o[5] = static_cast<float>(cls);
        }
        if (a.out_indices != nullptr) a.out_indices[out] = int64_t(uint32_t(key));
      }
      __syncthreads();
      kept += added;
      rank += eligible;
      if (eligible < len) break;
    }
  }
  if (threadIdx.x == 0) a.out_counts[image] = int32_t(kept);
}

}  // namespace

void launch_bin_scan(const Candidates& candidates, int64_t batch, cudaStream_t stream) {
  bin_scan_kernel<<<unsigned(batch), kScanThreads, 0, stream>>>(candidates);
  FASTDET_CUDA_CHECK_LAUNCH("bin_scan_kernel");
}

void launch_greedy_nms(const GreedyArgs& args, cudaStream_t stream) {
  greedy_nms_kernel<<<unsigned(args.batch), kThreads, 0, stream>>>(args);
  FASTDET_CUDA_CHECK_LAUNCH("greedy_nms_kernel");
}

}  // namespace gpu_nms

// ---------------------------------------------------------------------------------------------
// The nms op
// ---------------------------------------------------------------------------------------------

namespace {

using gpu_nms::Candidates;
using gpu_nms::Pass;

struct NmsArgs {
  const float* boxes;
  int64_t box_strides[2];
  const float* scores;
  int64_t score_stride;
  int64_t n;
};

constexpr int kCandidateThreads = 256;

// Every box is a candidate (no confidence rule). Error codes: boxes elements in row-major order,
// then scores: the first non-finite value in the order nms_cpu's caller checks them.
template <Pass P>
__global__ void __launch_bounds__(kCandidateThreads)
    nms_candidates_kernel(NmsArgs in, Candidates c) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t base = int64_t(blockIdx.x) * blockDim.x; base < in.n; base += stride) {
    const int64_t i = base + threadIdx.x;
    bool valid = i < in.n;
    float box[4] = {0.f, 0.f, 0.f, 0.f};
    float score = 0.f;
    if (valid) {
      for (int j = 0; j < 4; ++j) box[j] = in.boxes[i * in.box_strides[0] + j * in.box_strides[1]];
      score = in.scores[i * in.score_stride];
      if (!gpu_nms::finite4(box) || !isfinite(score)) {
        int j = 0;
        while (j < 4 && isfinite(box[j])) ++j;
        const float bad = j < 4 ? box[j] : score;
        gpu_nms::report_error<P>(c, j < 4 ? uint64_t(i * 4 + j) : uint64_t(in.n * 4 + i), &bad, 1);
        valid = false;
      } else if (P == Pass::Count) {
        c.boxes[i] = make_float4(box[0], box[1], box[2], box[3]);
      }
    }
    gpu_nms::emit<P>(c, 0, valid, candidate_key(score, uint32_t(i)));
  }
}

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

struct NmsCuda::Workspace {
  // state: bins | counts | span | error report | out_count (zeroed per call); the header (error
  // report and out_count) is what comes back to the host.
  DeviceBuffer state;
  DeviceBuffer arrays;  // keys | boxes | kept spill | indices
  DeviceBuffer params;
  PinnedBuffer params_host;
  PinnedBuffer header_host;
  HostUploader uploader;
  CudaEvent done;
  int64_t* indices = nullptr;
  int64_t n = 0;
  bool empty = true;
};

NmsCuda::NmsCuda() : workspace_(std::make_unique<Workspace>()) {}
NmsCuda::~NmsCuda() = default;

namespace {
// The error report, then the int32 kept count (padded).
constexpr size_t kHeaderBytes = sizeof(gpu_nms::ErrorReport) + 8;
}  // namespace

void NmsCuda::enqueue(const NmsCudaInput& input_arg, const NmsOptions& options,
                      StreamHandle stream) {
  Workspace& ws = *workspace_;
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  FASTDET_CHECK(input_arg.n < (int64_t(1) << 31), "nms: at most 2^31 - 1 boxes, got ", input_arg.n);
  const bool capturing = stream_is_capturing(stream);
  if (!capturing) ws.done.synchronize();  // the pinned blocks of the last call are free
  NmsCudaInput input = input_arg;
  const int64_t n = input.n;
  const int64_t max_keep = options.max_det >= 0 ? std::min(options.max_det, n) : n;
  ws.empty = n == 0 || max_keep == 0;
  ws.n = n;
  if (ws.empty) return;

  if (input.on_host) {
    // Contiguous host arrays (the bindings check): one row each.
    std::vector<HostPiece> pieces = {
        {reinterpret_cast<const uint8_t*>(input.boxes), {1, 1, 4 * n}, {16 * n, 16 * n, 4}, 4},
        {reinterpret_cast<const uint8_t*>(input.scores), {1, 1, n}, {4 * n, 4 * n, 4}, 4},
    };
    if (input.classes) {
      pieces.push_back(
          {static_cast<const uint8_t*>(input.classes), {1, 1, n}, {4 * n, 4 * n, 4}, 4});
    }
    const std::vector<void*> device = ws.uploader.upload(pieces, stream);
    input.boxes = static_cast<const float*>(device[0]);
    input.box_strides[0] = 4;
    input.box_strides[1] = 1;
    input.scores = static_cast<const float*>(device[1]);
    input.score_stride = 1;
    if (input.classes) {
      input.classes = device[2];
      input.classes_int64 = false;
      input.class_stride = 1;
    }
  }

  // Device state, zeroed at every call.
  const size_t bins_bytes = gpu_nms::kBins * sizeof(uint32_t);
  const size_t counts_offset = bins_bytes;
  const size_t span_offset = counts_offset + 16;
  const size_t error_offset = span_offset + 16;  // the header starts here
  const size_t state_bytes = error_offset + kHeaderBytes;
  ws.state.reserve(state_bytes, stream);
  auto* state = static_cast<uint8_t*>(ws.state.data());

  const bool spill = max_keep > gpu_nms::kKeptCached;
  const size_t keys_offset = 0;
  const size_t boxes_offset = keys_offset + align256(size_t(n) * 8);
  const size_t spill_boxes = boxes_offset + align256(size_t(n) * 16);
  const size_t spill_areas = spill_boxes + (spill ? align256(size_t(max_keep) * 16) : 0);
  const size_t spill_classes = spill_areas + (spill ? align256(size_t(max_keep) * 4) : 0);
  const size_t indices_offset = spill_classes + (spill ? align256(size_t(max_keep) * 8) : 0);
  const size_t arrays_bytes = indices_offset + align256(size_t(max_keep) * 8);
  ws.arrays.reserve(arrays_bytes, stream);
  auto* arrays = static_cast<uint8_t*>(ws.arrays.data());

  const size_t params_bytes = gpu_nms::call_params_bytes(1, 0);
  ws.params_host.reserve(params_bytes, stream);
  ws.params.reserve(params_bytes, stream);
  std::memset(ws.params_host.data(), 0, params_bytes);
  static_cast<gpu_nms::CallParams*>(ws.params_host.data())->iou = options.iou_threshold;
  ws.header_host.reserve(kHeaderBytes, stream);

  Candidates c{};
  c.bins = reinterpret_cast<uint32_t*>(state);
  c.counts = reinterpret_cast<uint32_t*>(state + counts_offset);
  c.span = reinterpret_cast<uint32_t*>(state + span_offset);
  c.error = reinterpret_cast<gpu_nms::ErrorReport*>(state + error_offset);
  c.keys = reinterpret_cast<uint64_t*>(arrays + keys_offset);
  c.boxes = reinterpret_cast<float4*>(arrays + boxes_offset);
  c.capacity = n;
  c.rows = n;
  ws.indices = reinterpret_cast<int64_t*>(arrays + indices_offset);

  copy_async(ws.params.data(), ws.params_host.data(), params_bytes, stream);
  FASTDET_CUDA_CHECK(cudaMemsetAsync(state, 0, state_bytes, cuda_stream));

  const NmsArgs args{input.boxes,
                     {input.box_strides[0], input.box_strides[1]},
                     input.scores,
                     input.score_stride,
                     n};
  const unsigned blocks =
      unsigned(std::min<int64_t>((n + kCandidateThreads - 1) / kCandidateThreads, 4096));
  nms_candidates_kernel<Pass::Count><<<blocks, kCandidateThreads, 0, cuda_stream>>>(args, c);
  FASTDET_CUDA_CHECK_LAUNCH("nms_candidates_kernel<Count>");
  gpu_nms::launch_bin_scan(c, 1, cuda_stream);
  nms_candidates_kernel<Pass::Scatter><<<blocks, kCandidateThreads, 0, cuda_stream>>>(args, c);
  FASTDET_CUDA_CHECK_LAUNCH("nms_candidates_kernel<Scatter>");

  gpu_nms::GreedyArgs greedy{};
  greedy.candidates = c;
  greedy.batch = 1;
  greedy.params = static_cast<const uint8_t*>(ws.params.data());
  greedy.num_classes = 1;
  greedy.classes = input.classes;
  greedy.classes_int64 = input.classes_int64;
  greedy.class_stride = input.class_stride;
  greedy.agnostic = input.classes == nullptr;
  greedy.max_candidates = -1;
  greedy.max_keep = max_keep;
  greedy.kept_boxes = spill ? reinterpret_cast<float4*>(arrays + spill_boxes) : nullptr;
  greedy.kept_areas = spill ? reinterpret_cast<float*>(arrays + spill_areas) : nullptr;
  greedy.kept_classes = spill ? reinterpret_cast<long long*>(arrays + spill_classes) : nullptr;
  greedy.out_indices = ws.indices;
  greedy.out_counts =
      reinterpret_cast<int32_t*>(state + error_offset + sizeof(gpu_nms::ErrorReport));
  gpu_nms::launch_greedy_nms(greedy, cuda_stream);

  copy_async(ws.header_host.data(), state + error_offset, kHeaderBytes, stream);
  if (!capturing) ws.done.record(stream);
  if (input_arg.on_host) ws.uploader.consumed(stream);
}

int64_t NmsCuda::kept_count() {
  Workspace& ws = *workspace_;
  if (ws.empty) return 0;
  const auto* header = static_cast<const uint8_t*>(ws.header_host.data());
  gpu_nms::ErrorReport error;
  int32_t count = 0;
  std::memcpy(&error, header, sizeof error);
  std::memcpy(&count, header + sizeof error, sizeof count);
  if (error.code != 0) {
    // Codes number the boxes' elements row by row, then the scores (nms_candidates_kernel).
    const uint64_t code = ~error.code;
    const float value = error.values[0];
    if (code < uint64_t(ws.n) * 4) {
      const int64_t i = int64_t(code / 4), j = int64_t(code % 4);
      FASTDET_CHECK(false, "nms: boxes must be finite, got ", value, " at boxes[", i, ", ", j, "]");
    }
    const int64_t i = int64_t(code - uint64_t(ws.n) * 4);
    FASTDET_CHECK(false, "nms: scores must be finite, got ", value, " at scores[", i, "]");
  }
  return count;
}

const int64_t* NmsCuda::device_indices() const { return workspace_->indices; }

}  // namespace fastdet
