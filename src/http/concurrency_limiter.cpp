#include "http/concurrency_limiter.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>

namespace imgpipe {

namespace asio = boost::asio;

asio::awaitable<bool> ConcurrencyLimiter::Acquire(std::chrono::milliseconds wait) {
  std::shared_ptr<Waiter> me;
  {
    std::lock_guard lock(mu_);
    if (in_use_ < max_) {
      ++in_use_;
      co_return true;
    }
    if (wait.count() <= 0) co_return false;
    me = std::make_shared<Waiter>(co_await asio::this_coro::executor);
    me->timer.expires_after(wait);
    waiters_.push_back(me);
  }
  boost::system::error_code ec;
  co_await me->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  std::lock_guard lock(mu_);
  // Granted even if the timer ran out first: Release() moved the slot to us before we looked.
  if (me->granted) co_return true;
  waiters_.remove(me);
  co_return false;
}

void ConcurrencyLimiter::Release() {
  std::lock_guard lock(mu_);
  if (waiters_.empty()) {
    --in_use_;
    return;
  }
  std::shared_ptr<Waiter> next = std::move(waiters_.front());
  waiters_.pop_front();
  next->granted = true;
  // A timer is not thread-safe: cancel it on the executor its wait runs on.
  asio::post(next->timer.get_executor(), [next] { next->timer.cancel(); });
}

int ConcurrencyLimiter::in_use() const {
  std::lock_guard lock(mu_);
  return in_use_;
}

int ConcurrencyLimiter::waiting() const {
  std::lock_guard lock(mu_);
  return static_cast<int>(waiters_.size());
}

}  // namespace imgpipe
