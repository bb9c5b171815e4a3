#include "processing/image_format.hpp"

#include <algorithm>
#include <array>
#include <cstdint>

namespace imgpipe {
namespace {

bool StartsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

uint32_t ReadBigEndian32(std::string_view s, size_t at) {
  return (uint32_t{static_cast<uint8_t>(s[at])} << 24) | (uint32_t{static_cast<uint8_t>(s[at + 1])} << 16) |
         (uint32_t{static_cast<uint8_t>(s[at + 2])} << 8) | uint32_t{static_cast<uint8_t>(s[at + 3])};
}

// ISO-BMFF ("....ftyp<major><minor><compatible>*"): HEIF and AVIF share the container and differ by brand. The major
// brand decides when it is specific; a generic major brand (mif1, msf1, miaf) defers to the compatible brands, AVIF
// first because AVIF files commonly list mif1 as well. Only the brands inside `head` are looked at.
ImageFormat DetectIsoBmff(std::string_view head) {
  if (head.size() < 12 || head.substr(4, 4) != "ftyp") return ImageFormat::kUnknown;
  const uint32_t box_size = ReadBigEndian32(head, 0);
  const size_t end = std::min<size_t>(head.size(), box_size < 16 ? 16 : box_size);
  auto is_avif = [](std::string_view b) { return b == "avif" || b == "avis"; };
  auto is_heic = [](std::string_view b) {
    return b == "heic" || b == "heix" || b == "heim" || b == "heis" || b == "hevc" || b == "hevx";
  };
  auto is_generic = [](std::string_view b) { return b == "mif1" || b == "msf1" || b == "miaf"; };

  const std::string_view major = head.substr(8, 4);
  if (is_avif(major)) return ImageFormat::kAvif;
  if (is_heic(major)) return ImageFormat::kHeic;
  bool any_generic = is_generic(major);
  bool any_heic = false;
  // Compatible brands start after the 4-byte minor version.
  for (size_t at = 16; at + 4 <= end; at += 4) {
    const std::string_view brand = head.substr(at, 4);
    if (is_avif(brand)) return ImageFormat::kAvif;
    any_heic = any_heic || is_heic(brand);
    any_generic = any_generic || is_generic(brand);
  }
  if (any_heic || any_generic) return ImageFormat::kHeic;
  return ImageFormat::kUnknown;
}

bool LooksLikeSvg(std::string_view head) {
  if (StartsWith(head, "\xEF\xBB\xBF")) head.remove_prefix(3);
  const size_t first = head.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return false;
  head.remove_prefix(first);
  if (StartsWith(head, "<svg")) return true;
  // An XML declaration, comment or doctype first: only an <svg element within the head makes it SVG.
  if (StartsWith(head, "<?xml") || StartsWith(head, "<!--") || StartsWith(head, "<!DOCTYPE")) {
    return head.find("<svg") != std::string_view::npos;
  }
  return false;
}

struct FormatInfo {
  ImageFormat format;
  std::string_view name;
  std::string_view content_type;
};

constexpr std::array<FormatInfo, 13> kFormats = {{
    {ImageFormat::kUnknown, "unknown", "application/octet-stream"},
    {ImageFormat::kJpeg, "jpeg", "image/jpeg"},
    {ImageFormat::kPng, "png", "image/png"},
    {ImageFormat::kWebp, "webp", "image/webp"},
    {ImageFormat::kGif, "gif", "image/gif"},
    {ImageFormat::kTiff, "tiff", "image/tiff"},
    {ImageFormat::kHeic, "heic", "image/heic"},
    {ImageFormat::kAvif, "avif", "image/avif"},
    {ImageFormat::kJxl, "jxl", "image/jxl"},
    {ImageFormat::kBmp, "bmp", "image/bmp"},
    {ImageFormat::kIco, "ico", "image/vnd.microsoft.icon"},
    {ImageFormat::kSvg, "svg", "image/svg+xml"},
    {ImageFormat::kPdf, "pdf", "application/pdf"},
}};

const FormatInfo& Info(ImageFormat f) {
  for (const auto& info : kFormats) {
    if (info.format == f) return info;
  }
  return kFormats[0];
}

}  // namespace

ImageFormat DetectFormat(std::string_view head) {
  if (StartsWith(head, "\xFF\xD8\xFF")) return ImageFormat::kJpeg;
  if (StartsWith(head, "\x89PNG\r\n\x1A\n")) return ImageFormat::kPng;
  if (StartsWith(head, "GIF87a") || StartsWith(head, "GIF89a")) return ImageFormat::kGif;
  if (head.size() >= 12 && StartsWith(head, "RIFF") && head.substr(8, 4) == "WEBP") return ImageFormat::kWebp;
  if (StartsWith(head, std::string_view("II*\0", 4)) || StartsWith(head, std::string_view("MM\0*", 4)) ||
      StartsWith(head, std::string_view("II+\0", 4)) || StartsWith(head, std::string_view("MM\0+", 4))) {
    return ImageFormat::kTiff;
  }
  if (StartsWith(head, "\xFF\x0A") ||
      StartsWith(head, std::string_view("\0\0\0\x0CJXL \r\n\x87\n", 12))) {
    return ImageFormat::kJxl;
  }
  if (const ImageFormat iso = DetectIsoBmff(head); iso != ImageFormat::kUnknown) return iso;
  if (StartsWith(head, "BM")) return ImageFormat::kBmp;
  // ICO: reserved 0, type 1, then a non-zero image count.
  if (head.size() >= 6 && StartsWith(head, std::string_view("\0\0\1\0", 4)) && (head[4] != 0 || head[5] != 0)) {
    return ImageFormat::kIco;
  }
  if (StartsWith(head, "%PDF-")) return ImageFormat::kPdf;
  if (LooksLikeSvg(head)) return ImageFormat::kSvg;
  return ImageFormat::kUnknown;
}

std::string_view FormatName(ImageFormat f) { return Info(f).name; }

std::string_view FormatContentType(ImageFormat f) { return Info(f).content_type; }

bool ParseFormatName(std::string_view name, ImageFormat* out) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c); });
  // Common spellings of the same formats, so "jpg" in a config means what its author meant.
  if (lower == "jpg") lower = "jpeg";
  if (lower == "tif") lower = "tiff";
  if (lower == "heif") lower = "heic";
  for (const auto& info : kFormats) {
    if (info.format != ImageFormat::kUnknown && info.name == lower) {
      *out = info.format;
      return true;
    }
  }
  return false;
}

}  // namespace imgpipe
