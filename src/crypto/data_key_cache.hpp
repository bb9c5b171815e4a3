#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/clock.hpp"
#include "crypto/envelope_format.hpp"

namespace imgpipe {

//! Unwrapped data keys by their wrapped form, so reading an object again (ranges, thumbnails) does not ask the key
//! vault each time. An entry lives at most `max_age` from when it was unwrapped, however often it is used, so a
//! retired or revoked KEK stops opening objects within that time. Thread-safe.
class DataKeyCache {
 public:
  //! `clock` must outlive the cache. max_age 0 disables caching.
  DataKeyCache(const Clock& clock, std::chrono::milliseconds max_age, size_t max_entries = 4096)
      : clock_(clock), max_age_(max_age), max_entries_(max_entries) {}

  //! The cache key of a wrapped key and the additional data it was wrapped with (a digest: no key material).
  static std::string CacheKey(const WrappedKey& wrapped, std::string_view aad);

  std::optional<DataKey> Get(const std::string& cache_key);
  void Put(const std::string& cache_key, const DataKey& key);
  void Clear();
  size_t size();

 private:
  struct Entry {
    DataKey key;
    TimePoint stored;
  };
  const Clock& clock_;
  std::chrono::milliseconds max_age_;
  size_t max_entries_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace imgpipe
