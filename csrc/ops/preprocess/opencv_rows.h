// OpenCV's uint8 INTER_LINEAR one output row at a time on the CPU (preprocess_math.h has the
// arithmetic), shared by preprocess_cpu (rows mapped into float planes) and resize_cpu (rows
// written to a uint8 image).
#pragma once

#include <cstdint>
#include <vector>

#include "ops/preprocess/preprocess.h"

namespace fastdet {

// The taps of one resize, computed once before its rows are processed in parallel.
struct OpenCVLinearPlan {
  int64_t dst_width = 0;
  bool halves = false;           // exact 2x downscale: OpenCV's 2x2 mean instead of the taps
  bool rows_are_packed = false;  // rows can be read in place (3 bytes per pixel, width >= 2)
  std::vector<int32_t> offset;   // per output pixel: byte of its first tap in a packed row
  std::vector<int16_t> weights;  // per output pixel: w0, w1, w0, w1, w0, w1, 0, 0
  int64_t vector_end = 0;        // pixels whose 16-byte read from `offset` stays in the row
  // Every column takes one source pixel whole (weight 2048; e.g. a 3x downscale): the byte of
  // that pixel. A row that does the same is then a copy of those pixels.
  bool whole_columns = false;
  std::vector<int32_t> whole;
  std::vector<FixedTap> rows;  // per output row
};

OpenCVLinearPlan make_opencv_linear_plan(const ImageView& image, int64_t dst_height,
                                         int64_t dst_width);

// Row y as 3 interleaved bytes per pixel in `buffer`, plus one copy of its last pixel so that
// the right neighbour a tap reads (with weight 0) exists even in a one-pixel-wide image.
const uint8_t* packed_row(const ImageView& image, int64_t y, std::vector<uint8_t>& buffer);

// Per-thread copies of source rows that cannot be read in place.
struct RowCopies {
  std::vector<uint8_t> a;
  std::vector<uint8_t> b;
};

// Writes output row y (3 * dst_width bytes) of the resize of `image`.
void opencv_linear_row(const OpenCVLinearPlan& plan, const ImageView& image, int64_t y,
                       RowCopies& copies, uint8_t* out);

}  // namespace fastdet
