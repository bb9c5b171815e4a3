// Upload bodies are outside input. Any bytes must parse, or fail with kInvalidArgument, without crashing, and the
// outcome must not depend on how the body was cut into chunks (the parser sees network reads of any size).
// Seeds (tests/fuzz/seeds/multipart) use the boundary "B".
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "http/multipart_parser.hpp"

namespace {

using imgpipe::ErrorKind;
using imgpipe::MultipartHandler;
using imgpipe::MultipartLimits;
using imgpipe::MultipartParser;
using imgpipe::MultipartPart;
using imgpipe::Status;

//! Records every event; adjacent data is merged so that chunking does not show.
class Recorder : public MultipartHandler {
 public:
  explicit Recorder(size_t input_size) : input_size_(input_size) {}

  Status OnPartBegin(const MultipartPart& part) override {
    if (in_part_) std::abort();  // begin without the previous part's end
    in_part_ = true;
    log_ += "\nB" + part.name + '\0' + part.filename + '\0' + part.content_type + "\nD";
    return imgpipe::Ok();
  }
  Status OnPartData(std::string_view data) override {
    if (!in_part_ || data.empty()) std::abort();
    data_bytes_ += data.size();
    if (data_bytes_ > input_size_) std::abort();  // more data out than bytes in
    log_.append(data);
    return imgpipe::Ok();
  }
  Status OnPartEnd() override {
    if (!in_part_) std::abort();
    in_part_ = false;
    log_ += "\nE";
    return imgpipe::Ok();
  }

  std::string log_;

 private:
  size_t input_size_;
  size_t data_bytes_ = 0;
  bool in_part_ = false;
};

//! Parses `body` in chunks of `chunk` bytes (0: whole); returns the events followed by the error, if any.
std::string Run(std::string_view body, size_t chunk) {
  Recorder recorder(body.size());
  MultipartParser parser("B", &recorder, MultipartLimits{.max_part_header_bytes = 512, .max_parts = 8});
  Status status;
  if (chunk == 0) chunk = body.size() + 1;
  for (size_t pos = 0; pos < body.size() && status.ok(); pos += chunk) status = parser.Feed(body.substr(pos, chunk));
  if (status.ok()) status = parser.Finish();
  if (!status.ok()) {
    if (status.error().kind != ErrorKind::kInvalidArgument || status.error().message.empty()) std::abort();
    recorder.log_ += "\nerror: " + status.error().message;
  }
  return recorder.log_;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);

  const std::string whole = Run(body, 0);
  if (Run(body, 1) != whole) std::abort();
  if (Run(body, 1 + size % 13) != whole) std::abort();

  auto boundary = imgpipe::MultipartBoundary(body);
  if (boundary.ok() && (boundary->empty() || boundary->size() > 70)) std::abort();
  return 0;
}
