#include "common/sort.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "common/score_key.h"

namespace fastdet {
namespace {

constexpr int64_t kRadixThreshold = 256;  // below it a comparison sort is faster

}  // namespace

void sort_by_score_descending(const float* scores, int64_t n, std::vector<int32_t>& order) {
  order.resize(n);
  for (int64_t i = 0; i < n; ++i) order[i] = static_cast<int32_t>(i);
  if (n < kRadixThreshold) {
    std::stable_sort(order.begin(), order.end(),
                     [scores](int32_t a, int32_t b) { return scores[a] > scores[b]; });
    return;
  }
  // LSD radix sort on 11-bit digits: stable, so equal keys keep index order.
  constexpr int kDigitBits = 11;
  constexpr uint32_t kDigitMask = (1u << kDigitBits) - 1;
  std::vector<uint32_t> keys(n), keys_next(n);
  std::vector<int32_t> order_next(n);
  for (int64_t i = 0; i < n; ++i) keys[i] = descending_key(scores[i]);
  for (int shift = 0; shift < 32; shift += kDigitBits) {
    std::array<int64_t, (1u << kDigitBits) + 1> offsets{};
    for (int64_t i = 0; i < n; ++i) ++offsets[((keys[i] >> shift) & kDigitMask) + 1];
    const uint32_t first_digit = (keys[0] >> shift) & kDigitMask;
    if (offsets[first_digit + 1] == n) continue;  // every key shares this digit
    for (size_t d = 1; d < offsets.size(); ++d) offsets[d] += offsets[d - 1];
    for (int64_t i = 0; i < n; ++i) {
      const int64_t slot = offsets[(keys[i] >> shift) & kDigitMask]++;
      keys_next[slot] = keys[i];
      order_next[slot] = order[i];
    }
    keys.swap(keys_next);
    order.swap(order_next);
  }
}

}  // namespace fastdet
