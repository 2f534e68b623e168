// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of the
// checkpoint format (docs/checkpoint.md). crc32c(0, "123456789", 9) is
// 0xE3069283. Uses the SSE4.2 crc32 instruction when the CPU has it (checked
// once at run time; the file is compiled for the baseline ISA), otherwise
// slicing-by-8 tables. src/checkpoint.ts has the same slicing-by-8 in TypeScript.
#pragma once
#include <cstddef>
#include <cstdint>

namespace nc {

/// The CRC32C of data[0..n) continuing from `crc` (0 to start; the value
/// returned for the bytes so far to continue).
uint32_t crc32c(uint32_t crc, const void* data, size_t n);
/// The same with the portable table code only (tests compare both).
uint32_t crc32cSoftware(uint32_t crc, const void* data, size_t n);
/// True when crc32c() uses the CPU's crc32 instruction.
bool crc32cHardware();

}  // namespace nc
