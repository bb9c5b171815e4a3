#include "ingest/routing.hpp"

#include <gtest/gtest.h>

namespace imgpipe {
namespace {

RouteFacts Upload(std::string_view format = "jpeg", uint64_t bytes = 200'000, uint64_t pixels = 12'000'000,
                  std::string_view metadata = "{}") {
  return RouteFacts{"upload", "", format, bytes, pixels, metadata};
}

TEST(Routing, NoRoutesGiveTheFallback) {
  EXPECT_EQ(RouteScript({}, Upload(), "default"), "default");
  EXPECT_EQ(RouteScript({}, Upload(), "square"), "square");
}

TEST(Routing, FirstMatchingRouteWins) {
  std::vector<RouteConfig> routes(3);
  routes[0].script = "png-only";
  routes[0].formats = {"png"};
  routes[1].script = "any-upload";
  routes[1].source = "upload";
  routes[2].script = "never-reached";
  EXPECT_EQ(RouteScript(routes, Upload("png"), "default"), "png-only");
  EXPECT_EQ(RouteScript(routes, Upload("jpeg"), "default"), "any-upload");
}

TEST(Routing, SourceAndTopic) {
  std::vector<RouteConfig> routes(2);
  routes[0].script = "cameras";
  routes[0].source = "kafka";
  routes[0].topic = "cameras";
  routes[1].script = "other-kafka";
  routes[1].source = "kafka";
  EXPECT_EQ(RouteScript(routes, RouteFacts{"kafka", "cameras", "jpeg", 1, 1, "{}"}, "default"), "cameras");
  EXPECT_EQ(RouteScript(routes, RouteFacts{"kafka", "scans", "jpeg", 1, 1, "{}"}, "default"), "other-kafka");
  EXPECT_EQ(RouteScript(routes, Upload(), "default"), "default");
}

TEST(Routing, SizeBoundsAreInclusive) {
  std::vector<RouteConfig> routes(1);
  routes[0].script = "mid";
  routes[0].min_bytes = 100;
  routes[0].max_bytes = 200;
  routes[0].min_pixels = 10;
  routes[0].max_pixels = 20;
  EXPECT_EQ(RouteScript(routes, Upload("jpeg", 100, 10), "d"), "mid");
  EXPECT_EQ(RouteScript(routes, Upload("jpeg", 200, 20), "d"), "mid");
  EXPECT_EQ(RouteScript(routes, Upload("jpeg", 99, 15), "d"), "d");
  EXPECT_EQ(RouteScript(routes, Upload("jpeg", 201, 15), "d"), "d");
  EXPECT_EQ(RouteScript(routes, Upload("jpeg", 150, 9), "d"), "d");
  EXPECT_EQ(RouteScript(routes, Upload("jpeg", 150, 21), "d"), "d");
}

TEST(Routing, MetadataConditionsAllHold) {
  std::vector<RouteConfig> routes(1);
  routes[0].script = "front";
  routes[0].metadata = {{"camera", "front"}, {"floor", "2"}, {"night", "true"}};
  EXPECT_EQ(RouteScript(routes, Upload("jpeg", 1, 1, R"({"camera": "front", "floor": 2, "night": true, "x": 1})"), "d"),
            "front");
  EXPECT_EQ(RouteScript(routes, Upload("jpeg", 1, 1, R"({"camera": "front", "floor": "2", "night": true})"), "d"),
            "front");
  EXPECT_EQ(RouteScript(routes, Upload("jpeg", 1, 1, R"({"camera": "back", "floor": 2, "night": true})"), "d"), "d");
  EXPECT_EQ(RouteScript(routes, Upload("jpeg", 1, 1, R"({"camera": "front", "night": true})"), "d"), "d");
  EXPECT_EQ(RouteScript(routes, Upload("jpeg", 1, 1, R"({"camera": ["front"], "floor": 2, "night": true})"), "d"),
            "d");
  EXPECT_EQ(RouteScript(routes, Upload("jpeg", 1, 1, "not json"), "d"), "d");
}

}  // namespace
}  // namespace imgpipe
