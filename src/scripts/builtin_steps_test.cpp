// One test per built-in step (docs/SCRIPTS.md): each asserts what the step does to real images.
#include <vips/vips.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "processing/image_probe.hpp"
#include "scripts/script_runner.hpp"

namespace imgpipe {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const fs::path kCorpora = IMGPIPE_CORPORA_DIR;
const std::string kKodim = (kCorpora / "valid/kodak/kodim23.png").string();  // 768x512
// 1200x1800 stored, EXIF orientation 6: 1800x1200 upright.
const std::string kRotated = (kCorpora / "exif/exif-orientation-examples/Landscape_6.jpg").string();
const std::string kSamsung = (kCorpora / "exif/metadata-extractor-images/jpg/Samsung GT-I9000 (Galaxy S).jpg").string();

struct VipsUnref {
  void operator()(VipsImage* image) const { g_object_unref(image); }
};
using Image = std::unique_ptr<VipsImage, VipsUnref>;

Image Load(const std::string& bytes) {
  Image image(vips_image_new_from_buffer(bytes.data(), bytes.size(), "", nullptr));
  if (!image) {
    ADD_FAILURE() << "does not decode: " << vips_error_buffer();
    vips_error_clear();
    return image;
  }
  VipsImage* memory = vips_image_copy_memory(image.get());
  return Image(memory);
}

std::string Loader(VipsImage* image) {
  const char* loader = nullptr;
  return vips_image_get_string(image, "vips-loader", &loader) == 0 ? loader : "";
}

std::vector<double> Pixel(VipsImage* image, int x, int y) {
  double* values = nullptr;
  int n = 0;
  std::vector<double> out;
  if (vips_getpoint(image, &values, &n, x, y, nullptr) == 0) out.assign(values, values + n);
  g_free(values);
  return out;
}

// Mean absolute difference of two same-sized images over a box.
double Difference(VipsImage* a, VipsImage* b, int left, int top, int width, int height) {
  VipsImage *ca = nullptr, *cb = nullptr, *diff = nullptr, *abs = nullptr;
  double mean = -1;
  if (vips_extract_area(a, &ca, left, top, width, height, nullptr) == 0 &&
      vips_extract_area(b, &cb, left, top, width, height, nullptr) == 0 && vips_subtract(ca, cb, &diff, nullptr) == 0 &&
      vips_abs(diff, &abs, nullptr) == 0) {
    vips_avg(abs, &mean, nullptr);
  }
  for (VipsImage* i : {ca, cb, diff, abs}) {
    if (i != nullptr) g_object_unref(i);
  }
  return mean;
}

ScriptBundle Bundle(std::map<std::string, std::string> files) {
  ScriptBundle bundle;
  bundle.name = "steps";
  bundle.version = std::string(64, 'b');
  auto manifest = ValidateScriptFiles(files);
  EXPECT_TRUE(manifest.ok()) << manifest.error().message;
  if (manifest.ok()) bundle.manifest = std::move(manifest).value();
  bundle.files = std::move(files);
  return bundle;
}

ScriptRunOutput RunSteps(const std::string& toml, const std::string& path = kKodim,
                    std::map<std::string, std::string> extra = {}) {
  extra["pipeline.toml"] = toml;
  auto out = RunScript(Bundle(std::move(extra)), path);
  EXPECT_TRUE(out.ok()) << out.error().message;
  return out.ok() ? std::move(out).value() : ScriptRunOutput{};
}

std::map<std::string, std::string> Labels(const ScriptRunOutput& out) {
  std::map<std::string, std::string> labels;
  for (const ScriptLabel& l : out.labels) labels[l.key] = l.value;
  return labels;
}

std::map<std::string, std::pair<int, int>> Sizes(const ScriptRunOutput& out) {
  std::map<std::string, std::pair<int, int>> sizes;
  for (const RenditionOutput& r : out.renditions) sizes[r.name] = {r.width, r.height};
  return sizes;
}

class BuiltInSteps : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { InitVips(1); }
};

TEST_F(BuiltInSteps, AutoOrientTurnsTheImageUpright) {
  const std::string size = "[[steps]]\nop = \"extract-metadata\"\nfields = []\n";
  EXPECT_EQ(Labels(RunSteps(size, kRotated))["width"], "1200");
  auto upright = Labels(RunSteps("[[steps]]\nop = \"auto-orient\"\n" + size, kRotated));
  EXPECT_EQ(upright["width"], "1800");
  EXPECT_EQ(upright["height"], "1200");
}

TEST_F(BuiltInSteps, ThumbnailResizeAndCropMakeTheirBoxes) {
  auto out = RunSteps(R"(
[[renditions]]
name = "inside"
steps = [ { op = "thumbnail", width = 300 } ]
[[renditions]]
name = "cover"
steps = [ { op = "thumbnail", width = 100, height = 100, fit = "cover" } ]
[[renditions]]
name = "fill"
steps = [ { op = "thumbnail", width = 100, height = 50, fit = "fill" } ]
[[renditions]]
name = "no-upscale"
steps = [ { op = "thumbnail", width = 2000 } ]
[[renditions]]
name = "upscale"
steps = [ { op = "resize", height = 1024 } ]
[[renditions]]
name = "centre"
steps = [ { op = "crop", width = 100, height = 80 } ]
[[renditions]]
name = "attention"
steps = [ { op = "crop", width = 64, height = 64, mode = "attention" } ]
[[renditions]]
name = "entropy"
steps = [ { op = "crop", width = 64, height = 2000, mode = "entropy" } ]
)");
  using S = std::pair<int, int>;
  auto sizes = Sizes(out);
  EXPECT_EQ(sizes["inside"], S(300, 200));
  EXPECT_EQ(sizes["cover"], S(100, 100));
  EXPECT_EQ(sizes["fill"], S(100, 50));
  EXPECT_EQ(sizes["no-upscale"], S(768, 512));
  EXPECT_EQ(sizes["upscale"], S(1536, 1024));
  EXPECT_EQ(sizes["centre"], S(100, 80));
  EXPECT_EQ(sizes["attention"], S(64, 64));
  EXPECT_EQ(sizes["entropy"], S(64, 512));  // never larger than the image
}

TEST_F(BuiltInSteps, ConvertWritesEveryFormatWithItsQuality) {
  auto out = RunSteps(R"(
[[steps]]
op = "thumbnail"
width = 256
[[steps]]
op = "convert"
format = "heif"
quality = 50
[[renditions]]
name = "default-heif"
[[renditions]]
name = "jpeg-low"
format = "jpeg"
quality = 20
[[renditions]]
name = "jpeg-high"
format = "jpeg"
quality = 95
[[renditions]]
name = "png"
format = "png"
[[renditions]]
name = "webp"
format = "webp"
effort = 6
[[renditions]]
name = "avif"
format = "avif"
quality = 40
effort = 0
)");
  ASSERT_EQ(out.renditions.size(), 6u);
  std::map<std::string, const RenditionOutput*> by;
  for (const RenditionOutput& r : out.renditions) by[r.name] = &r;
  const std::map<std::string, std::string> loaders = {{"default-heif", "heifload_buffer"}, {"jpeg-low", "jpegload_buffer"},
                                                      {"png", "pngload_buffer"}, {"webp", "webpload_buffer"},
                                                      {"avif", "heifload_buffer"}};
  for (const auto& [name, loader] : loaders) {
    Image image = Load(by[name]->bytes);
    ASSERT_TRUE(image) << name;
    EXPECT_EQ(Loader(image.get()), loader) << name;
    EXPECT_EQ(image->Xsize, 256) << name;
  }
  EXPECT_EQ(by["default-heif"]->content_type, "image/heic");
  EXPECT_EQ(by["default-heif"]->extension, "heic");
  EXPECT_EQ(by["avif"]->content_type, "image/avif");
  EXPECT_EQ(by["webp"]->extension, "webp");
  EXPECT_LT(by["jpeg-low"]->bytes.size() * 2, by["jpeg-high"]->bytes.size());
  // HEVC in a HEIF box, AV1 in an AVIF box.
  EXPECT_NE(by["default-heif"]->bytes.find("heic"), std::string::npos);
  EXPECT_NE(by["avif"]->bytes.find("avif"), std::string::npos);
}

TEST_F(BuiltInSteps, StripRemovesTheCameraMetadata) {
  const std::string lua = "run.label('make', image.metadata('exif-ifd0-Make') or 'none')\n";
  auto kept = RunSteps("[[steps]]\nop = \"lua\"\nfile = \"m.lua\"\n", kSamsung, {{"m.lua", lua}});
  EXPECT_THAT(Labels(kept)["make"], HasSubstr("SAMSUNG"));
  auto stripped = RunSteps("[[steps]]\nop = \"strip\"\n[[steps]]\nop = \"lua\"\nfile = \"m.lua\"\n", kSamsung,
                      {{"m.lua", lua}});
  EXPECT_EQ(Labels(stripped)["make"], "none");
}

TEST_F(BuiltInSteps, ExtractMetadataLabelsTheCameraFields) {
  auto labels = Labels(RunSteps("[[steps]]\nop = \"extract-metadata\"\n", kSamsung));
  EXPECT_EQ(labels["width"], "640");
  EXPECT_EQ(labels["height"], "480");
  EXPECT_EQ(labels["bands"], "3");
  EXPECT_EQ(labels["exif-ifd0-Make"], "SAMSUNG");
  EXPECT_EQ(labels["exif-ifd0-Model"], "GT-I9000");
  EXPECT_EQ(labels["exif-ifd0-Orientation"], "6");
  EXPECT_EQ(labels["exif-ifd2-DateTimeOriginal"], "2011:04:02 18:30:10");
  auto chosen = Labels(RunSteps("[[steps]]\nop = \"extract-metadata\"\nfields = [\"exif-ifd0-Model\", \"nothing\"]\n",
                           kSamsung));
  EXPECT_EQ(chosen.size(), 4u);  // width, height, bands, the one field present
  EXPECT_EQ(chosen["exif-ifd0-Model"], "GT-I9000");
}

TEST_F(BuiltInSteps, GrayscaleBlurAndSharpen) {
  const std::string base = "[[steps]]\nop = \"thumbnail\"\nwidth = 300\n";
  const std::string score = "[[steps]]\nop = \"sharpness\"\n";
  auto plain = RunSteps(base + score);
  auto blurred = RunSteps(base + "[[steps]]\nop = \"blur\"\nsigma = 2.0\n" + score);
  auto sharpened = RunSteps(base + "[[steps]]\nop = \"sharpen\"\nsigma = 2.0\n" + score);
  ASSERT_FALSE(plain.labels.empty() || blurred.labels.empty() || sharpened.labels.empty());
  EXPECT_LT(*blurred.labels[0].number, *plain.labels[0].number);
  EXPECT_GT(*sharpened.labels[0].number, *plain.labels[0].number);

  auto grey = RunSteps(base + "[[steps]]\nop = \"grayscale\"\n[[renditions]]\nname = \"g\"\nformat = \"png\"\n");
  ASSERT_EQ(grey.renditions.size(), 1u);
  Image image = Load(grey.renditions[0].bytes);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->Bands, 1);
}

TEST_F(BuiltInSteps, PhashDominantColourAndSharpnessLabel) {
  auto out = RunSteps("[[steps]]\nop = \"phash\"\n[[steps]]\nop = \"dominant-colour\"\n[[steps]]\nop = \"sharpness\"\n");
  auto labels = Labels(out);
  EXPECT_EQ(labels["phash"].size(), 16u);
  EXPECT_EQ(labels["phash"].find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_TRUE(out.phash.has_value());
  EXPECT_EQ(labels["dominant_colour"].size(), 7u);
  EXPECT_EQ(labels["dominant_colour"][0], '#');
  EXPECT_GT(std::stod(labels["sharpness"]), 0);
}

TEST_F(BuiltInSteps, TextWatermarkMarksItsCornerOnly) {
  const std::string base = "[[steps]]\nop = \"thumbnail\"\nwidth = 400\n";
  const std::string rendition = "[[renditions]]\nname = \"r\"\nformat = \"png\"\n";
  auto plain = RunSteps(base + rendition);
  auto marked = RunSteps(base +
                    "[[steps]]\nop = \"watermark\"\ntext = \"<b>imgpipe</b> & co\"\nposition = \"bottom-right\"\n"
                    "opacity = 1.0\nsize = 0.2\ncolour = \"#ff0000\"\nmargin = 4\n" + rendition);
  ASSERT_EQ(plain.renditions.size(), 1u);
  ASSERT_EQ(marked.renditions.size(), 1u);
  Image a = Load(plain.renditions[0].bytes);
  Image b = Load(marked.renditions[0].bytes);
  ASSERT_TRUE(a && b);
  ASSERT_EQ(b->Xsize, 400);
  EXPECT_GT(Difference(a.get(), b.get(), 200, 200, 196, 63), 5.0);  // the bottom-right corner changed
  EXPECT_EQ(Difference(a.get(), b.get(), 0, 0, 200, 130), 0.0);     // the rest did not
}

TEST_F(BuiltInSteps, ImageWatermarkIsPlacedWithItsOpacity) {
  // A 40x20 pure blue PNG as the mark.
  VipsImage* black = nullptr;
  VipsImage* blue = nullptr;
  ASSERT_EQ(vips_black(&black, 40, 20, "bands", 3, nullptr), 0);
  const double a[3] = {1, 1, 1}, b[3] = {0, 0, 255};
  ASSERT_EQ(vips_linear(black, &blue, a, b, 3, "uchar", TRUE, nullptr), 0);
  void* raw = nullptr;
  size_t length = 0;
  ASSERT_EQ(vips_pngsave_buffer(blue, &raw, &length, nullptr), 0);
  const std::string mark(static_cast<const char*>(raw), length);
  g_free(raw);
  g_object_unref(blue);
  g_object_unref(black);

  const std::string base = "[[steps]]\nop = \"thumbnail\"\nwidth = 400\n";
  const std::string rendition = "[[renditions]]\nname = \"r\"\nformat = \"png\"\n";
  auto full = RunSteps(base + "[[steps]]\nop = \"watermark\"\nimage = \"mark.png\"\nposition = \"top-left\"\nmargin = 0\n"
                         "opacity = 1.0\n" + rendition, kKodim, {{"mark.png", mark}});
  ASSERT_EQ(full.renditions.size(), 1u);
  Image marked = Load(full.renditions[0].bytes);
  ASSERT_TRUE(marked);
  EXPECT_EQ(Pixel(marked.get(), 5, 5), (std::vector<double>{0, 0, 255}));
  EXPECT_NE(Pixel(marked.get(), 60, 40), (std::vector<double>{0, 0, 255}));

  auto half = RunSteps(base + "[[steps]]\nop = \"watermark\"\nimage = \"mark.png\"\nposition = \"centre\"\nsize = 0.5\n"
                         "opacity = 0.5\n" + rendition, kKodim, {{"mark.png", mark}});
  auto plain = RunSteps(base + rendition);
  Image mixed = Load(half.renditions.at(0).bytes);
  Image original = Load(plain.renditions.at(0).bytes);
  ASSERT_TRUE(mixed && original);
  // size 0.5: 200x100 in the middle of 400x267; opacity 0.5: half way from the photo to blue.
  const std::vector<double> photo = Pixel(original.get(), 200, 133);
  const std::vector<double> got = Pixel(mixed.get(), 200, 133);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_NEAR(got[0], photo[0] / 2, 2);
  EXPECT_NEAR(got[2], (photo[2] + 255) / 2, 2);
  EXPECT_EQ(Pixel(mixed.get(), 90, 133), Pixel(original.get(), 90, 133));  // left of the mark: untouched

  auto bad = RunScript(Bundle({{"pipeline.toml", "[[steps]]\nop = \"watermark\"\nimage = \"mark.png\"\n"},
                               {"mark.png", "\x89PNG\r\n\x1a\n broken"}}),
                       kKodim);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message, HasSubstr("pipeline.toml:1: step 'watermark': 'mark.png' does not decode"));
}

}  // namespace
}  // namespace imgpipe
