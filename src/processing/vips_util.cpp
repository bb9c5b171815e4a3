#include "processing/vips_util.hpp"

#include <algorithm>

namespace imgpipe::vips {

std::string TakeError(const std::string& path, const char* fallback) {
  std::unique_ptr<char, GFree> raw(vips_error_buffer_copy());
  std::string text = raw != nullptr ? raw.get() : "";
  for (size_t at = 0; !path.empty() && (at = text.find(path, at)) != std::string::npos;) {
    text.replace(at, path.size(), "image");
    at += 5;
  }
  std::replace(text.begin(), text.end(), '\n', ' ');
  while (!text.empty() && text.back() == ' ') text.pop_back();
  if (text.size() > 300) text = text.substr(0, 300) + "...";
  return text.empty() ? fallback : text;
}

}  // namespace imgpipe::vips
