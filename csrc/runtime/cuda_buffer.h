// CUDA resources of the ops: device and pinned buffers that grow only when a bigger size is asked
// (so that a steady stream of same-shaped calls allocates nothing), events, device selection, and
// the staging of host arrays. Free of CUDA headers (streams are void*, a cudaStream_t) so that
// host-compiled code such as the bindings can hold these objects.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace fastdet {

using StreamHandle = void*;  // a cudaStream_t: 0 or 1 the legacy default stream, 2 per-thread

// cudaMalloc'd memory of one device.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // Makes room for `bytes` on the current device; growing discards the content. Growth is
  // refused while `stream` is being captured into a CUDA graph (its address would change).
  void reserve(size_t bytes, StreamHandle stream = nullptr);
  // For arrays handed to callers, freed whenever Python collects them: a stream-ordered
  // allocation (cudaMallocAsync on `stream`, cudaFreeAsync there when destroyed), so that
  // neither allocating nor freeing synchronises the device; plain cudaMalloc where the device
  // has no memory pools. Only on an empty buffer.
  void allocate_for_caller(size_t bytes, StreamHandle stream);
  void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
  int device_ = -1;
  bool stream_ordered_ = false;
  StreamHandle stream_ = nullptr;
};

// Page-locked host memory (cudaMallocHost): the source and target of truly asynchronous copies.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer();
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  void reserve(size_t bytes, StreamHandle stream = nullptr);
  void* data() const { return data_; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

// A timing-free event: orders streams and tells the host when work is done.
class CudaEvent {
 public:
  CudaEvent();
  ~CudaEvent();
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;

  void record(StreamHandle stream);
  // Blocks until the last recorded work is done (returns at once if never recorded).
  void synchronize();
  // Makes `stream` wait for the last recorded work (nothing if never recorded).
  void wait_on(StreamHandle stream);

 private:
  void* event_ = nullptr;  // cudaEvent_t
  bool recorded_ = false;
};

// Makes `device` current for the guard's lifetime.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

int current_device();
// The device holding a device (or managed) pointer; -1 for host memory, pinned or not.
int pointer_device(const void* pointer);
bool stream_is_capturing(StreamHandle stream);
// Makes `consumer` wait for the work queued so far on `producer` (no host synchronisation).
void stream_wait_stream(StreamHandle consumer, StreamHandle producer);
void stream_synchronize(StreamHandle stream);
void copy_async(void* dst, const void* src, size_t bytes, StreamHandle stream);
void zero_async(void* dst, size_t bytes, StreamHandle stream);
// Plain synchronous copy in either direction (cudaMemcpyDefault).
void copy_sync(void* dst, const void* src, size_t bytes);

// A host array to upload: `dims` and byte `strides` of up to 3 axes (unused axes: size 1).
struct HostPiece {
  const uint8_t* data;
  int64_t dims[3];
  int64_t strides[3];
  int64_t item_size;
  size_t bytes() const { return size_t(dims[0] * dims[1] * dims[2] * item_size); }
};

// Uploads host arrays through one pinned staging buffer and one cudaMemcpyAsync into a device
// buffer, each piece C-contiguous and 256-byte aligned there. The host packing happens inside
// upload(), so callers may reuse their arrays at once; before the staging buffer is refilled the
// host waits for the previous copy out of it, and the stream waits for the previous users of the
// device buffer (call consumed() after queuing them).
class HostUploader {
 public:
  std::vector<void*> upload(const std::vector<HostPiece>& pieces, StreamHandle stream);
  // Marks the end of the work that reads the last upload's device memory on `stream`.
  void consumed(StreamHandle stream) { device_free_.record(stream); }

 private:
  PinnedBuffer staging_;
  DeviceBuffer device_;
  CudaEvent staging_free_;
  CudaEvent device_free_;
};

}  // namespace fastdet
