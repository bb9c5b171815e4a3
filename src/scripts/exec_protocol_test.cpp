#include "scripts/exec_protocol.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace imgpipe {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

TEST(ExecProtocol, ParsesEveryField) {
  auto r = ParseExecResult(R"({
    "labels": [{"key": "faces", "value": "2", "number": 2}, {"key": "tag", "value": "cat"}, {"key": "n", "number": null}],
    "renditions": [{"name": "edges", "file": "edges.png", "format": "webp", "quality": 70, "effort": 3}],
    "image": "out.png",
    "reject": "too dark"
  })");
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->labels.size(), 3u);
  EXPECT_EQ(r->labels[0].key, "faces");
  EXPECT_EQ(r->labels[0].number, 2.0);
  EXPECT_EQ(r->labels[1].value, "cat");
  EXPECT_FALSE(r->labels[1].number.has_value());
  EXPECT_FALSE(r->labels[2].number.has_value());
  ASSERT_EQ(r->renditions.size(), 1u);
  EXPECT_EQ(r->renditions[0].file, "edges.png");
  EXPECT_EQ(r->renditions[0].format, "webp");
  EXPECT_EQ(r->renditions[0].quality, 70);
  EXPECT_EQ(r->renditions[0].effort, 3);
  EXPECT_EQ(r->image, "out.png");
  EXPECT_EQ(r->reject, "too dark");

  auto empty = ParseExecResult("{}");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->labels.empty() && empty->renditions.empty() && !empty->image && !empty->reject);
}

struct Bad {
  std::string name;
  std::string text;
  std::string message;
};

class ExecResultRefused : public ::testing::TestWithParam<Bad> {};

TEST_P(ExecResultRefused, WithAMessageNamingTheProblem) {
  auto r = ParseExecResult(GetParam().text);
  ASSERT_FALSE(r.ok()) << GetParam().name;
  EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_EQ(r.error().code, "script_error");
  EXPECT_THAT(r.error().message, HasSubstr("result.json"));
  EXPECT_THAT(r.error().message, HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ExecResultRefused,
    ::testing::Values(
        Bad{"empty", "", "is not valid JSON"},
        Bad{"truncated", R"({"labels": [{"key": "a")", "is not valid JSON"},
        Bad{"array", "[]", "must be a JSON object"},
        Bad{"unknown_key", R"({"label": []})", "has an unknown key 'label'"},
        Bad{"labels_not_array", R"({"labels": {}})", "labels must be an array"},
        Bad{"label_not_object", R"({"labels": ["a"]})", "labels[0] must be an object"},
        Bad{"label_no_key", R"({"labels": [{"value": "x"}]})", "labels[0].key is missing"},
        Bad{"label_empty_key", R"({"labels": [{"key": ""}]})", "labels[0].key must not be empty"},
        Bad{"label_number_text", R"({"labels": [{"key": "a", "number": "1"}]})", "labels[0].number must be a finite"},
        Bad{"label_extra", R"({"labels": [{"key": "a", "colour": 1}]})", "labels[0] has an unknown key 'colour'"},
        Bad{"label_value_number", R"({"labels": [{"key": "a", "value": 3}]})", "labels[0].value must be a string"},
        Bad{"rendition_slash", R"({"renditions": [{"name": "a", "file": "../etc/passwd"}]})",
            "renditions[0].file must name a file"},
        Bad{"rendition_absolute", R"({"renditions": [{"name": "a", "file": "/etc/passwd"}]})",
            "renditions[0].file must name a file"},
        Bad{"rendition_hidden", R"({"renditions": [{"name": "a", "file": ".x"}]})", "must name a file"},
        Bad{"rendition_format", R"({"renditions": [{"name": "a", "file": "a.png", "format": "bmp"}]})",
            "renditions[0].format must be one of"},
        Bad{"rendition_quality", R"({"renditions": [{"name": "a", "file": "a.png", "quality": 101}]})",
            "renditions[0].quality must be an integer from 1 to 100"},
        Bad{"rendition_quality_float", R"({"renditions": [{"name": "a", "file": "a.png", "quality": 5.5}]})",
            "quality must be an integer"},
        Bad{"image_not_string", R"({"image": 3})", "image must be a string"},
        Bad{"image_path", R"({"image": "a/b.png"})", "image must name a file"},
        Bad{"reject_empty", R"({"reject": ""})", "reject must be a non-empty reason"},
        Bad{"deep", std::string(1000, '[') + std::string(1000, ']'), "is not valid JSON"},
        Bad{"invalid_utf8", "{\"labels\": [{\"key\": \"\xff\"}]}", "is not valid JSON"},
        Bad{"too_large", "{\"labels\": [" + std::string(kExecMaxResultBytes, ' ') + "]}", "is larger than"}),
    [](const ::testing::TestParamInfo<Bad>& info) { return info.param.name; });

// The hostile corpus is not JSON at all: every file is refused cleanly, none crashes the parser.
TEST(ExecProtocol, CorruptCorpusIsRefused) {
  const fs::path corrupt = fs::path(IMGPIPE_CORPORA_DIR) / "corrupt";
  ASSERT_TRUE(fs::is_directory(corrupt)) << corrupt;
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(corrupt)) {
    if (!entry.is_regular_file() || entry.file_size() > (4u << 20)) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    auto r = ParseExecResult(bytes.str());
    EXPECT_FALSE(r.ok()) << entry.path();
    if (!r.ok()) {
      EXPECT_THAT(r.error().message, HasSubstr("result.json"));
    }
    ++files;
  }
  EXPECT_GT(files, 10);
}

}  // namespace
}  // namespace imgpipe
