#include "crc32c.h"

#include <cstring>

namespace nc {

namespace {

constexpr uint32_t kPoly = 0x82F63B78u;

struct Tables {
  uint32_t t[8][256];
  Tables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
  }
};

const Tables& tables() {
  static const Tables tab;
  return tab;
}

// Slicing-by-8 on the running (inverted) value; little-endian loads.
uint32_t softwareRaw(uint32_t c, const uint8_t* p, size_t n) {
  const Tables& T = tables();
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    c = T.t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    --n;
  }
  while (n >= 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    lo ^= c;
    c = T.t[7][lo & 0xff] ^ T.t[6][(lo >> 8) & 0xff] ^ T.t[5][(lo >> 16) & 0xff] ^ T.t[4][lo >> 24] ^
        T.t[3][hi & 0xff] ^ T.t[2][(hi >> 8) & 0xff] ^ T.t[1][(hi >> 16) & 0xff] ^ T.t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) c = T.t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
  return c;
}

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define NC_CRC_HW 1
__attribute__((target("sse4.2"))) uint32_t hardwareRaw(uint32_t c, const uint8_t* p, size_t n) {
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    c = __builtin_ia32_crc32qi(c, *p++);
    --n;
  }
  uint64_t c64 = c;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c64 = __builtin_ia32_crc32di(c64, v);
    p += 8;
    n -= 8;
  }
  c = static_cast<uint32_t>(c64);
  while (n-- > 0) c = __builtin_ia32_crc32qi(c, *p++);
  return c;
}
bool detectHardware() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2");
}
#endif

}  // namespace

bool crc32cHardware() {
#ifdef NC_CRC_HW
  static const bool hw = detectHardware();
  return hw;
#else
  return false;
#endif
}

uint32_t crc32cSoftware(uint32_t crc, const void* data, size_t n) {
  return ~softwareRaw(~crc, static_cast<const uint8_t*>(data), n);
}

uint32_t crc32c(uint32_t crc, const void* data, size_t n) {
#ifdef NC_CRC_HW
  if (crc32cHardware()) return ~hardwareRaw(~crc, static_cast<const uint8_t*>(data), n);
#endif
  return crc32cSoftware(crc, data, n);
}

}  // namespace nc
