// Shared types and the error policy of the native core (no Node-API here).
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace nc {

/// Storage type of one cache column. Float columns are read and written as
/// float32 by every API; Float16/BFloat16 only change how rows are stored.
enum class DType : int32_t { Float32 = 0, Float16 = 1, BFloat16 = 2, Int32 = 3 };

inline size_t dtypeBytes(DType t) {
  return (t == DType::Float16 || t == DType::BFloat16) ? 2 : 4;
}
inline bool isFloat(DType t) { return t != DType::Int32; }

/// Error raised by the native core. `code` is a stable machine-readable tag
/// (e.g. "ERR_ARGUMENT", "ERR_OUT_OF_MEMORY", "ERR_CUDA") that the binding
/// turns into a NegativeCacheError with `.code`.
class Error : public std::runtime_error {
 public:
  Error(std::string code, const std::string& message)
      : std::runtime_error(message), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

}  // namespace nc

#define NC_STRINGIFY2(x) #x
#define NC_STRINGIFY(x) NC_STRINGIFY2(x)
/// Throws nc::Error(code, msg + " (file:line)") when cond is false.
#define NC_CHECK(cond, code, msg)                                                  \
  do {                                                                             \
    if (!(cond))                                                                   \
      throw ::nc::Error((code), std::string(msg) + " (" __FILE__ ":" NC_STRINGIFY( \
                                                   __LINE__) ")");                \
  } while (0)
