// Row conversions between the host form of a column (float32 for float
// columns, int32 for int columns) and its storage bytes, for every store.
#pragma once
#include <cstdint>

#include "common.h"

namespace nc {

/// Host rows -> storage: row i of `out` = row src[i] of `in` (row i when src
/// is null), n rows of `width` elements.
void packRows(DType storage, int64_t width, const void* in, const int32_t* src, int64_t n, void* out);
/// Storage -> host: `count` elements.
void unpackElements(DType storage, const void* in, int64_t count, void* out);

}  // namespace nc
