#pragma once
//! Small pieces every libvips caller in imgpipe needs: owning pointers for libvips/GLib objects, the error buffer as a
//! message fit for clients, and a wrapper that turns a libvips "make one image" call into a Result. Internal to the
//! modules that link libvips (processing, scripts); not part of any public interface.

#include <vips/vips.h>

#include <memory>
#include <string>

#include "core/result.hpp"

namespace imgpipe::vips {

struct GObjectUnref {
  void operator()(VipsImage* image) const { g_object_unref(image); }
};
//! Owns one reference to a VipsImage.
using ImagePtr = std::unique_ptr<VipsImage, GObjectUnref>;

struct GFree {
  void operator()(void* p) const { g_free(p); }
};

//! Takes and clears libvips' per-process error buffer. With several threads failing at once a message may belong to
//! another thread's file, so it is detail for the reader, never something to branch on. Messages often start with the
//! file's path, a server-side spool path: every occurrence of `path` is replaced by "image". Loader messages can
//! quote file contents, so the text is cut at 300 characters. Never empty: `fallback` when libvips said nothing.
std::string TakeError(const std::string& path = {}, const char* fallback = "no detail from libvips");

//! Runs `op(&out)`, a libvips call that makes one image, and takes ownership of that image. On failure the error
//! has `kind`, says `what` and libvips' detail; invalid images carry the "invalid_image" code clients branch on.
template <typename Op>
Result<ImagePtr> Make(Op&& op, ErrorKind kind, const std::string& what) {
  VipsImage* out = nullptr;
  if (op(&out) != 0) {
    if (out != nullptr) g_object_unref(out);
    return MakeError(kind, what + ": " + TakeError(),
                     kind == ErrorKind::kInvalidImage ? "invalid_image" : std::string());
  }
  return ImagePtr(out);
}

}  // namespace imgpipe::vips
