#include "processing/pipeline.hpp"

#include <vips/vips.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>

#include "processing/image_format.hpp"
#include "processing/vips_util.hpp"

namespace imgpipe {
namespace {

using vips::GFree;
using vips::ImagePtr;
using vips::Make;

using SteadyClock = std::chrono::steady_clock;

double SecondsSince(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}


// What the pipeline reads: the file at `path`, or, when `path` is empty, `bytes` in memory (kept alive by the caller
// until the pipeline returns).
struct Input {
  std::string path;
  std::string_view bytes;
  bool in_memory() const { return path.empty(); }
};

// The libvips loader class for each decodable format, as vips_foreign_find_load() (a file) or
// vips_foreign_find_load_buffer() (memory) names it.
std::string LoaderClass(ImageFormat f, bool in_memory) {
  const char* base = "";
  switch (f) {
    case ImageFormat::kJpeg: base = "VipsForeignLoadJpeg"; break;
    case ImageFormat::kPng: base = "VipsForeignLoadPng"; break;
    case ImageFormat::kWebp: base = "VipsForeignLoadWebp"; break;
    case ImageFormat::kGif: base = "VipsForeignLoadNsgif"; break;
    case ImageFormat::kTiff: base = "VipsForeignLoadTiff"; break;
    case ImageFormat::kHeic: case ImageFormat::kAvif: base = "VipsForeignLoadHeif"; break;
    default: return "";
  }
  return std::string(base) + (in_memory ? "Buffer" : "File");
}

// Opens the first frame of `input` with the loader for `format`, lazily (header now, pixels on demand).
Result<ImagePtr> OpenWithLoader(ImageFormat format, const Input& input) {
  auto open = [&](VipsImage** out) {
    // The file loaders open a source on the file and load from it; a buffer takes the same path. The loader keeps
    // its own reference to the source for as long as the image lives.
    VipsSource* source = input.in_memory() ? vips_source_new_from_memory(input.bytes.data(), input.bytes.size())
                                           : vips_source_new_from_file(input.path.c_str());
    if (source == nullptr) return -1;
    const auto seq = VIPS_ACCESS_SEQUENTIAL;
    int rc = -1;
    switch (format) {
      case ImageFormat::kJpeg: rc = vips_jpegload_source(source, out, "access", seq, nullptr); break;
      case ImageFormat::kPng: rc = vips_pngload_source(source, out, "access", seq, nullptr); break;
      case ImageFormat::kWebp: rc = vips_webpload_source(source, out, "access", seq, nullptr); break;
      case ImageFormat::kGif: rc = vips_gifload_source(source, out, "access", seq, nullptr); break;
      case ImageFormat::kTiff: rc = vips_tiffload_source(source, out, "access", seq, nullptr); break;
      case ImageFormat::kHeic: case ImageFormat::kAvif: rc = vips_heifload_source(source, out, "access", seq, nullptr); break;
      default: break;
    }
    g_object_unref(source);
    return rc;
  };
  return Make(open, ErrorKind::kInvalidImage, "image header does not parse");
}

struct SourceInfo {
  ImageFormat format = ImageFormat::kUnknown;
  int upright_width = 0;   //!< after EXIF orientation
  int upright_height = 0;
  bool needs_colour_management = false;  //!< an ICC profile or CMYK: convert with profiles, not by formula
  //! libvips' own sniffing picks the loader the magic bytes chose, so vips_thumbnail (which sniffs) may open the
  //! file by name. When it would pick another loader (some valid AVIF sequences are not recognised by heifload's
  //! sniffer), the file is opened explicitly instead.
  bool sniffing_agrees = false;
};

Result<SourceInfo> ReadSourceInfo(const Input& input) {
  std::string head(512, '\0');
  if (input.in_memory()) {
    head.assign(input.bytes.substr(0, head.size()));
  } else {
    std::ifstream in(input.path, std::ios::binary);
    if (!in) return MakeError(ErrorKind::kInternal, "cannot open the image file for reading");
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<size_t>(in.gcount()));
  }
  const ImageFormat format = DetectFormat(head);
  if (!IsDecodableFormat(format)) {
    return MakeError(ErrorKind::kUnsupportedFormat,
                     "image format '" + std::string(FormatName(format)) + "' cannot be processed",
                     "unsupported_format");
  }
  SourceInfo info;
  info.format = format;
  const char* sniffed = input.in_memory()
                            ? vips_foreign_find_load_buffer(input.bytes.data(), input.bytes.size())
                            : vips_foreign_find_load(input.path.c_str());
  info.sniffing_agrees = sniffed != nullptr && sniffed == LoaderClass(format, input.in_memory());
  if (sniffed == nullptr) vips_error_clear();
  IMGPIPE_ASSIGN_OR_RETURN(ImagePtr header, OpenWithLoader(format, input));
  info.upright_width = vips_image_get_width(header.get());
  info.upright_height = vips_image_get_page_height(header.get());
  if (vips_image_get_orientation_swap(header.get())) std::swap(info.upright_width, info.upright_height);
  info.needs_colour_management = vips_image_get_typeof(header.get(), VIPS_META_ICC_NAME) != 0 ||
                                 vips_image_get_interpretation(header.get()) == VIPS_INTERPRETATION_CMYK;
  if (info.upright_width <= 0 || info.upright_height <= 0) {
    return MakeError(ErrorKind::kInvalidImage, "image header gives an empty size", "invalid_image");
  }
  return info;
}

// One rendition's box and the scale it needs from the upright original (never above 1: no upscaling).
struct Box {
  int width = 0;
  int height = 0;
  bool cover = false;
};

Box BoxOf(const RenditionConfig& r) {
  Box box;
  // A missing side means "as large as the other": a square bound.
  box.width = r.width > 0 ? r.width : r.height;
  box.height = r.height > 0 ? r.height : r.width;
  box.cover = r.fit == "cover";
  return box;
}

double ScaleFor(const Box& box, int width, int height) {
  const double sx = static_cast<double>(box.width) / width;
  const double sy = static_cast<double>(box.height) / height;
  return std::min(1.0, box.cover ? std::max(sx, sy) : std::min(sx, sy));
}

// Brings a thumbnail to 8-bit sRGB with at most one alpha band: what every encoder and the analysis below expect.
Result<ImagePtr> ToSrgb8(ImagePtr image) {
  if (vips_image_get_interpretation(image.get()) != VIPS_INTERPRETATION_sRGB || image->Bands < 3) {
    IMGPIPE_ASSIGN_OR_RETURN(
        image, Make([&](VipsImage** out) { return vips_colourspace(image.get(), out, VIPS_INTERPRETATION_sRGB, nullptr); },
                    ErrorKind::kInvalidImage, "image cannot be converted to sRGB"));
  }
  if (image->BandFmt != VIPS_FORMAT_UCHAR) {
    IMGPIPE_ASSIGN_OR_RETURN(image, Make([&](VipsImage** out) { return vips_cast_uchar(image.get(), out, nullptr); },
                                         ErrorKind::kInvalidImage, "image cannot be converted to 8 bits"));
  }
  if (image->Bands > 4) {
    IMGPIPE_ASSIGN_OR_RETURN(
        image, Make([&](VipsImage** out) { return vips_extract_band(image.get(), out, 0, "n", 4, nullptr); },
                    ErrorKind::kInvalidImage, "image bands cannot be extracted"));
  }
  return image;
}

Result<ImagePtr> FlattenOnWhite(VipsImage* image) {
  VipsArrayDouble* white = vips_array_double_newv(3, 255.0, 255.0, 255.0);
  auto flat = Make([&](VipsImage** out) { return vips_flatten(image, out, "background", white, nullptr); },
                   ErrorKind::kInternal, "flattening the alpha channel failed");
  vips_area_unref(VIPS_AREA(white));
  return flat;
}

struct Encoded {
  std::string format;
  std::string content_type;
  std::string extension;
  std::string bytes;
};

Result<Encoded> Encode(VipsImage* image, const RenditionConfig& config) {
  const bool alpha = vips_image_hasalpha(image) != 0;
  std::string format = config.format;
  if (format == "auto") format = alpha ? "webp" : "jpeg";

  void* raw = nullptr;
  size_t length = 0;
  int rc = -1;
  Encoded out;
  out.format = format;
  if (format == "jpeg") {
    ImagePtr flat;
    if (alpha) {
      IMGPIPE_ASSIGN_OR_RETURN(flat, FlattenOnWhite(image));
      image = flat.get();
    }
    rc = vips_jpegsave_buffer(image, &raw, &length, "Q", config.quality, "strip", TRUE, nullptr);
    out.content_type = "image/jpeg";
    out.extension = "jpg";
  } else if (format == "webp") {
    rc = vips_webpsave_buffer(image, &raw, &length, "Q", config.quality, "strip", TRUE, nullptr);
    out.content_type = "image/webp";
    out.extension = "webp";
  } else if (format == "png") {
    rc = vips_pngsave_buffer(image, &raw, &length, "strip", TRUE, nullptr);
    out.content_type = "image/png";
    out.extension = "png";
  } else if (format == "avif") {
    rc = vips_heifsave_buffer(image, &raw, &length, "Q", config.quality, "compression",
                              VIPS_FOREIGN_HEIF_COMPRESSION_AV1, "strip", TRUE, nullptr);
    out.content_type = "image/avif";
    out.extension = "avif";
  } else {
    return MakeError(ErrorKind::kInvalidArgument, "rendition '" + config.name + "' has format '" + config.format +
                                                      "'; use auto, jpeg, webp, png or avif");
  }
  std::unique_ptr<void, GFree> buffer(raw);
  if (rc != 0) {
    return MakeError(ErrorKind::kInternal,
                     "encoding rendition '" + config.name + "' as " + format + " failed: " + vips::TakeError());
  }
  out.bytes.assign(static_cast<const char*>(buffer.get()), length);
  return out;
}

// The input of both analyses: `image` resized to 64x64 (aspect ignored: it changes neither the share of each colour
// nor, consistently for every image, the hash), as 8-bit sRGB with 3 or 4 bands.
struct AnalysisPixels {
  static constexpr int kSize = 64;
  std::vector<uint8_t> pixels;  //!< kSize * kSize * bands, row by row
  int bands = 0;
};

Result<AnalysisPixels> ReadAnalysisPixels(VipsImage* image) {
  auto resize = [&](VipsImage** out) {
    return vips_thumbnail_image(image, out, AnalysisPixels::kSize, "height", AnalysisPixels::kSize, "size",
                                VIPS_SIZE_FORCE, "no_rotate", TRUE, nullptr);
  };
  IMGPIPE_ASSIGN_OR_RETURN(ImagePtr small, Make(resize, ErrorKind::kInternal, "resizing for analysis failed"));
  size_t size = 0;
  std::unique_ptr<void, GFree> memory(vips_image_write_to_memory(small.get(), &size));
  if (!memory) return MakeError(ErrorKind::kInternal, "reading analysis pixels failed: " + vips::TakeError());
  AnalysisPixels out;
  out.bands = small->Bands;
  if (small->Xsize != AnalysisPixels::kSize || small->Ysize != AnalysisPixels::kSize || out.bands < 3 ||
      out.bands > 4 || small->BandFmt != VIPS_FORMAT_UCHAR) {
    return MakeError(ErrorKind::kInternal, "analysis image is not 64x64 8-bit RGB");
  }
  const auto* bytes = static_cast<const uint8_t*>(memory.get());
  out.pixels.assign(bytes, bytes + size);
  return out;
}

// DCT perceptual hash: 32x32 greyscale (2x2 means of the analysis pixels, alpha flattened on white), 2-D DCT-II,
// the 8x8 lowest frequencies without the DC row and column (which carry only overall brightness), one bit per
// coefficient above their median. Bit 63 is coefficient (1,1), then row by row.
uint64_t PerceptualHash(const AnalysisPixels& in) {
  constexpr int kN = 32;
  constexpr int kLow = 8;
  static_assert(AnalysisPixels::kSize == 2 * kN);
  std::array<std::array<double, kN>, kN> grey{};
  for (int y = 0; y < AnalysisPixels::kSize; ++y) {
    for (int x = 0; x < AnalysisPixels::kSize; ++x) {
      const uint8_t* p = &in.pixels[static_cast<size_t>((y * AnalysisPixels::kSize + x) * in.bands)];
      const double alpha = in.bands == 4 ? p[3] / 255.0 : 1.0;
      const double luma = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];  // Rec. 601 weights
      grey[y / 2][x / 2] += (luma * alpha + 255.0 * (1.0 - alpha)) / 4.0;
    }
  }
  static const auto kCos = [] {
    std::array<std::array<double, kN>, kLow + 1> table{};
    for (int u = 0; u <= kLow; ++u) {
      for (int x = 0; x < kN; ++x) table[u][x] = std::cos((2 * x + 1) * u * M_PI / (2.0 * kN));
    }
    return table;
  }();
  // Separable: first along rows (rows[y][u] = sum over x of grey[y][x] cos(u, x)), then along columns.
  std::array<std::array<double, kLow + 1>, kN> rows{};
  for (int y = 0; y < kN; ++y) {
    for (int u = 1; u <= kLow; ++u) {
      double sum = 0;
      for (int x = 0; x < kN; ++x) sum += grey[y][x] * kCos[u][x];
      rows[y][u] = sum;
    }
  }
  std::array<double, kLow * kLow> coefficients{};
  for (int v = 1; v <= kLow; ++v) {
    for (int u = 1; u <= kLow; ++u) {
      double sum = 0;
      for (int y = 0; y < kN; ++y) sum += rows[y][u] * kCos[v][y];
      coefficients[(v - 1) * kLow + (u - 1)] = sum;
    }
  }
  std::array<double, kLow * kLow> sorted = coefficients;
  std::sort(sorted.begin(), sorted.end());
  const double median = (sorted[31] + sorted[32]) / 2.0;
  uint64_t hash = 0;
  for (double c : coefficients) hash = (hash << 1) | (c > median ? 1u : 0u);
  return hash;
}

// The mean colour of the most populated cell of an 8x8x8 RGB histogram of the analysis pixels; mostly transparent
// pixels do not count unless nothing else is left. Ties go to the lowest cell, so the result is stable.
std::string DominantColour(const AnalysisPixels& in) {
  struct Cell {
    uint64_t count = 0, r = 0, g = 0, b = 0;
  };
  std::array<Cell, 512> cells{};
  auto tally = [&](bool skip_transparent) {
    for (size_t i = 0; i + in.bands <= in.pixels.size(); i += in.bands) {
      if (skip_transparent && in.bands == 4 && in.pixels[i + 3] < 128) continue;
      const uint8_t r = in.pixels[i], g = in.pixels[i + 1], b = in.pixels[i + 2];
      Cell& cell = cells[(r >> 5) * 64 + (g >> 5) * 8 + (b >> 5)];
      ++cell.count;
      cell.r += r;
      cell.g += g;
      cell.b += b;
    }
  };
  tally(true);
  if (std::all_of(cells.begin(), cells.end(), [](const Cell& c) { return c.count == 0; })) tally(false);
  const Cell* best = &cells[0];
  for (const Cell& c : cells) {
    if (c.count > best->count) best = &c;
  }
  const uint64_t n = std::max<uint64_t>(best->count, 1);
  char text[8];
  std::snprintf(text, sizeof text, "#%02x%02x%02x", static_cast<unsigned>((best->r + n / 2) / n),
                static_cast<unsigned>((best->g + n / 2) / n), static_cast<unsigned>((best->b + n / 2) / n));
  return text;
}

}  // namespace

bool IsDecodableFormat(ImageFormat f) {
  switch (f) {
    case ImageFormat::kJpeg: case ImageFormat::kPng: case ImageFormat::kWebp: case ImageFormat::kGif:
    case ImageFormat::kTiff: case ImageFormat::kHeic: case ImageFormat::kAvif:
      return true;
    default:
      return false;
  }
}

Result<ImageSignature> ComputeImageSignature(VipsImage* image) {
  IMGPIPE_ASSIGN_OR_RETURN(const AnalysisPixels analysis, ReadAnalysisPixels(image));
  return ImageSignature{PerceptualHash(analysis), DominantColour(analysis)};
}

int PhashDistance(uint64_t a, uint64_t b) { return __builtin_popcountll(a ^ b); }

namespace {

Result<PipelineOutput> RunDefault(const Input& input, const std::vector<RenditionConfig>& renditions) {
  PipelineOutput output;
  const auto decode_start = SteadyClock::now();
  vips_error_clear();
  IMGPIPE_ASSIGN_OR_RETURN(const SourceInfo source, ReadSourceInfo(input));

  // The base image is decoded from the file once, with shrink-on-load, at the largest scale any rendition needs;
  // every rendition is then made from it in memory. When the largest rendition fits inside its box, the base IS
  // that rendition, made exactly as vips_thumbnail would make it from the file.
  std::vector<Box> boxes;
  for (const RenditionConfig& r : renditions) {
    Box box = BoxOf(r);
    if (box.width <= 0 || box.height <= 0) {
      return MakeError(ErrorKind::kInvalidArgument, "rendition '" + r.name + "' has no size; set its width/height");
    }
    boxes.push_back(box);
  }
  int top = -1;
  double top_scale = 0;
  for (size_t i = 0; i < boxes.size(); ++i) {
    const double scale = ScaleFor(boxes[i], source.upright_width, source.upright_height);
    // On equal scales an "inside" box wins: it can serve as the base as it is.
    if (scale > top_scale || (scale == top_scale && top >= 0 && boxes[top].cover && !boxes[i].cover)) {
      top = static_cast<int>(i);
      top_scale = scale;
    }
  }
  // Without renditions, the base only feeds the hash and the colour, for which 256 pixels are plenty.
  Box base_box{256, 256, false};
  if (top >= 0) {
    base_box = boxes[top];
    if (base_box.cover) {
      // Cover crops; the base must stay whole, so it is the "inside" box that holds the uncropped scaled image.
      base_box.width = std::max(1, static_cast<int>(std::ceil(source.upright_width * top_scale)));
      base_box.height = std::max(1, static_cast<int>(std::ceil(source.upright_height * top_scale)));
      base_box.cover = false;
    }
  }

  // Images with a profile (or CMYK) go through it to sRGB; others are sRGB by assumption and skip the ICC work.
  const char* export_profile = source.needs_colour_management ? "srgb" : nullptr;
  ImagePtr loaded;
  if (!source.sniffing_agrees) {
    IMGPIPE_ASSIGN_OR_RETURN(loaded, OpenWithLoader(source.format, input));
  }
  auto thumbnail = [&](VipsImage** out) {
    // vips_thumbnail from the file (or buffer) shrinks while loading; from an opened image it cannot, but still
    // streams.
    if (loaded) {
      return vips_thumbnail_image(loaded.get(), out, base_box.width, "height", base_box.height, "size",
                                  VIPS_SIZE_DOWN, "export_profile", export_profile, nullptr);
    }
    if (input.in_memory()) {
      return vips_thumbnail_buffer(const_cast<char*>(input.bytes.data()), input.bytes.size(), out, base_box.width,
                                   "height", base_box.height, "size", VIPS_SIZE_DOWN, "export_profile",
                                   export_profile, nullptr);
    }
    return vips_thumbnail(input.path.c_str(), out, base_box.width, "height", base_box.height, "size",
                          VIPS_SIZE_DOWN, "export_profile", export_profile, nullptr);
  };
  IMGPIPE_ASSIGN_OR_RETURN(ImagePtr base, Make(thumbnail, ErrorKind::kInvalidImage, "image does not decode"));
  IMGPIPE_ASSIGN_OR_RETURN(base, ToSrgb8(std::move(base)));
  // Runs the whole decode pipeline once; what follows reads pixels from memory.
  ImagePtr upright(vips_image_copy_memory(base.get()));
  if (!upright) {
    return MakeError(ErrorKind::kInvalidImage, "image does not decode: " + vips::TakeError(), "invalid_image");
  }
  base.reset();
  output.decode_seconds = SecondsSince(decode_start);

  const auto encode_start = SteadyClock::now();
  // The analyses read the smallest whole (uncropped) rendition: the fewest pixels to resize again.
  ImagePtr analysis_source(static_cast<VipsImage*>(g_object_ref(upright.get())));
  for (size_t i = 0; i < renditions.size(); ++i) {
    ImagePtr image;
    if (static_cast<int>(i) == top && !boxes[i].cover) {
      image.reset(static_cast<VipsImage*>(g_object_ref(upright.get())));
    } else {
      auto resize = [&](VipsImage** out) {
        return vips_thumbnail_image(upright.get(), out, boxes[i].width, "height", boxes[i].height, "size",
                                    VIPS_SIZE_DOWN, "crop",
                                    boxes[i].cover ? VIPS_INTERESTING_CENTRE : VIPS_INTERESTING_NONE, "no_rotate",
                                    TRUE, nullptr);
      };
      IMGPIPE_ASSIGN_OR_RETURN(
          image, Make(resize, ErrorKind::kInternal, "resizing rendition '" + renditions[i].name + "' failed"));
      if (!boxes[i].cover && image->Xsize * image->Ysize < analysis_source->Xsize * analysis_source->Ysize) {
        // Kept in memory: encoded now, resized for the analyses later, computed once.
        ImagePtr kept(vips_image_copy_memory(image.get()));
        if (!kept) {
          return MakeError(ErrorKind::kInternal,
                           "resizing rendition '" + renditions[i].name + "' failed: " + vips::TakeError());
        }
        image = std::move(kept);
        analysis_source.reset(static_cast<VipsImage*>(g_object_ref(image.get())));
      }
    }
    IMGPIPE_ASSIGN_OR_RETURN(Encoded encoded, Encode(image.get(), renditions[i]));
    RenditionOutput out;
    out.name = renditions[i].name;
    out.format = std::move(encoded.format);
    out.content_type = std::move(encoded.content_type);
    out.extension = std::move(encoded.extension);
    out.width = vips_image_get_width(image.get());
    out.height = vips_image_get_height(image.get());
    out.bytes = std::move(encoded.bytes);
    output.renditions.push_back(std::move(out));
  }
  output.encode_seconds = SecondsSince(encode_start);

  IMGPIPE_ASSIGN_OR_RETURN(const AnalysisPixels analysis, ReadAnalysisPixels(analysis_source.get()));
  output.phash = PerceptualHash(analysis);
  output.dominant_colour = DominantColour(analysis);
  return output;
}

}  // namespace

Result<PipelineOutput> RunDefaultPipeline(const std::string& path, const std::vector<RenditionConfig>& renditions) {
  return RunDefault(Input{path, {}}, renditions);
}

Result<PipelineOutput> RunDefaultPipelineOnBuffer(std::string_view bytes,
                                                  const std::vector<RenditionConfig>& renditions) {
  // A non-null pointer marks the input as memory even when it is empty.
  static constexpr char kEmpty = 0;
  return RunDefault(Input{{}, bytes.data() != nullptr ? bytes : std::string_view(&kEmpty, 0)}, renditions);
}

}  // namespace imgpipe
