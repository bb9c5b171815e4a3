#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.hpp"
#include "http_client/http_client.hpp"
#include "storage/blob_store.hpp"

namespace imgpipe {

//! Helpers shared by the Azure and S3 backends.

//! kInvalidArgument naming `config_key` unless `prefix` is empty or lowercase letters, digits and '-' (at most 20),
//! so "<prefix><container>" stays a valid container or bucket name on both services.
Status ValidateContainerPrefix(std::string_view prefix, std::string_view config_key);

//! "bytes=<first>-<last>", or "bytes=<first>-" when the range runs to the end (length past UINT64_MAX - offset).
std::string RangeHeaderValue(const ByteRange& range);

//! The whole object's size: the total of a 206's Content-Range ("bytes a-b/total"), else Content-Length.
//! kUnavailable if neither is usable.
Result<uint64_t> ObjectSizeFromResponse(const HttpClientResponseHead& head);

//! A non-negative decimal that fits in 64 bits; nullopt otherwise.
std::optional<uint64_t> ParseDecimal(std::string_view text);

//! Checks a ranged read's answer against our contract: kRangeNotSatisfiable if the range starts at or past the end
//! (some servers answer such a range with the whole object), kUnavailable if the server ignored a range that starts
//! inside the object (a 200 would hand out the wrong bytes).
Status CheckRangeAnswer(const std::optional<ByteRange>& range, int status, uint64_t size, std::string_view what);

//! The facts of an object from a GET or HEAD answer: size (ObjectSizeFromResponse), ETag and Last-Modified.
Result<BlobInfo> BlobInfoFromHead(const HttpClientResponseHead& head, std::string_view container, std::string_view key);

//! A BlobReader over a response body (or over nothing, for an empty read). `what` names the object in errors.
class StreamBlobReader final : public BlobReader {
 public:
  StreamBlobReader(std::unique_ptr<HttpClientStream> stream, BlobInfo info, std::string what)
      : stream_(std::move(stream)), info_(std::move(info)), what_(std::move(what)) {}
  Result<size_t> Read(std::span<char> buf) override;
  const BlobInfo& Info() const override { return info_; }

 private:
  std::unique_ptr<HttpClientStream> stream_;  // null: nothing to read
  BlobInfo info_;
  std::string what_;
};

//! One object on a REST blob service, as a backend addresses it: what OpenRead, Stat and Delete share between Azure
//! and S3, written once here. Lifetimes: `client` must outlive it; `sign` may capture the backend.
struct CloudObject {
  HttpClient* client = nullptr;
  HttpSigner sign;
  //! A failed answer's error, in the backend's words ("reading s3:originals/k: ...").
  Error (*response_error)(std::string_view what, const HttpClientResponseHead& head, std::string_view body) = nullptr;
  std::string_view range_header;  //!< "Range" (S3) or "x-ms-range" (Azure)
  std::string container;
  std::string key;
  std::string target;  //!< the object's request target
  std::string what;    //!< "s3:originals/key", for errors
};

//! OpenRead over a REST service: an empty range reads nothing from a real object (a HEAD); a range of an empty object
//! reads nothing (the services answer 416); any other answer but 200/206 is the service's error; a range that starts
//! past the end is kRangeNotSatisfiable.
Result<std::unique_ptr<BlobReader>> OpenCloudRead(const CloudObject& object, const std::optional<ByteRange>& range);

//! Stat by HEAD: kNotFound (through response_error) when there is no such object.
Result<BlobInfo> StatCloudObject(const CloudObject& object);

//! DELETE; an object that is already gone is not an error (Azure answers 202, S3 204, both 404 when absent).
Status DeleteCloudObject(const CloudObject& object);

//! Uploads the pieces of one object (Azure blocks, S3 parts) in the background, at most `max_in_flight` at once, so
//! a large object does not wait for one round trip per piece; each piece owns its buffer, so a writer holds at most
//! max_in_flight + 1 pieces in memory. The first error sticks and is returned by the next Submit or by Drain.
//! Destruction waits for the pieces still running. Used by one writer thread at a time.
class PieceUploader {
 public:
  explicit PieceUploader(size_t max_in_flight) : max_in_flight_(std::max<size_t>(1, max_in_flight)) {}
  ~PieceUploader() { (void)Drain(); }
  PieceUploader(const PieceUploader&) = delete;
  PieceUploader& operator=(const PieceUploader&) = delete;

  //! Waits until fewer than max_in_flight pieces run, then starts `upload` on a thread of its own.
  Status Submit(std::function<Status()> upload);
  //! Waits for every piece; the first error of any.
  Status Drain();

 private:
  void WaitOne();

  size_t max_in_flight_;
  std::deque<std::future<Status>> running_;
  std::optional<Error> error_;
};

//! The rest of a (small) error body, or "" if it cannot be read: the status already says what went wrong.
std::string ReadErrorBody(HttpClientStream& stream);

}  // namespace imgpipe
