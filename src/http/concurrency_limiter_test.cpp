#include "http/concurrency_limiter.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

namespace imgpipe {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

TEST(ConcurrencyLimiterTest, RefusesOverTheLimitAfterTheWait) {
  asio::io_context io;
  ConcurrencyLimiter limiter(1);
  std::vector<bool> got;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        got.push_back(co_await limiter.Acquire(0ms));
        got.push_back(co_await limiter.Acquire(0ms));
        got.push_back(co_await limiter.Acquire(20ms));
      },
      asio::detached);
  io.run();
  EXPECT_EQ(got, (std::vector<bool>{true, false, false}));
  EXPECT_EQ(limiter.in_use(), 1);
  EXPECT_EQ(limiter.waiting(), 0) << "a waiter that gave up must leave the queue";
}

TEST(ConcurrencyLimiterTest, AReleasedSlotGoesToTheOldestWaiter) {
  asio::io_context io;
  ConcurrencyLimiter limiter(1);
  std::vector<int> order;
  asio::co_spawn(
      io, [&]() -> asio::awaitable<void> { EXPECT_TRUE(co_await limiter.Acquire(0ms)); }, asio::detached);
  io.run();
  io.restart();
  for (int i = 0; i < 2; ++i) {
    asio::co_spawn(
        io,
        [&, i]() -> asio::awaitable<void> {
          if (co_await limiter.Acquire(std::chrono::hours(1))) {
            order.push_back(i);
            limiter.Release();
          }
        },
        asio::detached);
  }
  io.poll();
  EXPECT_EQ(limiter.waiting(), 2);
  limiter.Release();
  io.run();
  EXPECT_EQ(order, (std::vector<int>{0, 1}));
  EXPECT_EQ(limiter.in_use(), 0);
}

}  // namespace
}  // namespace imgpipe
