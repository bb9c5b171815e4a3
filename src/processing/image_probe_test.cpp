#include "processing/image_probe.hpp"

#include <gtest/gtest.h>
#include <vips/vips.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "processing/pipeline.hpp"

namespace imgpipe {
namespace {

namespace fs = std::filesystem;

const fs::path kCorpora = IMGPIPE_CORPORA_DIR;

// Rounds of ValidatesFromManyThreadsAtOnce. Under AddressSanitizer (scripts/run-sanitized-tests) libvips' every
// allocation goes through ASan's allocator and this one test took about a third of the binary's time; one round
// still has four threads validating every file at once, which is what the sanitizers need to watch.
#if defined(__SANITIZE_ADDRESS__)
constexpr int kThreadedRounds = 1;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr int kThreadedRounds = 1;
#else
constexpr int kThreadedRounds = 3;
#endif
#else
constexpr int kThreadedRounds = 3;
#endif

// Every file under corpora/<folder>, as paths relative to the corpora folder, sorted; licence texts excluded.
std::vector<std::string> CorpusFiles(const std::string& folder) {
  std::vector<std::string> files;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(kCorpora / folder, ec); !ec && it != fs::end(it); ++it) {
    if (!it->is_regular_file()) continue;
    const std::string relative = fs::relative(it->path(), kCorpora).string();
    if (relative.find("/LICENSES/") != std::string::npos) continue;
    files.push_back(relative);
  }
  std::sort(files.begin(), files.end());
  return files;
}

// gtest parameter names: letters, digits and '_' only; made unique with a counter.
std::string TestName(const testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name + "_" + std::to_string(info.index);
}

const char* KindName(const Result<ImageFacts>& r) {
  return r.ok() ? "ok" : ErrorKindName(r.error().kind).data();  // the names are literals
}

class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/imgpipe-probe-test-XXXXXX";
    path_ = mkdtemp(pattern);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string Write(const std::string& name, const std::string& bytes) const {
    const std::string path = (path_ / name).string();
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

 private:
  fs::path path_;
};

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class VipsTest : public testing::Test {
 protected:
  static void SetUpTestSuite() { InitVips(1); }
};

// Files in corpora/valid that these decoders (Debian 12: libvips 8.14, libheif 1.15, libpng 1.6, libjpeg-turbo 2.1)
// cannot strictly decode, each with the reason. They may be refused with kInvalidImage; every other valid file must
// be accepted or refused by the allow-list.
const std::map<std::string, std::string> kKnownValidRefusals = {
    {"valid/libavif/avif/draw_points_idat_metasize0.avif",
     "corpora README: a 'meta' box of size 0 (to end of file), which libheif 1.15 does not read"},
    {"valid/libavif/avif/draw_points_idat_progressive_metasize0.avif",
     "corpora README: a 'meta' box of size 0 (to end of file), which libheif 1.15 does not read"},
    {"valid/pillow/avif/star.avifs", "corpora README: an AVIF sequence these decoders may refuse"},
    {"valid/libjxl-conformance/spot.jxl", "corpora README: more than 4 channels (and JPEG XL is not allowed)"},
    {"valid/libavif/avif/clap_irot_imir_non_essential.avif",
     "a 10-bit image with a mirror transform: libheif 1.15 mirrors only 8-bit images"},
    {"valid/libavif/png/circle-trns-before-plte.png",
     "tRNS before PLTE: libpng 1.6 stops reading the header with an error"},
    {"valid/pillow/tiff/tiff_tiled_planar_lzw.tiff", "tiled TIFF with separate planes: libvips 8.14 cannot read it"},
    {"valid/metadata-extractor-images/jpg/User Comment Encoding.jpg",
     "truncated: the scan ends without its EOI (a metadata test file); strict decoding refuses truncation"},
    {"valid/pillow/jpeg/ultrahdr.jpg",
     "truncated: the primary image's scan has no data (a metadata test file); strict decoding refuses truncation"},
};

bool Allowed(ImageFormat f) {
  const ImageLimits limits;
  return std::find(limits.allowed.begin(), limits.allowed.end(), f) != limits.allowed.end();
}

ImageFormat FormatOfFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::string head(512, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(in.gcount()));
  return DetectFormat(head);
}

const std::vector<RenditionConfig> kDefaultRenditions = {{"thumb-256", 256, 256, "inside", "auto", 82},
                                                          {"thumb-1024", 1024, 1024, "inside", "auto", 82}};

// The same image validated from memory (what an upload that fits in memory gets) has the same outcome and facts.
void ExpectBufferAgrees(const fs::path& path, const Result<ImageFacts>& from_file) {
  const std::string bytes = ReadFile(path);
  const auto from_memory = ValidateImageBuffer(bytes, ImageLimits{});
  ASSERT_EQ(from_memory.ok(), from_file.ok()) << (from_memory.ok() ? from_file : from_memory).error().message;
  if (!from_file.ok()) {
    EXPECT_EQ(from_memory.error().kind, from_file.error().kind) << from_memory.error().message;
    EXPECT_EQ(from_memory.error().Code(), from_file.error().Code());
    return;
  }
  EXPECT_EQ(from_memory->format, from_file->format);
  EXPECT_EQ(from_memory->width, from_file->width);
  EXPECT_EQ(from_memory->height, from_file->height);
  EXPECT_EQ(from_memory->frames, from_file->frames);
  EXPECT_EQ(from_memory->colour_space, from_file->colour_space);
  EXPECT_EQ(from_memory->exif.orientation, from_file->exif.orientation);
}

// The pipeline run on the same image in memory (what a worker does with a decrypted original) makes the same bytes.
void ExpectPipelineOnBufferAgrees(const fs::path& path, const PipelineOutput& from_file) {
  const std::string bytes = ReadFile(path);
  const auto from_memory = RunDefaultPipelineOnBuffer(bytes, kDefaultRenditions);
  ASSERT_TRUE(from_memory.ok()) << from_memory.error().message;
  ASSERT_EQ(from_memory->renditions.size(), from_file.renditions.size());
  for (size_t i = 0; i < from_file.renditions.size(); ++i) {
    EXPECT_EQ(from_memory->renditions[i].bytes, from_file.renditions[i].bytes) << from_file.renditions[i].name;
  }
  EXPECT_EQ(from_memory->phash, from_file.phash);
  EXPECT_EQ(from_memory->dominant_colour, from_file.dominant_colour);
}

// --- corpora/valid: accepted (and processed), or refused by the allow-list ---

class ValidCorpusTest : public testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() { InitVips(1); }
};

TEST_P(ValidCorpusTest, IsAcceptedAndProcessedOrRefusedByTheAllowList) {
  const std::string& file = GetParam();
  const fs::path path = kCorpora / file;
  const auto facts = ValidateImageFile(path.string(), ImageLimits{});
  std::printf("[ outcome  ] %s: %s %s\n", file.c_str(), KindName(facts),
              facts.ok() ? (std::string(FormatName(facts->format)) + " " + std::to_string(facts->width) + "x" +
                            std::to_string(facts->height) + " frames " + std::to_string(facts->frames) + " " +
                            facts->colour_space)
                               .c_str()
                         : facts.error().message.c_str());
  ExpectBufferAgrees(path, facts);

  const ImageFormat format = FormatOfFile(path);
  if (!Allowed(format)) {
    ASSERT_FALSE(facts.ok()) << file << " is " << FormatName(format) << ", which is not on the allow-list";
    EXPECT_EQ(facts.error().kind, ErrorKind::kUnsupportedFormat);
    EXPECT_EQ(facts.error().Code(), "unsupported_format");
    EXPECT_NE(facts.error().message.find(std::string(FormatName(format))), std::string::npos);
    EXPECT_NE(facts.error().message.find("limits.allowed_formats"), std::string::npos);
    return;
  }
  if (auto known = kKnownValidRefusals.find(file); known != kKnownValidRefusals.end() && !facts.ok()) {
    std::printf("[ known    ] %s: %s\n", file.c_str(), known->second.c_str());
    EXPECT_EQ(facts.error().kind, ErrorKind::kInvalidImage) << facts.error().message;
    return;
  }
  ASSERT_TRUE(facts.ok()) << file << ": " << facts.error().message;
  EXPECT_EQ(facts->format, format);
  EXPECT_GT(facts->width, 0);
  EXPECT_GT(facts->height, 0);
  EXPECT_GE(facts->frames, 1);
  EXPECT_FALSE(facts->colour_space.empty());
  ASSERT_TRUE(facts->exif.orientation);

  const auto output = RunDefaultPipeline(path.string(), kDefaultRenditions);
  ASSERT_TRUE(output.ok()) << file << ": " << output.error().message;
  ASSERT_EQ(output->renditions.size(), 2u);
  for (const auto& r : output->renditions) EXPECT_FALSE(r.bytes.empty()) << r.name;
  ExpectPipelineOnBufferAgrees(path, *output);
}

INSTANTIATE_TEST_SUITE_P(Corpus, ValidCorpusTest, testing::ValuesIn(CorpusFiles("valid")), TestName);

// --- corpora/corrupt: refused with a client error, or (odd but legal files) accepted and processed ---

class CorruptCorpusTest : public testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() { InitVips(1); }
};

TEST_P(CorruptCorpusTest, IsRefusedWithAClientErrorOrProcessed) {
  const std::string& file = GetParam();
  const fs::path path = kCorpora / file;
  const auto facts = ValidateImageFile(path.string(), ImageLimits{});
  std::printf("[ outcome  ] %s: %s %s\n", file.c_str(), KindName(facts),
              facts.ok() ? "(legal: processed below)" : facts.error().message.c_str());
  ExpectBufferAgrees(path, facts);
  if (facts.ok()) {
    const auto output = RunDefaultPipeline(path.string(), kDefaultRenditions);
    ASSERT_TRUE(output.ok()) << file << " validated but does not process: " << output.error().message;
    EXPECT_EQ(output->renditions.size(), 2u);
    ExpectPipelineOnBufferAgrees(path, *output);
    return;
  }
  const Error& error = facts.error();
  const std::set<ErrorKind> client_errors = {ErrorKind::kInvalidImage, ErrorKind::kTooLarge,
                                             ErrorKind::kUnsupportedFormat};
  EXPECT_TRUE(client_errors.count(error.kind)) << ErrorKindName(error.kind) << ": " << error.message;
  EXPECT_EQ(error.Code(), ErrorKindName(error.kind));
  EXPECT_FALSE(error.message.empty());
  // Messages go to API clients: they must not carry the server-side path of the file.
  EXPECT_EQ(error.message.find(path.string()), std::string::npos) << error.message;
}

INSTANTIATE_TEST_SUITE_P(Corpus, CorruptCorpusTest, testing::ValuesIn(CorpusFiles("corrupt")), TestName);

// --- bombs and limits ---

using ImageProbeTest = VipsTest;

TEST_F(ImageProbeTest, LottapixelIsRefusedFromItsHeader) {
  const auto facts = ValidateImageFile((kCorpora / "corrupt/bombs/lottapixel.jpg").string(), ImageLimits{});
  ASSERT_FALSE(facts.ok());
  EXPECT_EQ(facts.error().kind, ErrorKind::kTooLarge);
  EXPECT_EQ(facts.error().Code(), "too_large");
  EXPECT_EQ(facts.error().message,
            "image is 64250x64250 (4.1 gigapixels); the limit is 100 megapixels (limits.max_pixels)");
}

TEST_F(ImageProbeTest, GifWithThousandsOfFramesIsRefusedFromItsHeader) {
  const auto facts = ValidateImageFile((kCorpora / "corrupt/bombs/uber.gif").string(), ImageLimits{});
  ASSERT_FALSE(facts.ok());
  EXPECT_EQ(facts.error().kind, ErrorKind::kTooLarge);
  EXPECT_NE(facts.error().message.find("frames; the limit is 1000 frames (limits.max_frames)"), std::string::npos)
      << facts.error().message;
}

TEST_F(ImageProbeTest, PngChunkClaimingMoreThanTheFileIsRefusedBeforeLibpng) {
  // 57 bytes claiming a 1 GiB iTXt chunk: libpng would allocate the gigabyte first.
  const auto facts =
      ValidateImageFile((kCorpora / "corrupt/libpng/crashers/huge_iTXt_chunk.png").string(), ImageLimits{});
  ASSERT_FALSE(facts.ok());
  EXPECT_EQ(facts.error().kind, ErrorKind::kInvalidImage);
  EXPECT_EQ(facts.error().Code(), "invalid_image");
  EXPECT_NE(facts.error().message.find("iTXt"), std::string::npos) << facts.error().message;
}

TEST_F(ImageProbeTest, EachLimitIsEnforcedAndNamedWithItsConfigKey) {
  const std::string jpeg = (kCorpora / "exif/metadata-extractor-images/jpg/Apple iPhone 5.jpg").string();
  ASSERT_TRUE(ValidateImageFile(jpeg, ImageLimits{}).ok());

  ImageLimits limits;
  limits.max_bytes = 1000;
  auto facts = ValidateImageFile(jpeg, limits);
  ASSERT_FALSE(facts.ok());
  EXPECT_EQ(facts.error().kind, ErrorKind::kTooLarge);
  EXPECT_NE(facts.error().message.find("(limits.max_bytes)"), std::string::npos) << facts.error().message;

  limits = ImageLimits{};
  limits.max_dimension = 1000;
  facts = ValidateImageFile(jpeg, limits);
  ASSERT_FALSE(facts.ok());
  EXPECT_EQ(facts.error().kind, ErrorKind::kTooLarge);
  EXPECT_NE(facts.error().message.find("(limits.max_dimension)"), std::string::npos) << facts.error().message;

  limits = ImageLimits{};
  limits.max_pixels = 1'000'000;
  facts = ValidateImageFile(jpeg, limits);
  ASSERT_FALSE(facts.ok());
  EXPECT_EQ(facts.error().kind, ErrorKind::kTooLarge);
  EXPECT_NE(facts.error().message.find("the limit is 1 megapixels (limits.max_pixels)"), std::string::npos)
      << facts.error().message;
}

TEST_F(ImageProbeTest, PixelLimitCountsEveryFrame) {
  const std::string gif = (kCorpora / "corrupt/bombs/decompression_bomb_extents.gif").string();
  auto facts = ValidateImageFile(gif, ImageLimits{});
  ASSERT_TRUE(facts.ok()) << facts.error().message;
  ASSERT_EQ(facts->frames, 2);
  const uint64_t one_frame = uint64_t(facts->width) * uint64_t(facts->height);

  ImageLimits limits;
  limits.max_pixels = one_frame + 1;  // room for one frame, not two
  facts = ValidateImageFile(gif, limits);
  ASSERT_FALSE(facts.ok());
  EXPECT_EQ(facts.error().kind, ErrorKind::kTooLarge);
  EXPECT_NE(facts.error().message.find("with 2 frames"), std::string::npos) << facts.error().message;

  limits = ImageLimits{};
  limits.max_frames = 1;
  facts = ValidateImageFile(gif, limits);
  ASSERT_FALSE(facts.ok());
  EXPECT_NE(facts.error().message.find("(limits.max_frames)"), std::string::npos) << facts.error().message;
}

// multipage.tiff has pages of 10x10, 10x10 and 20x20: the header (first page) suggests 300 pixels in all, the
// pages hold 600. Pages of different sizes are checked one by one before they are decoded.
TEST_F(ImageProbeTest, LaterPagesLargerThanTheFirstAreCountedBeforeDecoding) {
  const std::string tiff = (kCorpora / "valid/pillow/tiff/multipage.tiff").string();
  auto facts = ValidateImageFile(tiff, ImageLimits{});
  ASSERT_TRUE(facts.ok()) << facts.error().message;
  EXPECT_EQ(facts->frames, 3);
  EXPECT_EQ(facts->width, 10);

  ImageLimits limits;
  limits.max_pixels = 300;
  facts = ValidateImageFile(tiff, limits);
  ASSERT_FALSE(facts.ok());
  EXPECT_EQ(facts.error().kind, ErrorKind::kTooLarge);
  EXPECT_EQ(facts.error().message,
            "image frames 1 to 3 hold 600 pixels; the limit is 300 pixels (limits.max_pixels)");

  limits = ImageLimits{};
  limits.max_dimension = 15;
  facts = ValidateImageFile(tiff, limits);
  ASSERT_FALSE(facts.ok());
  EXPECT_NE(facts.error().message.find("(limits.max_dimension)"), std::string::npos) << facts.error().message;
}

TEST_F(ImageProbeTest, AllowListDecidesFromMagicBytesNotFileNames) {
  TempDir dir;
  // A PNG named .jpg is a PNG; a BMP named .png is a BMP, which is not allowed by default.
  const std::string png_as_jpg = dir.Write("photo.jpg", ReadFile(kCorpora / "valid/pngsuite/basn2c08.png"));
  auto facts = ValidateImageFile(png_as_jpg, ImageLimits{});
  ASSERT_TRUE(facts.ok()) << facts.error().message;
  EXPECT_EQ(facts->format, ImageFormat::kPng);

  const std::string bmp_as_png = dir.Write("photo.png", ReadFile(kCorpora / CorpusFiles("valid/pillow/bmp").front()));
  facts = ValidateImageFile(bmp_as_png, ImageLimits{});
  ASSERT_FALSE(facts.ok());
  EXPECT_EQ(facts.error().kind, ErrorKind::kUnsupportedFormat);
  EXPECT_EQ(facts.error().message,
            "image format 'bmp' is not allowed; allowed formats are jpeg, png, webp, gif, tiff, heic, avif "
            "(limits.allowed_formats)");

  // Narrowing the allow-list refuses formats that are otherwise fine.
  ImageLimits jpeg_only;
  jpeg_only.allowed = {ImageFormat::kJpeg};
  facts = ValidateImageFile(png_as_jpg, jpeg_only);
  ASSERT_FALSE(facts.ok());
  EXPECT_EQ(facts.error().kind, ErrorKind::kUnsupportedFormat);
  EXPECT_NE(facts.error().message.find("'png'"), std::string::npos);

  const std::string text = dir.Write("notes.gif", "just some text, not an image at all");
  facts = ValidateImageFile(text, ImageLimits{});
  ASSERT_FALSE(facts.ok());
  EXPECT_EQ(facts.error().kind, ErrorKind::kUnsupportedFormat);
  EXPECT_NE(facts.error().message.find("not recognised"), std::string::npos);

  const std::string empty = dir.Write("empty.png", "");
  facts = ValidateImageFile(empty, ImageLimits{});
  ASSERT_FALSE(facts.ok());
  EXPECT_EQ(facts.error().kind, ErrorKind::kInvalidImage);
}

TEST_F(ImageProbeTest, CheckFormatAllowedNeedsOnlyTheFirstBytes) {
  const ImageLimits limits;
  EXPECT_TRUE(CheckFormatAllowed("\xFF\xD8\xFF\xE0", limits).ok());
  const auto jxl = CheckFormatAllowed("\xFF\x0A\xFA\x1F", limits);
  ASSERT_FALSE(jxl.ok());
  EXPECT_EQ(jxl.error().kind, ErrorKind::kUnsupportedFormat);
  EXPECT_EQ(jxl.error().Code(), "unsupported_format");
  EXPECT_NE(jxl.error().message.find("'jxl'"), std::string::npos);
  EXPECT_NE(jxl.error().message.find("limits.allowed_formats"), std::string::npos);
}

// Cutting a file short must be caught by the strict decode for every allowed format, also where the decode shrinks
// on load (JPEG, WebP): the header alone would look fine.
TEST_F(ImageProbeTest, TruncatedFilesOfEveryAllowedFormatAreInvalid) {
  const std::vector<std::string> samples = {
      "exif/metadata-extractor-images/jpg/Apple iPhone 5.jpg",  // JPEG, decoded with shrink-on-load
      "valid/kodak/kodim01.png",
      "valid/libwebp-examples/test.webp",  // decoded with scale-on-load
      "valid/pillow/gif/hopper.gif",
      "valid/metadata-extractor-images/tif/Classic.tif",
      "exif/metadata-extractor-images/heic/IMG_1034.heic",
      "valid/libavif/avif/kodim03_yuv420_8bpc.avif",
  };
  TempDir dir;
  int index = 0;
  for (const std::string& sample : samples) {
    SCOPED_TRACE(sample);
    const std::string bytes = ReadFile(kCorpora / sample);
    ASSERT_TRUE(ValidateImageFile((kCorpora / sample).string(), ImageLimits{}).ok()) << "sample must be valid";
    const std::string cut = dir.Write("cut" + std::to_string(index++), bytes.substr(0, bytes.size() * 6 / 10));
    const auto facts = ValidateImageFile(cut, ImageLimits{});
    std::printf("[ truncated] %s: %s %s\n", sample.c_str(), KindName(facts),
                facts.ok() ? "" : facts.error().message.c_str());
    ASSERT_FALSE(facts.ok());
    EXPECT_EQ(facts.error().kind, ErrorKind::kInvalidImage) << facts.error().message;
  }
}

TEST_F(ImageProbeTest, ReportsColourAlphaIccAndExif) {
  auto facts = ValidateImageFile((kCorpora / "valid/pngsuite/bgan6a08.png").string(), ImageLimits{});  // RGBA
  ASSERT_TRUE(facts.ok());
  EXPECT_TRUE(facts->has_alpha);
  EXPECT_EQ(facts->colour_space, "srgb");
  EXPECT_EQ(facts->exif.orientation, 1);  // no EXIF: the default

  facts = ValidateImageFile((kCorpora / "valid/pillow/jpeg/hopper_gray.jpg").string(), ImageLimits{});
  ASSERT_TRUE(facts.ok());
  EXPECT_FALSE(facts->has_alpha);
  EXPECT_EQ(facts->colour_space, "b-w");

  facts = ValidateImageFile((kCorpora / "valid/pillow/tiff/tiff_strip_cmyk_jpeg.tif").string(), ImageLimits{});
  ASSERT_TRUE(facts.ok()) << facts.error().message;
  EXPECT_EQ(facts->colour_space, "cmyk");

  facts = ValidateImageFile((kCorpora / "valid/pillow/jpeg/icc_profile_big.jpg").string(), ImageLimits{});
  ASSERT_TRUE(facts.ok());
  EXPECT_TRUE(facts->has_icc);

  facts = ValidateImageFile((kCorpora / "exif/metadata-extractor-images/jpg/Apple iPhone 5.jpg").string(),
                            ImageLimits{});
  ASSERT_TRUE(facts.ok());
  EXPECT_EQ(facts->format, ImageFormat::kJpeg);
  EXPECT_EQ(facts->exif.make, "Apple");
  EXPECT_EQ(facts->exif.model, "iPhone 5");
  EXPECT_EQ(facts->exif.orientation, 3);
  EXPECT_EQ(facts->exif.taken_at, "2012-09-29T16:11:25");
  ASSERT_TRUE(facts->exif.gps_lon);
  EXPECT_NEAR(*facts->exif.gps_lon, -122.337333, 1e-5);

  facts = ValidateImageFile((kCorpora / "exif/metadata-extractor-images/heic/IMG_1034.heic").string(), ImageLimits{});
  ASSERT_TRUE(facts.ok()) << facts.error().message;
  EXPECT_EQ(facts->format, ImageFormat::kHeic);
  EXPECT_EQ(facts->exif.make, "Apple");
  EXPECT_TRUE(facts->exif.gps_lat);
}

TEST_F(ImageProbeTest, AnimatedImagesReportTheirFrames) {
  std::string animated;
  for (const std::string& file : CorpusFiles("valid/metadata-extractor-images/webp")) {
    if (file.find("Animation") != std::string::npos) animated = file;
  }
  ASSERT_FALSE(animated.empty());
  const auto facts = ValidateImageFile((kCorpora / animated).string(), ImageLimits{});
  ASSERT_TRUE(facts.ok()) << facts.error().message;
  EXPECT_GT(facts->frames, 1);
}

// The upload path validates from many threads at once: results must be the same as one at a time.
TEST_F(ImageProbeTest, ValidatesFromManyThreadsAtOnce) {
  const std::vector<std::string> files = {
      "exif/metadata-extractor-images/jpg/Apple iPhone 5.jpg", "valid/kodak/kodim03.png",
      "corrupt/bombs/lottapixel.jpg",   "corrupt/pillow/truncated_jpeg.jpg",
      "exif/metadata-extractor-images/heic/IMG_1034.heic",     "corrupt/bombs/uber.gif"};
  std::vector<std::string> expected;
  for (const auto& f : files) {
    const auto facts = ValidateImageFile((kCorpora / f).string(), ImageLimits{});
    expected.push_back(facts.ok() ? std::to_string(facts->width) + "x" + std::to_string(facts->height)
                                  : std::string(ErrorKindName(facts.error().kind)));
  }
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < kThreadedRounds; ++round) {
        for (size_t i = 0; i < files.size(); ++i) {
          const size_t k = (i + t) % files.size();
          const auto facts = ValidateImageFile((kCorpora / files[k]).string(), ImageLimits{});
          const std::string got = facts.ok() ? std::to_string(facts->width) + "x" + std::to_string(facts->height)
                                             : std::string(ErrorKindName(facts.error().kind));
          if (got != expected[k]) ++mismatches;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace imgpipe
