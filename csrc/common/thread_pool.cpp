#include "common/thread_pool.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/check.h"

namespace fastdet {
namespace {

thread_local bool in_parallel_region = false;

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads) { start(num_threads); }
  ~ThreadPool() { stop(); }

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int num_threads) {
    std::lock_guard<std::mutex> region(region_mutex_);
    stop();
    start(num_threads);
  }

  void run(int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn) {
    if (n <= 0) return;
    min_chunk = std::max<int64_t>(min_chunk, 1);
    const int64_t max_chunks = (n + min_chunk - 1) / min_chunk;
    std::unique_lock<std::mutex> region(region_mutex_, std::try_to_lock);
    if (in_parallel_region || !region.owns_lock() || workers_.empty() || max_chunks < 2 ||
        creator_pid_ != getpid()) {
      fn(0, n);
      return;
    }
    // A few chunks per thread balance rows of unequal cost (padding rows are cheap).
    const int64_t chunks = std::min<int64_t>(max_chunks, int64_t(num_threads()) * 4);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &fn;
      task_size_ = n;
      task_chunks_ = chunks;
      next_chunk_.store(0);
      busy_workers_ = static_cast<int>(workers_.size());
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    work_on_task();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return busy_workers_ == 0; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void start(int num_threads) {
    stopping_ = false;
    creator_pid_ = getpid();
    for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
  }

  void stop() {
    if (creator_pid_ != getpid()) {
      // After fork() the workers do not exist in this process: forget them without joining.
      for (auto& worker : workers_) worker.detach();
      workers_.clear();
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& worker : workers_) worker.join();
    workers_.clear();
  }

  void worker_loop() {
    in_parallel_region = true;
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
      }
      work_on_task();
      std::lock_guard<std::mutex> lock(mutex_);
      if (--busy_workers_ == 0) done_.notify_one();
    }
  }

  void work_on_task() {
    const bool was_inside = in_parallel_region;
    in_parallel_region = true;
    for (;;) {
      const int64_t chunk = next_chunk_.fetch_add(1);
      if (chunk >= task_chunks_) break;
      const int64_t begin = task_size_ * chunk / task_chunks_;
      const int64_t end = task_size_ * (chunk + 1) / task_chunks_;
      try {
        (*task_)(begin, end);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
    }
    in_parallel_region = was_inside;
  }

  std::vector<std::thread> workers_;
  std::mutex region_mutex_;  // one parallel region at a time
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int64_t, int64_t)>* task_ = nullptr;
  int64_t task_size_ = 0;
  int64_t task_chunks_ = 0;
  std::atomic<int64_t> next_chunk_{0};
  int busy_workers_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  pid_t creator_pid_ = 0;
  std::exception_ptr error_;
};

int default_num_threads() {
  const unsigned hardware = std::thread::hardware_concurrency();
  return hardware == 0 ? 1 : static_cast<int>(std::min(hardware, 64u));
}

std::mutex pool_mutex;
std::unique_ptr<ThreadPool> pool;

ThreadPool& get_pool() {
  std::lock_guard<std::mutex> lock(pool_mutex);
  if (!pool) pool = std::make_unique<ThreadPool>(default_num_threads());
  return *pool;
}

}  // namespace

int get_num_threads() { return get_pool().num_threads(); }

void set_num_threads(int n) {
  FASTDET_CHECK(n >= 1 && n <= 1024, "set_num_threads: n must be between 1 and 1024, got ", n);
  get_pool().resize(n);
}

void parallel_for(int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn) {
  get_pool().run(n, min_chunk, fn);
}

}  // namespace fastdet
