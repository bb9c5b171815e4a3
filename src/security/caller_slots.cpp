#include "security/caller_slots.hpp"

namespace imgpipe {

CallerSlots::Slot CallerSlots::TryTake(const std::string& caller) {
  std::lock_guard lock(mu_);
  int& n = held_[caller];
  if (n >= per_caller_) return {};
  ++n;
  return Slot(this, caller);
}

void CallerSlots::Give(const std::string& caller) {
  std::lock_guard lock(mu_);
  auto it = held_.find(caller);
  if (it == held_.end()) return;
  if (--it->second <= 0) held_.erase(it);
}

int CallerSlots::held(const std::string& caller) const {
  std::lock_guard lock(mu_);
  auto it = held_.find(caller);
  return it == held_.end() ? 0 : it->second;
}

}  // namespace imgpipe
