// The CUDA objects of fastdet's frame pipeline: an owned stream, timing events and CUDA graphs
// captured from a stream. With cuda_buffer.h this is fastdet's one CUDA runtime: the ops, the
// engines and the Detector's pipeline take their streams, events, graphs and memory from here
// (python/fastdet/cuda.py says why it is not cuda-python). Free of CUDA headers, like
// cuda_buffer.h.
#pragma once

#include "runtime/cuda_buffer.h"

namespace fastdet {

// A non-blocking stream of one device (it does not synchronise with the legacy default stream).
class CudaStream {
 public:
  explicit CudaStream(int device);
  ~CudaStream();
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  StreamHandle handle() const { return stream_; }
  int device() const { return device_; }
  void synchronize();

 private:
  StreamHandle stream_ = nullptr;
  int device_ = -1;
};

// An event that can time the work between two records. Recorded while its stream is captured,
// it becomes an event node of the graph, so the stages of a replayed graph can be timed too.
class TimingEvent {
 public:
  TimingEvent();
  ~TimingEvent();
  TimingEvent(const TimingEvent&) = delete;
  TimingEvent& operator=(const TimingEvent&) = delete;

  void record(StreamHandle stream);
  void synchronize();
  // True once the work before the last record is done (or when never recorded).
  bool done();
  // Milliseconds from `start` to this event; both must be recorded and done.
  float elapsed_ms_since(const TimingEvent& start) const;
  bool recorded() const { return recorded_; }

 private:
  void* event_ = nullptr;  // cudaEvent_t
  bool recorded_ = false;
};

// A CUDA graph captured from the work queued on one stream between begin_capture and
// end_capture (thread-local capture mode: other threads' CUDA calls are unaffected), then
// replayed by launch(). Kernel arguments and copy addresses are fixed at capture; values that
// change per replay must be read from device memory the replay does not move.
class CudaGraph {
 public:
  CudaGraph() = default;
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  void begin_capture(StreamHandle stream);
  // Ends the capture and instantiates the graph. Throws (and leaves no graph) when the capture
  // was invalidated by an operation a capture does not allow.
  void end_capture(StreamHandle stream);
  // Ends a capture without keeping anything (after the captured code failed); never throws.
  void abort_capture(StreamHandle stream) noexcept;
  void launch(StreamHandle stream);
  bool ready() const { return exec_ != nullptr; }

 private:
  void* graph_ = nullptr;  // cudaGraph_t
  void* exec_ = nullptr;   // cudaGraphExec_t
};

}  // namespace fastdet
