#include "common.h"

namespace nc {
/// Version of the native core's ABI between binding/ and native/.
const char* coreVersion() { return "0.1.0"; }
}  // namespace nc
