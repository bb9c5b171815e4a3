#pragma once

#include <span>
#include <string>
#include <string_view>

#include "http/server.hpp"

namespace imgpipe {

//! One file of the built dashboard (web/dist), compiled into the binary by cmake/EmbedAssets.cmake.
//! Lifetimes: every view points into static storage; an asset lives as long as the program.
struct DashboardAsset {
  std::string_view path;          //!< relative to web/dist, '/'-separated: "index.html", "app-3FZK2LQA.js"
  std::string_view content_type;  //!< from the file's extension, with "; charset=utf-8" for text
  std::string_view etag;          //!< strong, quoted: "\"<first 32 hex digits of the SHA-256>\""
  bool immutable = false;         //!< the name carries a content hash (esbuild's "-XXXXXXXX."), so it never changes
  std::string_view body;
};

//! The assets embedded at build time; empty when web/dist had not been built when imgpipe was compiled.
std::span<const DashboardAsset> EmbeddedDashboardAssets();

//! Answers a request under /dashboard from `assets`, before any authentication (the static app is public; every API
//! call it makes carries the bearer key):
//! - "/dashboard", "/dashboard/" and "/dashboard/index.html" give index.html, with Content-Security-Policy (same
//!   origin only, blob: images for thumbnails, frame-ancestors 'none'), X-Frame-Options, Referrer-Policy and
//!   "Cache-Control: no-cache" (revalidated through its ETag);
//! - "/dashboard/<path>" gives that asset, "Cache-Control: public, max-age=31536000, immutable" if its name is
//!   content-hashed, else "no-cache";
//! - every answer has X-Content-Type-Options: nosniff and an ETag; If-None-Match with it gives 304 and no body;
//! - an unknown path is 404; an empty `assets` is 404 for every path, with a message saying how to build the
//!   dashboard; methods other than GET and HEAD are 405 with Allow.
//! Lookup is by exact name in the table: nothing is read from the file system, so no path can escape it.
HttpResponse ServeDashboard(std::span<const DashboardAsset> assets, beast::http::verb method, std::string_view path,
                            std::string_view if_none_match, const std::string& request_id);

//! ServeDashboard over EmbeddedDashboardAssets() for a request whose first path segment is "dashboard".
HttpResponse ServeDashboard(const HttpRequest& request);

}  // namespace imgpipe
