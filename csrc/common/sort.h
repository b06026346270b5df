// Stable descending order of float scores: ties keep the lower index first (torchvision's
// stable sort, which both families' NMS rely on). NaN is rejected before anything is sorted.
#pragma once

#include <cstdint>
#include <vector>

namespace fastdet {

// Fills order with the indices 0..n-1 sorted by scores descending, ties by index ascending.
void sort_by_score_descending(const float* scores, int64_t n, std::vector<int32_t>& order);

}  // namespace fastdet
