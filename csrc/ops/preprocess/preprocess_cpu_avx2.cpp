// The preprocess row loops built with -mavx2 -mfma -mf16c (see CMakeLists.txt).
#define FASTDET_ROW_KERNELS_NS avx2
#define FASTDET_ROW_KERNELS_GETTER preprocess_row_kernels_avx2
#include "ops/preprocess/preprocess_row_kernels_impl.h"
