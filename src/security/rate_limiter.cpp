#include "security/rate_limiter.hpp"

#include <algorithm>
#include <cmath>

namespace imgpipe {

RateLimiter::RateLimiter(Options options, const Clock& clock) : options_(options), clock_(clock) {
  options_.burst = std::max(1.0, options_.burst);
}

double RateLimiter::Refilled(const Bucket& b, TimePoint now) const {
  const double seconds = std::chrono::duration<double>(now - b.at).count();
  return std::min(options_.burst, b.tokens + std::max(0.0, seconds) * options_.per_second);
}

std::optional<std::chrono::milliseconds> RateLimiter::Take(const std::string& caller) {
  const TimePoint now = clock_.Now();
  std::lock_guard lock(mu_);
  if (buckets_.size() >= options_.max_callers && !buckets_.contains(caller)) {
    // Forget callers whose bucket is full again: they lose nothing by starting over.
    std::erase_if(buckets_, [&](const auto& entry) { return Refilled(entry.second, now) >= options_.burst; });
  }
  auto [it, fresh] = buckets_.try_emplace(caller, Bucket{options_.burst, now});
  Bucket& b = it->second;
  b.tokens = Refilled(b, now);
  b.at = now;
  if (b.tokens >= 1.0) {
    b.tokens -= 1.0;
    return std::nullopt;
  }
  const double wait = (1.0 - b.tokens) / options_.per_second;
  return std::chrono::milliseconds(static_cast<int64_t>(std::ceil(wait * 1000)));
}

size_t RateLimiter::callers() const {
  std::lock_guard lock(mu_);
  return buckets_.size();
}

}  // namespace imgpipe
