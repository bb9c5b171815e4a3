#include "api/dashboard.hpp"

namespace imgpipe {

namespace http = beast::http;

namespace {

// The app loads only its own files and talks only to this origin. Thumbnails are fetched with the bearer header
// and shown through blob: URLs, hence img-src blob:. Chart.js sizes its canvases through the CSSOM (element.style),
// which style-src does not govern, so no 'unsafe-inline' is needed.
constexpr std::string_view kContentSecurityPolicy =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

constexpr std::string_view kNotBuilt =
    "the dashboard was not built into this imgpipe binary: run `npm ci && npm run build` in web/ (scripts/build "
    "does this when npm is installed), then build imgpipe again";

// Whether an If-None-Match header names `etag` (a list of quoted tags, possibly weak, or "*").
bool EtagMatches(std::string_view if_none_match, std::string_view etag) {
  if (if_none_match.empty()) return false;
  size_t i = 0;
  while (i < if_none_match.size()) {
    while (i < if_none_match.size() && (if_none_match[i] == ' ' || if_none_match[i] == ',')) ++i;
    size_t j = if_none_match.find(',', i);
    if (j == std::string_view::npos) j = if_none_match.size();
    std::string_view tag = if_none_match.substr(i, j - i);
    while (!tag.empty() && tag.back() == ' ') tag.remove_suffix(1);
    if (tag.starts_with("W/")) tag.remove_prefix(2);
    if (tag == "*" || tag == etag) return true;
    i = j;
  }
  return false;
}

}  // namespace

HttpResponse ServeDashboard(std::span<const DashboardAsset> assets, http::verb method, std::string_view path,
                            std::string_view if_none_match, const std::string& request_id) {
  HttpResponse r;
  if (method != http::verb::get && method != http::verb::head) {
    r = ErrorResponse(MakeError(ErrorKind::kInvalidArgument, "the dashboard is static; use GET or HEAD",
                                "method_not_allowed"),
                      request_id);
    r.status = http::status::method_not_allowed;
    r.SetHeader("Allow", "GET, HEAD");
    return r;
  }
  if (assets.empty()) return ErrorResponse(MakeError(ErrorKind::kNotFound, std::string(kNotBuilt)), request_id);

  std::string_view name = path;
  if (name.starts_with("/dashboard")) name.remove_prefix(std::string_view("/dashboard").size());
  while (name.starts_with("/")) name.remove_prefix(1);
  if (name.empty()) name = "index.html";
  const DashboardAsset* found = nullptr;
  for (const DashboardAsset& a : assets) {
    if (a.path == name) {
      found = &a;
      break;
    }
  }
  if (!found) {
    return ErrorResponse(MakeError(ErrorKind::kNotFound, "the dashboard has no file \"" + std::string(name) +
                                                             "\"; the app is at /dashboard"),
                         request_id);
  }

  r.SetHeader("ETag", std::string(found->etag));
  r.SetHeader("X-Content-Type-Options", "nosniff");
  r.SetHeader("Cache-Control", found->immutable ? "public, max-age=31536000, immutable" : "no-cache");
  if (found->content_type.starts_with("text/html")) {
    r.SetHeader("Content-Security-Policy", std::string(kContentSecurityPolicy));
    r.SetHeader("X-Frame-Options", "DENY");
    r.SetHeader("Referrer-Policy", "no-referrer");
  }
  if (EtagMatches(if_none_match, found->etag)) {
    r.status = http::status::not_modified;
    r.content_type.clear();
    return r;
  }
  r.content_type = std::string(found->content_type);
  r.body = std::string(found->body);
  return r;
}

HttpResponse ServeDashboard(const HttpRequest& request) {
  HttpResponse r = ServeDashboard(EmbeddedDashboardAssets(), request.method(), request.path(),
                                  request.Header("If-None-Match"), request.request_id());
  r.route = "/dashboard";
  return r;
}

}  // namespace imgpipe
