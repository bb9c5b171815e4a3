#include "scripts/script_runner.hpp"

#include <signal.h>
#include <vips/vips.h>

#include <boost/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>

#include "processing/image_format.hpp"
#include "processing/vips_util.hpp"
#include "scripts/exec_protocol.hpp"

namespace imgpipe {
namespace {

using vips::GFree;
using vips::ImagePtr;
using vips::Make;

// libvips' size bound for "no limit on this side".
constexpr int kUnbounded = VIPS_MAX_COORD;

ImagePtr Ref(VipsImage* image) { return ImagePtr(static_cast<VipsImage*>(g_object_ref(image))); }

std::string StepWhere(const ScriptStep& step) {
  return step.line > 0 ? std::string(kScriptManifestFile) + ":" + std::to_string(step.line) + ": step '" + step.op + "'"
                       : "step '" + step.op + "'";
}

// 8-bit sRGB with at most one alpha band, or 8-bit greyscale (with alpha) when `keep_grey` and the image is grey.
Result<ImagePtr> Normalize(ImagePtr image, bool keep_grey) {
  const VipsInterpretation interpretation = vips_image_get_interpretation(image.get());
  const bool grey = interpretation == VIPS_INTERPRETATION_B_W || interpretation == VIPS_INTERPRETATION_GREY16;
  const VipsInterpretation target = grey && keep_grey ? VIPS_INTERPRETATION_B_W : VIPS_INTERPRETATION_sRGB;
  if (interpretation != target || (target == VIPS_INTERPRETATION_sRGB && image->Bands < 3)) {
    IMGPIPE_ASSIGN_OR_RETURN(
        image, Make([&](VipsImage** out) { return vips_colourspace(image.get(), out, target, nullptr); },
                    ErrorKind::kInternal, "colour conversion failed"));
  }
  if (image->BandFmt != VIPS_FORMAT_UCHAR) {
    IMGPIPE_ASSIGN_OR_RETURN(image, Make([&](VipsImage** out) { return vips_cast_uchar(image.get(), out, nullptr); },
                                         ErrorKind::kInternal, "conversion to 8 bits failed"));
  }
  const int max_bands = target == VIPS_INTERPRETATION_B_W ? 2 : 4;
  if (image->Bands > max_bands) {
    IMGPIPE_ASSIGN_OR_RETURN(
        image, Make([&](VipsImage** out) { return vips_extract_band(image.get(), out, 0, "n", max_bands, nullptr); },
                    ErrorKind::kInternal, "band extraction failed"));
  }
  return image;
}

struct Box {
  int width;
  int height;
  VipsSize size;
  VipsInteresting crop;
};

Box BoxOf(const ScriptStep& step) {
  Box box{step.width > 0 ? step.width : kUnbounded, step.height > 0 ? step.height : kUnbounded,
          step.op == "resize" ? VIPS_SIZE_BOTH : VIPS_SIZE_DOWN, VIPS_INTERESTING_NONE};
  const bool both = step.width > 0 && step.height > 0;
  if (both && step.fit == "cover") box.crop = VIPS_INTERESTING_CENTRE;
  if (both && step.fit == "fill") box.size = VIPS_SIZE_FORCE;
  return box;
}

Result<RenditionOutput> Encode(VipsImage* in, const std::string& name, const std::string& format, int quality,
                               int effort) {
  IMGPIPE_ASSIGN_OR_RETURN(ImagePtr image, Normalize(Ref(in), true));
  const bool alpha = vips_image_hasalpha(image.get()) != 0;
  void* raw = nullptr;
  size_t length = 0;
  int rc = -1;
  RenditionOutput out;
  out.name = name;
  out.format = format;
  if (format == "jpeg") {
    if (alpha) {
      VipsArrayDouble* white = vips_array_double_newv(1, 255.0);
      auto flat = Make([&](VipsImage** o) { return vips_flatten(image.get(), o, "background", white, nullptr); },
                       ErrorKind::kInternal, "flattening the alpha channel failed");
      vips_area_unref(VIPS_AREA(white));
      if (!flat.ok()) return flat.error();
      image = std::move(flat).value();
    }
    rc = vips_jpegsave_buffer(image.get(), &raw, &length, "Q", quality, "strip", TRUE, nullptr);
    out.content_type = "image/jpeg";
    out.extension = "jpg";
  } else if (format == "webp") {
    rc = vips_webpsave_buffer(image.get(), &raw, &length, "Q", quality, "effort", std::min(effort, 6), "strip", TRUE,
                              nullptr);
    out.content_type = "image/webp";
    out.extension = "webp";
  } else if (format == "png") {
    rc = vips_pngsave_buffer(image.get(), &raw, &length, "strip", TRUE, nullptr);
    out.content_type = "image/png";
    out.extension = "png";
  } else if (format == "avif") {
    rc = vips_heifsave_buffer(image.get(), &raw, &length, "Q", quality, "effort", effort, "compression",
                              VIPS_FOREIGN_HEIF_COMPRESSION_AV1, "strip", TRUE, nullptr);
    out.content_type = "image/avif";
    out.extension = "avif";
  } else if (format == "heif") {
    rc = vips_heifsave_buffer(image.get(), &raw, &length, "Q", quality, "effort", effort, "compression",
                              VIPS_FOREIGN_HEIF_COMPRESSION_HEVC, "strip", TRUE, nullptr);
    out.content_type = "image/heic";
    out.extension = "heic";
  } else {
    return MakeError(ErrorKind::kInvalidArgument, "rendition '" + name + "' has unknown format '" + format + "'");
  }
  std::unique_ptr<void, GFree> buffer(raw);
  if (rc != 0) {
    // HEVC encoding is libheif's x265 plugin, absent from some builds: say so rather than only libvips' words.
    const std::string hint = format == "heif" ? " (HEIF output needs libheif built with an HEVC encoder such as "
                                                "x265; use avif where it is missing)"
                                              : "";
    return MakeError(ErrorKind::kInternal, "encoding rendition '" + name + "' as " + format + " failed: " +
                                               vips::TakeError() + hint);
  }
  out.width = vips_image_get_width(image.get());
  out.height = vips_image_get_height(image.get());
  out.bytes.assign(static_cast<const char*>(buffer.get()), length);
  return out;
}

// Variance of the Laplacian of the image's greyscale, at most 512 pixels on its long edge: higher is sharper.
Result<double> Sharpness(VipsImage* in) {
  auto shrink = [&](VipsImage** out) {
    return vips_thumbnail_image(in, out, 512, "height", 512, "size", VIPS_SIZE_DOWN, "no_rotate", TRUE, nullptr);
  };
  IMGPIPE_ASSIGN_OR_RETURN(ImagePtr small, Make(shrink, ErrorKind::kInternal, "resizing for sharpness failed"));
  IMGPIPE_ASSIGN_OR_RETURN(
      ImagePtr grey, Make([&](VipsImage** out) { return vips_colourspace(small.get(), out, VIPS_INTERPRETATION_B_W, nullptr); },
                          ErrorKind::kInternal, "greyscale for sharpness failed"));
  IMGPIPE_ASSIGN_OR_RETURN(
      ImagePtr luma, Make([&](VipsImage** out) { return vips_extract_band(grey.get(), out, 0, nullptr); },
                          ErrorKind::kInternal, "greyscale for sharpness failed"));
  ImagePtr mask(vips_image_new_matrixv(3, 3, 0.0, 1.0, 0.0, 1.0, -4.0, 1.0, 0.0, 1.0, 0.0));
  if (!mask) return MakeError(ErrorKind::kInternal, "Laplacian mask: " + vips::TakeError());
  IMGPIPE_ASSIGN_OR_RETURN(
      ImagePtr edges,
      Make([&](VipsImage** out) { return vips_conv(luma.get(), out, mask.get(), "precision", VIPS_PRECISION_FLOAT, nullptr); },
           ErrorKind::kInternal, "Laplacian for sharpness failed"));
  double deviation = 0;
  if (vips_deviate(edges.get(), &deviation, nullptr) != 0) {
    return MakeError(ErrorKind::kInternal, "sharpness statistics failed: " + vips::TakeError());
  }
  return deviation * deviation;
}

// Removes the metadata a file carries about its capture (EXIF, XMP, IPTC, ICC, orientation) from a copy of `in`.
Result<ImagePtr> Strip(VipsImage* in) {
  IMGPIPE_ASSIGN_OR_RETURN(ImagePtr copy, Make([&](VipsImage** out) { return vips_copy(in, out, nullptr); },
                                              ErrorKind::kInternal, "copying for strip failed"));
  gchar** fields = vips_image_get_fields(copy.get());
  for (gchar** f = fields; f != nullptr && *f != nullptr; ++f) {
    const std::string_view name(*f);
    if (name.starts_with("exif-") || name == VIPS_META_XMP_NAME || name == VIPS_META_IPTC_NAME ||
        name == VIPS_META_ICC_NAME || name == VIPS_META_ORIENTATION || name == VIPS_META_PHOTOSHOP_NAME) {
      vips_image_remove(copy.get(), *f);
    }
  }
  g_strfreev(fields);
  return copy;
}

// Where the mark's top-left corner goes for a position like "bottom-right".
std::pair<int, int> Place(const std::string& position, int width, int height, int mark_width, int mark_height,
                          int margin) {
  const int right = std::max(0, width - mark_width - margin);
  const int bottom = std::max(0, height - mark_height - margin);
  const int centre_x = std::max(0, (width - mark_width) / 2);
  const int centre_y = std::max(0, (height - mark_height) / 2);
  const int x = position.ends_with("left") ? std::min(margin, right) : position.ends_with("right") ? right : centre_x;
  const int y = position.starts_with("top") ? std::min(margin, bottom) : position.starts_with("bottom") ? bottom : centre_y;
  return {x, y};
}

// The watermark as 8-bit sRGB with alpha (already multiplied by the step's opacity), sized for a `width`x`height`
// image. `files` are the script's, for an image mark.
Result<ImagePtr> MakeMark(const ScriptStep& step, const std::map<std::string, std::string>& files, int width,
                          int height) {
  const std::string where = StepWhere(step);
  ImagePtr mark;
  if (!step.text.empty()) {
    // vips_text reads Pango markup: the text is escaped so it is drawn as written.
    std::unique_ptr<char, GFree> escaped(g_markup_escape_text(step.text.c_str(), -1));
    IMGPIPE_ASSIGN_OR_RETURN(ImagePtr mask, Make([&](VipsImage** out) {
      return vips_text(out, escaped.get(), "font", "sans bold", "dpi", 300, nullptr);
    }, ErrorKind::kInternal, where + ": rendering the text failed"));
    const double target = (step.size > 0 ? step.size : 0.05) * height;
    const double scale = std::max(target, 4.0) / std::max(mask->Ysize, 1);
    IMGPIPE_ASSIGN_OR_RETURN(mask, Make([&](VipsImage** out) { return vips_resize(mask.get(), out, scale, nullptr); },
                                        ErrorKind::kInternal, where + ": sizing the text failed"));
    const unsigned colour = static_cast<unsigned>(std::stoul(step.colour.substr(1), nullptr, 16));
    const double rgb[3] = {static_cast<double>((colour >> 16) & 0xFF), static_cast<double>((colour >> 8) & 0xFF),
                           static_cast<double>(colour & 0xFF)};
    ImagePtr fill(vips_image_new_from_image(mask.get(), rgb, 3));
    if (!fill) return MakeError(ErrorKind::kInternal, where + ": " + vips::TakeError());
    VipsImage* parts[2] = {fill.get(), mask.get()};
    IMGPIPE_ASSIGN_OR_RETURN(mark, Make([&](VipsImage** out) { return vips_bandjoin(parts, out, 2, nullptr); },
                                        ErrorKind::kInternal, where + ": building the text mark failed"));
    IMGPIPE_ASSIGN_OR_RETURN(mark, Make([&](VipsImage** out) {
      return vips_copy(mark.get(), out, "interpretation", VIPS_INTERPRETATION_sRGB, nullptr);
    }, ErrorKind::kInternal, where));
  } else {
    auto file = files.find(step.image);
    if (file == files.end()) {
      return MakeError(ErrorKind::kInvalidArgument, where + ": image '" + step.image + "' is not in the script",
                       "script_error");
    }
    const std::string& bytes = file->second;
    if (!IsDecodableFormat(DetectFormat(std::string_view(bytes).substr(0, 512)))) {
      return MakeError(ErrorKind::kInvalidArgument, where + ": '" + step.image + "' is not an image imgpipe decodes",
                       "script_error");
    }
    IMGPIPE_ASSIGN_OR_RETURN(ImagePtr loaded, Make([&](VipsImage** out) {
      *out = vips_image_new_from_buffer(bytes.data(), bytes.size(), "", "fail_on", VIPS_FAIL_ON_ERROR, nullptr);
      return *out != nullptr ? 0 : -1;
    }, ErrorKind::kInvalidArgument, where + ": '" + step.image + "' does not decode"));
    if (static_cast<uint64_t>(loaded->Xsize) * static_cast<uint64_t>(loaded->Ysize) > 16'000'000) {
      return MakeError(ErrorKind::kInvalidArgument, where + ": '" + step.image + "' is over 16 megapixels",
                       "script_error");
    }
    IMGPIPE_ASSIGN_OR_RETURN(mark, Normalize(std::move(loaded), false));
    if (!vips_image_hasalpha(mark.get())) {
      IMGPIPE_ASSIGN_OR_RETURN(mark, Make([&](VipsImage** out) { return vips_addalpha(mark.get(), out, nullptr); },
                                          ErrorKind::kInternal, where));
    }
    if (step.size > 0) {
      const double scale = step.size * width / std::max(mark->Xsize, 1);
      IMGPIPE_ASSIGN_OR_RETURN(mark, Make([&](VipsImage** out) { return vips_resize(mark.get(), out, scale, nullptr); },
                                          ErrorKind::kInternal, where + ": sizing the image failed"));
    }
  }
  // Never larger than the image it marks.
  if (mark->Xsize > width || mark->Ysize > height) {
    const double scale = std::min(static_cast<double>(width) / mark->Xsize, static_cast<double>(height) / mark->Ysize);
    IMGPIPE_ASSIGN_OR_RETURN(mark, Make([&](VipsImage** out) { return vips_resize(mark.get(), out, scale, nullptr); },
                                        ErrorKind::kInternal, where + ": fitting the mark failed"));
  }
  const double a[4] = {1, 1, 1, step.opacity};
  const double b[4] = {0, 0, 0, 0};
  IMGPIPE_ASSIGN_OR_RETURN(mark, Make([&](VipsImage** out) { return vips_linear(mark.get(), out, a, b, 4, nullptr); },
                                      ErrorKind::kInternal, where + ": applying the opacity failed"));
  return Make([&](VipsImage** out) { return vips_cast_uchar(mark.get(), out, nullptr); }, ErrorKind::kInternal, where);
}

Result<ImagePtr> Watermark(VipsImage* in, const ScriptStep& step, const std::map<std::string, std::string>& files) {
  const std::string where = StepWhere(step);
  IMGPIPE_ASSIGN_OR_RETURN(ImagePtr base, Normalize(Ref(in), false));
  IMGPIPE_ASSIGN_OR_RETURN(ImagePtr mark, MakeMark(step, files, base->Xsize, base->Ysize));
  // Plain ints, not a structured binding: clang refuses to capture those in the lambda below.
  const std::pair<int, int> at = Place(step.position, base->Xsize, base->Ysize, mark->Xsize, mark->Ysize, step.margin);
  const int x = at.first;
  const int y = at.second;
  const bool alpha = vips_image_hasalpha(base.get()) != 0;
  IMGPIPE_ASSIGN_OR_RETURN(ImagePtr out, Make([&](VipsImage** o) {
    return vips_composite2(base.get(), mark.get(), o, VIPS_BLEND_MODE_OVER, "x", x, "y", y, nullptr);
  }, ErrorKind::kInternal, where));
  if (!alpha && out->Bands == 4) {
    IMGPIPE_ASSIGN_OR_RETURN(out, Make([&](VipsImage** o) { return vips_extract_band(out.get(), o, 0, "n", 3, nullptr); },
                                       ErrorKind::kInternal, where));
  }
  return Normalize(std::move(out), false);
}

// The current image as the exec step's input file, 8-bit, in the format the step asked for.
Result<std::string> EncodeInput(VipsImage* in, const std::string& format) {
  IMGPIPE_ASSIGN_OR_RETURN(ImagePtr image, Normalize(Ref(in), true));
  if ((format == "jpeg" || format == "pnm") && vips_image_hasalpha(image.get())) {
    IMGPIPE_ASSIGN_OR_RETURN(image, Make([&](VipsImage** out) {
      return vips_flatten(image.get(), out, nullptr);
    }, ErrorKind::kInternal, "flattening the exec step's input failed"));
  }
  void* raw = nullptr;
  size_t length = 0;
  int rc = -1;
  if (format == "png") {
    rc = vips_pngsave_buffer(image.get(), &raw, &length, "compression", 1, "strip", TRUE, nullptr);
  } else if (format == "jpeg") {
    rc = vips_jpegsave_buffer(image.get(), &raw, &length, "Q", 95, "strip", TRUE, nullptr);
  } else if (format == "tiff") {
    rc = vips_tiffsave_buffer(image.get(), &raw, &length, "strip", TRUE, nullptr);
  } else {
    // libvips 8.14 has no ppm buffer saver: PNM is small enough to write by hand (P5 grey, P6 RGB, 8 bits).
    IMGPIPE_ASSIGN_OR_RETURN(ImagePtr memory, Make([&](VipsImage** out) {
      *out = vips_image_copy_memory(image.get());
      return *out != nullptr ? 0 : -1;
    }, ErrorKind::kInternal, "decoding the exec step's input failed"));
    const int bands = memory->Bands;
    std::string pnm = std::string(bands == 1 ? "P5" : "P6") + "\n" + std::to_string(memory->Xsize) + " " +
                      std::to_string(memory->Ysize) + "\n255\n";
    size_t size = 0;
    const auto* pixels = static_cast<const char*>(vips_image_get_data(memory.get()));
    size = VIPS_IMAGE_SIZEOF_IMAGE(memory.get());
    if (pixels == nullptr) return MakeError(ErrorKind::kInternal, "exec step input: " + vips::TakeError());
    pnm.append(pixels, size);
    return pnm;
  }
  std::unique_ptr<void, GFree> buffer(raw);
  if (rc != 0) return MakeError(ErrorKind::kInternal, "writing the exec step's input as " + format + " failed: " +
                                                          vips::TakeError());
  return std::string(static_cast<const char*>(buffer.get()), length);
}

std::string InputExtension(const std::string& format) {
  if (format == "jpeg") return "jpg";
  if (format == "tiff") return "tif";
  return format;
}

std::string ExitProblem(const ScriptStep& step, const ExecExit& exit, int cpu) {
  std::string problem;
  if (exit.timed_out) {
    problem = "ran longer than " + std::to_string(step.timeout) + " s and was killed (its 'timeout')";
  } else if (exit.signal == SIGXCPU) {
    problem = "used more than " + std::to_string(cpu) + " s of CPU and was stopped (its 'cpu' limit)";
  } else if (exit.signal == SIGXFSZ) {
    problem = "wrote a file larger than the exec file limit and was stopped";
  } else if (exit.signal != 0) {
    const char* name = sigabbrev_np(exit.signal);
    problem = "was killed by signal SIG" + std::string(name != nullptr ? name : std::to_string(exit.signal));
    if (exit.signal == SIGKILL) problem += " (its 'cpu' limit, or the kernel ran out of memory)";
  } else {
    problem = "exited with status " + std::to_string(exit.exit_code);
  }
  problem += " (limits: timeout " + std::to_string(step.timeout) + " s, cpu " + std::to_string(cpu) + " s, memory " +
             std::to_string(step.memory) + " MiB)";
  std::string tail = exit.output_tail;
  std::replace(tail.begin(), tail.end(), '\n', ' ');
  while (!tail.empty() && tail.back() == ' ') tail.pop_back();
  if (!tail.empty()) problem += "; its output ends with: " + tail;
  return problem;
}

// One run: the current image, what the steps produced, and the Lua API over both.
class Run final : public LuaHost {
 public:
  Run(const ScriptBundle& script, const ScriptRunLimits& limits, ImageFormat format, ImagePtr image)
      : script_(script), limits_(limits), format_(format), image_(std::move(image)) {}

  Status Step(const ScriptStep& step) {
    if (step.op == "lua") {
      auto file = script_.files.find(step.file);
      if (file == script_.files.end()) {
        return MakeError(ErrorKind::kInvalidArgument, StepWhere(step) + ": file '" + step.file + "' is missing");
      }
      return RunLua(file->second, step.file, limits_.lua, *this);
    }
    if (step.op == "exec") return Exec(step);
    return Apply(step);
  }

  // The exec protocol (docs/SCRIPTS.md): a fresh folder with the script's files, input.<ext> and input.json; the
  // program runs sandboxed (exec_sandbox.hpp) and leaves result.json, which is outside data like an upload.
  Status Exec(const ScriptStep& step) {
    const std::string where = StepWhere(step);
    auto fail = [&](const std::string& problem, const char* code = "script_error") {
      return MakeError(ErrorKind::kInvalidArgument, where + " " + problem, code);
    };
    auto prefixed = [&](const Error& e) {
      return e.kind == ErrorKind::kInvalidArgument ? MakeError(e.kind, where + ": " + e.message, std::string(e.Code()))
                                                    : e;
    };
    auto folder = ExecFolder::Create(limits_.exec);
    if (!folder.ok()) return folder.error();
    for (const auto& [path, content] : script_.files) IMGPIPE_TRY(folder->Write(path, content));
    const std::string input = "input." + InputExtension(step.input);
    IMGPIPE_ASSIGN_OR_RETURN(std::string encoded, EncodeInput(image_.get(), step.input));
    IMGPIPE_TRY(folder->Write(input, encoded));
    encoded.clear();
    IMGPIPE_TRY(folder->Write(std::string(kExecInputJson), InputJson(step, input)));

    ExecProcess process;
    process.argv = step.command;
    process.env = step.env;
    process.folder = folder->path();
    process.timeout = std::chrono::seconds(step.timeout);
    process.cpu_seconds = step.cpu > 0 ? step.cpu : step.timeout;
    process.memory_bytes = static_cast<uint64_t>(step.memory) << 20;
    auto ran = RunSandboxed(process, limits_.exec);
    if (!ran.ok()) return prefixed(ran.error());
    const ExecExit& exit = *ran;
    if (exit.timed_out || exit.signal != 0 || exit.exit_code != 0) {
      return fail(ExitProblem(step, exit, process.cpu_seconds),
                  exit.timed_out || exit.signal != 0 ? "script_limit" : "script_error");
    }
    auto text = folder->Read(std::string(kExecResultJson), kExecMaxResultBytes);
    if (!text.ok()) return prefixed(text.error());
    auto result = ParseExecResult(*text);
    if (!result.ok()) return prefixed(result.error());
    for (ExecLabel& l : result->labels) IMGPIPE_TRY(Label(l.key, l.value, l.number));
    if (result->reject) {
      Reject(*result->reject);
      return Ok();
    }
    ImagePtr current = Ref(image_.get());
    const ScriptStep encoding = DefaultEncoding(script_.manifest);
    for (const ExecRendition& r : result->renditions) {
      auto made = LoadOutput(*folder, r.file);
      if (!made.ok()) return prefixed(made.error());
      image_ = std::move(made).value();
      const Status added = AddRendition(r.name, r.format.empty() ? encoding.format : r.format,
                                        r.quality > 0 ? r.quality : encoding.quality,
                                        r.effort >= 0 ? r.effort : encoding.effort);
      image_ = Ref(current.get());
      if (!added.ok()) return prefixed(added.error());
    }
    if (result->image) {
      auto next = LoadOutput(*folder, *result->image);
      if (!next.ok()) return prefixed(next.error());
      set_image(std::move(next).value());
    }
    return Ok();
  }

  Status Apply(const ScriptStep& step) override {
    VipsImage* in = image_.get();
    const std::string where = StepWhere(step);
    Result<ImagePtr> next = ImagePtr();
    if (step.op == "auto-orient") {
      next = Make([&](VipsImage** out) { return vips_autorot(in, out, nullptr); }, ErrorKind::kInternal, where);
    } else if ((step.op == "thumbnail" || step.op == "resize") && !source_path_.empty()) {
      // The image is still the file as opened: decode it straight at the box's size (shrink-on-load), as a
      // script that starts with the step does. A Lua step's first image.apply("thumbnail") lands here.
      const Box box = BoxOf(step);
      next = Make(
          [&](VipsImage** out) {
            return vips_thumbnail(source_path_.c_str(), out, box.width, "height", box.height, "size", box.size,
                                  "crop", box.crop, "no_rotate", TRUE, nullptr);
          },
          ErrorKind::kInvalidImage, where + ": image does not decode");
      if (next.ok()) {
        ImagePtr decoded(vips_image_copy_memory(next->get()));
        if (!decoded) return MakeError(ErrorKind::kInvalidImage, where + ": image does not decode: " +
                                                                     vips::TakeError(), "invalid_image");
        next = std::move(decoded);
      }
    } else if (step.op == "thumbnail" || step.op == "resize") {
      const Box box = BoxOf(step);
      next = Make(
          [&](VipsImage** out) {
            return vips_thumbnail_image(in, out, box.width, "height", box.height, "size", box.size, "crop", box.crop,
                                        "no_rotate", TRUE, nullptr);
          },
          ErrorKind::kInternal, where);
    } else if (step.op == "crop") {
      const int width = std::min(step.width > 0 ? step.width : in->Xsize, in->Xsize);
      const int height = std::min(step.height > 0 ? step.height : in->Ysize, in->Ysize);
      const VipsInteresting interesting = step.mode == "attention" ? VIPS_INTERESTING_ATTENTION
                                          : step.mode == "entropy" ? VIPS_INTERESTING_ENTROPY
                                                                   : VIPS_INTERESTING_CENTRE;
      next = Make([&](VipsImage** out) {
        return vips_smartcrop(in, out, width, height, "interesting", interesting, nullptr);
      }, ErrorKind::kInternal, where);
    } else if (step.op == "blur") {
      next = Make([&](VipsImage** out) { return vips_gaussblur(in, out, step.sigma, nullptr); }, ErrorKind::kInternal,
                  where);
    } else if (step.op == "sharpen") {
      next = Make([&](VipsImage** out) { return vips_sharpen(in, out, "sigma", step.sigma, nullptr); },
                  ErrorKind::kInternal, where);
    } else if (step.op == "grayscale") {
      next = Make([&](VipsImage** out) { return vips_colourspace(in, out, VIPS_INTERPRETATION_B_W, nullptr); },
                  ErrorKind::kInternal, where);
    } else if (step.op == "strip") {
      next = Strip(in);
    } else if (step.op == "watermark") {
      next = Watermark(in, step, script_.files);
    } else if (step.op == "extract-metadata") {
      return ExtractMetadata(step);
    } else if (step.op == "convert") {
      return Ok();  // sets the renditions' default encoding, read by the manifest parser
    } else if (step.op == "phash" || step.op == "dominant-colour") {
      IMGPIPE_ASSIGN_OR_RETURN(ImagePtr rgb, Normalize(Ref(in), false));
      IMGPIPE_ASSIGN_OR_RETURN(ImageSignature signature, ComputeImageSignature(rgb.get()));
      if (step.op == "phash") {
        output_.phash = signature.phash;
        char hex[17];
        std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(signature.phash));
        return Label("phash", hex, std::nullopt);
      }
      output_.dominant_colour = signature.dominant_colour;
      return Label("dominant_colour", signature.dominant_colour, std::nullopt);
    } else if (step.op == "sharpness") {
      IMGPIPE_ASSIGN_OR_RETURN(double score, Sharpness(in));
      char text[32];
      std::snprintf(text, sizeof text, "%.2f", score);
      return Label("sharpness", text, score);
    } else {
      return MakeError(ErrorKind::kInvalidArgument, where + " is not a built-in image operation");
    }
    if (!next.ok()) return next.error();
    set_image(std::move(next).value());
    return Ok();
  }

  // Labels for the image's size and its camera fields. libvips writes EXIF values as "Canon (Canon, ASCII, 6
  // components, 6 bytes)": the label keeps the value before the parenthesis.
  Status ExtractMetadata(const ScriptStep& step) {
    static const std::vector<std::string> kCommon = {
        "exif-ifd0-Make",         "exif-ifd0-Model",        "exif-ifd0-Software",      "exif-ifd0-Orientation",
        "exif-ifd2-DateTimeOriginal", "exif-ifd2-ExposureTime", "exif-ifd2-FNumber",   "exif-ifd2-ISOSpeedRatings",
        "exif-ifd2-FocalLength",  "exif-ifd3-GPSLatitude",  "exif-ifd3-GPSLatitudeRef", "exif-ifd3-GPSLongitude",
        "exif-ifd3-GPSLongitudeRef"};
    IMGPIPE_TRY(Label("width", std::to_string(Width()), Width()));
    IMGPIPE_TRY(Label("height", std::to_string(Height()), Height()));
    IMGPIPE_TRY(Label("bands", std::to_string(image_->Bands), image_->Bands));
    for (const std::string& field : step.fields.empty() ? kCommon : step.fields) {
      std::optional<std::string> value = Metadata(field);
      if (!value) continue;
      if (field.starts_with("exif-") && value->ends_with(")")) {
        if (const size_t open = value->rfind(" ("); open != std::string::npos) value->resize(open);
        while (!value->empty() && value->back() == ' ') value->pop_back();
      }
      IMGPIPE_TRY(Label(field, *value, std::nullopt));
    }
    return Ok();
  }

  int Width() override { return vips_image_get_width(image_.get()); }
  int Height() override { return vips_image_get_height(image_.get()); }
  std::string Format() override { return std::string(FormatName(format_)); }

  std::optional<std::string> Metadata(const std::string& name) override {
    if (vips_image_get_typeof(image_.get(), name.c_str()) == 0) return std::nullopt;
    char* text = nullptr;
    if (vips_image_get_as_string(image_.get(), name.c_str(), &text) != 0) {
      vips_error_clear();
      return std::nullopt;
    }
    std::string value = text;
    g_free(text);
    if (value.size() > 4096) value.resize(4096);
    return value;
  }

  std::vector<std::string> MetadataNames() override {
    std::vector<std::string> names;
    gchar** fields = vips_image_get_fields(image_.get());
    for (gchar** f = fields; f != nullptr && *f != nullptr; ++f) names.emplace_back(*f);
    g_strfreev(fields);
    return names;
  }

  Status AddRendition(const std::string& name, const std::string& format, int quality, int effort) override {
    const bool valid = !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
    });
    if (!valid) return MakeError(ErrorKind::kInvalidArgument, "rendition name '" + name + "' is not [a-z0-9-]{1,64}");
    for (const RenditionOutput& r : output_.renditions) {
      if (r.name == name) return MakeError(ErrorKind::kInvalidArgument, "rendition '" + name + "' already exists");
    }
    if (output_.renditions.size() >= limits_.max_renditions) {
      return MakeError(ErrorKind::kInvalidArgument,
                       "a run makes at most " + std::to_string(limits_.max_renditions) + " renditions");
    }
    IMGPIPE_ASSIGN_OR_RETURN(RenditionOutput out, Encode(image_.get(), name, format, quality, effort));
    output_.renditions.push_back(std::move(out));
    return Ok();
  }

  Status Label(const std::string& key, const std::string& value, std::optional<double> number) override {
    if (key.empty() || key.size() + value.size() > limits_.max_label_bytes) {
      return MakeError(ErrorKind::kInvalidArgument, "a label needs a key, and key plus value of at most " +
                                                        std::to_string(limits_.max_label_bytes) + " bytes");
    }
    if (number && !std::isfinite(*number)) {
      return MakeError(ErrorKind::kInvalidArgument, "label '" + key + "' has a number that is not finite");
    }
    if (output_.labels.size() >= limits_.max_labels) {
      return MakeError(ErrorKind::kInvalidArgument,
                       "a run emits at most " + std::to_string(limits_.max_labels) + " labels");
    }
    output_.labels.push_back({key, value, number});
    return Ok();
  }

  void Reject(const std::string& reason) override { output_.rejected = reason; }

  std::string InputJson(const ScriptStep& step, const std::string& input) {
    boost::json::object metadata;
    for (const std::string& name : MetadataNames()) {
      if (!name.starts_with("exif-")) continue;
      if (auto value = Metadata(name)) metadata[name] = *value;
    }
    boost::json::object o{{"protocol", 1},
                          {"input", input},
                          {"result", kExecResultJson},
                          {"width", Width()},
                          {"height", Height()},
                          {"bands", image_->Bands},
                          {"original_format", Format()},
                          {"script", {{"name", script_.name}, {"version", script_.version}}},
                          {"step_line", step.line},
                          {"metadata", std::move(metadata)}};
    return boost::json::serialize(o);
  }

  // An image the exec program wrote: outside data, so it is format-checked and size-checked before decoding.
  Result<ImagePtr> LoadOutput(const ExecFolder& folder, const std::string& name) {
    IMGPIPE_ASSIGN_OR_RETURN(std::string bytes, folder.Read(name, limits_.exec.max_file_bytes));
    const ImageFormat format = DetectFormat(std::string_view(bytes).substr(0, 512));
    auto refuse = [&](const std::string& what) {
      return MakeError(ErrorKind::kInvalidArgument, "exec step: output image '" + name + "' " + what, "script_error");
    };
    if (!IsDecodableFormat(format)) return refuse("is not an image imgpipe decodes (" + std::string(FormatName(format)) + ")");
    ImagePtr header(vips_image_new_from_buffer(bytes.data(), bytes.size(), "", "fail_on", VIPS_FAIL_ON_ERROR,
                                               nullptr));
    if (!header) return refuse("does not decode: " + vips::TakeError());
    const uint64_t pixels = static_cast<uint64_t>(header->Xsize) * static_cast<uint64_t>(header->Ysize);
    if (pixels > limits_.max_output_pixels) {
      return refuse("has " + std::to_string(pixels) + " pixels; the limit is " +
                    std::to_string(limits_.max_output_pixels));
    }
    // Decoded now, while `bytes` is alive: libvips reads the buffer lazily.
    ImagePtr decoded(vips_image_copy_memory(header.get()));
    if (!decoded) return refuse("does not decode: " + vips::TakeError());
    return decoded;
  }

  Status Freeze() {
    ImagePtr copy(vips_image_copy_memory(image_.get()));
    if (!copy) return MakeError(ErrorKind::kInvalidImage, "image does not decode: " + vips::TakeError(), "invalid_image");
    set_image(std::move(copy));
    return Ok();
  }
  VipsImage* image() const { return image_.get(); }
  void set_image(ImagePtr image) {
    image_ = std::move(image);
    source_path_.clear();
  }
  //! The current image is the file at `path`, opened and untouched: a thumbnail may shrink on load.
  void set_source_path(std::string path) { source_path_ = std::move(path); }
  ScriptRunOutput& output() { return output_; }

 private:
  const ScriptBundle& script_;
  const ScriptRunLimits& limits_;
  ImageFormat format_;
  ImagePtr image_;
  std::string source_path_;  // non-empty while image_ is the file as opened (no step changed it)
  ScriptRunOutput output_;
};

}  // namespace

Result<ScriptRunOutput> RunScript(const ScriptBundle& script, const std::string& path,
                                  const ScriptRunLimits& limits) {
  vips_error_clear();
  std::string head(512, '\0');
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) return MakeError(ErrorKind::kInternal, "cannot open the image file for reading");
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<size_t>(in.gcount()));
  }
  const ImageFormat format = DetectFormat(head);
  if (!IsDecodableFormat(format)) {
    return MakeError(ErrorKind::kUnsupportedFormat,
                     "image format '" + std::string(FormatName(format)) + "' cannot be processed", "unsupported_format");
  }
  const std::vector<ScriptStep>& steps = script.manifest.steps;
  // Shrink-on-load: a script that starts with [auto-orient,] thumbnail decodes straight at the thumbnail's size.
  size_t first = 0;
  const bool orient_first = !steps.empty() && steps[0].op == "auto-orient";
  const size_t thumb_at = orient_first ? 1 : 0;
  ImagePtr image;
  if (steps.size() > thumb_at && steps[thumb_at].op == "thumbnail") {
    const Box box = BoxOf(steps[thumb_at]);
    IMGPIPE_ASSIGN_OR_RETURN(image, Make(
        [&](VipsImage** out) {
          return vips_thumbnail(path.c_str(), out, box.width, "height", box.height, "size", box.size, "crop",
                                box.crop, "no_rotate", orient_first ? FALSE : TRUE, nullptr);
        },
        ErrorKind::kInvalidImage, "image does not decode"));
    // vips_thumbnail reads the file sequentially, once; the steps after may read the pixels several times.
    ImagePtr decoded(vips_image_copy_memory(image.get()));
    if (!decoded) {
      return MakeError(ErrorKind::kInvalidImage, "image does not decode: " + vips::TakeError(), "invalid_image");
    }
    image = std::move(decoded);
    first = thumb_at + 1;
  } else {
    IMGPIPE_ASSIGN_OR_RETURN(image, Make([&](VipsImage** out) {
      *out = vips_image_new_from_file(path.c_str(), nullptr);
      return *out != nullptr ? 0 : -1;
    }, ErrorKind::kInvalidImage, "image does not decode"));
  }
  Run run(script, limits, format, std::move(image));
  if (first == 0) run.set_source_path(path);
  for (size_t i = first; i < steps.size(); ++i) {
    IMGPIPE_TRY(run.Step(steps[i]));
    if (run.output().rejected) {
      ScriptRunOutput out = std::move(run.output());
      out.renditions.clear();
      return out;
    }
  }
  // Renditions branch from the same image; decode and compute it once.
  IMGPIPE_TRY(run.Freeze());
  ImagePtr main_image = Ref(run.image());
  std::vector<RenditionOutput> made;
  for (const ScriptRendition& r : script.manifest.renditions) {
    run.set_image(Ref(main_image.get()));
    for (const ScriptStep& step : r.steps) IMGPIPE_TRY(run.Apply(step));
    IMGPIPE_ASSIGN_OR_RETURN(RenditionOutput out, Encode(run.image(), r.name, r.format, r.quality, r.effort));
    for (const RenditionOutput& existing : run.output().renditions) {
      if (existing.name == r.name) {
        return MakeError(ErrorKind::kInvalidArgument, "rendition '" + r.name + "' was also added by a lua step");
      }
    }
    made.push_back(std::move(out));
  }
  ScriptRunOutput out = std::move(run.output());
  made.insert(made.end(), std::make_move_iterator(out.renditions.begin()),
              std::make_move_iterator(out.renditions.end()));
  out.renditions = std::move(made);
  return out;
}

}  // namespace imgpipe
