#pragma once

#include <string>
#include <string_view>

namespace imgpipe {

//! Formats recognised by their magic bytes. Recognising a format does not mean it is allowed: see limits.
enum class ImageFormat { kUnknown, kJpeg, kPng, kWebp, kGif, kTiff, kHeic, kAvif, kJxl, kBmp, kIco, kSvg, kPdf };

//! Detects the format from the first bytes of a file (at least 32 are needed for ISO-BMFF brands; fewer may give
//! kUnknown). Never looks at a Content-Type or a file name.
ImageFormat DetectFormat(std::string_view head);
//! Lowercase short name: "jpeg", "png", ..., "unknown".
std::string_view FormatName(ImageFormat f);
//! Media type of the original, e.g. "image/jpeg"; "application/octet-stream" for kUnknown.
std::string_view FormatContentType(ImageFormat f);
bool ParseFormatName(std::string_view name, ImageFormat* out);

}  // namespace imgpipe
