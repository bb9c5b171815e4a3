#include "processing/image_format.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace imgpipe {
namespace {

using namespace std::string_literals;

// An ISO-BMFF file start: box size, "ftyp", major brand, minor version, compatible brands.
std::string Ftyp(const std::string& major, const std::vector<std::string>& compatible) {
  std::string box;
  const uint32_t size = static_cast<uint32_t>(16 + 4 * compatible.size());
  box += static_cast<char>(size >> 24);
  box += static_cast<char>(size >> 16);
  box += static_cast<char>(size >> 8);
  box += static_cast<char>(size);
  box += "ftyp" + major + "\0\0\0\0"s;
  for (const auto& brand : compatible) box += brand;
  box += "\0\0\0\0meta"s;  // the next box, so the head is longer than the ftyp box
  return box;
}

TEST(DetectFormatTest, RecognisesEachFormatByItsMagicBytes) {
  EXPECT_EQ(DetectFormat("\xFF\xD8\xFF\xE0\0\x10JFIF\0"s), ImageFormat::kJpeg);
  EXPECT_EQ(DetectFormat("\x89PNG\r\n\x1A\n\0\0\0\x0DIHDR"s), ImageFormat::kPng);
  EXPECT_EQ(DetectFormat("GIF89a\x01\0\x01\0"s), ImageFormat::kGif);
  EXPECT_EQ(DetectFormat("GIF87a\x01\0\x01\0"s), ImageFormat::kGif);
  EXPECT_EQ(DetectFormat("RIFF\x24\0\0\0WEBPVP8 "s), ImageFormat::kWebp);
  EXPECT_EQ(DetectFormat("II*\0\x08\0\0\0"s), ImageFormat::kTiff);
  EXPECT_EQ(DetectFormat("MM\0*\0\0\0\x08"s), ImageFormat::kTiff);
  EXPECT_EQ(DetectFormat("II+\0\x08\0\0\0"s), ImageFormat::kTiff);  // BigTIFF
  EXPECT_EQ(DetectFormat("\xFF\x0A\xFA\x1F"s), ImageFormat::kJxl);
  EXPECT_EQ(DetectFormat("\0\0\0\x0CJXL \r\n\x87\n\0\0"s), ImageFormat::kJxl);
  EXPECT_EQ(DetectFormat("BM\x3E\x04\0\0\0\0"s), ImageFormat::kBmp);
  EXPECT_EQ(DetectFormat("\0\0\1\0\1\0\x10\x10"s), ImageFormat::kIco);
  EXPECT_EQ(DetectFormat("%PDF-1.7\n"), ImageFormat::kPdf);
  EXPECT_EQ(DetectFormat("<svg xmlns=\"http://www.w3.org/2000/svg\"/>"), ImageFormat::kSvg);
  EXPECT_EQ(DetectFormat("\xEF\xBB\xBF  <?xml version=\"1.0\"?>\n<svg>"), ImageFormat::kSvg);
}

TEST(DetectFormatTest, TellsHeicFromAvifByBrand) {
  EXPECT_EQ(DetectFormat(Ftyp("avif", {"mif1", "miaf"})), ImageFormat::kAvif);
  EXPECT_EQ(DetectFormat(Ftyp("avis", {"avif", "msf1"})), ImageFormat::kAvif);
  EXPECT_EQ(DetectFormat(Ftyp("heic", {"mif1", "heic"})), ImageFormat::kHeic);
  EXPECT_EQ(DetectFormat(Ftyp("heix", {"mif1"})), ImageFormat::kHeic);
  // A generic major brand defers to the compatible brands.
  EXPECT_EQ(DetectFormat(Ftyp("mif1", {"mif1", "heic", "hevc"})), ImageFormat::kHeic);
  EXPECT_EQ(DetectFormat(Ftyp("mif1", {"mif1", "avif"})), ImageFormat::kAvif);
  // Other ISO-BMFF files (MP4 video, QuickTime) are not images.
  EXPECT_EQ(DetectFormat(Ftyp("isom", {"isom", "mp41"})), ImageFormat::kUnknown);
  EXPECT_EQ(DetectFormat(Ftyp("qt  ", {"qt  "})), ImageFormat::kUnknown);
}

TEST(DetectFormatTest, ShortOrUnknownHeadsAreUnknown) {
  EXPECT_EQ(DetectFormat(""), ImageFormat::kUnknown);
  EXPECT_EQ(DetectFormat("\xFF\xD8"), ImageFormat::kUnknown);
  EXPECT_EQ(DetectFormat("RIFF\x24\0\0\0WAVEfmt "s), ImageFormat::kUnknown);  // a WAV file
  EXPECT_EQ(DetectFormat("<?php echo 1; ?>"), ImageFormat::kUnknown);
  EXPECT_EQ(DetectFormat("<?xml version=\"1.0\"?><html/>"), ImageFormat::kUnknown);
  EXPECT_EQ(DetectFormat("P6\n1 1\n255\n"), ImageFormat::kUnknown);  // PPM: not recognised, so not allowed
  EXPECT_EQ(DetectFormat("\0\0\1\0\0\0"s), ImageFormat::kUnknown);  // ICO header with zero images
}

TEST(DetectFormatTest, IgnoresWhatFollowsTheMagicBytes) {
  // A polyglot: a GIF header with PHP after it is still a GIF (its decode decides whether it is a valid one).
  EXPECT_EQ(DetectFormat("GIF89a<?php phpinfo(); ?>"), ImageFormat::kGif);
}

TEST(FormatNameTest, NamesRoundTripAndContentTypesMatch) {
  const ImageFormat all[] = {ImageFormat::kJpeg, ImageFormat::kPng, ImageFormat::kWebp, ImageFormat::kGif,
                             ImageFormat::kTiff, ImageFormat::kHeic, ImageFormat::kAvif, ImageFormat::kJxl,
                             ImageFormat::kBmp, ImageFormat::kIco, ImageFormat::kSvg, ImageFormat::kPdf};
  for (ImageFormat f : all) {
    ImageFormat parsed = ImageFormat::kUnknown;
    ASSERT_TRUE(ParseFormatName(FormatName(f), &parsed)) << FormatName(f);
    EXPECT_EQ(parsed, f);
  }
  EXPECT_EQ(FormatName(ImageFormat::kJpeg), "jpeg");
  EXPECT_EQ(FormatName(ImageFormat::kUnknown), "unknown");
  EXPECT_EQ(FormatContentType(ImageFormat::kJpeg), "image/jpeg");
  EXPECT_EQ(FormatContentType(ImageFormat::kAvif), "image/avif");
  EXPECT_EQ(FormatContentType(ImageFormat::kSvg), "image/svg+xml");
  EXPECT_EQ(FormatContentType(ImageFormat::kUnknown), "application/octet-stream");
}

TEST(FormatNameTest, AcceptsCommonAliasesAndRefusesTheRest) {
  ImageFormat f = ImageFormat::kUnknown;
  EXPECT_TRUE(ParseFormatName("JPG", &f));
  EXPECT_EQ(f, ImageFormat::kJpeg);
  EXPECT_TRUE(ParseFormatName("tif", &f));
  EXPECT_EQ(f, ImageFormat::kTiff);
  EXPECT_TRUE(ParseFormatName("heif", &f));
  EXPECT_EQ(f, ImageFormat::kHeic);
  EXPECT_FALSE(ParseFormatName("unknown", &f));
  EXPECT_FALSE(ParseFormatName("ppm", &f));
  EXPECT_FALSE(ParseFormatName("", &f));
}

// `file` (libmagic) described every corpus file in MANIFEST.tsv; our detection must agree with it on every valid file.
TEST(DetectFormatTest, AgreesWithLibmagicOnTheValidCorpus) {
  const std::filesystem::path corpora = IMGPIPE_CORPORA_DIR;
  std::ifstream manifest(corpora / "MANIFEST.tsv");
  ASSERT_TRUE(manifest) << "corpora manifest missing under " << corpora;
  std::string line;
  std::getline(manifest, line);  // header
  int checked = 0;
  while (std::getline(manifest, line)) {
    std::istringstream fields(line);
    std::string path, bytes, description;
    std::getline(fields, path, '\t');
    std::getline(fields, bytes, '\t');
    std::getline(fields, description, '\t');
    if (path.rfind("valid/", 0) != 0) continue;
    ImageFormat expected = ImageFormat::kUnknown;
    if (description.find("JPEG XL") != std::string::npos) expected = ImageFormat::kJxl;
    else if (description.find("JPEG image data") != std::string::npos) expected = ImageFormat::kJpeg;
    else if (description.find("PNG image data") != std::string::npos) expected = ImageFormat::kPng;
    else if (description.find("GIF image data") != std::string::npos) expected = ImageFormat::kGif;
    else if (description.find("Web/P image") != std::string::npos) expected = ImageFormat::kWebp;
    else if (description.find("TIFF image data") != std::string::npos) expected = ImageFormat::kTiff;
    else if (description.find("AVIF Image") != std::string::npos) expected = ImageFormat::kAvif;
    else if (description.find("HEIF Image") != std::string::npos) expected = ImageFormat::kHeic;
    else if (description.find("PC bitmap") != std::string::npos) expected = ImageFormat::kBmp;
    ASSERT_NE(expected, ImageFormat::kUnknown) << "no expectation for " << path << ": " << description;

    std::ifstream in(corpora / path, std::ios::binary);
    ASSERT_TRUE(in) << path;
    std::string head(64, '\0');
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<size_t>(in.gcount()));
    EXPECT_EQ(FormatName(DetectFormat(head)), FormatName(expected)) << path << ": " << description;
    ++checked;
  }
  EXPECT_GT(checked, 400);
}

}  // namespace
}  // namespace imgpipe
