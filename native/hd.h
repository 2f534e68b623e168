// Qualifiers for the headers shared by the C++ core and native/cuda (rng.h,
// half.h, draw.h, groups.h): one definition compiled for host and device.
#pragma once

#if defined(__CUDACC__)
#define NC_HD __host__ __device__
#define NC_UNROLL _Pragma("unroll")
#else
#define NC_HD
#define NC_UNROLL
#endif
