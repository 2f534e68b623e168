// PLACEHOLDER (owner: kernels work, issue 3): replaced by the kernel functions.
#include "binding.h"
namespace ncb {
void InitKernels(Napi::Env, Napi::Object) {}
}  // namespace ncb
