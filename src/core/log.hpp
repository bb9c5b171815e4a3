#pragma once

#include <boost/json/object.hpp>

#include <string_view>

namespace imgpipe {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

//! Structured logging: one JSON object per line on stderr, with "ts", "level", "msg" and the given fields.
//! Thread-safe and never blocks on stderr: a background thread writes the lines (at most 100k queued; beyond that
//! lines are dropped and counted). Never pass image bytes, keys or tokens as fields.
void Log(LogLevel level, std::string_view msg, boost::json::object fields = {});
//! Waits (up to 5 s) until every line logged so far is written. Runs at exit too.
void FlushLogs();
void SetLogLevel(LogLevel level);
//! Parses "debug" | "info" | "warn" | "error"; false if unknown.
bool ParseLogLevel(std::string_view text, LogLevel* out);

inline void LogInfo(std::string_view msg, boost::json::object fields = {}) { Log(LogLevel::kInfo, msg, std::move(fields)); }
inline void LogWarn(std::string_view msg, boost::json::object fields = {}) { Log(LogLevel::kWarn, msg, std::move(fields)); }
inline void LogError(std::string_view msg, boost::json::object fields = {}) { Log(LogLevel::kError, msg, std::move(fields)); }
inline void LogDebug(std::string_view msg, boost::json::object fields = {}) { Log(LogLevel::kDebug, msg, std::move(fields)); }

}  // namespace imgpipe
