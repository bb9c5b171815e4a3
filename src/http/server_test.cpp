#include "http/server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <gtest/gtest.h>

#include <thread>

namespace imgpipe {
namespace {

TEST(RunBlockingTest, RunsOnThePoolAndResumesOnTheIoThread) {
  asio::io_context io;
  asio::thread_pool pool(2);
  std::thread::id io_thread, fn_thread, after_thread;
  bool done = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        io_thread = std::this_thread::get_id();
        int v = co_await RunBlocking(pool, [&] {
          fn_thread = std::this_thread::get_id();
          return 42;
        });
        after_thread = std::this_thread::get_id();
        done = v == 42;
      },
      asio::detached);
  io.run();
  pool.join();
  ASSERT_TRUE(done);
  EXPECT_NE(fn_thread, io_thread) << "blocking work ran on the I/O thread";
  EXPECT_EQ(after_thread, io_thread) << "the coroutine did not come back to its own executor";
}

TEST(ParseHostPortTest, AcceptsHostsAndRefusesJunk) {
  std::string host;
  uint16_t port = 0;
  ASSERT_TRUE(ParseHostPort("127.0.0.1:8080", &host, &port));
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 8080);
  ASSERT_TRUE(ParseHostPort("[::1]:0", &host, &port));
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 0);
  for (const char* bad : {"", "8080", ":8080", "host:", "host:65536", "host:80a"}) {
    EXPECT_FALSE(ParseHostPort(bad, &host, &port)) << bad;
  }
}

}  // namespace
}  // namespace imgpipe
