#include "scripts/script_manifest.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace imgpipe {
namespace {

using ::testing::HasSubstr;

TEST(ScriptManifest, ParsesStepsAndRenditions) {
  const std::string text = R"(description = "thumbs and labels"

[[steps]]
op = "auto-orient"

[[steps]]
op = "thumbnail"
width = 1024

[[steps]]
op = "convert"
format = "webp"
quality = 70

[[steps]]
op = "lua"
file = "labels.lua"

[[renditions]]
name = "square"
steps = [ { op = "crop", width = 256, height = 256, mode = "attention" } ]

[[renditions]]
name = "big"
format = "avif"
)";
  auto manifest = ParseScriptManifest(text, {{"pipeline.toml", text}, {"labels.lua", "return"}});
  ASSERT_TRUE(manifest.ok()) << manifest.error().message;
  EXPECT_EQ(manifest->description, "thumbs and labels");
  ASSERT_EQ(manifest->steps.size(), 4u);
  EXPECT_EQ(manifest->steps[1].op, "thumbnail");
  EXPECT_EQ(manifest->steps[1].width, 1024);
  EXPECT_EQ(manifest->steps[1].height, 0);
  EXPECT_EQ(manifest->steps[1].line, 6);
  EXPECT_EQ(manifest->steps[3].file, "labels.lua");
  ASSERT_EQ(manifest->renditions.size(), 2u);
  EXPECT_EQ(manifest->renditions[0].name, "square");
  ASSERT_EQ(manifest->renditions[0].steps.size(), 1u);
  EXPECT_EQ(manifest->renditions[0].steps[0].mode, "attention");
  // Encoding left out comes from the last convert step; set, it stays.
  EXPECT_EQ(manifest->renditions[0].format, "webp");
  EXPECT_EQ(manifest->renditions[0].quality, 70);
  EXPECT_EQ(manifest->renditions[1].format, "avif");
  EXPECT_EQ(manifest->renditions[1].quality, 70);
}

TEST(ScriptManifest, NonAsciiIsFineInStringsAndComments) {
  auto manifest = ParseScriptManifest(
      "# caf\xc3\xa9\ndescription = \"caf\xc3\xa9 \xe3\x80\x80 \\\"\xf0\x9f\x93\xb7\\\" thumbnails\"\n");
  ASSERT_TRUE(manifest.ok()) << manifest.error().message;
  EXPECT_EQ(manifest->description, "caf\xc3\xa9 \xe3\x80\x80 \"\xf0\x9f\x93\xb7\" thumbnails");
  auto multi = ParseScriptManifest("description = \"\"\"\n\xc3\xa9t\xc3\xa9\"\"\"\n[[steps]]\nop = \"blurr\"\n");
  ASSERT_FALSE(multi.ok());
  EXPECT_THAT(multi.error().message, HasSubstr("pipeline.toml:4:"));  // lines are kept
}

TEST(ScriptManifest, DefaultEncodingIsJpeg) {
  auto manifest = ParseScriptManifest("[[renditions]]\nname = \"a\"\n");
  ASSERT_TRUE(manifest.ok()) << manifest.error().message;
  EXPECT_EQ(manifest->renditions[0].format, "jpeg");
  EXPECT_EQ(manifest->renditions[0].quality, 82);
}

struct BadCase {
  std::string text;
  std::string message;  // the whole "file:line: problem" prefix, or a distinctive part of it
};

class BadManifest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadManifest, IsRefusedNamingFileLineAndProblem) {
  auto manifest = ParseScriptManifest(GetParam().text, {{"pipeline.toml", GetParam().text}, {"a.lua", ""}});
  ASSERT_FALSE(manifest.ok());
  EXPECT_EQ(manifest.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_THAT(manifest.error().message, HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadManifest,
    ::testing::Values(
        BadCase{"[[steps]]\nop = \"exec\"\n", "pipeline.toml:1: step 'exec' needs 'command'"},
        BadCase{"[[steps]]\nop = \"exec\"\ncommand = []\n", "pipeline.toml:3: 'command' must be an array of 1 to 64"},
        BadCase{"[[steps]]\nop = \"exec\"\ncommand = [\"x\", 3]\n", "pipeline.toml:3: 'command' must be an array"},
        BadCase{"[[steps]]\nop = \"exec\"\ncommand = [\"x\"]\ntimeout = 0\n",
                "pipeline.toml:4: 'timeout' must be an integer from 1 to 3600"},
        BadCase{"[[steps]]\nop = \"exec\"\ncommand = [\"x\"]\nmemory = 1\n", "pipeline.toml:4: 'memory' must be"},
        BadCase{"[[steps]]\nop = \"exec\"\ncommand = [\"x\"]\nenv = { \"A B\" = \"1\" }\n",
                "env name 'A B' is not letters"},
        BadCase{"[[steps]]\nop = \"exec\"\ncommand = [\"x\"]\nenv = { A = 1 }\n", "env 'A' must be a string"},
        BadCase{"[[steps]]\nop = \"exec\"\ncommand = [\"x\"]\ninput = \"bmp\"\n", "'input' must be one of"},
        BadCase{"[[renditions]]\nname = \"r\"\nsteps = [ { op = \"exec\", command = [\"x\"] } ]\n",
                "step 'exec' belongs in the main [[steps]]"},
        BadCase{"[[steps]]\nop = \"thumbnail\"\nwidth = 10\n\n[[steps]]\nop = \"blurr\"\n",
                "pipeline.toml:6: step 'blurr' is unknown; known steps: "},
        BadCase{"description = \"x\"\n[[steps]\nop = 1\n", "pipeline.toml:2: "},
        BadCase{"[[steps]]\nop = \"thumbnail\"\nwidht = 10\n", "pipeline.toml:3: step 'thumbnail' has no setting 'widht'"},
        BadCase{"[[steps]]\nop = \"thumbnail\"\n", "pipeline.toml:1: step 'thumbnail' needs 'width' or 'height'"},
        BadCase{"[[steps]]\nop = \"thumbnail\"\nwidth = 0\n", "pipeline.toml:3: 'width' must be an integer from 1"},
        BadCase{"[[steps]]\nop = \"crop\"\nwidth = 5\nmode = \"smart\"\n", "pipeline.toml:4: 'mode' must be one of"},
        BadCase{"[[steps]]\nop = \"lua\"\nfile = \"missing.lua\"\n",
                "pipeline.toml:3: lua file 'missing.lua' is not in the script folder"},
        BadCase{"[[steps]]\nwidth = 5\n", "pipeline.toml:1: step has no 'op'"},
        BadCase{"[[renditions]]\nname = \"a\"\n[[renditions]]\nname = \"a\"\n", "pipeline.toml:3: rendition 'a' is named twice"},
        BadCase{"[[renditions]]\nname = \"Big One\"\n", "pipeline.toml:2: rendition 'name' must be"},
        BadCase{"[[renditions]]\nname = \"a\"\nsteps = [ { op = \"lua\", file = \"a.lua\" } ]\n",
                "pipeline.toml:3: step 'lua' belongs in the main [[steps]]"},
        BadCase{"a = 1\nde\xc5\xa3[\n", "pipeline.toml:2: non-ASCII character outside a string or comment"},
        BadCase{"a = 'caf\xc3\xa9'\n", "pipeline.toml:1: non-ASCII character in a '...' string"},
        BadCase{"a = \"caf\xc3\"\n", "pipeline.toml:1: invalid UTF-8"},
        BadCase{"colour = \"red\"\n", "pipeline.toml:1: unknown key 'colour'"},
        BadCase{"[[steps]]\nop = \"blur\"\nsigma = -1.0\n", "pipeline.toml:3: 'sigma' must be a number"}));

TEST(ScriptManifest, MakeScriptStepChecksLikeTheParser) {
  auto step = MakeScriptStep("thumbnail", {{"width", int64_t{64}}, {"fit", std::string("cover")}});
  ASSERT_TRUE(step.ok()) << step.error().message;
  EXPECT_EQ(step->width, 64);
  EXPECT_EQ(step->fit, "cover");
  auto bad = MakeScriptStep("thumbnail", {{"size", int64_t{64}}});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message, HasSubstr("has no setting 'size'"));
  EXPECT_FALSE(MakeScriptStep("lua", {{"file", std::string("a.lua")}}).ok());
  EXPECT_FALSE(MakeScriptStep("rm-rf", {}).ok());
}

}  // namespace
}  // namespace imgpipe
