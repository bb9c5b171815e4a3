#include "core/clock.hpp"

#include <cstdio>
#include <ctime>
#include <string_view>

namespace imgpipe {

std::string FormatRfc3339(TimePoint t) {
  auto us = ToUnixMicros(t);
  int64_t secs = us >= 0 ? us / 1000000 : (us - 999999) / 1000000;
  int ms = static_cast<int>((us - secs * 1000000) / 1000);
  time_t tt = static_cast<time_t>(secs);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

bool ParseRfc3339(std::string_view s, TimePoint* out) {
  auto digits = [&](size_t pos, size_t n, int* v) {
    if (pos + n > s.size()) return false;
    int r = 0;
    for (size_t i = pos; i < pos + n; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
      r = r * 10 + (s[i] - '0');
    }
    *v = r;
    return true;
  };
  int y, mo, d, h = 0, mi = 0, sec = 0;
  if (!digits(0, 4, &y) || s.size() < 10 || s[4] != '-' || !digits(5, 2, &mo) || s[7] != '-' ||
      !digits(8, 2, &d)) {
    return false;
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31) return false;
  size_t pos = 10;
  int64_t micros = 0;
  int64_t offset_s = 0;
  if (pos < s.size()) {
    if (s[pos] != 'T' && s[pos] != 't' && s[pos] != ' ') return false;
    if (!digits(pos + 1, 2, &h) || s.size() < pos + 9 || s[pos + 3] != ':' || !digits(pos + 4, 2, &mi) ||
        s[pos + 6] != ':' || !digits(pos + 7, 2, &sec)) {
      return false;
    }
    if (h > 23 || mi > 59 || sec > 60) return false;
    pos += 9;
    if (pos < s.size() && s[pos] == '.') {
      ++pos;
      int64_t scale = 100000;
      size_t start = pos;
      while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
        if (scale > 0) micros += (s[pos] - '0') * scale;
        scale /= 10;
        ++pos;
      }
      if (pos == start) return false;
    }
    if (pos >= s.size()) return false;
    if (s[pos] == 'Z' || s[pos] == 'z') {
      ++pos;
    } else if (s[pos] == '+' || s[pos] == '-') {
      int oh, om;
      if (!digits(pos + 1, 2, &oh) || s.size() < pos + 6 || s[pos + 3] != ':' || !digits(pos + 4, 2, &om)) {
        return false;
      }
      offset_s = (oh * 3600 + om * 60) * (s[pos] == '+' ? 1 : -1);
      pos += 6;
    } else {
      return false;
    }
    if (pos != s.size()) return false;
  }
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  time_t secs = timegm(&tm);
  // TimePoint counts nanoseconds in 64 bits: about 1678 to 2261. Times outside it (found by the fuzz targets under
  // UBSan: the conversion overflowed) are refused rather than wrapped.
  const int64_t unix_seconds = static_cast<int64_t>(secs) - offset_s;
  if (unix_seconds < -9'000'000'000LL || unix_seconds > 9'000'000'000LL) return false;
  *out = FromUnixMicros(unix_seconds * 1000000 + micros);
  return true;
}

}  // namespace imgpipe
