#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "core/result.hpp"
#include "processing/image_format.hpp"

struct _VipsImage;  // VipsImage, from <vips/vips.h>

namespace imgpipe {

struct RenditionOutput {
  std::string name;
  std::string format;        //!< "jpeg", "webp", "png", "avif"
  std::string content_type;  //!< "image/jpeg", ...
  std::string extension;     //!< "jpg", "webp", "png", "avif"
  int width = 0;
  int height = 0;
  std::string bytes;         //!< encoded, metadata stripped
};

struct PipelineOutput {
  std::vector<RenditionOutput> renditions;  //!< in the order of the config
  std::optional<uint64_t> phash;            //!< 64-bit DCT perceptual hash of the upright image
  std::optional<std::string> dominant_colour;  //!< "#rrggbb"
  double decode_seconds = 0;  //!< wall time to open, decode, shrink, orient and convert the largest rendition
  double encode_seconds = 0;  //!< wall time to make and encode every rendition from it
};

//! Runs the default pipeline on the image file at `path`: auto-orient from EXIF, convert to sRGB (through the
//! embedded ICC profile, or a CMYK one for CMYK files), each rendition never upscaled, metadata stripped; then the
//! perceptual hash and the dominant colour from the smallest uncropped rendition's pixels. The file is decoded once,
//! with shrink-on-load and sequential access, at the size of the largest rendition; smaller ones are made from that
//! in memory. Multi-frame images: the first frame. Deterministic for the same input and config. Errors:
//! kUnsupportedFormat for a format without a trusted decoder, kInvalidImage when the file does not decode,
//! kInvalidArgument for a rendition without size or with an unknown format, kInternal for encoder failures.
//! Thread-safe. Requires InitVips() first.
Result<PipelineOutput> RunDefaultPipeline(const std::string& path, const std::vector<RenditionConfig>& renditions);
//! RunDefaultPipeline() on an image held in memory (an original decrypted whole, with no file to read): the same
//! loaders, outputs and errors. `bytes` must stay valid until this returns.
Result<PipelineOutput> RunDefaultPipelineOnBuffer(std::string_view bytes,
                                                  const std::vector<RenditionConfig>& renditions);

struct ImageSignature {
  uint64_t phash = 0;
  std::string dominant_colour;  //!< "#rrggbb"
};

//! The perceptual hash and dominant colour of an 8-bit sRGB image with 3 or 4 bands (a `VipsImage*`), computed
//! exactly as RunDefaultPipeline computes them. kInternal if libvips fails. Thread-safe.
Result<ImageSignature> ComputeImageSignature(::_VipsImage* image);

//! The formats the pipelines decode: the ones with a trusted libvips loader. Anything else was refused at upload;
//! checking again keeps a stray file (or a script's output) from reaching whatever loader libvips would pick for it.
bool IsDecodableFormat(ImageFormat format);

//! Hamming distance between two perceptual hashes (0 = same picture).
int PhashDistance(uint64_t a, uint64_t b);

}  // namespace imgpipe
