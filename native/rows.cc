#include "rows.h"

#include <cstring>

#include "half.h"

namespace nc {

namespace {

/// count host elements -> storage (contiguous).
void packElements(DType storage, const void* in, int64_t count, void* out) {
  if (dtypeBytes(storage) == 4) {
    std::memcpy(out, in, static_cast<size_t>(count) * 4);
  } else if (storage == DType::Float16) {
    floatToHalfN(static_cast<const float*>(in), static_cast<uint16_t*>(out), count);
  } else {
    floatToBFloat16N(static_cast<const float*>(in), static_cast<uint16_t*>(out), count);
  }
}

}  // namespace

void packRows(DType storage, int64_t width, const void* in, const int32_t* src, int64_t n, void* out) {
  if (src == nullptr) {
    packElements(storage, in, n * width, out);
    return;
  }
  const size_t inRow = static_cast<size_t>(width) * 4, outRow = static_cast<size_t>(width) * dtypeBytes(storage);
  for (int64_t i = 0; i < n; ++i)
    packElements(storage, static_cast<const char*>(in) + static_cast<size_t>(src[i]) * inRow, width,
                 static_cast<char*>(out) + static_cast<size_t>(i) * outRow);
}

void unpackElements(DType storage, const void* in, int64_t count, void* out) {
  if (dtypeBytes(storage) == 4) {
    std::memcpy(out, in, static_cast<size_t>(count) * 4);
  } else if (storage == DType::Float16) {
    halfToFloatN(static_cast<const uint16_t*>(in), static_cast<float*>(out), count);
  } else {
    bfloat16ToFloatN(static_cast<const uint16_t*>(in), static_cast<float*>(out), count);
  }
}

}  // namespace nc
