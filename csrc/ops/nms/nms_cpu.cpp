#include <algorithm>
#include <vector>

#include "common/sort.h"
#include "ops/nms/nms.h"
#include "ops/nms/nms_math.h"

namespace fastdet {
namespace {

constexpr int64_t kMaxCountingSortSpan = 1 << 16;  // wider class-id ranges use a comparison sort

// Boxes of one class in score order, laid out for a vectorised suppression loop.
struct ClassBoxes {
  std::vector<float> x1, y1, x2, y2, area;
  std::vector<int32_t> suppressed;

  // offset: class_offset * class, per box (YOLOv7's max_wh shift; 0 for exact per-class NMS).
  void load(const float* boxes, const int32_t* classes, float class_offset,
            const std::vector<int32_t>& order, const int32_t* ranks, int64_t count) {
    for (auto* v : {&x1, &y1, &x2, &y2, &area}) v->resize(count);
    suppressed.assign(count, 0);
    for (int64_t k = 0; k < count; ++k) {
      const int64_t index = order[ranks[k]];
      const float* box = boxes + index * 4;
      const float offset = classes ? class_offset * static_cast<float>(classes[index]) : 0.f;
      x1[k] = box[0] + offset;
      y1[k] = box[1] + offset;
      x2[k] = box[2] + offset;
      y2[k] = box[3] + offset;
      area[k] = box_area(x1[k], y1[k], x2[k], y2[k]);
    }
  }
};

// With the class-offset trick, boxes of different classes can only meet when the boxes span at
// least the offset; then one NMS over the shifted boxes reproduces YOLOv7 literally.
bool offset_boxes_can_meet(const float* boxes, const std::vector<int32_t>& order,
                           int64_t considered, float class_offset) {
  if (class_offset <= 0.f || considered == 0) return false;
  float low = boxes[int64_t(order[0]) * 4], high = low;
  for (int64_t r = 0; r < considered; ++r) {
    const float* box = boxes + int64_t(order[r]) * 4;
    for (int i = 0; i < 4; ++i) {
      low = std::min(low, box[i]);
      high = std::max(high, box[i]);
    }
  }
  return high - low >= class_offset;
}

// Greedy NMS over one class; appends the ranks (positions in score order) it keeps.
void nms_one_class(ClassBoxes& c, const int32_t* ranks, int64_t count, float threshold,
                   int64_t max_keep, std::vector<int32_t>& kept_ranks) {
  int64_t kept = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (c.suppressed[i]) continue;
    kept_ranks.push_back(ranks[i]);
    if (++kept == max_keep) return;
    const float ax1 = c.x1[i], ay1 = c.y1[i], ax2 = c.x2[i], ay2 = c.y2[i], area = c.area[i];
    const float* __restrict x1 = c.x1.data();
    const float* __restrict y1 = c.y1.data();
    const float* __restrict x2 = c.x2.data();
    const float* __restrict y2 = c.y2.data();
    const float* __restrict areas = c.area.data();
    int32_t* __restrict suppressed = c.suppressed.data();
    for (int64_t j = i + 1; j < count; ++j) {
      suppressed[j] |=
          iou_above(ax1, ay1, ax2, ay2, area, x1[j], y1[j], x2[j], y2[j], areas[j], threshold);
    }
  }
}

}  // namespace

std::vector<int64_t> nms_cpu(const float* boxes, const float* scores, const int32_t* classes,
                             int64_t n, const NmsOptions& options) {
  std::vector<int32_t> order;
  sort_by_score_descending(scores, n, order);
  const int64_t considered =
      options.max_candidates >= 0 ? std::min<int64_t>(n, options.max_candidates) : n;
  const int64_t max_keep = options.max_det >= 0 ? options.max_det : considered;
  std::vector<int32_t> kept_ranks;
  if (considered == 0 || max_keep == 0) return {};

  // Group the considered ranks by class, each group still in score order (counting sort).
  std::vector<int32_t> grouped(considered);
  std::vector<int64_t> group_begin;  // group g spans grouped[group_begin[g], group_begin[g+1])
  if (classes == nullptr || offset_boxes_can_meet(boxes, order, considered, options.class_offset)) {
    for (int64_t r = 0; r < considered; ++r) grouped[r] = static_cast<int32_t>(r);
    group_begin = {0, considered};
  } else {
    std::vector<int32_t> rank_class(considered);
    for (int64_t r = 0; r < considered; ++r) rank_class[r] = classes[order[r]];
    const auto [low, high] = std::minmax_element(rank_class.begin(), rank_class.end());
    const int64_t span = int64_t(*high) - int64_t(*low) + 1;
    if (span <= kMaxCountingSortSpan) {
      std::vector<int64_t> slot(span + 1, 0);
      for (int64_t r = 0; r < considered; ++r) ++slot[rank_class[r] - *low + 1];
      for (int64_t c = 1; c <= span; ++c) slot[c] += slot[c - 1];
      for (int64_t r = 0; r < considered; ++r) {
        grouped[slot[rank_class[r] - *low]++] = static_cast<int32_t>(r);
      }
    } else {
      for (int64_t r = 0; r < considered; ++r) grouped[r] = static_cast<int32_t>(r);
      std::stable_sort(grouped.begin(), grouped.end(),
                       [&](int32_t a, int32_t b) { return rank_class[a] < rank_class[b]; });
    }
    for (int64_t r = 0; r < considered; ++r) {
      if (r == 0 || rank_class[grouped[r]] != rank_class[grouped[r - 1]]) group_begin.push_back(r);
    }
    group_begin.push_back(considered);
  }

  ClassBoxes scratch;
  for (size_t g = 0; g + 1 < group_begin.size(); ++g) {
    const int32_t* ranks = grouped.data() + group_begin[g];
    const int64_t count = group_begin[g + 1] - group_begin[g];
    scratch.load(boxes, classes, options.class_offset, order, ranks, count);
    nms_one_class(scratch, ranks, count, options.iou_threshold, max_keep, kept_ranks);
  }
  std::sort(kept_ranks.begin(), kept_ranks.end());
  const int64_t kept = std::min<int64_t>(max_keep, static_cast<int64_t>(kept_ranks.size()));
  std::vector<int64_t> keep(kept);
  for (int64_t k = 0; k < kept; ++k) keep[k] = order[kept_ranks[k]];
  return keep;
}

}  // namespace fastdet
