#include "api/list_params.hpp"

#include <cstdlib>

#include "core/ids.hpp"
#include "http/query_string.hpp"

namespace imgpipe {

namespace {

Error Bad(std::string message) { return MakeError(ErrorKind::kInvalidArgument, std::move(message)); }

// An integer from `min` to `max`, the whole text and nothing else.
bool ParseBounded(const std::string& text, long min, long max, size_t* out) {
  if (text.empty() || text.size() > 18) return false;
  char* end = nullptr;
  long n = std::strtol(text.c_str(), &end, 10);
  if (*end != '\0' || n < min || n > max) return false;
  *out = static_cast<size_t>(n);
  return true;
}

}  // namespace

Result<ImageFilter> ParseImageListQuery(std::string_view query) {
  ImageFilter f;
  if (auto v = QueryStringParam(query, "from")) {
    TimePoint t;
    if (!ParseRfc3339(*v, &t)) return Bad("from: \"" + *v + "\" is not an RFC 3339 time");
    f.received_from = t;
  }
  if (auto v = QueryStringParam(query, "to")) {
    TimePoint t;
    if (!ParseRfc3339(*v, &t)) return Bad("to: \"" + *v + "\" is not an RFC 3339 time");
    f.received_to = t;
  }
  if (auto v = QueryStringParam(query, "source")) f.source = *v;
  if (auto v = QueryStringParam(query, "status")) {
    ImageStatus s;
    if (!ParseImageStatus(*v, &s)) {
      return Bad("status: \"" + *v + "\" is not one of queued, processing, processed, failed, expired, deleted");
    }
    f.status = s;
  }
  if (auto v = QueryStringParam(query, "limit")) {
    if (!ParseBounded(*v, 1, 500, &f.limit)) return Bad("limit: must be an integer from 1 to 500");
  }
  if (auto v = QueryStringParam(query, "cursor")) {
    if (!IsValidImageId(*v)) return Bad("cursor: not a cursor returned by this API");
    f.after_id = *v;
  }
  return f;
}

Result<AuditFilter> ParseAuditQuery(std::string_view query) {
  AuditFilter filter;
  filter.limit = 100;
  if (auto v = QueryStringParam(query, "since")) {
    TimePoint t;
    if (!ParseRfc3339(*v, &t)) return Bad("since: \"" + *v + "\" is not an RFC 3339 time");
    filter.since = t;
  }
  if (auto v = QueryStringParam(query, "action")) filter.action = *v;
  if (auto v = QueryStringParam(query, "actor")) filter.actor = *v;
  if (auto v = QueryStringParam(query, "limit")) {
    if (!ParseBounded(*v, 1, 10000, &filter.limit)) return Bad("limit must be 1 to 10000");
  }
  return filter;
}

}  // namespace imgpipe
