#include "crypto/data_key_cache.hpp"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <memory>

namespace imgpipe {

namespace {

// SHA-256 of `data` into `out` (32 bytes). OpenSSL 3's one-shot SHA256() fetches the algorithm from its provider and
// sets up a context on every call, which cost about 10 microseconds per object read here, far more than the digest
// of these 200 bytes: the algorithm is fetched once and each thread keeps its context.
void Sha256Into(std::string_view data, unsigned char* out) {
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA2-256", nullptr);
  thread_local std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (md == nullptr || ctx == nullptr || EVP_DigestInit_ex2(ctx.get(), md, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), data.data(), data.size()) != 1 || EVP_DigestFinal_ex(ctx.get(), out, nullptr) != 1) {
    SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), out);
  }
}

}  // namespace

std::string DataKeyCache::CacheKey(const WrappedKey& wrapped, std::string_view aad) {
  std::string material = wrapped.key_id;
  material.push_back('\0');
  material += std::to_string(wrapped.version);
  material.push_back('\0');
  material += wrapped.bytes;
  material += aad;
  std::string digest(SHA256_DIGEST_LENGTH, '\0');
  Sha256Into(material, reinterpret_cast<unsigned char*>(digest.data()));
  return digest;
}

std::optional<DataKey> DataKeyCache::Get(const std::string& cache_key) {
  if (max_age_.count() == 0) return std::nullopt;
  std::lock_guard lock(mu_);
  auto it = entries_.find(cache_key);
  if (it == entries_.end()) return std::nullopt;
  if (clock_.Now() - it->second.stored >= max_age_) {
    entries_.erase(it);
    return std::nullopt;
  }
  return it->second.key;
}

void DataKeyCache::Put(const std::string& cache_key, const DataKey& key) {
  if (max_age_.count() == 0) return;
  std::lock_guard lock(mu_);
  TimePoint now = clock_.Now();
  if (entries_.size() >= max_entries_) {
    // Expired entries first; if all are fresh the cache is simply too small for the working set: start over
    // rather than track recency (an unwrap is a millisecond at worst).
    std::erase_if(entries_, [&](const auto& e) { return now - e.second.stored >= max_age_; });
    if (entries_.size() >= max_entries_) entries_.clear();
  }
  entries_.insert_or_assign(cache_key, Entry{key, now});
}

void DataKeyCache::Clear() {
  std::lock_guard lock(mu_);
  entries_.clear();
}

size_t DataKeyCache::size() {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace imgpipe
