#include "ingest/routing.hpp"

#include <boost/json.hpp>

#include <algorithm>

namespace imgpipe {
namespace {

namespace json = boost::json;

// The text a metadata condition is compared with; nullopt for values a condition cannot name (objects, arrays, null).
std::optional<std::string> MetadataText(const json::value& v) {
  if (v.is_string()) return std::string(v.get_string());
  if (v.is_bool() || v.is_number()) return json::serialize(v);
  return std::nullopt;
}

bool MetadataMatches(const RouteConfig& route, const json::object* metadata) {
  for (const auto& [key, want] : route.metadata) {
    const json::value* have = metadata != nullptr ? metadata->if_contains(key) : nullptr;
    if (have == nullptr) return false;
    const auto text = MetadataText(*have);
    if (!text || *text != want) return false;
  }
  return true;
}

bool Matches(const RouteConfig& route, const RouteFacts& facts, const json::object* metadata) {
  if (!route.source.empty() && route.source != facts.source) return false;
  if (!route.topic.empty() && route.topic != facts.topic) return false;
  if (!route.formats.empty() &&
      std::find(route.formats.begin(), route.formats.end(), facts.format) == route.formats.end()) {
    return false;
  }
  if (facts.bytes < route.min_bytes || facts.bytes > route.max_bytes) return false;
  if (facts.pixels < route.min_pixels || facts.pixels > route.max_pixels) return false;
  return MetadataMatches(route, metadata);
}

}  // namespace

std::string RouteScript(const std::vector<RouteConfig>& routes, const RouteFacts& facts, const std::string& fallback) {
  if (routes.empty()) return fallback;
  json::value parsed;
  const json::object* metadata = nullptr;
  // Parsed only when a route asks; intake validated it, so a failure here only means "no metadata to match".
  const bool wanted = std::any_of(routes.begin(), routes.end(), [](const RouteConfig& r) { return !r.metadata.empty(); });
  if (wanted) {
    json::error_code ec;
    parsed = json::parse(facts.metadata_json, ec);
    if (!ec) metadata = parsed.if_object();
  }
  for (const RouteConfig& route : routes) {
    if (Matches(route, facts, metadata)) return route.script;
  }
  return fallback;
}

}  // namespace imgpipe
