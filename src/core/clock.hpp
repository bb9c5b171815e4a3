#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

namespace imgpipe {

using TimePoint = std::chrono::system_clock::time_point;

//! Wall-clock time, injectable so tests can prove day-7 retention without waiting. Implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
};

class SystemClock final : public Clock {
 public:
  TimePoint Now() const override { return std::chrono::system_clock::now(); }
};

//! The system clock shifted by a fixed offset (config testing.clock_offset): lets a whole process live "8 days
//! later" so tests can prove retention without waiting. Thread-safe.
class OffsetClock final : public Clock {
 public:
  explicit OffsetClock(std::chrono::microseconds offset) : offset_(offset) {}
  TimePoint Now() const override { return std::chrono::system_clock::now() + offset_; }

 private:
  std::chrono::microseconds offset_;
};

//! A clock that moves only when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(TimePoint start) : micros_(ToMicros(start)) {}
  TimePoint Now() const override { return TimePoint(std::chrono::microseconds(micros_.load())); }
  void Set(TimePoint t) { micros_ = ToMicros(t); }
  void Advance(std::chrono::microseconds d) { micros_ += d.count(); }

 private:
  static int64_t ToMicros(TimePoint t) {
    return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  }
  std::atomic<int64_t> micros_;
};

//! Microseconds since the Unix epoch; the unit the warehouse stores times in.
inline int64_t ToUnixMicros(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}
inline TimePoint FromUnixMicros(int64_t us) { return TimePoint(std::chrono::microseconds(us)); }

//! RFC 3339 in UTC with millisecond precision, e.g. "2026-11-25T22:55:42.123Z".
std::string FormatRfc3339(TimePoint t);
//! Parses RFC 3339 ("2026-11-25T22:55:42Z", with optional fraction and offset) or a date "2026-11-25"; false if not.
bool ParseRfc3339(std::string_view text, TimePoint* out);

}  // namespace imgpipe
