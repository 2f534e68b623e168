// The argument checks of the kernel calls, shared by every backend.
#include "backend.h"

#include <cmath>
#include <limits>
#include <string>

#include "exclusions.h"

namespace nc {

namespace {

/// Total rows of a checked request.
int64_t checkRequest(const ScoreRequest& req) {
  NC_CHECK(req.batch >= 0, "ERR_ARGUMENT", "batch must be >= 0");
  NC_CHECK(req.dim >= 1, "ERR_ARGUMENT", "dim must be >= 1");
  NC_CHECK(req.batch == 0 || req.queries != nullptr, "ERR_ARGUMENT", "queries is null");
  NC_CHECK(std::isfinite(req.scale), "ERR_ARGUMENT", "scale must be finite");
  int64_t n = 0;
  for (const Segment& s : req.segments) {
    NC_CHECK(s.rows >= 0, "ERR_ARGUMENT", "segment rows must be >= 0");
    NC_CHECK(s.rows == 0 || s.data != nullptr, "ERR_ARGUMENT", "segment data is null");
    NC_CHECK(s.storage == DType::Float32 || s.storage == DType::Float16 || s.storage == DType::BFloat16,
             "ERR_ARGUMENT", "segment storage must be a float type");
    n += s.rows;
    NC_CHECK(n <= 0x7fffffffLL, "ERR_ARGUMENT", "too many cache rows (more than 2^31 - 1)");
  }
  checkExclusions(req, n);
  return n;
}

void checkParams(const SampleParams& sp) {
  NC_CHECK(sp.mode == SampleMode::Gumbel || sp.mode == SampleMode::MaxScore || sp.mode == SampleMode::None,
           "ERR_ARGUMENT", "unknown sample mode");
  NC_CHECK(sp.numDraws >= 1, "ERR_ARGUMENT", "numDraws must be >= 1");
  // The kernels scale scores by a float32 invTemp: a larger one would become inf, and inf * 0 = NaN loses draws.
  NC_CHECK(std::isfinite(sp.invTemp) && std::fabs(sp.invTemp) <= std::numeric_limits<float>::max(), "ERR_ARGUMENT",
           "invTemp must be finite and at most 3.4028234663852886e38 in magnitude (float32)");
  NC_CHECK(sp.rowOffset >= 0 && sp.columnOffset >= 0, "ERR_ARGUMENT", "rowOffset and columnOffset must be >= 0");
}

/// The offset index spaces must fit: noise rows in 32 bits, indices in int32.
void checkOffsets(const SampleParams& sp, int64_t batch, int64_t n) {
  NC_CHECK(sp.rowOffset + batch <= 0x100000000LL, "ERR_ARGUMENT", "rowOffset + batch must be <= 2^32");
  NC_CHECK(sp.columnOffset + n <= 0x7fffffffLL, "ERR_ARGUMENT", "columnOffset + rows must be < 2^31");
}

}  // namespace

void Backend::scoreAndSample(const ScoreRequest& req, const SampleParams& params, SampleOutput& out) const {
  checkParams(params);
  checkOffsets(params, req.batch, checkRequest(req));
  runScoreAndSample(req, params, out);
}

void Backend::scoreGroupMax(const ScoreRequest& req, int64_t groups, float* groupScores, int32_t* groupRows) const {
  const int64_t n = checkRequest(req);
  NC_CHECK(groups >= 1 && groups <= n, "ERR_ARGUMENT", "groups must be in [1, N]");
  runScoreGroupMax(req, groups, groupScores, groupRows);
}

void Backend::sampleCandidates(const float* scores, int64_t batch, int64_t cols, const SampleParams& params,
                               int threads, SampleOutput& out) const {
  checkParams(params);
  NC_CHECK(batch >= 0 && cols >= 0, "ERR_ARGUMENT", "batch and cols must be >= 0");
  NC_CHECK(cols <= 0x7fffffffLL, "ERR_ARGUMENT", "cols must be < 2^31");
  NC_CHECK(batch == 0 || cols == 0 || scores != nullptr, "ERR_ARGUMENT", "scores is null");
  checkOffsets(params, batch, cols);
  runSampleCandidates(scores, batch, cols, params, threads, out);
}

void Backend::scoreMatrix(const ScoreRequest& req, float* out) const {
  checkRequest(req);
  runScoreMatrix(req, out);
}

void Backend::cacheLse(const ScoreRequest& req, const float* extra, CacheLseOutput& out) const {
  checkRequest(req);
  NC_CHECK(req.batch == 0 || (out.lse != nullptr && out.weighted != nullptr), "ERR_ARGUMENT", "cacheLse outputs are null");
  runCacheLse(req, extra, out);
}

void Backend::runCacheLse(const ScoreRequest&, const float*, CacheLseOutput&) const {
  throw Error("ERR_UNSUPPORTED", std::string("negative-cache: cacheLogSumExp is not implemented on the ") + name() +
                                     " backend (use caches of the native or js backend)");
}

}  // namespace nc
