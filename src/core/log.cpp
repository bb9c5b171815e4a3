#include "core/log.hpp"

#include <boost/json/serialize.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <thread>

#include "core/clock.hpp"

namespace imgpipe {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

std::string_view LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "info";
}

// Lines are written by one background thread, so a caller (an I/O thread, say) never waits on stderr's file or
// pipe. Lifetimes: the writer is created on first use and deliberately never destroyed, so it outlives every static
// that might log during exit; FlushLogs() (registered with atexit) drains it.
class LogWriter {
 public:
  static LogWriter& Get() {
    static LogWriter* writer = [] {
      auto* w = new LogWriter();
      std::atexit([] { FlushLogs(); });
      return w;
    }();
    return *writer;
  }

  void Push(std::string line) {
    {
      std::lock_guard lock(mu_);
      if (queue_.size() >= kMaxQueued) {
        ++dropped_;
        return;
      }
      queue_.push_back(std::move(line));
    }
    cv_.notify_one();
  }

  void Flush() {
    std::unique_lock lock(mu_);
    drained_.wait_for(lock, std::chrono::seconds(5), [this] { return queue_.empty() && !writing_; });
  }

 private:
  // Bounded so a stuck stderr cannot eat the memory; beyond it lines are counted and reported as dropped.
  static constexpr size_t kMaxQueued = 100000;

  LogWriter() { std::thread([this] { Run(); }).detach(); }

  void Run() {
    std::deque<std::string> batch;
    for (;;) {
      uint64_t dropped = 0;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return !queue_.empty(); });
        batch.swap(queue_);
        dropped = dropped_;
        dropped_ = 0;
        writing_ = true;
      }
      for (const std::string& line : batch) std::fwrite(line.data(), 1, line.size(), stderr);
      if (dropped > 0) std::fprintf(stderr, "{\"level\":\"warn\",\"msg\":\"log lines dropped\",\"lines\":%llu}\n",
                                    static_cast<unsigned long long>(dropped));
      std::fflush(stderr);
      batch.clear();
      {
        std::lock_guard lock(mu_);
        writing_ = false;
      }
      drained_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable drained_;
  std::deque<std::string> queue_;
  uint64_t dropped_ = 0;
  bool writing_ = false;
};

}  // namespace

void SetLogLevel(LogLevel level) { g_level = static_cast<int>(level); }

bool ParseLogLevel(std::string_view text, LogLevel* out) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn, LogLevel::kError}) {
    if (LevelName(l) == text) {
      *out = l;
      return true;
    }
  }
  return false;
}

void Log(LogLevel level, std::string_view msg, boost::json::object fields) {
  if (static_cast<int>(level) < g_level.load(std::memory_order_relaxed)) return;
  boost::json::object line;
  line["ts"] = FormatRfc3339(std::chrono::system_clock::now());
  line["level"] = LevelName(level);
  line["msg"] = msg;
  for (auto& kv : fields) line[kv.key()] = std::move(kv.value());
  std::string text = boost::json::serialize(line);
  text.push_back('\n');
  LogWriter::Get().Push(std::move(text));
}

void FlushLogs() { LogWriter::Get().Flush(); }

}  // namespace imgpipe
