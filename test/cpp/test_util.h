// Shared by the C++ tests: EXPECT(cond, printf-style message) counts a failure
// in `failures` and prints "FAIL file:line: message" to stdout (the first 20);
// main() returns nonzero when failures > 0.
#pragma once
#include <cstdio>

namespace {

int failures = 0;

#define EXPECT(cond, ...)                                \
  do {                                                   \
    if (!(cond) && failures++ < 20) {                    \
      std::printf("FAIL %s:%d: ", __FILE__, __LINE__);   \
      std::printf(__VA_ARGS__);                          \
      std::printf("\n");                                 \
    }                                                    \
  } while (0)

}  // namespace
