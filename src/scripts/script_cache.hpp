#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "scripts/script_store.hpp"

namespace imgpipe {

//! The scripts a worker runs. Each job asks for the script's current version (one small read of `<name>/current`,
//! so a push or rollback takes effect for the next job, without a restart); the version itself is fetched from blob
//! storage once and kept by (name, version): versions are immutable. Thread-safe.
class ScriptCache {
 public:
  //! `blobs` and `clock` must outlive the cache.
  ScriptCache(BlobStore& blobs, const Clock& clock) : store_(blobs, clock) {}

  //! The current version of `name`. kNotFound if the script does not exist.
  Result<std::shared_ptr<const ScriptBundle>> Current(const std::string& name);

 private:
  ScriptStore store_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<const ScriptBundle>> versions_;  // by "<name>/<version>"
};

}  // namespace imgpipe
