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

  // Binary files travel as base64 both ways.
  auto binary = PushScriptJson(
      **blobs, clock,
      R"({"name":"b","files":{"pipeline.toml":"description = \"x\"\n"},"files_base64":{"mark.png":"/9j/AA=="}})");
  ASSERT_TRUE(binary.ok()) << binary.error().message;
  EXPECT_EQ(binary->at("files_base64").at("mark.png").as_string(), "/9j/AA==");
  EXPECT_EQ(binary->at("files").as_object().size(), 1u);
  auto not_base64 = PushScriptJson(
      **blobs, clock, R"({"name":"b","files":{"pipeline.toml":""},"files_base64":{"mark.png":"**"}})");
  ASSERT_FALSE(not_base64.ok());
  EXPECT_NE(not_base64.error().message.find("mark.png"), std::string::npos);
  fs::remove_all(root);
}

}  // namespace
}  // namespace imgpipe
