#include "runtime/cuda_buffer.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>

#include "common/cuda_check.h"
#include "common/thread_pool.h"

namespace fastdet {
namespace {

cudaStream_t as_stream(StreamHandle stream) { return static_cast<cudaStream_t>(stream); }

constexpr size_t kAlignment = 256;

size_t align_up(size_t bytes) { return (bytes + kAlignment - 1) / kAlignment * kAlignment; }

// Sizes grow by at least half again, so a slowly growing shape reallocates only a few times.
size_t grown(size_t current, size_t wanted) {
  return align_up(std::max(wanted, current + current / 2));
}

void refuse_growth_while_capturing(StreamHandle stream, size_t bytes, const char* what) {
  FASTDET_CHECK(!stream_is_capturing(stream), "fastdet: the ", what, " must grow to ", bytes,
                " bytes while the stream is being captured into a CUDA graph; run the same "
                "shapes once outside the capture first (workspaces are sized by that call)");
}

}  // namespace

DeviceBuffer::~DeviceBuffer() {
  if (!data_) return;
  // No throwing here (at interpreter exit the runtime may be unloading): a failed free leaks.
  int previous = -1;
  if (cudaGetDevice(&previous) != cudaSuccess) return;
  if (previous != device_) cudaSetDevice(device_);
  if (!stream_ordered_ || cudaFreeAsync(data_, as_stream(stream_)) != cudaSuccess) {
    cudaGetLastError();  // e.g. the caller's stream is gone: a plain free (synchronising)
    cudaFree(data_);
  }
  if (previous != device_) cudaSetDevice(previous);
}

void DeviceBuffer::allocate_for_caller(size_t bytes, StreamHandle stream) {
  FASTDET_CHECK(data_ == nullptr, "fastdet: allocate_for_caller on a non-empty buffer");
  if (bytes == 0) return;
  device_ = current_device();
  int pools = 0;
  FASTDET_CUDA_CHECK(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device_));
  if (pools) {
    FASTDET_CUDA_CHECK(cudaMallocAsync(&data_, bytes, as_stream(stream)));
    stream_ordered_ = true;
    stream_ = stream;
  } else {
    FASTDET_CUDA_CHECK(cudaMalloc(&data_, bytes));
  }
  size_ = bytes;
}

void DeviceBuffer::reserve(size_t bytes, StreamHandle stream) {
  if (bytes <= size_ && (data_ || bytes == 0)) return;
  refuse_growth_while_capturing(stream, bytes, "device workspace");
  const size_t size = grown(size_, bytes);
  if (data_) {
    DeviceGuard guard(device_);
    FASTDET_CUDA_CHECK(cudaFree(data_));  // waits for the work still using it
    data_ = nullptr;
    size_ = 0;
  }
  device_ = current_device();
  FASTDET_CUDA_CHECK(cudaMalloc(&data_, size));
  size_ = size;
}

PinnedBuffer::~PinnedBuffer() {
  if (data_) cudaFreeHost(data_);
}

void PinnedBuffer::reserve(size_t bytes, StreamHandle stream) {
  if (bytes <= size_ && (data_ || bytes == 0)) return;
  refuse_growth_while_capturing(stream, bytes, "pinned staging buffer");
  const size_t size = grown(size_, bytes);
  if (data_) {
    FASTDET_CUDA_CHECK(cudaFreeHost(data_));
    data_ = nullptr;
    size_ = 0;
  }
  FASTDET_CUDA_CHECK(cudaMallocHost(&data_, size));
  size_ = size;
}

CudaEvent::CudaEvent() {
  cudaEvent_t event;
  FASTDET_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  event_ = event;
}

CudaEvent::~CudaEvent() { cudaEventDestroy(static_cast<cudaEvent_t>(event_)); }

void CudaEvent::record(StreamHandle stream) {
  FASTDET_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), as_stream(stream)));
  recorded_ = true;
}

void CudaEvent::synchronize() {
  if (recorded_) FASTDET_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)));
}

void CudaEvent::wait_on(StreamHandle stream) {
  if (recorded_) {
    FASTDET_CUDA_CHECK(cudaStreamWaitEvent(as_stream(stream), static_cast<cudaEvent_t>(event_), 0));
  }
}

DeviceGuard::DeviceGuard(int device) {
  FASTDET_CUDA_CHECK(cudaGetDevice(&previous_));
  if (device >= 0 && device != previous_) {
    FASTDET_CUDA_CHECK(cudaSetDevice(device));
  } else {
    previous_ = -1;
  }
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);
}

int current_device() {
  int device = 0;
  FASTDET_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

int pointer_device(const void* pointer) {
  cudaPointerAttributes attributes{};
  FASTDET_CUDA_CHECK(cudaPointerGetAttributes(&attributes, pointer));
  if (attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged) {
    return attributes.device;
  }
  return -1;
}

bool stream_is_capturing(StreamHandle stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  FASTDET_CUDA_CHECK(cudaStreamIsCapturing(as_stream(stream), &status));
  return status != cudaStreamCaptureStatusNone;
}

void stream_wait_stream(StreamHandle consumer, StreamHandle producer) {
  if (consumer == producer) return;
  CudaEvent event;  // destroying a recorded event is safe: the wait keeps its own reference
  event.record(producer);
  event.wait_on(consumer);
}

void stream_synchronize(StreamHandle stream) {
  FASTDET_CUDA_CHECK(cudaStreamSynchronize(as_stream(stream)));
}

void copy_async(void* dst, const void* src, size_t bytes, StreamHandle stream) {
  if (bytes == 0) return;
  FASTDET_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, as_stream(stream)));
}

void zero_async(void* dst, size_t bytes, StreamHandle stream) {
  if (bytes == 0) return;
  FASTDET_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, as_stream(stream)));
}

void copy_sync(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  FASTDET_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
}

namespace {

constexpr int64_t kParallelBytes = 1 << 20;

// Copies one strided piece into `out`, C-contiguous; in parallel when it is large.
void pack(const HostPiece& piece, uint8_t* out) {
  const int64_t item = piece.item_size;
  const int64_t inner = piece.dims[2];
  const int64_t row_bytes = piece.dims[1] * inner * item;
  const bool rows_packed = piece.strides[2] == item && piece.strides[1] == inner * item;
  const bool items_packed = piece.strides[2] == item;
  const int64_t total = int64_t(piece.bytes());
  if (rows_packed && (piece.dims[0] == 1 || piece.strides[0] == row_bytes)) {
    // One contiguous block: memcpy in 1 MiB slices.
    const int64_t slices = (total + kParallelBytes - 1) / kParallelBytes;
    parallel_for(slices, 4, [&](int64_t begin, int64_t end) {
      const int64_t from = begin * kParallelBytes;
      const int64_t to = std::min(total, end * kParallelBytes);
      std::memcpy(out + from, piece.data + from, size_t(to - from));
    });
    return;
  }
  const int64_t min_rows =
      std::max<int64_t>(1, kParallelBytes / std::max<int64_t>(row_bytes, 1) / 4);
  auto copy_rows = [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const uint8_t* src = piece.data + r * piece.strides[0];
      uint8_t* dst = out + r * row_bytes;
      if (rows_packed) {
        std::memcpy(dst, src, row_bytes);
        continue;
      }
      for (int64_t c = 0; c < piece.dims[1]; ++c) {
        const uint8_t* cell = src + c * piece.strides[1];
        uint8_t* cell_out = dst + c * inner * item;
        if (items_packed) {
          std::memcpy(cell_out, cell, inner * item);
          continue;
        }
        for (int64_t k = 0; k < inner; ++k) {
          std::memcpy(cell_out + k * item, cell + k * piece.strides[2], item);
        }
      }
    }
  };
  if (total >= kParallelBytes) {
    parallel_for(piece.dims[0], min_rows, copy_rows);
  } else {
    copy_rows(0, piece.dims[0]);
  }
}

}  // namespace

std::vector<void*> HostUploader::upload(const std::vector<HostPiece>& pieces, StreamHandle stream) {
  FASTDET_CHECK(!stream_is_capturing(stream),
                "fastdet: host (numpy) inputs cannot be uploaded while the stream is being "
                "captured into a CUDA graph; pass GPU arrays to the captured calls");
  std::vector<size_t> offsets;
  size_t total = 0;
  for (const HostPiece& piece : pieces) {
    offsets.push_back(total);
    total += align_up(piece.bytes());
  }
  staging_free_.synchronize();  // the previous upload has left the staging buffer
  staging_.reserve(total, stream);
  device_free_.wait_on(stream);  // its readers are done with the device buffer
  if (total > device_.size()) {
    stream_synchronize(stream);  // growing frees the old device buffer
  }
  device_.reserve(total, stream);
  auto* host = static_cast<uint8_t*>(staging_.data());
  for (size_t i = 0; i < pieces.size(); ++i) pack(pieces[i], host + offsets[i]);
  copy_async(device_.data(), host, total, stream);
  staging_free_.record(stream);
  std::vector<void*> addresses;
  for (size_t offset : offsets) addresses.push_back(static_cast<uint8_t*>(device_.data()) + offset);
  return addresses;
}

}  // namespace fastdet
