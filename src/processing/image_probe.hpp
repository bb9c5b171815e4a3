#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "processing/image_format.hpp"
#include "core/records.hpp"

namespace imgpipe {

struct ImageLimits {
  uint64_t max_bytes = 50ull * 1024 * 1024;
  uint64_t max_pixels = 100'000'000;  //!< width * height * frames
  int max_frames = 1000;
  int max_dimension = 65500;
  std::vector<ImageFormat> allowed = {ImageFormat::kJpeg, ImageFormat::kPng, ImageFormat::kWebp, ImageFormat::kGif,
                                      ImageFormat::kTiff, ImageFormat::kHeic, ImageFormat::kAvif};
};

//! What validation learned about an image, from its header and one strict decode.
struct ImageFacts {
  ImageFormat format = ImageFormat::kUnknown;
  int width = 0;     //!< of the main frame: the first, or HEIF's primary image (what renditions show)
  int height = 0;
  int frames = 1;    //!< libvips' "n-pages": animation frames, TIFF pages, HEIF top-level images
  bool has_alpha = false;
  std::string colour_space;  //!< libvips interpretation nickname: "srgb", "cmyk", "b-w", "rgb16", ...
  bool has_icc = false;
  //! From ParseExif on libvips' "exif-data" (empty when the file has none or it does not parse). orientation comes
  //! from libvips' "orientation" field when the EXIF has none, and is 1 when neither has one.
  ExifInfo exif;
};

//! Checks the format against the allow-list from the first bytes: kUnsupportedFormat (code "unsupported_format")
//! naming the detected format and the config key limits.allowed_formats. Cheap; the upload path calls it as soon as
//! it has the first 64 bytes, so a refused upload stops early.
Status CheckFormatAllowed(std::string_view head, const ImageLimits& limits);

//! Validates the image file at `path` before anything is stored: format by magic bytes and allow-list (415), header
//! probe for width, height and frames, limits on bytes, dimension, pixels over all frames and frames (413
//! "too_large" naming the limit and its config key), then one strict decode (fail on error, shrink-on-load where the
//! format has it) so corrupt or truncated files are refused (422 "invalid_image"). Never decodes a file whose header
//! is over a limit. Each format is opened with its own libvips loader only (the one its magic bytes name). PNG chunk
//! lengths are checked against the file size before libpng reads them (libpng allocates a chunk's claimed size).
//! Multi-frame images are decoded frame by frame where frames differ in size, each checked against the limits
//! first. Messages never contain `path`. Thread-safe. Requires InitVips() first.
//! Memory: a few decoded strips per call, except where the decoder needs the whole image (interlaced PNG,
//! progressive JPEG coefficients), which the pixel limit bounds.
Result<ImageFacts> ValidateImageFile(const std::string& path, const ImageLimits& limits);
//! ValidateImageFile() on an image held in memory, with the same checks, outcomes and messages. `bytes` must stay
//! valid until this returns; nothing of it is kept.
Result<ImageFacts> ValidateImageBuffer(std::string_view bytes, const ImageLimits& limits);

//! Initialises libvips for untrusted input: untrusted loaders blocked, operation cache off, `concurrency` threads
//! per operation, no leak reports, libvips' warnings about input files not printed (failures still reach callers).
//! Call once at start-up, before any processing; safe to call more than once (later calls only set concurrency).
//! Throws std::runtime_error if libvips cannot start.
void InitVips(int concurrency);

}  // namespace imgpipe
