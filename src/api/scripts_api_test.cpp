#include "api/scripts_api.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <filesystem>

#include "storage/local/local_blob_store.hpp"

namespace imgpipe {
namespace {

namespace fs = std::filesystem;

TEST(ScriptsApi, PushListShowAndCheck) {
  const fs::path root = fs::temp_directory_path() / ("imgpipe-scripts-api-" + std::to_string(::getpid()));
  fs::remove_all(root);
  auto blobs = LocalBlobStore::Open(root.string());
  ASSERT_TRUE(blobs.ok());
  SystemClock clock;
  EXPECT_EQ(CheckScriptExists(**blobs, clock, "s").error().code, "unknown_pipeline");
  auto pushed = PushScriptJson(**blobs, clock, R"({"name":"s","files":{"pipeline.toml":"[[renditions]]\nname = \"a\"\n"}})");
  ASSERT_TRUE(pushed.ok()) << pushed.error().message;
  EXPECT_EQ(pushed->at("name").as_string(), "s");
  EXPECT_EQ(pushed->at("version").as_string().size(), 64u);
  EXPECT_TRUE(CheckScriptExists(**blobs, clock, "s").ok());
  auto listed = ListScriptsJson(**blobs, clock);
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->at("scripts").as_array().size(), 1u);
  auto bad = PushScriptJson(**blobs, clock, R"({"name":"s","files":{"pipeline.toml":"x = 1\n"}})");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("pipeline.toml:1:"), std::string::npos);
  EXPECT_FALSE(PushScriptJson(**blobs, clock, "[]").ok());
  fs::remove_all(root);
}

}  // namespace
}  // namespace imgpipe
