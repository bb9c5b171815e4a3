#include "scripts/script_runner.hpp"

#include <vips/vips.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "processing/image_probe.hpp"

namespace imgpipe {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const fs::path kCorpora = IMGPIPE_CORPORA_DIR;

ScriptBundle Bundle(const std::map<std::string, std::string>& files) {
  auto manifest = ValidateScriptFiles(files);
  EXPECT_TRUE(manifest.ok()) << manifest.error().message;
  ScriptBundle bundle;
  bundle.name = "test";
  bundle.version = std::string(64, 'a');
  bundle.files = files;
  if (manifest.ok()) bundle.manifest = std::move(manifest).value();
  return bundle;
}

struct Size {
  int width = 0, height = 0, bands = 0;
  std::string loader;
};

Size Decode(const std::string& bytes) {
  Size size;
  VipsImage* image = vips_image_new_from_buffer(bytes.data(), bytes.size(), "", nullptr);
  if (image == nullptr) {
    vips_error_clear();
    return size;
  }
  size.width = image->Xsize;
  size.height = image->Ysize;
  size.bands = image->Bands;
  const char* loader = nullptr;
  if (vips_image_get_string(image, "vips-loader", &loader) == 0) size.loader = loader;
  g_object_unref(image);
  return size;
}

class ScriptRunnerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { InitVips(1); }
  const std::string kodim = (kCorpora / "valid/kodak/kodim23.png").string();  // 768x512
};

TEST_F(ScriptRunnerTest, BuiltInStepsMakeRenditionsAndLabels) {
  const std::string toml = R"(
[[steps]]
op = "auto-orient"
[[steps]]
op = "thumbnail"
width = 400
[[steps]]
op = "sharpness"
[[steps]]
op = "phash"
[[steps]]
op = "dominant-colour"
[[steps]]
op = "lua"
file = "main.lua"

[[renditions]]
name = "square"
format = "webp"
steps = [ { op = "crop", width = 100, height = 100, mode = "attention" } ]

[[renditions]]
name = "grey"
format = "png"
steps = [ { op = "grayscale" }, { op = "blur", sigma = 2.0 }, { op = "sharpen" } ]
)";
  const std::string lua = R"(
    run.label("size", image.width() .. "x" .. image.height(), image.width() * image.height())
    image.apply("resize", {width = 50})
    run.rendition("tiny", {format = "avif", quality = 40, effort = 2})
  )";
  auto out = RunScript(Bundle({{"pipeline.toml", toml}, {"main.lua", lua}}), kodim);
  ASSERT_TRUE(out.ok()) << out.error().message;
  ASSERT_EQ(out->renditions.size(), 3u);
  EXPECT_EQ(out->renditions[0].name, "square");
  const Size square = Decode(out->renditions[0].bytes);
  EXPECT_EQ(square.width, 50);  // renditions start from the image after the lua step resized it
  EXPECT_EQ(square.height, 33);
  EXPECT_EQ(square.loader, "webpload_buffer");
  const Size grey = Decode(out->renditions[1].bytes);
  EXPECT_EQ(grey.bands, 1);
  EXPECT_EQ(grey.loader, "pngload_buffer");
  EXPECT_EQ(out->renditions[2].name, "tiny");
  EXPECT_EQ(out->renditions[2].extension, "avif");
  EXPECT_EQ(Decode(out->renditions[2].bytes).width, 50);

  ASSERT_EQ(out->labels.size(), 4u);
  EXPECT_EQ(out->labels[0].key, "sharpness");
  ASSERT_TRUE(out->labels[0].number.has_value());
  EXPECT_GT(*out->labels[0].number, 0);
  EXPECT_EQ(out->labels[1].key, "phash");
  EXPECT_EQ(out->labels[1].value.size(), 16u);
  EXPECT_TRUE(out->phash.has_value());
  EXPECT_EQ(out->labels[2].key, "dominant_colour");
  EXPECT_EQ(out->labels[2].value, out->dominant_colour.value());
  EXPECT_EQ(out->labels[3].key, "size");
  EXPECT_EQ(out->labels[3].value, "400x267");
  EXPECT_EQ(out->labels[3].number, 400.0 * 267);
}

TEST_F(ScriptRunnerTest, BlurLowersTheSharpnessScore) {
  const std::string base = "[[steps]]\nop = \"thumbnail\"\nwidth = 300\n";
  auto sharp = RunScript(Bundle({{"pipeline.toml", base + "[[steps]]\nop = \"sharpness\"\n"}}), kodim);
  auto blurred = RunScript(
      Bundle({{"pipeline.toml", base + "[[steps]]\nop = \"blur\"\nsigma = 3.0\n[[steps]]\nop = \"sharpness\"\n"}}),
      kodim);
  ASSERT_TRUE(sharp.ok() && blurred.ok());
  EXPECT_LT(*blurred->labels[0].number, *sharp->labels[0].number / 2);
}

TEST_F(ScriptRunnerTest, RejectedImagesHaveNoRenditions) {
  const std::string toml = "[[steps]]\nop = \"lua\"\nfile = \"r.lua\"\n[[renditions]]\nname = \"a\"\n";
  auto out = RunScript(Bundle({{"pipeline.toml", toml},
                               {"r.lua", "if image.width() > 100 then run.reject('too big: ' .. image.width()) end"}}),
                       kodim);
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_EQ(out->rejected, "too big: 768");
  EXPECT_TRUE(out->renditions.empty());
}

TEST_F(ScriptRunnerTest, LuaLimitsSurfaceAsScriptErrors) {
  const std::string toml = "[[steps]]\nop = \"lua\"\nfile = \"loop.lua\"\n";
  ScriptRunLimits limits;
  limits.lua.max_instructions = 100'000;
  auto out = RunScript(Bundle({{"pipeline.toml", toml}, {"loop.lua", "while true do end"}}), kodim, limits);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.error().code, "script_limit");
  EXPECT_THAT(out.error().message, HasSubstr("loop.lua"));
}

TEST_F(ScriptRunnerTest, UndecodableFilesAreRefused) {
  const fs::path bad = fs::temp_directory_path() / ("imgpipe-runner-" + std::to_string(::getpid()) + ".txt");
  { std::ofstream(bad) << "not an image"; }
  auto out = RunScript(Bundle({{"pipeline.toml", ""}}), bad.string());
  fs::remove(bad);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.error().kind, ErrorKind::kUnsupportedFormat);
}

}  // namespace
}  // namespace imgpipe
