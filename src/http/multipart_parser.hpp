#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/result.hpp"

namespace imgpipe {

//! Headers of one part of a multipart/form-data body.
struct MultipartPart {
  std::string name;          //!< from Content-Disposition: form-data; name="..."
  std::string filename;      //!< from filename="..."; empty if absent
  std::string content_type;  //!< the part's Content-Type; empty if absent
};

//! Receives a multipart body part by part, data in chunks as they arrive. Returning an error stops the parser; Feed()
//! then returns that error unchanged.
class MultipartHandler {
 public:
  virtual ~MultipartHandler() = default;
  virtual Status OnPartBegin(const MultipartPart& part) = 0;
  virtual Status OnPartData(std::string_view data) = 0;
  virtual Status OnPartEnd() = 0;
};

struct MultipartLimits {
  size_t max_part_header_bytes = 8 * 1024;  //!< all header lines of one part together
  size_t max_parts = 16;
};

//! A streaming multipart/form-data parser (RFC 7578 / RFC 2046): feed it the body in chunks of any size; it never
//! buffers more than one part's headers plus the boundary length, so memory is bounded whatever the body size.
//! Preamble and epilogue are ignored. Malformed input gives kInvalidArgument with a message naming the problem.
class MultipartParser {
 public:
  MultipartParser(std::string boundary, MultipartHandler* handler, MultipartLimits limits = {});

  Status Feed(std::string_view chunk);
  //! Call at the end of the body: kInvalidArgument unless the closing boundary was seen.
  Status Finish();

 private:
  enum class State { kPreamble, kAfterBoundary, kHeaders, kBody, kDone, kFailed };
  Status Fail(Error error);
  //! Preamble and body: passes bytes up to the next delimiter on (to the handler in kBody, nowhere in kPreamble),
  //! keeping in buf_ only a tail that could be the start of a delimiter. Consumes `in` up to the delimiter's end.
  Status ScanToDelimiter(std::string_view& in);
  Status Emit(std::string_view data);
  Status ParseHeaders(std::string_view block);

  std::string delimiter_;   // "\r\n--" + boundary
  MultipartHandler* handler_;
  MultipartLimits limits_;
  State state_ = State::kPreamble;
  // Bytes seen but not yet passed on: in kPreamble/kBody fewer than delimiter_.size(); in kHeaders at most
  // max_part_header_bytes + 4; in kAfterBoundary at most 2.
  std::string buf_;
  size_t parts_ = 0;
  Status error_;
};

//! The boundary parameter of a multipart/form-data Content-Type; kInvalidArgument if the type is not
//! multipart/form-data or the boundary is missing or invalid (1..70 chars, RFC 2046 charset).
Result<std::string> MultipartBoundary(std::string_view content_type);

}  // namespace imgpipe
