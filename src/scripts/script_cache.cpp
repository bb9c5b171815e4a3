#include "scripts/script_cache.hpp"

namespace imgpipe {

Result<std::shared_ptr<const ScriptBundle>> ScriptCache::Current(const std::string& name) {
  IMGPIPE_ASSIGN_OR_RETURN(std::string version, store_.CurrentVersion(name));
  const std::string key = name + "/" + version;
  {
    std::lock_guard lock(mu_);
    if (auto it = versions_.find(key); it != versions_.end()) return it->second;
  }
  // Fetched outside the lock: two threads may both fetch a new version once; both get equal bundles.
  IMGPIPE_ASSIGN_OR_RETURN(ScriptBundle bundle, store_.Get(name, version));
  auto shared = std::make_shared<const ScriptBundle>(std::move(bundle));
  std::lock_guard lock(mu_);
  return versions_.emplace(key, shared).first->second;
}

}  // namespace imgpipe
