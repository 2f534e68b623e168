// The AMX-BF16 tier: bfloat16 and float16 cache rows scored with AMX tiles
// (tdpbf16ps; a float16 row split exactly into two bfloat16 rows),
// everything else (float32 rows, tiles holding inf or NaN, the epilogues)
// from the AVX-512 tier. Compiled with -mamx-tile -mamx-bf16 and the AVX-512 flags and entered
// only after CPUID/XGETBV and the Linux permission for the tile data
// (dispatch.cc). The same rules as the other tier files: an anonymous
// namespace, intrinsics only, no inline library function (scripts/test-cpp.js
// checks the object with nm).
//
// Precision: the query is split into two bfloat16 parts, hi = bf16(q) and
// lo = bf16(q - hi) (driver.cc packBf16Queries), and every tile sums both
// products, row . hi + row . lo; the products of bfloat16 pairs are exact
// in float32, so a score differs from the float32 kernels' only by the
// q - hi - lo remainder (about 2^-17 of |q|) and the order of the sums
// (docs/kernels.md "The AMX tier").
#include "tier.h"

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512F__)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

namespace nc {
namespace cpu {
namespace {

static_assert(kTileRows == 24 && kQueryBlock == 16, "the AMX tiles are laid out for 24-row tiles of 16 queries");

/// The tile configuration (palette 1): for a K step of 32 bfloat16,
///   tmm0, tmm1: scores of rows 0-15 and 16-23, query block 0 (16 float32 wide)
///   tmm2, tmm3: the same for query block 1
///   tmm4, tmm5: cache rows 0-15 and 16-23 (32 bfloat16 each)
///   tmm6, tmm7: the query block's hi and lo parts ([16 pairs][16 queries][2])
struct alignas(64) TileConfig {
  uint8_t palette;
  uint8_t startRow;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

void releaseTiles() { _tile_release(); }

/// ldtilecfg with the whole 64-byte block as its operand: GCC 12's
/// _tile_loadconfig names only its first 8 bytes, so the stores of the rows
/// and widths could be dropped as dead.
void loadTileConfig(const TileConfig& c) { __asm__ volatile("ldtilecfg %0" : : "m"(c) : "memory"); }

void loadConfig() {
  TileConfig c{};
  c.palette = 1;
  const uint8_t rows[8] = {16, 8, 16, 8, 16, 8, 16, 16};
  for (int i = 0; i < 8; ++i) {
    c.rows[i] = rows[i];
    c.colsb[i] = 64;
  }
  loadTileConfig(c);
}

/// NB (1 or 2) query blocks against up to 24 rows.
/// NB (1 or 2) query blocks against up to 24 rows: row . hi + row . lo per
/// score, plus rowLo . hi when the rows come in two bfloat16 parts (float16
/// rows, rowsLo not null; the same row tiles are reloaded with the low part).
template <int NB>
void tilePass(const uint16_t* qhi, const uint16_t* qlo, int64_t kpad, const uint16_t* rows, const uint16_t* rowsLo,
              int64_t rowBytes, float* sb) {
  const int64_t blockElems = kpad * 16;  // bfloat16 values per query block of a pack
  _tile_zero(0);
  _tile_zero(1);
  if (NB == 2) {
    _tile_zero(2);
    _tile_zero(3);
  }
  const char* r0 = reinterpret_cast<const char*>(rows);
  const char* r16 = r0 + 16 * rowBytes;
  const char* l0 = reinterpret_cast<const char*>(rowsLo);
  const char* l16 = l0 + 16 * rowBytes;
  for (int64_t k = 0; k < kpad; k += 32) {
    _tile_loadd(4, r0 + k * 2, rowBytes);
    _tile_loadd(5, r16 + k * 2, rowBytes);
    // B tiles: 16 rows (pairs of k) of 64 bytes (16 queries x 2), contiguous.
    _tile_loadd(6, qhi + k * 16, 64);
    _tile_loadd(7, qlo + k * 16, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 5, 6);
    _tile_dpbf16ps(0, 4, 7);
    _tile_dpbf16ps(1, 5, 7);
    if (NB == 2) {
      _tile_loadd(6, qhi + blockElems + k * 16, 64);
      _tile_loadd(7, qlo + blockElems + k * 16, 64);
      _tile_dpbf16ps(2, 4, 6);
      _tile_dpbf16ps(3, 5, 6);
      _tile_dpbf16ps(2, 4, 7);
      _tile_dpbf16ps(3, 5, 7);
    }
    if (rowsLo != nullptr) {
      _tile_loadd(4, l0 + k * 2, rowBytes);
      _tile_loadd(5, l16 + k * 2, rowBytes);
      if (NB == 2) {
        _tile_dpbf16ps(2, 4, 6);  // tmm6 holds block 1's hi part
        _tile_dpbf16ps(3, 5, 6);
        _tile_loadd(7, qhi + k * 16, 64);
        _tile_dpbf16ps(0, 4, 7);
        _tile_dpbf16ps(1, 5, 7);
      } else {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 5, 6);
      }
    }
  }
  _tile_stored(0, sb, 64);
  _tile_stored(1, sb + 16 * 16, 64);
  if (NB == 2) {
    _tile_stored(2, sb + kTileRows * 16, 64);
    _tile_stored(3, sb + kTileRows * 16 + 16 * 16, 64);
  }
}

void gemmBlocksBf16Amx(const uint16_t* qhi, const uint16_t* qlo, int64_t nblk, int64_t kpad, const uint16_t* rows,
                       const uint16_t* rowsLo, int64_t rowBytes, int64_t nrows, float scale, float* sb) {
  // The configuration is loaded by bf16Begin (loadConfig) once per chunk.
  const int64_t blockElems = kpad * 16;
  for (int64_t b = 0; b < nblk;) {
    float* out = sb + b * kTileRows * 16;
    if (b + 1 < nblk) {
      tilePass<2>(qhi + b * blockElems, qlo + b * blockElems, kpad, rows, rowsLo, rowBytes, out);
      b += 2;
    } else {
      tilePass<1>(qhi + b * blockElems, qlo + b * blockElems, kpad, rows, rowsLo, rowBytes, out);
      b += 1;
    }
  }
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int64_t b = 0; b < nblk; ++b) {
    float* o = sb + b * kTileRows * 16;
    for (int64_t r = 0; r < nrows; ++r) _mm512_storeu_ps(o + r * 16, _mm512_mul_ps(_mm512_loadu_ps(o + r * 16), vscale));
  }
}

/// A float16 row as two bfloat16 parts, hi = bf16(x) and lo = bf16(x - hi),
/// exactly (x has 11 significant bits, hi 8, the rest at most 4); zero from
/// n to kpad.
void splitRowF16Amx(const uint16_t* src, int64_t n, int64_t kpad, uint16_t* hi, uint16_t* lo) {
  int64_t i = 0;
  for (; i < kpad; i += 16) {
    const int64_t left = n - i;
    const __mmask16 m = left >= 16 ? static_cast<__mmask16>(0xFFFF)
                        : left <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << left) - 1);
    const __m512 x = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src + i));
    const __m256i h = (__m256i)_mm512_cvtneps_pbh(x);
    const __m512 hx = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    // A non-finite value is all in hi (inf - inf would make lo NaN).
    const __mmask16 nonFinite = _mm512_fpclass_ps_mask(x, 0x99);  // QNaN, +-inf, SNaN
    const __m512 d = _mm512_mask_mov_ps(_mm512_sub_ps(x, hx), nonFinite, _mm512_setzero_ps());
    const __m256i l = (__m256i)_mm512_cvtneps_pbh(d);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(hi + i), h);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(lo + i), l);
  }
}

/// 1 when none of the n float16 (storage 1) or bfloat16 (2) values is inf or
/// NaN (exponent bits all ones).
int32_t finite16Amx(const uint16_t* src, int32_t storage, int64_t n) {
  const __m512i expMask = _mm512_set1_epi16(static_cast<short>(storage == 1 ? 0x7c00 : 0x7f80));
  __mmask32 bad = 0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512i v = _mm512_and_si512(_mm512_loadu_si512(src + i), expMask);
    bad |= _mm512_cmpeq_epi16_mask(v, expMask);
  }
  if (i < n) {
    const __mmask32 m = static_cast<__mmask32>((1u << (n - i)) - 1);
    const __m512i v = _mm512_and_si512(_mm512_maskz_loadu_epi16(m, src + i), expMask);
    bad |= _mm512_mask_cmpeq_epi16_mask(m, v, expMask);
  }
  return bad == 0 ? 1 : 0;
}

/// The AMX peak probe: 4 independent 16 x 16 x 32 bfloat16 tile products
/// per round (tmm0-3 accumulate, tmm4-7 hold the operands), on ordinary
/// values in [1, 2) rather than zero tiles, as real data.
double peakLoopAmx(int64_t iters) {
  TileConfig c{};
  c.palette = 1;
  for (int i = 0; i < 8; ++i) {
    c.rows[i] = 16;
    c.colsb[i] = 64;
  }
  loadTileConfig(c);
  alignas(64) uint16_t operand[4][16 * 32];
  uint32_t x = 12345u;
  for (int t = 0; t < 4; ++t)
    for (int i = 0; i < 16 * 32; ++i) {
      x = x * 1664525u + 1013904223u;
      operand[t][i] = static_cast<uint16_t>(0x3f80u + ((x >> 16) & 0x7fu));  // 1 + m/128
    }
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, operand[0], 64);
  _tile_loadd(5, operand[1], 64);
  _tile_loadd(6, operand[2], 64);
  _tile_loadd(7, operand[3], 64);
  for (int64_t it = 0; it < iters; ++it) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 5, 6);
    _tile_dpbf16ps(2, 4, 7);
    _tile_dpbf16ps(3, 5, 7);
  }
  alignas(64) float out[16 * 16];
  _tile_stored(0, out, 64);
  _tile_release();
  volatile float sink = out[0];
  (void)sink;
  return static_cast<double>(iters) * 4 * 16 * 16 * 32 * 2;
}

// Only the tile parts: dispatch.cc's amxMicroKernel() adds them to the
// AVX-512 kernel (a constant here: a static built at run time would bring
// C++ runtime symbols into this object).
const MicroKernel kAmxTileParts = {nullptr,    nullptr,      nullptr,        peakLoopAmx, gemmBlocksBf16Amx,
                                   loadConfig, releaseTiles, splitRowF16Amx, finite16Amx};

}  // namespace

const MicroKernel* amxTileParts() { return &kAmxTileParts; }

}  // namespace cpu
}  // namespace nc

#else

namespace nc {
namespace cpu {
const MicroKernel* amxTileParts() { return nullptr; }
}  // namespace cpu
}  // namespace nc

#endif
