#include "runtime/cuda_stream.h"

#include <cuda_runtime.h>

#include "common/cuda_check.h"

namespace fastdet {
namespace {

cudaStream_t as_stream(StreamHandle stream) { return static_cast<cudaStream_t>(stream); }

}  // namespace

CudaStream::CudaStream(int device) : device_(device) {
  DeviceGuard guard(device);
  cudaStream_t stream = nullptr;
  FASTDET_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  stream_ = stream;
}

CudaStream::~CudaStream() {
  // No throwing (at interpreter exit the runtime may be unloading); pending work still runs.
  if (stream_) cudaStreamDestroy(as_stream(stream_));
}

void CudaStream::synchronize() { stream_synchronize(stream_); }

TimingEvent::TimingEvent() {
  cudaEvent_t event = nullptr;
  FASTDET_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDefault));
  event_ = event;
}

TimingEvent::~TimingEvent() {
  if (event_) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
}

void TimingEvent::record(StreamHandle stream) {
  // Inside a capture, External makes this a node of the graph (recorded at each replay) rather
  // than a dependency between captured streams; outside one, a plain record.
  const unsigned flags = stream_is_capturing(stream) ? cudaEventRecordExternal : 0u;
  FASTDET_CUDA_CHECK(
      cudaEventRecordWithFlags(static_cast<cudaEvent_t>(event_), as_stream(stream), flags));
  recorded_ = true;
}

void TimingEvent::synchronize() {
  if (recorded_) FASTDET_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)));
}

bool TimingEvent::done() {
  if (!recorded_) return true;
  const cudaError_t status = cudaEventQuery(static_cast<cudaEvent_t>(event_));
  if (status == cudaErrorNotReady) {
    cudaGetLastError();
    return false;
  }
  FASTDET_CUDA_CHECK(status);
  return true;
}

float TimingEvent::elapsed_ms_since(const TimingEvent& start) const {
  FASTDET_CHECK(recorded_ && start.recorded_, "TimingEvent: both events must be recorded");
  float ms = 0.f;
  FASTDET_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start.event_),
                                          static_cast<cudaEvent_t>(event_)));
  return ms;
}

CudaGraph::~CudaGraph() {
  if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  if (graph_) cudaGraphDestroy(static_cast<cudaGraph_t>(graph_));
}

void CudaGraph::begin_capture(StreamHandle stream) {
  FASTDET_CHECK(exec_ == nullptr && graph_ == nullptr, "CudaGraph: already captured");
  FASTDET_CUDA_CHECK(cudaStreamBeginCapture(as_stream(stream), cudaStreamCaptureModeThreadLocal));
}

void CudaGraph::end_capture(StreamHandle stream) {
  cudaGraph_t graph = nullptr;
  FASTDET_CUDA_CHECK(cudaStreamEndCapture(as_stream(stream), &graph));
  graph_ = graph;
  cudaGraphExec_t exec = nullptr;
  const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
  if (status != cudaSuccess) {
    cudaGraphDestroy(graph);
    graph_ = nullptr;
    FASTDET_CUDA_CHECK(status);
  }
  exec_ = exec;
}

void CudaGraph::abort_capture(StreamHandle stream) noexcept {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(as_stream(stream), &status) == cudaSuccess &&
      status != cudaStreamCaptureStatusNone) {
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(as_stream(stream), &graph);
    if (graph) cudaGraphDestroy(graph);
  }
  cudaGetLastError();  // the capture's failure is reported by whoever caused it
}

void CudaGraph::launch(StreamHandle stream) {
  FASTDET_CHECK(exec_ != nullptr, "CudaGraph: launch before a successful capture");
  FASTDET_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), as_stream(stream)));
}

}  // namespace fastdet
