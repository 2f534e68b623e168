#include "rows.h"

#include <cstring>

#include "half.h"

namespace nc {

void packRows(DType storage, int64_t width, const void* in, const int32_t* src, int64_t n, void* out) {
  const size_t eb = dtypeBytes(storage);
  if (src == nullptr) {  // contiguous: one conversion of n * width elements
    const int64_t count = n * width;
    switch (storage) {
      case DType::Float32:
      case DType::Int32:
        std::memcpy(out, in, static_cast<size_t>(count) * 4);
        break;
      case DType::Float16:
        floatToHalfN(static_cast<const float*>(in), static_cast<uint16_t*>(out), count);
        break;
      case DType::BFloat16:
        floatToBFloat16N(static_cast<const float*>(in), static_cast<uint16_t*>(out), count);
        break;
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const void* row = static_cast<const char*>(in) + static_cast<size_t>(src[i]) * static_cast<size_t>(width) * 4;
    packRows(storage, width, row, nullptr, 1, static_cast<char*>(out) + static_cast<size_t>(i * width) * eb);
  }
}

void unpackElements(DType storage, const void* in, int64_t count, void* out) {
  switch (storage) {
    case DType::Float32:
    case DType::Int32:
      std::memcpy(out, in, static_cast<size_t>(count) * 4);
      break;
    case DType::Float16:
      halfToFloatN(static_cast<const uint16_t*>(in), static_cast<float*>(out), count);
      break;
    case DType::BFloat16:
      bfloat16ToFloatN(static_cast<const uint16_t*>(in), static_cast<float*>(out), count);
      break;
  }
}

}  // namespace nc
