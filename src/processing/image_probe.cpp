#include "processing/image_probe.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <vips/vips.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <stdexcept>

#include "processing/exif.hpp"
#include "processing/vips_util.hpp"

namespace imgpipe {
namespace {

using vips::ImagePtr;

// What is validated: the file at `path`, or, when `path` is empty, `bytes` in memory (which the caller keeps alive
// for the whole validation).
struct Input {
  std::string path;
  std::string_view bytes;
  bool in_memory() const { return path.empty(); }
};

std::string DecoderError(const Input& input) { return vips::TakeError(input.path, "no detail from the decoder"); }

struct SourceUnref {
  void operator()(VipsSource* source) const { g_object_unref(source); }
};
using SourcePtr = std::unique_ptr<VipsSource, SourceUnref>;

// The ISO-BMFF brand list can run past 64 bytes; 512 covers any real ftyp box.
constexpr size_t kHeadBytes = 512;

Error InvalidImage(const std::string& what) {
  return MakeError(ErrorKind::kInvalidImage, what + "; the file is corrupt, truncated or not really an image",
                   "invalid_image");
}

std::string FormatPixels(double pixels) {
  char buf[64];
  if (pixels >= 1e9) {
    std::snprintf(buf, sizeof buf, "%.1f gigapixels", pixels / 1e9);
  } else if (pixels >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.1f megapixels", pixels / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f pixels", pixels);
  }
  std::string text = buf;
  // "100.0 megapixels" reads better as "100 megapixels".
  if (const size_t dot = text.find(".0 "); dot != std::string::npos) text.erase(dot, 2);
  return text;
}

std::string FormatBytes(uint64_t bytes) {
  char buf[64];
  if (bytes >= 1024 * 1024) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  } else if (bytes >= 1024) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(bytes) / 1024.0);
  } else {
    std::snprintf(buf, sizeof buf, "%" PRIu64 " bytes", bytes);
  }
  std::string text = buf;
  if (const size_t dot = text.find(".0 "); dot != std::string::npos) text.erase(dot, 2);
  return text;
}

Error TooLarge(const std::string& message) { return MakeError(ErrorKind::kTooLarge, message, "too_large"); }

// Checks one frame's size against max_dimension.
Status CheckDimensions(int width, int height, const ImageLimits& limits) {
  if (width <= 0 || height <= 0) {
    return InvalidImage("image header gives a size of " + std::to_string(width) + "x" + std::to_string(height));
  }
  if (width > limits.max_dimension || height > limits.max_dimension) {
    return TooLarge("image is " + std::to_string(width) + "x" + std::to_string(height) + "; the limit is " +
                    std::to_string(limits.max_dimension) + " pixels on either side (limits.max_dimension)");
  }
  return Ok();
}

Status CheckFrames(int frames, const ImageLimits& limits) {
  if (frames < 1) return InvalidImage("image header gives " + std::to_string(frames) + " frames");
  if (frames > limits.max_frames) {
    return TooLarge("image has " + std::to_string(frames) + " frames; the limit is " +
                    std::to_string(limits.max_frames) + " frames (limits.max_frames)");
  }
  return Ok();
}

Status CheckPixels(int width, int height, int frames, const ImageLimits& limits) {
  // 64-bit: 65500 x 65500 x 1000 frames still fits (4.3e12).
  const uint64_t pixels = uint64_t(width) * uint64_t(height) * uint64_t(frames);
  if (pixels <= limits.max_pixels) return Ok();
  std::string what = "image is " + std::to_string(width) + "x" + std::to_string(height);
  if (frames == 1) {
    what += " (" + FormatPixels(static_cast<double>(pixels)) + ")";
  } else {
    what += " with " + std::to_string(frames) + " frames (" + FormatPixels(static_cast<double>(pixels)) + " in all)";
  }
  return TooLarge(what + "; the limit is " + FormatPixels(static_cast<double>(limits.max_pixels)) +
                  " (limits.max_pixels)");
}

// How much the strict decode may shrink while loading. Shrinking still makes the decoder read and entropy-decode
// all of the compressed data (so truncation and corruption are still found) but skips most of the pixel work.
struct Reduce {
  int jpeg_shrink = 1;  //!< 1, 2, 4 or 8 (libjpeg's DCT scaling)
  double webp_scale = 1.0;
};

// Opens `path` with the loader for `format` and no other: the magic bytes chose it, so a file cannot reach a
// different decoder than the one the allow-list admitted. Loading is lazy: this reads the header only; pixels are
// decoded when something reads the image. `n` = -1 loads all frames as one tall image.
constexpr int kMainImage = -1;  //!< as `page`: the image the file designates (HEIF's primary item; else the first)

Result<ImagePtr> OpenWithLoader(ImageFormat format, const Input& input, int page, int n, Reduce reduce) {
  // The file loaders open a source on the file and load from it; doing the same here lets a file and a buffer take
  // one path. The loader keeps its own reference to the source for as long as the image lives.
  SourcePtr source(input.in_memory() ? vips_source_new_from_memory(input.bytes.data(), input.bytes.size())
                                     : vips_source_new_from_file(input.path.c_str()));
  if (!source) {
    return InvalidImage(std::string(FormatName(format)) + " header does not parse (" + DecoderError(input) + ")");
  }
  VipsSource* src = source.get();
  VipsImage* out = nullptr;
  const auto seq = VIPS_ACCESS_SEQUENTIAL;
  const auto fail = VIPS_FAIL_ON_ERROR;
  int rc = -1;
  if (page == kMainImage) {
    n = 1;
    if (format != ImageFormat::kHeic && format != ImageFormat::kAvif) page = 0;
  }
  switch (format) {
    case ImageFormat::kJpeg:
      rc = vips_jpegload_source(src, &out, "access", seq, "fail_on", fail, "shrink", reduce.jpeg_shrink, nullptr);
      break;
    case ImageFormat::kPng:
      rc = vips_pngload_source(src, &out, "access", seq, "fail_on", fail, nullptr);
      break;
    case ImageFormat::kWebp:
      rc = vips_webpload_source(src, &out, "access", seq, "fail_on", fail, "page", page, "n", n, "scale",
                                reduce.webp_scale, nullptr);
      break;
    case ImageFormat::kGif:
      rc = vips_gifload_source(src, &out, "access", seq, "fail_on", fail, "page", page, "n", n, nullptr);
      break;
    case ImageFormat::kTiff:
      rc = vips_tiffload_source(src, &out, "access", seq, "fail_on", fail, "page", page, "n", n, nullptr);
      break;
    case ImageFormat::kHeic:
    case ImageFormat::kAvif:
      // Without "page", heifload opens the primary item, which need not be the first.
      rc = page == kMainImage
               ? vips_heifload_source(src, &out, "access", seq, "fail_on", fail, nullptr)
               : vips_heifload_source(src, &out, "access", seq, "fail_on", fail, "page", page, "n", n, nullptr);
      break;
    default:
      return MakeError(ErrorKind::kUnsupportedFormat,
                       "image format '" + std::string(FormatName(format)) +
                           "' has no decoder in this build; remove it from limits.allowed_formats",
                       "unsupported_format");
  }
  if (rc != 0) {
    if (out != nullptr) g_object_unref(out);
    return InvalidImage(std::string(FormatName(format)) + " header does not parse (" + DecoderError(input) + ")");
  }
  return ImagePtr(out);
}

// Reads the input at arbitrary offsets: a file through a 64 KiB window, so walking many small records costs few
// syscalls; a buffer directly.
class WindowedInput {
 public:
  explicit WindowedInput(const Input& input)
      : bytes_(input.bytes), fd_(input.in_memory() ? -1 : ::open(input.path.c_str(), O_RDONLY | O_CLOEXEC)) {}
  ~WindowedInput() {
    if (fd_ >= 0) ::close(fd_);
  }
  WindowedInput(const WindowedInput&) = delete;
  WindowedInput& operator=(const WindowedInput&) = delete;

  bool ok() const { return fd_ >= 0 || bytes_.data() != nullptr; }
  // Copies `length` (<= 64 KiB) bytes at `offset` into `out`; false if the input ends first.
  bool Read(uint64_t offset, size_t length, uint8_t* out) {
    if (fd_ < 0) {
      if (offset > bytes_.size() || length > bytes_.size() - offset) return false;
      std::memcpy(out, bytes_.data() + offset, length);
      return true;
    }
    if (offset < start_ || offset + length > start_ + filled_) {
      const ssize_t got = ::pread(fd_, buffer_, sizeof buffer_, static_cast<off_t>(offset));
      if (got < 0) return false;
      start_ = offset;
      filled_ = static_cast<size_t>(got);
      if (length > filled_) return false;
    }
    std::memcpy(out, buffer_ + (offset - start_), length);
    return true;
  }

 private:
  std::string_view bytes_;
  int fd_;
  uint64_t start_ = 0;
  size_t filled_ = 0;
  uint8_t buffer_[64 * 1024];
};

// Walks the PNG chunk list (lengths and types only) before libpng sees the file. libpng allocates an ancillary
// chunk's claimed length before reading it, so a 57-byte file claiming a 1 GiB iTXt chunk costs 1 GiB and seconds;
// a chunk that claims more bytes than the file holds is refused here instead. After this, no chunk is larger than
// the file (itself within limits.max_bytes).
Status CheckPngChunks(const Input& input, uint64_t file_size) {
  auto file = std::make_unique<WindowedInput>(input);
  if (!file->ok()) return MakeError(ErrorKind::kInternal, "cannot open the uploaded file for reading");
  uint64_t offset = 8;  // after the signature
  while (true) {
    uint8_t header[8];
    if (!file->Read(offset, sizeof header, header)) {
      return InvalidImage("png ends at byte " + std::to_string(offset) + " without an IEND chunk");
    }
    const uint32_t length = (uint32_t{header[0]} << 24) | (uint32_t{header[1]} << 16) | (uint32_t{header[2]} << 8) |
                            uint32_t{header[3]};
    std::string type(reinterpret_cast<const char*>(header + 4), 4);
    for (char& c : type) {
      if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))) c = '?';
    }
    // Chunk data plus its 4-byte type, 4-byte length and 4-byte CRC must fit in what is left of the file.
    if (length > 0x7FFFFFFFu || offset + 12 + length > file_size) {
      return InvalidImage("png chunk '" + type + "' at byte " + std::to_string(offset) + " claims " +
                          std::to_string(length) + " bytes, more than the file holds");
    }
    offset += 12 + uint64_t{length};
    if (type == "IEND") return Ok();
  }
}

// Decodes every pixel of `image` in strips, top to bottom, keeping none: memory stays at a few strips whatever
// the image size (except for formats whose decoder itself needs the whole image, e.g. interlaced PNG).
Status DecodeAll(VipsImage* image, ImageFormat format, const Input& input) {
  // On the calling thread, strip by strip from the top: a decode of one small image costs less than handing strips
  // to libvips' thread pool and its write-behind thread (vips_sink_disc), and each caller is already one of many
  // threads.
  VipsRegion* region = vips_region_new(image);
  if (region == nullptr) {
    return InvalidImage(std::string(FormatName(format)) + " data does not decode (" + DecoderError(input) + ")");
  }
  int tile_width = 0, tile_height = 0, n_lines = 0;
  vips_get_tile_size(image, &tile_width, &tile_height, &n_lines);
  const int strip = std::max(n_lines, 16);
  int failed = 0;
  for (int top = 0; top < image->Ysize && failed == 0; top += strip) {
    VipsRect rect{0, top, image->Xsize, std::min(strip, image->Ysize - top)};
    failed = vips_region_prepare(region, &rect);
  }
  g_object_unref(region);
  if (failed != 0) {
    return InvalidImage(std::string(FormatName(format)) + " data does not decode (" + DecoderError(input) + ")");
  }
  return Ok();
}

Reduce ReduceFor(ImageFormat format, int width, int height) {
  Reduce r;
  const int short_side = std::min(width, height);
  if (format == ImageFormat::kJpeg) {
    // libvips 8.14 aborts (an assertion, not an error) when a shrink leaves a side at 0 pixels, so a shrink is
    // only used while the short side keeps at least 16 pixels.
    for (int shrink : {8, 4, 2}) {
      if (short_side / shrink >= 16) {
        r.jpeg_shrink = shrink;
        break;
      }
    }
  }
  if (format == ImageFormat::kWebp) {
    // libwebp scales while decoding; keep at least 16 pixels on the short side so the scaled size is never 0.
    r.webp_scale = std::clamp(16.0 / short_side, 0.125, 1.0);
  }
  return r;
}

// Frames of TIFF and HEIF files may differ in size (pages of a document, items of a collection); GIF and WebP
// frames always share the canvas size.
bool FramesMayDiffer(ImageFormat f) {
  return f == ImageFormat::kTiff || f == ImageFormat::kHeic || f == ImageFormat::kAvif;
}

Error FramesTooLarge(int last_frame, uint64_t pixels, const ImageLimits& limits) {
  return TooLarge("image frames 1 to " + std::to_string(last_frame) + " hold " +
                  FormatPixels(static_cast<double>(pixels)) + "; the limit is " +
                  FormatPixels(static_cast<double>(limits.max_pixels)) + " (limits.max_pixels)");
}

// Strict decode of every frame of a multi-frame image. Frames are loaded in blocks of consecutive frames, as one
// image of stacked frames (fast: one decoder pass), each block below libvips' maximum image height; a block of
// more than a few is the rule, so decoders that must replay earlier frames to reach a later one (GIF) do so only a
// few times. Blocks of TIFF and HEIF frames of different sizes cannot stack and are decoded frame by frame. Every
// block's size is checked against the limits before it is decoded: a later TIFF page or HEIF item may be larger
// than the first, which the header check saw.
Status DecodeFrames(ImageFormat format, const Input& input, int frames, int width, int height,
                    const ImageLimits& limits) {
  const int block = std::clamp(VIPS_MAX_COORD / std::max(height, 1), 1, frames);
  const Reduce reduce = ReduceFor(format, width, height);
  uint64_t pixels = 0;  // decoded so far, at full size (frames that may differ are never reduced)
  for (int first = 0; first < frames; first += block) {
    const int n = std::min(block, frames - first);
    auto stacked = OpenWithLoader(format, input, first, n, reduce);
    if (stacked.ok()) {
      if (FramesMayDiffer(format)) {
        VipsImage* image = stacked->get();
        IMGPIPE_TRY(CheckDimensions(image->Xsize, vips_image_get_page_height(image), limits));
        pixels += uint64_t(image->Xsize) * uint64_t(image->Ysize);
        if (pixels > limits.max_pixels) return FramesTooLarge(first + n, pixels, limits);
      }
      IMGPIPE_TRY(DecodeAll(stacked->get(), format, input));
      continue;
    }
    if (!FramesMayDiffer(format) || n == 1) return stacked.error();
    vips_error_clear();
    for (int page = first; page < first + n; ++page) {
      IMGPIPE_ASSIGN_OR_RETURN(ImagePtr frame, OpenWithLoader(format, input, page, 1, reduce));
      IMGPIPE_TRY(CheckDimensions(frame->Xsize, frame->Ysize, limits));
      pixels += uint64_t(frame->Xsize) * uint64_t(frame->Ysize);
      if (pixels > limits.max_pixels) return FramesTooLarge(page + 1, pixels, limits);
      IMGPIPE_TRY(DecodeAll(frame.get(), format, input));
    }
  }
  return Ok();
}

std::string AllowedList(const ImageLimits& limits) {
  std::string list;
  for (ImageFormat f : limits.allowed) {
    if (!list.empty()) list += ", ";
    list += FormatName(f);
  }
  return list.empty() ? "none" : list;
}

// Facts libvips reads from the header: colour, alpha, ICC, EXIF.
void ReadHeaderFacts(VipsImage* image, ImageFacts* facts) {
  facts->has_alpha = vips_image_hasalpha(image) != 0;
  const char* nick = vips_enum_nick(VIPS_TYPE_INTERPRETATION, vips_image_get_interpretation(image));
  facts->colour_space = nick != nullptr ? nick : "";
  facts->has_icc = vips_image_get_typeof(image, VIPS_META_ICC_NAME) != 0;
  if (vips_image_get_typeof(image, VIPS_META_EXIF_NAME) != 0) {
    const void* data = nullptr;
    size_t length = 0;
    if (vips_image_get_blob(image, VIPS_META_EXIF_NAME, &data, &length) == 0 && data != nullptr) {
      // A malformed EXIF block does not make the image invalid: cameras and editors write broken EXIF often, and
      // decoders ignore it. The facts then simply carry no EXIF.
      if (auto exif = ParseExif(std::string_view(static_cast<const char*>(data), length)); exif.ok()) {
        facts->exif = std::move(exif).value();
      }
    } else {
      vips_error_clear();
    }
  }
  if (!facts->exif.orientation) {
    // libvips also knows orientation from places other than EXIF (e.g. HEIF's irot/imir); it reports 1 if none.
    const int orientation = vips_image_get_orientation(image);
    facts->exif.orientation = orientation >= 1 && orientation <= 8 ? orientation : 1;
  }
}

}  // namespace

Status CheckFormatAllowed(std::string_view head, const ImageLimits& limits) {
  const ImageFormat format = DetectFormat(head);
  if (std::find(limits.allowed.begin(), limits.allowed.end(), format) != limits.allowed.end() &&
      format != ImageFormat::kUnknown) {
    return Ok();
  }
  std::string what = format == ImageFormat::kUnknown
                         ? "image format is not recognised from the file's first bytes"
                         : "image format '" + std::string(FormatName(format)) + "' is not allowed";
  return MakeError(ErrorKind::kUnsupportedFormat,
                   what + "; allowed formats are " + AllowedList(limits) + " (limits.allowed_formats)",
                   "unsupported_format");
}

namespace {

Result<ImageFacts> ValidateImage(const Input& input, uint64_t size, std::string head, const ImageLimits& limits) {
  if (size == 0) return InvalidImage("image is empty (0 bytes)");
  if (size > limits.max_bytes) {
    return TooLarge("image is " + FormatBytes(size) + " (" + std::to_string(size) + " bytes); the limit is " +
                    FormatBytes(limits.max_bytes) + " (limits.max_bytes)");
  }
  IMGPIPE_TRY(CheckFormatAllowed(head, limits));

  ImageFacts facts;
  facts.format = DetectFormat(head);
  if (facts.format == ImageFormat::kPng) IMGPIPE_TRY(CheckPngChunks(input, size));

  // Header only: no pixel is decoded until every limit has been checked against the header's numbers.
  IMGPIPE_ASSIGN_OR_RETURN(ImagePtr header, OpenWithLoader(facts.format, input, kMainImage, 1, Reduce{}));
  facts.width = vips_image_get_width(header.get());
  facts.height = vips_image_get_height(header.get());
  facts.frames = vips_image_get_n_pages(header.get());
  IMGPIPE_TRY(CheckFrames(facts.frames, limits));
  IMGPIPE_TRY(CheckDimensions(facts.width, facts.height, limits));
  IMGPIPE_TRY(CheckPixels(facts.width, facts.height, facts.frames, limits));
  ReadHeaderFacts(header.get(), &facts);

  if (facts.frames == 1) {
    const Reduce reduce = ReduceFor(facts.format, facts.width, facts.height);
    if (reduce.jpeg_shrink == 1 && reduce.webp_scale == 1.0) {
      // Nothing to shrink on load: the header's image decodes as well as a second open would.
      IMGPIPE_TRY(DecodeAll(header.get(), facts.format, input));
      return facts;
    }
    header.reset();
    IMGPIPE_ASSIGN_OR_RETURN(ImagePtr image, OpenWithLoader(facts.format, input, kMainImage, 1, reduce));
    IMGPIPE_TRY(DecodeAll(image.get(), facts.format, input));
  } else {
    header.reset();
    IMGPIPE_TRY(DecodeFrames(facts.format, input, facts.frames, facts.width, facts.height, limits));
  }
  return facts;
}

}  // namespace

Result<ImageFacts> ValidateImageFile(const std::string& path, const ImageLimits& limits) {
  // Leftovers from earlier calls (libvips records some messages without failing) would otherwise be reported as
  // this file's problem.
  vips_error_clear();
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) {
    return MakeError(ErrorKind::kInternal, "cannot read the size of the uploaded file: " + ec.message());
  }
  std::string head(kHeadBytes, '\0');
  if (size > 0 && size <= limits.max_bytes) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return MakeError(ErrorKind::kInternal, "cannot open the uploaded file for reading");
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<size_t>(in.gcount()));
  }
  return ValidateImage(Input{path, {}}, size, std::move(head), limits);
}

Result<ImageFacts> ValidateImageBuffer(std::string_view bytes, const ImageLimits& limits) {
  vips_error_clear();
  // A non-null pointer marks the input as memory even when it is empty.
  static constexpr char kEmpty = 0;
  const std::string_view data = bytes.data() != nullptr ? bytes : std::string_view(&kEmpty, 0);
  return ValidateImage(Input{{}, data}, data.size(), std::string(data.substr(0, kHeadBytes)), limits);
}

namespace {

// Untrusted input makes decoders warn a lot (bad CRCs, extra bytes). Failures reach callers as Results; the
// warnings themselves would only let an uploader write to our stderr, so they are dropped.
void DropVipsWarning(const gchar*, GLogLevelFlags, const gchar*, gpointer) {}

}  // namespace

void InitVips(int concurrency) {
  static std::once_flag once;
  std::call_once(once, [] {
    if (VIPS_INIT("imgpipe") != 0) throw std::runtime_error("libvips failed to initialise: " + vips::TakeError());
    // Loaders libvips marks untrusted (ImageMagick, PDF, SVG, JPEG XL, FITS, ...) are never reachable, whatever
    // a file claims to be.
    vips_block_untrusted_set(TRUE);
    // The operation cache would keep decoded images of earlier uploads alive and share them between requests.
    vips_cache_set_max(0);
    vips_leak_set(FALSE);
    g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING, DropVipsWarning, nullptr);
  });
  vips_concurrency_set(std::max(1, concurrency));
}

}  // namespace imgpipe
