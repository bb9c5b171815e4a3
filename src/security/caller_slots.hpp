#pragma once

#include <mutex>
#include <string>
#include <unordered_map>

namespace imgpipe {

//! At most `per_caller` things at once per caller (concurrent uploads per API key, limits.uploads_per_key).
//! Thread-safe; memory is one entry per caller with something in progress.
class CallerSlots {
 public:
  explicit CallerSlots(int per_caller) : per_caller_(per_caller) {}

  //! A held slot, given back when destroyed. Empty (false) when the caller was at its limit.
  class Slot {
   public:
    Slot() = default;
    Slot(CallerSlots* owner, std::string caller) : owner_(owner), caller_(std::move(caller)) {}
    Slot(Slot&& other) noexcept : owner_(other.owner_), caller_(std::move(other.caller_)) { other.owner_ = nullptr; }
    Slot& operator=(Slot&&) = delete;
    Slot(const Slot&) = delete;
    ~Slot() {
      if (owner_ != nullptr) owner_->Give(caller_);
    }
    explicit operator bool() const { return owner_ != nullptr; }

   private:
    CallerSlots* owner_ = nullptr;
    std::string caller_;
  };

  Slot TryTake(const std::string& caller);
  int held(const std::string& caller) const;

 private:
  void Give(const std::string& caller);

  const int per_caller_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, int> held_;
};

}  // namespace imgpipe
