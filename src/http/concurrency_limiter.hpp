#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <list>
#include <memory>
#include <mutex>

namespace imgpipe {

//! At most `max` holders at once (requests in flight, limits.max_in_flight); a caller over the limit waits up to a
//! bound for a slot, first come first served. Thread-safe; callers may run on any executor.
class ConcurrencyLimiter {
 public:
  explicit ConcurrencyLimiter(int max) : max_(max) {}

  //! true with a slot held (give it back with Release()); false if none came free within `wait`.
  boost::asio::awaitable<bool> Acquire(std::chrono::milliseconds wait);
  //! Hands the slot to the oldest waiter, or frees it.
  void Release();
  int in_use() const;
  int waiting() const;

 private:
  struct Waiter {
    explicit Waiter(const boost::asio::any_io_executor& ex) : timer(ex) {}
    boost::asio::steady_timer timer;
    bool granted = false;  // guarded by mu_; set when Release() handed this waiter its slot
  };

  const int max_;
  mutable std::mutex mu_;
  int in_use_ = 0;
  std::list<std::shared_ptr<Waiter>> waiters_;
};

}  // namespace imgpipe
