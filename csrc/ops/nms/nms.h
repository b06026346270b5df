// nms: greedy non-maximum suppression with torchvision semantics.
//
// Boxes are visited by score descending (ties: lower index first); a box is dropped when its IoU
// with an already kept box of the same class is strictly greater than iou_threshold, IoU and
// threshold compared in float32 as torchvision's CUDA kernel does (see nms_math.h for zero-area
// boxes). Boxes of different classes never suppress each other.
//
// The CUDA implementation (nms_cuda.cu) keeps these semantics exactly: it visits candidates in the
// same order (keys of common/score_key.h) and tests pairs with the same iou_above (nms_math.h).
// Greedy NMS per class equals greedy NMS over all candidates in score order where a box is tested
// only against the kept boxes of its class; with at most max_det kept overall, the walk stops at
// the max_det-th kept box, as the per-class lists cut to max_det and merged by score would.
//
// nms_cpu walks the boxes in that order and suppresses with a plain scan of the later boxes
// after each kept one (dropping the suppressed ones from the scans once they are the majority).
// When many boxes stay live and many are kept, which made that walk quadratic, it indexes the
// live boxes in a k-d tree and tests a kept box only against those whose IoU with it can exceed
// the threshold. The tree skips a box only on a bound proved for iou_above's float32 arithmetic
// (nms_cpu.cpp), so both paths keep the same boxes in the same order, bit for bit.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "common/interrupt.h"

#if defined(FASTDET_WITH_CUDA)
#include "runtime/cuda_buffer.h"
#endif

namespace fastdet {

struct NmsOptions {
  float iou_threshold = 0.5f;
  int64_t max_det = -1;         // keep at most this many (-1: all)
  int64_t max_candidates = -1;  // consider only this many highest-scoring boxes (-1: all)
  // > 0: IoU is computed on boxes shifted by class * class_offset in float32, reproducing
  // YOLOv7's class-offset trick (max_wh) to the rounding, including its cross-class suppression
  // when boxes span more than the offset; 0: exact per-class boxes.
  float class_offset = 0.f;
};

// boxes: n x 4 (x1, y1, x2, y2), scores: n, classes: n or nullptr (one class); all finite.
// Returns the kept indices, score-descending. should_stop, when given, is asked every few
// milliseconds of work from the calling thread; when it returns true the call throws Interrupted.
std::vector<int64_t> nms_cpu(const float* boxes, const float* scores, const int32_t* classes,
                             int64_t n, const NmsOptions& options,
                             const StopCallback& should_stop = {});

#if defined(FASTDET_WITH_CUDA)
// An (n, 4) boxes / (n,) scores / (n,) classes problem in device memory, or in host memory when
// on_host (uploaded through pinned staging first). Strides are in elements.
struct NmsCudaInput {
  const float* boxes;
  int64_t box_strides[2];
  const float* scores;
  int64_t score_stride;
  const void* classes;  // int32 or int64 (classes_int64), or nullptr
  bool classes_int64;
  int64_t class_stride;
  int64_t n;
  bool on_host;
};

// The CUDA nms op with its workspace (grown only when a bigger problem arrives). enqueue() queues
// everything on `stream` without host synchronisation; once the stream is synchronised,
// kept_count() and the kept indices (device_indices(), int64, score-descending) are valid.
class NmsCuda {
 public:
  NmsCuda();
  ~NmsCuda();
  void enqueue(const NmsCudaInput& input, const NmsOptions& options, StreamHandle stream);
  // After synchronising the enqueue's stream: the number kept; throws ValueError (naming the
  // first non-finite value, as nms_cpu's caller does) when the input was not finite.
  int64_t kept_count();
  const int64_t* device_indices() const;
  std::mutex& mutex() { return mutex_; }

  struct Workspace;

 private:
  std::mutex mutex_;
  std::unique_ptr<Workspace> workspace_;
};
#endif

}  // namespace fastdet
