// The CPU kernels' threads: one persistent pool, sized by fastdet.set_num_threads.
#pragma once

#include <cstdint>
#include <functional>

namespace fastdet {

// Number of threads the CPU kernels use (the calling thread included); at least 1.
int get_num_threads();
// Sets that number; n >= 1. Waits for a parallel region in flight to finish.
void set_num_threads(int n);

// Calls fn(begin, end) on disjoint chunks covering [0, n), in parallel when the pool is free.
// Chunks hold at least min_chunk items. A call made from inside a parallel region, or while another
// Python thread holds the pool, runs serially on the calling thread, so the pool never deadlocks.
// The first exception thrown by fn is rethrown here after every chunk has finished.
void parallel_for(int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace fastdet
