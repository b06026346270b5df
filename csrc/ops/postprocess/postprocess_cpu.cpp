#include <algorithm>
#include <cmath>
#include <vector>

#include "common/check.h"
#include "common/sort.h"
#include "common/thread_pool.h"
#include "ops/nms/nms.h"
#include "ops/nms/nms_math.h"
#include "ops/postprocess/postprocess.h"
#include "ops/postprocess/postprocess_math.h"

namespace fastdet {
namespace {

// (box, score, class) triples of one image that passed the confidence rule.
struct Candidates {
  std::vector<float> boxes;
  std::vector<float> scores;
  std::vector<int32_t> classes;

  void clear() {
    boxes.clear();
    scores.clear();
    classes.clear();
  }
  int64_t size() const { return static_cast<int64_t>(scores.size()); }
  void add(const float* box, float score, int32_t cls) {
    boxes.insert(boxes.end(), box, box + 4);
    scores.push_back(score);
    classes.push_back(cls);
  }
};

class ClassFilter {
 public:
  ClassFilter(const std::vector<int32_t>& classes, int64_t num_classes)
      : allowed_(classes.empty() ? 0 : num_classes, 0), all_(classes.empty()) {
    for (int32_t c : classes) {
      if (c >= 0 && c < num_classes) allowed_[c] = 1;
    }
  }
  bool accepts(int64_t c) const { return all_ || allowed_[c]; }

 private:
  std::vector<uint8_t> allowed_;
  bool all_;
};

void check_finite_box(const float* box, float score, int64_t image, int64_t row) {
  const bool finite = std::isfinite(box[0]) && std::isfinite(box[1]) && std::isfinite(box[2]) &&
                      std::isfinite(box[3]) && std::isfinite(score);
  FASTDET_CHECK(finite, "postprocess: outputs hold a non-finite candidate at image ", image,
                ", row ", row, " (box ", box[0], ", ", box[1], ", ", box[2], ", ", box[3],
                ", score ", score, ")");
}

// A NaN score is a broken engine, not "nothing found": refused like an infinite one. The scan
// is a branch-free reduction (it vectorises; a NaN is the only value unequal to itself), and
// only a row that holds a NaN is looked at again to name it.
void check_scores_not_nan(const float* box, const float* scores, int64_t count, int64_t image,
                          int64_t row) {
  int any_nan = 0;
  for (int64_t k = 0; k < count; ++k) any_nan |= scores[k] != scores[k];
  if (!any_nan) return;
  for (int64_t k = 0; k < count; ++k) {
    if (std::isnan(scores[k])) check_finite_box(box, scores[k], image, row);
  }
}

// YOLOv7's confidence rule for one row whose objectness already passed (obj > conf).
void add_yolov7_row(const float* box, float obj, const float* class_probs, int64_t num_classes,
                    const PostprocessOptions& options, const ClassFilter& filter, Candidates& out) {
  if (options.multi_label) {
    for (int64_t k = 0; k < num_classes; ++k) {
      const float score = class_probs[k] * obj;
      if (score > options.conf && filter.accepts(k)) out.add(box, score, static_cast<int32_t>(k));
    }
    return;
  }
  int64_t best = 0;
  float best_score = class_probs[0] * obj;
  for (int64_t k = 1; k < num_classes; ++k) {
    const float score = class_probs[k] * obj;
    if (score > best_score) {
      best_score = score;
      best = k;
    }
  }
  if (best_score > options.conf && filter.accepts(best)) {
    out.add(box, best_score, static_cast<int32_t>(best));
  }
}

// How classes stay apart in each family's NMS.
enum class ClassShift {
  YoloV7MaxWh,  // boxes + class * 4096, one NMS (YOLOv7's non_max_suppression)
  BatchedNms,   // torchvision batched_nms (DAMO-YOLO): see batched_nms_class_offset
  None,         // end2end: NMS was done by the engine
};

// NMS (or, for end2end, a plain score sort), max_det, mapping back and clipping.
DetectionList finish(const Candidates& candidates, const PostprocessOptions& options,
                     ClassShift shift, const BoxTransform& transform) {
  const bool run_nms = shift != ClassShift::None;
  std::vector<int64_t> keep;
  if (run_nms) {
    NmsOptions nms;
    nms.iou_threshold = options.iou;
    nms.max_det = options.max_det;
    nms.max_candidates = options.max_candidates;
    if (shift == ClassShift::YoloV7MaxWh) nms.class_offset = kYoloV7ClassOffset;
    if (shift == ClassShift::BatchedNms && !candidates.boxes.empty()) {
      const float highest = *std::max_element(candidates.boxes.begin(), candidates.boxes.end());
      nms.class_offset = batched_nms_class_offset(highest, candidates.size());
    }
    keep = nms_cpu(candidates.boxes.data(), candidates.scores.data(),
                   options.agnostic ? nullptr : candidates.classes.data(), candidates.size(), nms);
  } else {
    std::vector<int32_t> order;
    sort_by_score_descending(candidates.scores.data(), candidates.size(), order);
    const int64_t count = std::min<int64_t>(candidates.size(), options.max_det);
    keep.assign(order.begin(), order.begin() + count);
  }
  DetectionList result;
  result.boxes.resize(keep.size() * 4);
  result.scores.resize(keep.size());
  result.classes.resize(keep.size());
  for (size_t k = 0; k < keep.size(); ++k) {
    float* box = result.boxes.data() + k * 4;
    for (int i = 0; i < 4; ++i) box[i] = candidates.boxes[keep[k] * 4 + i];
    box_to_original(transform, box);
    result.scores[k] = candidates.scores[keep[k]];
    result.classes[k] = candidates.classes[keep[k]];
  }
  return result;
}

// Runs collect(image, candidates) then finish() for every image, images in parallel.
template <typename Collect>
std::vector<DetectionList> per_image(const std::vector<BoxTransform>& transforms,
                                     const PostprocessOptions& options, ClassShift shift,
                                     Collect collect) {
  std::vector<DetectionList> results(transforms.size());
  parallel_for(static_cast<int64_t>(transforms.size()), 1, [&](int64_t begin, int64_t end) {
    Candidates candidates;
    for (int64_t image = begin; image < end; ++image) {
      candidates.clear();
      collect(image, candidates);
      results[image] = finish(candidates, options, shift, transforms[image]);
    }
  });
  return results;
}

}  // namespace

std::vector<DetectionList> postprocess_yolov7_cpu(const YoloV7GridOutput& output,
                                                  const std::vector<BoxTransform>& transforms,
                                                  const PostprocessOptions& options) {
  const int64_t num_classes = output.channels - 5;
  FASTDET_CHECK(num_classes >= 1, "postprocess: a yolov7 output needs at least 6 channels, got ",
                output.channels);
  const ClassFilter filter(options.classes, num_classes);
  return per_image(transforms, options, ClassShift::YoloV7MaxWh,
                   [&](int64_t image, Candidates& out) {
                     const float* rows = output.data + image * output.rows * output.channels;
                     for (int64_t n = 0; n < output.rows; ++n) {
                       const float* row = rows + n * output.channels;
                       const float obj = row[4];
                       if (!(obj > options.conf) && !std::isnan(obj)) continue;
                       float box[4];
                       center_size_to_corners(row[0], row[1], row[2], row[3], box);
                       check_finite_box(box, obj, image, n);
                       check_scores_not_nan(box, row + 5, num_classes, image, n);
                       add_yolov7_row(box, obj, row + 5, num_classes, options, filter, out);
                     }
                   });
}

std::vector<DetectionList> postprocess_yolov7_raw_cpu(const std::vector<YoloV7RawLevel>& levels,
                                                      const std::vector<BoxTransform>& transforms,
                                                      const PostprocessOptions& options) {
  FASTDET_CHECK(!levels.empty(), "postprocess: yolov7-raw needs at least one output level");
  const int64_t num_classes = levels[0].channels - 5;
  FASTDET_CHECK(num_classes >= 1,
                "postprocess: a yolov7-raw output needs at least 6 channels, got ",
                levels[0].channels);
  const ClassFilter filter(options.classes, num_classes);
  return per_image(
      transforms, options, ClassShift::YoloV7MaxWh, [&](int64_t image, Candidates& out) {
        std::vector<float> class_probs(num_classes);
        int64_t row_index = 0;
        for (const YoloV7RawLevel& level : levels) {
          const int64_t cells = level.anchors * level.ny * level.nx;
          const float* rows = level.data + image * cells * level.channels;
          for (int64_t cell = 0; cell < cells; ++cell, ++row_index) {
            const float* logits = rows + cell * level.channels;
            const float obj = sigmoid(logits[4]);
            if (!(obj > options.conf) && !std::isnan(obj)) continue;
            const int64_t anchor = cell / (level.ny * level.nx);
            const int64_t y = (cell / level.nx) % level.ny;
            const int64_t x = cell % level.nx;
            float center_size[4], box[4];
            decode_yolov7_raw_box(logits, static_cast<float>(x), static_cast<float>(y),
                                  level.stride, level.anchor_sizes[anchor * 2],
                                  level.anchor_sizes[anchor * 2 + 1], center_size);
            center_size_to_corners(center_size[0], center_size[1], center_size[2], center_size[3],
                                   box);
            check_finite_box(box, obj, image, row_index);
            for (int64_t k = 0; k < num_classes; ++k) {
              class_probs[k] = sigmoid(logits[5 + k]);
            }
            check_scores_not_nan(box, class_probs.data(), num_classes, image, row_index);
            add_yolov7_row(box, obj, class_probs.data(), num_classes, options, filter, out);
          }
        }
      });
}

std::vector<DetectionList> postprocess_damo_cpu(const DamoOutput& output,
                                                const std::vector<BoxTransform>& transforms,
                                                const PostprocessOptions& options) {
  const ClassFilter filter(options.classes, output.classes);
  return per_image(transforms, options, ClassShift::BatchedNms,
                   [&](int64_t image, Candidates& out) {
                     const float* scores = output.scores + image * output.rows * output.classes;
                     const float* boxes = output.boxes + image * output.rows * 4;
                     for (int64_t n = 0; n < output.rows; ++n) {
                       const float* row_scores = scores + n * output.classes;
                       const float* box = boxes + n * 4;
                       check_scores_not_nan(box, row_scores, output.classes, image, n);
                       if (options.multi_label) {
                         for (int64_t k = 0; k < output.classes; ++k) {
                           if (row_scores[k] > options.conf && filter.accepts(k)) {
                             check_finite_box(box, row_scores[k], image, n);
                             out.add(box, row_scores[k], static_cast<int32_t>(k));
                           }
                         }
                         continue;
                       }
                       int64_t best = 0;
                       for (int64_t k = 1; k < output.classes; ++k) {
                         if (row_scores[k] > row_scores[best]) best = k;
                       }
                       if (row_scores[best] > options.conf && filter.accepts(best)) {
                         check_finite_box(box, row_scores[best], image, n);
                         out.add(box, row_scores[best], static_cast<int32_t>(best));
                       }
                     }
                   });
}

std::vector<DetectionList> postprocess_end2end_cpu(const End2EndOutput& output,
                                                   const std::vector<BoxTransform>& transforms,
                                                   const PostprocessOptions& options) {
  return per_image(transforms, options, ClassShift::None, [&](int64_t image, Candidates& out) {
    const int64_t count = std::min<int64_t>(output.num_dets[image], output.k);
    for (int64_t n = 0; n < count; ++n) {
      const float score = output.scores[image * output.k + n];
      const int32_t cls = output.classes[image * output.k + n];
      if (!(score > options.conf)) continue;
      if (!options.classes.empty() &&
          std::find(options.classes.begin(), options.classes.end(), cls) == options.classes.end()) {
        continue;
      }
      const float* box = output.boxes + (image * output.k + n) * 4;
      check_finite_box(box, score, image, n);
      out.add(box, score, cls);
    }
  });
}

void boxes_to_original_cpu(float* boxes, int64_t n, const BoxTransform& transform) {
  for (int64_t i = 0; i < n; ++i) box_to_original(transform, boxes + i * 4);
}

}  // namespace fastdet
