#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "core/clock.hpp"

namespace imgpipe {

//! Token buckets, one per caller (an API key id or a client address): each holds up to `burst` tokens, refilled at
//! `per_second`; a request takes one. Thread-safe. Buckets that are full again are forgotten when the table grows
//! past `max_callers`, so memory stays bounded whatever the number of addresses.
class RateLimiter {
 public:
  struct Options {
    double per_second = 10;
    double burst = 20;
    size_t max_callers = 100'000;
  };
  RateLimiter(Options options, const Clock& clock);

  //! nullopt if `caller` may go ahead (a token is taken); otherwise how long until it may, rounded up.
  std::optional<std::chrono::milliseconds> Take(const std::string& caller);

  size_t callers() const;

 private:
  struct Bucket {
    double tokens;
    TimePoint at;
  };
  double Refilled(const Bucket& b, TimePoint now) const;

  Options options_;
  const Clock& clock_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_;
};

}  // namespace imgpipe
