#include "cpu_backend.h"

#include "cpu_store.h"

namespace nc {

namespace cpu {
std::unique_ptr<CacheStore> CpuBackend::createStore(std::vector<ColumnSpec> columns, int64_t size) const {
  return std::make_unique<CpuCacheStore>(std::move(columns), size);
}
}  // namespace cpu

const Backend& cpuBackend() {
  static const cpu::CpuBackend backend;
  return backend;
}

}  // namespace nc
