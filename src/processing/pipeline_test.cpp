#include "processing/pipeline.hpp"

#include <gtest/gtest.h>
#include <vips/vips.h>

#include <array>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "processing/image_probe.hpp"

namespace imgpipe {
namespace {

namespace fs = std::filesystem;

const fs::path kCorpora = IMGPIPE_CORPORA_DIR;

const std::vector<RenditionConfig> kDefaultRenditions = {{"thumb-256", 256, 256, "inside", "auto", 82},
                                                          {"thumb-1024", 1024, 1024, "inside", "auto", 82}};

struct GObjectUnref {
  void operator()(VipsImage* image) const { g_object_unref(image); }
};
using ImagePtr = std::unique_ptr<VipsImage, GObjectUnref>;

// What libvips sees in an encoded rendition.
struct Decoded {
  bool ok = false;
  std::string loader;  //!< e.g. "jpegload_buffer"
  int width = 0;
  int height = 0;
  int bands = 0;
  bool has_exif = false;
  bool has_icc = false;
  std::string compression;          //!< "heif-compression" for HEIF/AVIF
  std::vector<double> band_means;   //!< mean of each band
};

Decoded Decode(const std::string& bytes) {
  Decoded d;
  // The buffer is not copied by libvips: `bytes` outlives `image` here.
  ImagePtr image(vips_image_new_from_buffer(bytes.data(), bytes.size(), "", nullptr));
  if (!image) {
    vips_error_clear();
    return d;
  }
  const char* loader = nullptr;
  if (vips_image_get_string(image.get(), "vips-loader", &loader) == 0) d.loader = loader;
  const char* compression = nullptr;
  if (vips_image_get_typeof(image.get(), "heif-compression") &&
      vips_image_get_string(image.get(), "heif-compression", &compression) == 0) {
    d.compression = compression;
  }
  d.width = vips_image_get_width(image.get());
  d.height = vips_image_get_height(image.get());
  d.bands = vips_image_get_bands(image.get());
  d.has_exif = vips_image_get_typeof(image.get(), VIPS_META_EXIF_NAME) != 0;
  d.has_icc = vips_image_get_typeof(image.get(), VIPS_META_ICC_NAME) != 0;
  VipsImage* stats = nullptr;
  if (vips_stats(image.get(), &stats, nullptr) != 0) {
    vips_error_clear();
    return d;
  }
  ImagePtr owned(stats);
  // vips_stats: row 0 is all bands together, row b + 1 is band b; column 4 is the mean.
  for (int b = 0; b < d.bands; ++b) d.band_means.push_back(*VIPS_MATRIX(stats, 4, b + 1));
  d.ok = true;
  return d;
}

class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/imgpipe-pipeline-test-XXXXXX";
    path_ = mkdtemp(pattern);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string Path(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

// Writes `image` to `path` (format from the suffix, with its save options, e.g. "x.jpg[Q=40]").
void Save(VipsImage* image, const std::string& path_with_options) {
  ASSERT_EQ(vips_image_write_to_file(image, path_with_options.c_str(), nullptr), 0) << vips_error_buffer();
}

ImagePtr Load(const std::string& path) {
  ImagePtr image(vips_image_new_from_file(path.c_str(), nullptr));
  EXPECT_TRUE(image) << vips_error_buffer();
  return image;
}

// A width x height sRGB image made of vertical stripes, each (fraction of the width, r, g, b).
ImagePtr Stripes(int width, int height, const std::vector<std::array<double, 4>>& stripes) {
  VipsImage* black = nullptr;
  EXPECT_EQ(vips_black(&black, width, height, "bands", 3, nullptr), 0);
  ImagePtr owned_black(black);
  ImagePtr canvas(vips_image_copy_memory(black));
  int left = 0;
  for (const auto& s : stripes) {
    const int w = static_cast<int>(std::lround(s[0] * width));
    double ink[3] = {s[1], s[2], s[3]};
    EXPECT_EQ(vips_draw_rect(canvas.get(), ink, 3, left, 0, w, height, "fill", TRUE, nullptr), 0);
    left += w;
  }
  VipsImage* out = nullptr;
  EXPECT_EQ(vips_copy(canvas.get(), &out, "interpretation", VIPS_INTERPRETATION_sRGB, nullptr), 0);
  return ImagePtr(out);
}

class PipelineTest : public testing::Test {
 protected:
  static void SetUpTestSuite() { InitVips(1); }
};

TEST_F(PipelineTest, DefaultRenditionsDecodeWithTheRightSizesAndNoMetadata) {
  // 3264x2448 with EXIF, GPS and orientation 3 (a 180 degree turn keeps the size).
  const auto output =
      RunDefaultPipeline((kCorpora / "exif/metadata-extractor-images/jpg/Apple iPhone 5.jpg").string(),
                         kDefaultRenditions);
  ASSERT_TRUE(output.ok()) << output.error().message;
  ASSERT_EQ(output->renditions.size(), 2u);
  const int expected[2][2] = {{256, 192}, {1024, 768}};
  for (int i = 0; i < 2; ++i) {
    const RenditionOutput& r = output->renditions[i];
    SCOPED_TRACE(r.name);
    EXPECT_EQ(r.name, kDefaultRenditions[i].name);
    EXPECT_EQ(r.format, "jpeg");
    EXPECT_EQ(r.content_type, "image/jpeg");
    EXPECT_EQ(r.extension, "jpg");
    EXPECT_EQ(r.width, expected[i][0]);
    EXPECT_EQ(r.height, expected[i][1]);
    const Decoded d = Decode(r.bytes);
    ASSERT_TRUE(d.ok);
    EXPECT_EQ(d.loader, "jpegload_buffer");
    EXPECT_EQ(d.width, r.width);
    EXPECT_EQ(d.height, r.height);
    EXPECT_EQ(d.bands, 3);
    EXPECT_FALSE(d.has_exif) << "metadata must be stripped (GPS positions leak otherwise)";
    EXPECT_FALSE(d.has_icc);
  }
  EXPECT_TRUE(output->phash.has_value());
  ASSERT_TRUE(output->dominant_colour.has_value());
  EXPECT_TRUE(std::regex_match(*output->dominant_colour, std::regex("#[0-9a-f]{6}"))) << *output->dominant_colour;
  EXPECT_GT(output->decode_seconds, 0);
  EXPECT_GT(output->encode_seconds, 0);
}

TEST_F(PipelineTest, NeverUpscales) {
  // kodim01 is 768x512: the 1024 rendition keeps its size, the 256 one shrinks it.
  auto output = RunDefaultPipeline((kCorpora / "valid/kodak/kodim01.png").string(), kDefaultRenditions);
  ASSERT_TRUE(output.ok()) << output.error().message;
  EXPECT_EQ(output->renditions[0].width, 256);
  EXPECT_EQ(output->renditions[0].height, 171);
  EXPECT_EQ(output->renditions[1].width, 768);
  EXPECT_EQ(output->renditions[1].height, 512);

  output = RunDefaultPipeline((kCorpora / "exif/pillow/multiple_exif.jpg").string(), kDefaultRenditions);  // 1x1
  ASSERT_TRUE(output.ok()) << output.error().message;
  for (const auto& r : output->renditions) {
    EXPECT_EQ(r.width, 1);
    EXPECT_EQ(r.height, 1);
    EXPECT_TRUE(Decode(r.bytes).ok);
  }
}

// recurser's exif-orientation-examples: the same photo stored in the 8 EXIF orientations (and _0 without a valid
// one). Every thumbnail must come out upright: the size and the perceptual hash of orientation 1.
TEST_F(PipelineTest, ExifOrientationsAllComeOutUpright) {
  for (const std::string shape : {"Landscape", "Portrait"}) {
    const fs::path dir = kCorpora / "exif/exif-orientation-examples";
    const auto reference = RunDefaultPipeline((dir / (shape + "_1.jpg")).string(), kDefaultRenditions);
    ASSERT_TRUE(reference.ok()) << reference.error().message;
    const RenditionOutput& big = reference->renditions[1];
    if (shape == "Landscape") {
      EXPECT_GT(big.width, big.height);
    } else {
      EXPECT_LT(big.width, big.height);
    }
    for (int orientation = 0; orientation <= 8; ++orientation) {
      const std::string file = shape + "_" + std::to_string(orientation) + ".jpg";
      SCOPED_TRACE(file);
      const auto output = RunDefaultPipeline((dir / file).string(), kDefaultRenditions);
      ASSERT_TRUE(output.ok()) << output.error().message;
      for (size_t i = 0; i < output->renditions.size(); ++i) {
        EXPECT_EQ(output->renditions[i].width, reference->renditions[i].width);
        EXPECT_EQ(output->renditions[i].height, reference->renditions[i].height);
      }
      const int distance = PhashDistance(*output->phash, *reference->phash);
      std::printf("[ orient   ] %s: %dx%d, phash distance to orientation 1: %d\n", file.c_str(),
                  output->renditions[1].width, output->renditions[1].height, distance);
      EXPECT_LE(distance, 6);
    }
  }
}

TEST_F(PipelineTest, PerceptualHashIsCloseForACopyAndFarForAnotherPicture) {
  TempDir dir;
  const std::string original = (kCorpora / "valid/kodak/kodim01.png").string();
  // A smaller, heavily compressed JPEG copy of the same picture.
  {
    ImagePtr image = Load(original);
    VipsImage* smaller = nullptr;
    ASSERT_EQ(vips_resize(image.get(), &smaller, 0.6, nullptr), 0);
    ImagePtr owned(smaller);
    Save(smaller, dir.Path("copy.jpg") + "[Q=35]");
  }
  const auto a = RunDefaultPipeline(original, kDefaultRenditions);
  const auto copy = RunDefaultPipeline(dir.Path("copy.jpg"), kDefaultRenditions);
  ASSERT_TRUE(a.ok() && copy.ok());
  const int same = PhashDistance(*a->phash, *copy->phash);
  std::printf("[ phash    ] kodim01 vs its JPEG copy: %d\n", same);
  EXPECT_LE(same, 6);

  for (const char* other : {"kodim02.png", "kodim03.png", "kodim05.png", "kodim13.png", "kodim23.png"}) {
    const auto b = RunDefaultPipeline((kCorpora / "valid/kodak" / other).string(), kDefaultRenditions);
    ASSERT_TRUE(b.ok());
    const int different = PhashDistance(*a->phash, *b->phash);
    std::printf("[ phash    ] kodim01 vs %s: %d\n", other, different);
    EXPECT_GE(different, 16) << other;
  }
  EXPECT_EQ(PhashDistance(0, ~uint64_t{0}), 64);
  EXPECT_EQ(PhashDistance(0x0F, 0x0F), 0);
}

TEST_F(PipelineTest, AutoFormatIsWebpWithAlphaAndJpegWithout) {
  auto output = RunDefaultPipeline((kCorpora / "valid/pngsuite/bgan6a08.png").string(), kDefaultRenditions);
  ASSERT_TRUE(output.ok()) << output.error().message;
  for (const auto& r : output->renditions) {
    EXPECT_EQ(r.format, "webp");
    EXPECT_EQ(r.content_type, "image/webp");
    EXPECT_EQ(r.extension, "webp");
    const Decoded d = Decode(r.bytes);
    EXPECT_EQ(d.loader, "webpload_buffer");
    EXPECT_EQ(d.bands, 4);
  }
  output = RunDefaultPipeline((kCorpora / "valid/pngsuite/basn2c08.png").string(), kDefaultRenditions);
  ASSERT_TRUE(output.ok());
  EXPECT_EQ(output->renditions[0].format, "jpeg");
}

TEST_F(PipelineTest, EncodesEveryConfiguredFormat) {
  const std::vector<RenditionConfig> renditions = {{"j", 300, 300, "inside", "jpeg", 90},
                                                   {"w", 300, 300, "inside", "webp", 70},
                                                   {"p", 200, 200, "inside", "png", 82},
                                                   {"a", 160, 160, "inside", "avif", 50}};
  // An RGBA source: JPEG must flatten it, the others keep it.
  const auto output = RunDefaultPipeline((kCorpora / "valid/pillow/png/transparent.png").string(), renditions);
  ASSERT_TRUE(output.ok()) << output.error().message;
  const char* loaders[] = {"jpegload_buffer", "webpload_buffer", "pngload_buffer", "heifload_buffer"};
  const char* types[] = {"image/jpeg", "image/webp", "image/png", "image/avif"};
  const char* extensions[] = {"jpg", "webp", "png", "avif"};
  for (size_t i = 0; i < renditions.size(); ++i) {
    const RenditionOutput& r = output->renditions[i];
    SCOPED_TRACE(r.name);
    const Decoded d = Decode(r.bytes);
    ASSERT_TRUE(d.ok);
    EXPECT_EQ(d.loader, loaders[i]);
    EXPECT_EQ(r.content_type, types[i]);
    EXPECT_EQ(r.extension, extensions[i]);
    EXPECT_EQ(d.width, r.width);
    EXPECT_EQ(d.height, r.height);
    EXPECT_EQ(std::max(r.width, r.height), std::min(renditions[i].width, 200));  // the source is 200x150
    EXPECT_EQ(d.bands, i == 0 ? 3 : 4);
  }
  EXPECT_EQ(Decode(output->renditions[3].bytes).compression, "av1");
}

TEST_F(PipelineTest, CoverFillsTheBoxWithTheCentre) {
  TempDir dir;
  // 300x100: red, green, blue thirds. A 100x100 cover crop is the green middle.
  ImagePtr stripes = Stripes(300, 100, {{1.0 / 3, 255, 0, 0}, {1.0 / 3, 0, 255, 0}, {1.0 / 3, 0, 0, 255}});
  Save(stripes.get(), dir.Path("stripes.png"));
  const std::vector<RenditionConfig> renditions = {{"square", 50, 50, "cover", "png", 82},
                                                   {"inside", 150, 150, "inside", "png", 82}};
  const auto output = RunDefaultPipeline(dir.Path("stripes.png"), renditions);
  ASSERT_TRUE(output.ok()) << output.error().message;
  const Decoded square = Decode(output->renditions[0].bytes);
  EXPECT_EQ(square.width, 50);
  EXPECT_EQ(square.height, 50);
  ASSERT_EQ(square.band_means.size(), 3u);
  EXPECT_LT(square.band_means[0], 10);
  EXPECT_GT(square.band_means[1], 245);
  EXPECT_LT(square.band_means[2], 10);
  EXPECT_EQ(output->renditions[1].width, 150);
  EXPECT_EQ(output->renditions[1].height, 50);

  // A cover box larger than the image: cropped to the box where the image is larger, never upscaled.
  const auto big = RunDefaultPipeline(dir.Path("stripes.png"), {{"big", 200, 200, "cover", "png", 82}});
  ASSERT_TRUE(big.ok()) << big.error().message;
  EXPECT_EQ(big->renditions[0].width, 200);
  EXPECT_EQ(big->renditions[0].height, 100);
}

TEST_F(PipelineTest, DominantColourIsTheMostCommonColour) {
  TempDir dir;
  ImagePtr stripes = Stripes(200, 100, {{0.7, 200, 30, 30}, {0.3, 20, 40, 220}});
  Save(stripes.get(), dir.Path("mostly-red.png"));
  const auto output = RunDefaultPipeline(dir.Path("mostly-red.png"), kDefaultRenditions);
  ASSERT_TRUE(output.ok()) << output.error().message;
  ASSERT_TRUE(output->dominant_colour);
  unsigned r = 0, g = 0, b = 0;
  ASSERT_EQ(std::sscanf(output->dominant_colour->c_str(), "#%02x%02x%02x", &r, &g, &b), 3);
  EXPECT_NEAR(r, 200, 3);
  EXPECT_NEAR(g, 30, 3);
  EXPECT_NEAR(b, 30, 3);
}

// CMYK JPEGs (from print workflows) must be converted through a CMYK profile: read as RGB, or with inverted ink,
// their colours would be far off.
TEST_F(PipelineTest, CmykJpegsComeOutInSrgb) {
  TempDir dir;
  const std::string original = (kCorpora / "valid/kodak/kodim23.png").string();
  {
    ImagePtr rgb = Load(original);
    VipsImage* cmyk = nullptr;
    ASSERT_EQ(vips_icc_export(rgb.get(), &cmyk, "output_profile", "cmyk", nullptr), 0) << vips_error_buffer();
    ImagePtr owned(cmyk);
    ASSERT_EQ(vips_image_get_interpretation(cmyk), VIPS_INTERPRETATION_CMYK);
    Save(cmyk, dir.Path("with-profile.jpg") + "[Q=95]");
    Save(cmyk, dir.Path("no-profile.jpg") + "[Q=95,strip]");
  }
  const auto reference = RunDefaultPipeline(original, kDefaultRenditions);
  ASSERT_TRUE(reference.ok());
  const Decoded expected = Decode(reference->renditions[0].bytes);
  for (const char* file : {"with-profile.jpg", "no-profile.jpg"}) {
    SCOPED_TRACE(file);
    const auto facts = ValidateImageFile(dir.Path(file), ImageLimits{});
    ASSERT_TRUE(facts.ok()) << facts.error().message;
    EXPECT_EQ(facts->colour_space, "cmyk");
    const auto output = RunDefaultPipeline(dir.Path(file), kDefaultRenditions);
    ASSERT_TRUE(output.ok()) << output.error().message;
    const Decoded got = Decode(output->renditions[0].bytes);
    ASSERT_EQ(got.bands, 3);
    for (int band = 0; band < 3; ++band) {
      std::printf("[ cmyk     ] %s band %d: mean %.1f, from the RGB original %.1f\n", file, band,
                  got.band_means[band], expected.band_means[band]);
      EXPECT_NEAR(got.band_means[band], expected.band_means[band], 12.0) << "band " << band;
    }
  }
}

TEST_F(PipelineTest, MultiFrameImagesGiveTheirFirstFrame) {
  // 100x100, 5 frames: renditions are one frame, not the strip of all frames.
  const auto output = RunDefaultPipeline((kCorpora / "valid/pillow/gif/dispose_none.gif").string(),
                                         kDefaultRenditions);
  ASSERT_TRUE(output.ok()) << output.error().message;
  for (const auto& r : output->renditions) {
    EXPECT_EQ(r.width, 100);
    EXPECT_EQ(r.height, 100);
  }
}

TEST_F(PipelineTest, IsDeterministicAndThreadSafe) {
  const std::vector<std::string> files = {"exif/exif-orientation-examples/Portrait_6.jpg", "valid/kodak/kodim05.png",
                                          "exif/metadata-extractor-images/heic/IMG_1034.heic",
                                          "valid/pngsuite/bgan6a08.png"};
  std::vector<PipelineOutput> expected;
  for (const auto& f : files) {
    auto output = RunDefaultPipeline((kCorpora / f).string(), kDefaultRenditions);
    ASSERT_TRUE(output.ok()) << f << ": " << output.error().message;
    expected.push_back(std::move(output).value());
  }
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = 0; i < files.size(); ++i) {
        const size_t k = (i + t) % files.size();
        const auto output = RunDefaultPipeline((kCorpora / files[k]).string(), kDefaultRenditions);
        if (!output.ok() || output->phash != expected[k].phash ||
            output->dominant_colour != expected[k].dominant_colour ||
            output->renditions[0].bytes != expected[k].renditions[0].bytes ||
            output->renditions[1].bytes != expected[k].renditions[1].bytes) {
          ++mismatches;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_F(PipelineTest, RefusesWhatItCannotProcess) {
  TempDir dir;
  std::ofstream(dir.Path("text.jpg")) << "not an image";
  auto output = RunDefaultPipeline(dir.Path("text.jpg"), kDefaultRenditions);
  ASSERT_FALSE(output.ok());
  EXPECT_EQ(output.error().kind, ErrorKind::kUnsupportedFormat);

  output = RunDefaultPipeline((kCorpora / "corrupt/pngsuite-x/xhdn0g08.png").string(), kDefaultRenditions);
  ASSERT_FALSE(output.ok());
  EXPECT_EQ(output.error().kind, ErrorKind::kInvalidImage);

  output = RunDefaultPipeline((kCorpora / "valid/kodak/kodim01.png").string(), {{"x", 100, 100, "inside", "gif", 82}});
  ASSERT_FALSE(output.ok());
  EXPECT_EQ(output.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(output.error().message.find("'gif'"), std::string::npos);
}

}  // namespace
}  // namespace imgpipe
