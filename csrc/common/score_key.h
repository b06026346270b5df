// The order both NMS implementations visit candidates in: score descending, ties by lower index
// (torchvision's stable sort). A float maps to an unsigned key whose ascending order is the
// float's descending order; -0 and +0 tie, as they compare equal. NaN never reaches this.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/host_device.h"

namespace fastdet {

FASTDET_HOST_DEVICE uint32_t descending_key(float score) {
  if (score == 0.f) score = 0.f;
  uint32_t bits;
  std::memcpy(&bits, &score, sizeof bits);
  const uint32_t ascending = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return ~ascending;
}

// The score a descending_key came from (-0 comes back as +0).
FASTDET_HOST_DEVICE float score_from_descending_key(uint32_t key) {
  const uint32_t ascending = ~key;
  const uint32_t bits = (ascending & 0x80000000u) ? (ascending & 0x7fffffffu) : ~ascending;
  float score;
  std::memcpy(&score, &bits, sizeof score);
  return score;
}

// A candidate's sort key: the score's descending key above its index, so that ascending keys
// are score descending, then index ascending. Keys of one image are unique.
FASTDET_HOST_DEVICE uint64_t candidate_key(float score, uint32_t index) {
  return (static_cast<uint64_t>(descending_key(score)) << 32) | index;
}

}  // namespace fastdet
