#include "core/metrics.hpp"

#include <gtest/gtest.h>

namespace imgpipe {
namespace {

TEST(MetricsTest, RendersCountersGaugesAndCumulativeHistograms) {
  Metrics m;
  m.DeclareCounter("imgpipe_x_total", "X.");
  m.DeclareGauge("imgpipe_depth", "Depth.");
  m.DeclareHistogram("imgpipe_d_seconds", "D.", {0.1, 1});
  m.Add("imgpipe_x_total", {{"outcome", "ok"}});
  m.Add("imgpipe_x_total", {{"outcome", "ok"}}, 2);
  m.Set("imgpipe_depth", {}, 7);
  m.Observe("imgpipe_d_seconds", {{"stage", "store"}}, 0.05);
  m.Observe("imgpipe_d_seconds", {{"stage", "store"}}, 0.5);
  m.Observe("imgpipe_d_seconds", {{"stage", "store"}}, 5);
  std::string text = m.Render();
  EXPECT_NE(text.find("# TYPE imgpipe_x_total counter\nimgpipe_x_total{outcome=\"ok\"} 3\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("imgpipe_depth 7\n"), std::string::npos) << text;
  EXPECT_NE(text.find("imgpipe_d_seconds_bucket{stage=\"store\",le=\"0.1\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("imgpipe_d_seconds_bucket{stage=\"store\",le=\"1\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("imgpipe_d_seconds_bucket{stage=\"store\",le=\"+Inf\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("imgpipe_d_seconds_count{stage=\"store\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("imgpipe_d_seconds_sum{stage=\"store\"} 5.55\n"), std::string::npos) << text;
}

TEST(MetricsTest, EscapesLabelValues) {
  Metrics m;
  m.DeclareCounter("imgpipe_y_total", "Y.");
  m.Add("imgpipe_y_total", {{"route", "a\"b\\c\nd"}});
  EXPECT_NE(m.Render().find("route=\"a\\\"b\\\\c\\nd\""), std::string::npos);
}

}  // namespace
}  // namespace imgpipe
