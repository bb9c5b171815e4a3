#include "api/dashboard.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace imgpipe {
namespace {

namespace http = beast::http;

const DashboardAsset kTestAssets[] = {
    {"index.html", "text/html; charset=utf-8", "\"aaaa\"", false, "<!doctype html><title>t</title>"},
    {"app-ABCDEFGH.js", "text/javascript; charset=utf-8", "\"bbbb\"", true, "console.log(1)"},
    {"favicon.svg", "image/svg+xml", "\"cccc\"", false, "<svg/>"},
};

std::string Header(const HttpResponse& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return v;
  }
  return "<absent>";
}

HttpResponse Get(std::string_view path, std::string_view inm = "") {
  return ServeDashboard(kTestAssets, http::verb::get, path, inm, "req-1");
}

TEST(Dashboard, RootAndIndexServeTheHtmlWithSecurityHeaders) {
  for (std::string_view path : {"/dashboard", "/dashboard/", "/dashboard/index.html"}) {
    SCOPED_TRACE(path);
    HttpResponse r = Get(path);
    EXPECT_EQ(r.status, http::status::ok);
    EXPECT_EQ(r.body, "<!doctype html><title>t</title>");
    EXPECT_EQ(r.content_type, "text/html; charset=utf-8");
    EXPECT_EQ(Header(r, "ETag"), "\"aaaa\"");
    EXPECT_EQ(Header(r, "Cache-Control"), "no-cache");
    EXPECT_EQ(Header(r, "X-Content-Type-Options"), "nosniff");
    EXPECT_EQ(Header(r, "Referrer-Policy"), "no-referrer");
    EXPECT_EQ(Header(r, "X-Frame-Options"), "DENY");
    std::string csp = Header(r, "Content-Security-Policy");
    EXPECT_NE(csp.find("default-src 'self'"), std::string::npos) << csp;
    EXPECT_NE(csp.find("frame-ancestors 'none'"), std::string::npos) << csp;
    EXPECT_EQ(csp.find("unsafe-inline"), std::string::npos) << csp;
    EXPECT_EQ(csp.find("unsafe-eval"), std::string::npos) << csp;
  }
}

TEST(Dashboard, HashedAssetsAreImmutableAndOthersRevalidate) {
  HttpResponse js = Get("/dashboard/app-ABCDEFGH.js");
  EXPECT_EQ(js.status, http::status::ok);
  EXPECT_EQ(js.body, "console.log(1)");
  EXPECT_EQ(js.content_type, "text/javascript; charset=utf-8");
  EXPECT_EQ(Header(js, "Cache-Control"), "public, max-age=31536000, immutable");
  EXPECT_EQ(Header(js, "X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(Header(js, "Content-Security-Policy"), "<absent>");

  HttpResponse svg = Get("/dashboard/favicon.svg");
  EXPECT_EQ(svg.content_type, "image/svg+xml");
  EXPECT_EQ(Header(svg, "Cache-Control"), "no-cache");
}

TEST(Dashboard, MatchingIfNoneMatchAnswers304WithoutBody) {
  for (std::string_view inm : {"\"bbbb\"", "W/\"bbbb\"", "\"zzzz\", \"bbbb\"", "*"}) {
    SCOPED_TRACE(inm);
    HttpResponse r = Get("/dashboard/app-ABCDEFGH.js", inm);
    EXPECT_EQ(r.status, http::status::not_modified);
    EXPECT_TRUE(r.body.empty());
    EXPECT_EQ(Header(r, "ETag"), "\"bbbb\"");
  }
  HttpResponse other = Get("/dashboard/app-ABCDEFGH.js", "\"bbbbb\", \"zzzz\"");
  EXPECT_EQ(other.status, http::status::ok);
  EXPECT_EQ(other.body, "console.log(1)");
}

TEST(Dashboard, UnknownPathsAre404AndNeverReachTheFileSystem) {
  for (std::string_view path : {"/dashboard/nope.js", "/dashboard/../imgpipe.db", "/dashboard/%2e%2e/x",
                                "/dashboard/app-ABCDEFGH.js/x"}) {
    SCOPED_TRACE(path);
    HttpResponse r = Get(path);
    EXPECT_EQ(r.status, http::status::not_found);
    EXPECT_NE(r.body.find("\"not_found\""), std::string::npos) << r.body;
  }
}

TEST(Dashboard, OnlyGetAndHeadAreAllowed) {
  HttpResponse head = ServeDashboard(kTestAssets, http::verb::head, "/dashboard", "", "r");
  EXPECT_EQ(head.status, http::status::ok);
  for (http::verb v : {http::verb::post, http::verb::put, http::verb::delete_}) {
    HttpResponse r = ServeDashboard(kTestAssets, v, "/dashboard", "", "r");
    EXPECT_EQ(r.status, http::status::method_not_allowed);
    EXPECT_EQ(Header(r, "Allow"), "GET, HEAD");
    EXPECT_TRUE(r.body.find("<!doctype") == std::string::npos);
  }
}

TEST(Dashboard, WithoutBuiltAssetsEveryPathSaysHowToBuild) {
  for (std::string_view path : {"/dashboard", "/dashboard/app.js"}) {
    HttpResponse r = ServeDashboard({}, http::verb::get, path, "", "r");
    EXPECT_EQ(r.status, http::status::not_found);
    EXPECT_EQ(r.content_type, "application/json");
    EXPECT_NE(r.body.find("npm run build"), std::string::npos) << r.body;
  }
}

TEST(Dashboard, EmbeddedTableIsConsistent) {
  // Whatever web/dist held at build time: each asset has a type, a quoted ETag and a body, and if anything was
  // embedded, index.html is among it.
  auto assets = EmbeddedDashboardAssets();
  bool has_index = false;
  for (const DashboardAsset& a : assets) {
    SCOPED_TRACE(std::string(a.path));
    EXPECT_FALSE(a.content_type.empty());
    ASSERT_GE(a.etag.size(), 3u);
    EXPECT_EQ(a.etag.front(), '"');
    EXPECT_EQ(a.etag.back(), '"');
    EXPECT_FALSE(a.path.starts_with("/"));
    if (a.path == "index.html") {
      has_index = true;
      EXPECT_EQ(a.content_type, "text/html; charset=utf-8");
      EXPECT_NE(a.body.find("<html"), std::string_view::npos);
    }
  }
  EXPECT_TRUE(assets.empty() || has_index);
}

}  // namespace
}  // namespace imgpipe
