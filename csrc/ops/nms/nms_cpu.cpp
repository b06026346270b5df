#include <algorithm>
#include <array>
#include <limits>
#include <vector>

#include "common/interrupt.h"
#include "common/sort.h"
#include "ops/nms/nms.h"
#include "ops/nms/nms_math.h"

namespace fastdet {
namespace {

constexpr int64_t kMaxCountingSortSpan = 1 << 16;  // wider class-id ranges use a comparison sort

// The walk of one class scans the later boxes after each kept box (vectorised; fastest while
// few boxes are kept). Every kScansPerCount scans of the entries left it counts the live ones
// and drops the suppressed ones once they are the majority. When the scans add up to
// kScansPerIndexedBox times the live entries, and those are more than kMinIndexedBoxes, it
// indexes them instead: building the index costs about that many scanned entries per box, and
// smaller sets scan faster than they search. Heavy suppression (the usual detector output) never
// pays for an index.
constexpr int64_t kScansPerIndexedBox = 128;
constexpr int64_t kMinIndexedBoxes = 4096;
constexpr int64_t kScansPerCount = 16;
constexpr int64_t kMinCountedScan = 256;
constexpr int32_t kLeafSize = 32;

// Boxes of one class in score order, laid out for a vectorised suppression loop. Compaction
// drops suppressed entries: entry k is then the box at position(k) of the class's score order.
struct ClassBoxes {
  std::vector<float> x1, y1, x2, y2, area;
  std::vector<int32_t> suppressed;
  std::vector<int32_t> pos;  // empty until the first compaction: entry k is position k

  int64_t position(int64_t k) const { return pos.empty() ? k : pos[k]; }

  // offset: class_offset * class, per box (YOLOv7's max_wh shift; 0 for exact per-class NMS).
  void load(const float* boxes, const int32_t* classes, float class_offset,
            const std::vector<int32_t>& order, const int32_t* ranks, int64_t count) {
    for (auto* v : {&x1, &y1, &x2, &y2, &area}) v->resize(count);
    suppressed.assign(count, 0);
    pos.clear();
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

  // Moves the entries of [begin, end) that are not suppressed to its front, in order; returns
  // the new end.
  int64_t compact(int64_t begin, int64_t end) {
    if (pos.empty()) {
      pos.resize(end);
      for (int64_t k = 0; k < end; ++k) pos[k] = static_cast<int32_t>(k);
    }
    int64_t out = begin;
    for (int64_t k = begin; k < end; ++k) {
      if (suppressed[k]) continue;
      x1[out] = x1[k];
      y1[out] = y1[k];
      x2[out] = x2[k];
      y2[out] = y2[k];
      area[out] = area[k];
      pos[out] = pos[k];
      suppressed[out] = 0;
      ++out;
    }
    return out;
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

// ------------------------------------------------------------------------------------------------
// When the index may skip a pair (threshold t >= 0; iou_above as in nms_math.h, float32).
//
// Inert boxes: width x2 - x1 <= 0, height <= 0, or area (as box_area computes it) 0 or infinite.
// iou_above is false for every pair holding one: the intersection's side is at most the box's,
// and its area at most the box's (rounding is monotone), so inter = 0 and 0 / union is 0 or NaN;
// an infinite area makes the union infinite (IoU 0) or inf - inf (NaN). Inert boxes are kept at
// their turn and never tested.
//
// Regular boxes: positive sides and an area in [2^-100, inf). When iou_above(a, b) holds for two
// regular boxes and t >= 2^-20, every intermediate value is a normal float (a subnormal
// intersection would give IoU < 2^-25), each of the ~8 roundings is relative, and the float IoU
// is within 17 * 2^-24 of the exact IoU of the same float coordinates: exact IoU > t (1 - 2^-19).
// The exact IoU is at most the IoU of the x intervals (the union holds the strip of height ih
// spanning the union of the x intervals), and the same for y. For the boxes a of a tree node,
// with x1 in [lo1, hi1] and x2 in [lo2, hi2]: x intersection <= min(hi2, bx2) - max(lo1, bx1),
// x union >= max(lo2, bx2) - min(hi1, bx1). Computed in double (exact enough, no overflow), the
// node is skipped when that ratio is at most t (1 - 2^-12): no box in it can pass iou_above.
// Below t = 2^-20, or for a box that is not regular, only the overlap bound is used: iou_above
// needs inter > 0, i.e. intervals that overlap strictly on both axes, exact under any rounding.
//
// Irregular boxes (positive sides, area below 2^-100) go to a second tree that only the overlap
// bound prunes; a kept irregular box searches both trees with the overlap bound only.
// ------------------------------------------------------------------------------------------------
constexpr float kMinRegularArea = 0x1p-100f;
constexpr float kMinBoundedThreshold = 0x1p-20f;
constexpr double kBoundMargin = 1.0 - 0x1p-12;

enum class BoxKind : uint8_t { kInert, kIrregular, kRegular };

BoxKind box_kind(float x1, float y1, float x2, float y2, float area) {
  const bool sides = x2 - x1 > 0.f && y2 - y1 > 0.f;
  if (!sides || !(area > 0.f) || !(area < std::numeric_limits<float>::infinity())) {
    return BoxKind::kInert;
  }
  return area >= kMinRegularArea ? BoxKind::kRegular : BoxKind::kIrregular;
}

// Whether the IoU of [b1, b2] with any interval whose ends lie in [lo1, hi1] and [lo2, hi2] is at
// most ratio (ratio 0: whether none of them overlaps [b1, b2]).
bool interval_iou_at_most(float lo1, float hi1, float lo2, float hi2, float b1, float b2,
                          double ratio) {
  const double inter = double(std::min(hi2, b2)) - double(std::max(lo1, b1));
  if (inter <= 0.0) return true;
  const double uni = double(std::max(lo2, b2)) - double(std::min(hi1, b1));
  return inter <= ratio * uni;
}

// A k-d tree over boxes in (x1, y1, x2, y2) space with per-node bounds and counts of the boxes
// still live (undecided), so that a kept box visits only the subtrees that can hold a box it
// suppresses and that still hold live boxes. Entries are laid out in tree order, structure of
// arrays, for a vectorised leaf test.
class BoxTree {
 public:
  struct Entry {
    float c[4];  // x1, y1, x2, y2
    int32_t pos;
  };

  // Indexes `entries` (reordered); slot_of[pos] = encode(slot) for each.
  template <typename Encode>
  void build(std::vector<Entry>& entries, const ClassBoxes& boxes, std::vector<int32_t>& slot_of,
             Encode encode, InterruptPoll& poll) {
    size_ = static_cast<int32_t>(entries.size());
    if (size_ == 0) return;
    int depth = 0;
    while (((int64_t(size_) + (int64_t(1) << depth) - 1) >> depth) > kLeafSize) ++depth;
    const size_t nodes = size_t(2) << depth;  // a node at depth d has an index below 2^(d+1) - 1
    nodes_.resize(nodes);
    build_node(entries, 0, 0, size_, poll);
    for (auto* v : {&x1_, &y1_, &x2_, &y2_, &area_}) v->resize(size_);
    pos_.resize(size_);
    live_.assign(size_, 1);
    for (int32_t s = 0; s < size_; ++s) {
      const Entry& e = entries[s];
      x1_[s] = e.c[0];
      y1_[s] = e.c[1];
      x2_[s] = e.c[2];
      y2_[s] = e.c[3];
      area_[s] = boxes.area[e.pos];
      pos_[s] = e.pos;
      slot_of[e.pos] = encode(s);
    }
  }

  bool live(int32_t s) const { return live_[s] != 0; }

  // Slot s leaves the live boxes: the counts on its root-to-leaf path go down by one.
  void kill(int32_t s) {
    live_[s] = 0;
    int32_t node = 0, begin = 0, end = size_;
    while (true) {
      --nodes_[node].live;
      if (end - begin <= kLeafSize) return;
      const int32_t mid = begin + (end - begin) / 2;
      if (s < mid) {
        node = 2 * node + 1;
        end = mid;
      } else {
        node = 2 * node + 2;
        begin = mid;
      }
    }
  }

  // Every live entry b with iou_above(a, b) is killed and marked in `suppressed`; nodes are
  // skipped by the interval bound with `ratio` (see above). Returns the work done.
  int64_t suppress(float ax1, float ay1, float ax2, float ay2, float area, float threshold,
                   double ratio, int32_t* suppressed) {
    if (size_ == 0) return 0;
    struct Frame {
      int32_t node, begin, end;
    };
    std::array<Frame, 128> stack;  // depth < 31 for an int32 count: at most 2 frames per level
    int top = 0;
    stack[top++] = {0, 0, size_};
    int64_t work = 0;
    while (top > 0) {
      const Frame f = stack[--top];
      work += 8;
      const Node& b = nodes_[f.node];
      if (b.live == 0) continue;
      if (interval_iou_at_most(b.lo[0], b.hi[0], b.lo[2], b.hi[2], ax1, ax2, ratio) ||
          interval_iou_at_most(b.lo[1], b.hi[1], b.lo[3], b.hi[3], ay1, ay2, ratio)) {
        continue;
      }
      const int32_t size = f.end - f.begin;
      if (size > kLeafSize) {
        const int32_t mid = f.begin + size / 2;
        stack[top++] = {2 * f.node + 2, mid, f.end};
        stack[top++] = {2 * f.node + 1, f.begin, mid};
        continue;
      }
      int32_t hit[kLeafSize];
      const float* __restrict x1 = x1_.data() + f.begin;
      const float* __restrict y1 = y1_.data() + f.begin;
      const float* __restrict x2 = x2_.data() + f.begin;
      const float* __restrict y2 = y2_.data() + f.begin;
      const float* __restrict areas = area_.data() + f.begin;
      const uint8_t* __restrict live = live_.data() + f.begin;
      for (int32_t k = 0; k < size; ++k) {
        hit[k] = live[k] & iou_above(ax1, ay1, ax2, ay2, area, x1[k], y1[k], x2[k], y2[k], areas[k],
                                     threshold);
      }
      for (int32_t k = 0; k < size; ++k) {
        if (hit[k]) {
          suppressed[pos_[f.begin + k]] = 1;
          kill(f.begin + k);
        }
      }
      work += size;
    }
    return work;
  }

 private:
  struct Node {
    float lo[4], hi[4];  // per coordinate of Entry::c, over the node's entries
    int32_t live;        // entries still live
  };

  // Node `node` holds entries [begin, end): halves split at the median of the coordinate with
  // the widest spread, children 2 node + 1 and 2 node + 2, leaves of at most kLeafSize entries.
  void build_node(std::vector<Entry>& entries, int32_t node, int32_t begin, int32_t end,
                  InterruptPoll& poll) {
    Node& b = nodes_[node];
    for (int d = 0; d < 4; ++d) b.lo[d] = b.hi[d] = entries[begin].c[d];
    for (int32_t s = begin + 1; s < end; ++s) {
      for (int d = 0; d < 4; ++d) {
        b.lo[d] = std::min(b.lo[d], entries[s].c[d]);
        b.hi[d] = std::max(b.hi[d], entries[s].c[d]);
      }
    }
    b.live = end - begin;
    poll.add_work(8 * int64_t(end - begin));
    if (end - begin <= kLeafSize) return;
    int split = 0;
    for (int d = 1; d < 4; ++d) {
      if (double(b.hi[d]) - b.lo[d] > double(b.hi[split]) - b.lo[split]) split = d;
    }
    const int32_t mid = begin + (end - begin) / 2;
    std::nth_element(entries.begin() + begin, entries.begin() + mid, entries.begin() + end,
                     [split](const Entry& l, const Entry& r) { return l.c[split] < r.c[split]; });
    build_node(entries, 2 * node + 1, begin, mid, poll);
    build_node(entries, 2 * node + 2, mid, end, poll);
  }

  int32_t size_ = 0;
  std::vector<Node> nodes_;
  std::vector<float> x1_, y1_, x2_, y2_, area_;
  std::vector<int32_t> pos_;
  std::vector<uint8_t> live_;
};

// The undecided entries of one class (after entry `first`, before `end`, not suppressed):
// regular boxes in one tree, irregular ones in another that only the overlap bound prunes, inert
// ones nowhere.
class SuppressionIndex {
 public:
  SuppressionIndex(ClassBoxes& boxes, int64_t first, int64_t end, float threshold,
                   InterruptPoll& poll)
      : boxes_(boxes), threshold_(threshold), poll_(poll) {
    bound_ratio_ = threshold >= kMinBoundedThreshold ? double(threshold) * kBoundMargin : 0.0;
    slot_.assign(end, kNoSlot);
    std::vector<BoxTree::Entry> regular, irregular;
    for (int64_t p = first + 1; p < end; ++p) {
      if (boxes.suppressed[p]) continue;
      const BoxTree::Entry e{{boxes.x1[p], boxes.y1[p], boxes.x2[p], boxes.y2[p]}, int32_t(p)};
      switch (box_kind(e.c[0], e.c[1], e.c[2], e.c[3], boxes.area[p])) {
        case BoxKind::kRegular:
          regular.push_back(e);
          break;
        case BoxKind::kIrregular:
          irregular.push_back(e);
          break;
        case BoxKind::kInert:
          break;
      }
    }
    // Slots: s >= 0 in the regular tree, -2 - s in the irregular one.
    regular_.build(regular, boxes, slot_, [](int32_t s) { return s; }, poll);
    irregular_.build(irregular, boxes, slot_, [](int32_t s) { return -2 - s; }, poll);
  }

  // Box p, reached by the walk, is decided: it leaves the live boxes.
  void retire(int64_t p) {
    const int32_t s = slot_[p];
    if (s >= 0) {
      if (regular_.live(s)) regular_.kill(s);
    } else if (s != kNoSlot && irregular_.live(-2 - s)) {
      irregular_.kill(-2 - s);
    }
  }

  // Marks every live box b with iou_above(p, b) suppressed (and no longer live).
  void suppress_from(int64_t p) {
    const float ax1 = boxes_.x1[p], ay1 = boxes_.y1[p], ax2 = boxes_.x2[p], ay2 = boxes_.y2[p];
    const float area = boxes_.area[p];
    const BoxKind kind = box_kind(ax1, ay1, ax2, ay2, area);
    if (kind == BoxKind::kInert) return;
    const double ratio = kind == BoxKind::kRegular ? bound_ratio_ : 0.0;
    int32_t* suppressed = boxes_.suppressed.data();
    int64_t work = regular_.suppress(ax1, ay1, ax2, ay2, area, threshold_, ratio, suppressed);
    work += irregular_.suppress(ax1, ay1, ax2, ay2, area, threshold_, 0.0, suppressed);
    poll_.add_work(work);
  }

 private:
  static constexpr int32_t kNoSlot = -1;

  ClassBoxes& boxes_;
  float threshold_;
  double bound_ratio_;
  InterruptPoll& poll_;
  std::vector<int32_t> slot_;  // per entry: its tree slot (encoded), or kNoSlot
  BoxTree regular_, irregular_;
};

// Walks entries (first, end) of `c` with an index, after entry `first` suppressed its boxes.
void walk_indexed(ClassBoxes& c, const int32_t* ranks, int64_t first, int64_t end, float threshold,
                  int64_t max_keep, int64_t kept, std::vector<int32_t>& kept_ranks,
                  InterruptPoll& poll) {
  SuppressionIndex index(c, first, end, threshold, poll);
  for (int64_t p = first + 1; p < end; ++p) {
    if (c.suppressed[p]) continue;
    index.retire(p);
    kept_ranks.push_back(ranks[c.position(p)]);
    if (++kept == max_keep) return;
    index.suppress_from(p);
  }
}

// Greedy NMS over one class; appends the ranks (positions in score order) it keeps.
void nms_one_class(ClassBoxes& c, const int32_t* ranks, int64_t count, float threshold,
                   int64_t max_keep, std::vector<int32_t>& kept_ranks, InterruptPoll& poll) {
  // A negative threshold suppresses disjoint boxes too: no spatial bound holds, scans only.
  const bool may_index = !(threshold < 0.f);
  int64_t kept = 0;
  int64_t scanned = 0;    // entries scanned so far
  int64_t uncounted = 0;  // entries scanned since the live ones were last counted
  int64_t end = count;    // compaction drops entries: those left are [0, end)
  for (int64_t i = 0; i < end; ++i) {
    if (c.suppressed[i]) continue;
    kept_ranks.push_back(ranks[c.position(i)]);
    if (++kept == max_keep) return;
    const float ax1 = c.x1[i], ay1 = c.y1[i], ax2 = c.x2[i], ay2 = c.y2[i], area = c.area[i];
    const float* __restrict x1 = c.x1.data();
    const float* __restrict y1 = c.y1.data();
    const float* __restrict x2 = c.x2.data();
    const float* __restrict y2 = c.y2.data();
    const float* __restrict areas = c.area.data();
    int32_t* __restrict suppressed = c.suppressed.data();
    for (int64_t j = i + 1; j < end; ++j) {
      suppressed[j] |=
          iou_above(ax1, ay1, ax2, ay2, area, x1[j], y1[j], x2[j], y2[j], areas[j], threshold);
    }
    // Shorter scans (few entries left) cost too little to count, index or interrupt.
    const int64_t later = end - i - 1;
    if (later < kMinCountedScan) continue;
    scanned += later;
    uncounted += later;
    poll.add_work(later);
    if (uncounted > kScansPerCount * later) {
      uncounted = 0;
      int64_t live = 0;
      for (int64_t j = i + 1; j < end; ++j) live += suppressed[j] == 0;
      if (may_index && live > kMinIndexedBoxes && scanned > kScansPerIndexedBox * live) {
        walk_indexed(c, ranks, i, end, threshold, max_keep, kept, kept_ranks, poll);
        return;
      }
      if (2 * live < later) end = c.compact(i + 1, end);
    }
  }
}

}  // namespace

std::vector<int64_t> nms_cpu(const float* boxes, const float* scores, const int32_t* classes,
                             int64_t n, const NmsOptions& options,
                             const StopCallback& should_stop) {
  InterruptPoll poll(should_stop);
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
    nms_one_class(scratch, ranks, count, options.iou_threshold, max_keep, kept_ranks, poll);
    poll.add_work(count);
  }
  std::sort(kept_ranks.begin(), kept_ranks.end());
  const int64_t kept = std::min<int64_t>(max_keep, static_cast<int64_t>(kept_ranks.size()));
  std::vector<int64_t> keep(kept);
  for (int64_t k = 0; k < kept; ++k) keep[k] = order[kept_ranks[k]];
  return keep;
}

}  // namespace fastdet
