// Stopping a long CPU kernel from outside (Ctrl-C in Python). The kernels library has no Python
// headers: a binding passes a StopCallback that looks for pending signals; the kernel reports its
// work to an InterruptPoll, which calls the callback every few milliseconds of work, and throws
// Interrupted when it says stop. The binding catches Interrupted and raises the Python error the
// callback left pending (KeyboardInterrupt).
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>

namespace fastdet {

// True: stop now. Called from the thread that runs the kernel, never concurrently.
using StopCallback = std::function<bool()>;

// A kernel abandoned its work because its StopCallback returned true.
class Interrupted : public std::exception {
 public:
  const char* what() const noexcept override { return "fastdet: interrupted"; }
};

class InterruptPoll {
 public:
  using Clock = std::chrono::steady_clock;

  // An empty callback makes add_work free and never throws. The callback may take the GIL: one
  // poll per interval keeps the kernel's stalls on a busy interpreter to a fraction of its time.
  explicit InterruptPoll(const StopCallback& should_stop,
                         Clock::duration interval = std::chrono::milliseconds(5))
      : should_stop_(should_stop), interval_(interval), next_poll_(Clock::now() + interval) {}

  // Reports `units` of work (about one elementary operation each, a nanosecond or less); throws
  // Interrupted when the callback, asked at most once per interval, says stop.
  void add_work(int64_t units) {
    if (!should_stop_) return;
    pending_ += units;
    if (pending_ >= kUnitsBetweenClockReads) poll();
  }

 private:
  // Tens of microseconds of work: reading the clock this often costs nothing measurable.
  static constexpr int64_t kUnitsBetweenClockReads = int64_t(1) << 16;

  void poll() {
    pending_ = 0;
    if (Clock::now() < next_poll_) return;
    if (should_stop_()) throw Interrupted();
    next_poll_ = Clock::now() + interval_;
  }

  const StopCallback& should_stop_;
  Clock::duration interval_;
  Clock::time_point next_poll_;
  int64_t pending_ = 0;
};

}  // namespace fastdet
