#include "storage/cloud_common.hpp"

#include <limits>

namespace imgpipe {

Status ValidateContainerPrefix(std::string_view prefix, std::string_view config_key) {
  bool ok = prefix.size() <= 20;
  for (char c : prefix) ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-');
  if (!ok || prefix.starts_with("-")) {
    return MakeError(ErrorKind::kInvalidArgument,
                     std::string(config_key) + " = \"" + std::string(prefix) +
                         "\": use at most 20 lowercase letters, digits and '-', not starting with '-'");
  }
  return Ok();
}

std::string RangeHeaderValue(const ByteRange& range) {
  std::string v = "bytes=" + std::to_string(range.offset) + "-";
  if (range.length <= std::numeric_limits<uint64_t>::max() - range.offset) {
    v += std::to_string(range.offset + range.length - 1);
  }
  return v;
}

std::optional<uint64_t> ParseDecimal(std::string_view text) {
  if (text.empty() || text.size() > 20) return std::nullopt;
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

Result<uint64_t> ObjectSizeFromResponse(const HttpClientResponseHead& head) {
  if (auto cr = head.Header("Content-Range")) {
    size_t slash = cr->rfind('/');
    if (slash != std::string_view::npos) {
      if (auto total = ParseDecimal(cr->substr(slash + 1))) return *total;
    }
  } else if (auto cl = head.Header("Content-Length")) {
    if (auto len = ParseDecimal(*cl)) return *len;
  }
  return MakeError(ErrorKind::kUnavailable, "the storage service's answer has no usable Content-Length or "
                                            "Content-Range", "storage_unavailable");
}

Status CheckRangeAnswer(const std::optional<ByteRange>& range, int status, uint64_t size, std::string_view what) {
  if (!range || range->offset == 0) return Ok();
  if (range->offset >= size) {
    return MakeError(ErrorKind::kRangeNotSatisfiable, std::string(what) + " has " + std::to_string(size) +
                                                          " bytes; the range starts at " +
                                                          std::to_string(range->offset));
  }
  if (status != 206) {
    return MakeError(ErrorKind::kUnavailable, "reading " + std::string(what) + ": the service ignored the range",
                     "storage_unavailable");
  }
  return Ok();
}

Result<BlobInfo> BlobInfoFromHead(const HttpClientResponseHead& head, std::string_view container,
                                  std::string_view key) {
  BlobInfo info;
  info.container = std::string(container);
  info.key = std::string(key);
  IMGPIPE_ASSIGN_OR_RETURN(info.size, ObjectSizeFromResponse(head));
  info.etag = std::string(head.Header("ETag").value_or(""));
  if (auto lm = head.Header("Last-Modified")) ParseHttpDate(*lm, &info.created);
  return info;
}

Result<size_t> StreamBlobReader::Read(std::span<char> buf) {
  if (!stream_) return size_t{0};
  auto n = stream_->Read(buf);
  if (!n.ok()) return MakeError(n.error().kind, "reading " + what_ + ": " + n.error().message, n.error().code);
  return n;
}

Result<BlobInfo> StatCloudObject(const CloudObject& object) {
  HttpClientRequest req;
  req.method = "HEAD";
  req.target = object.target;
  IMGPIPE_ASSIGN_OR_RETURN(auto res, object.client->Send(std::move(req), object.sign));
  if (res.head.status != 200) return object.response_error("stat of " + object.what, res.head, "");
  return BlobInfoFromHead(res.head, object.container, object.key);
}

Status DeleteCloudObject(const CloudObject& object) {
  HttpClientRequest req;
  req.method = "DELETE";
  req.target = object.target;
  IMGPIPE_ASSIGN_OR_RETURN(auto res, object.client->Send(std::move(req), object.sign));
  const int status = res.head.status;
  if (status == 200 || status == 202 || status == 204 || status == 404) return Ok();
  return object.response_error("deleting " + object.what, res.head, res.body);
}

Result<std::unique_ptr<BlobReader>> OpenCloudRead(const CloudObject& object, const std::optional<ByteRange>& range) {
  auto empty_reader = [&](BlobInfo info) -> std::unique_ptr<BlobReader> {
    return std::make_unique<StreamBlobReader>(nullptr, std::move(info), object.what);
  };
  if (range && range->length == 0) {
    IMGPIPE_ASSIGN_OR_RETURN(BlobInfo info, StatCloudObject(object));
    if (range->offset >= info.size && !(range->offset == 0 && info.size == 0)) {
      return MakeError(ErrorKind::kRangeNotSatisfiable, object.what + " has " + std::to_string(info.size) + " bytes");
    }
    return empty_reader(std::move(info));
  }
  HttpClientRequest req;
  req.method = "GET";
  req.target = object.target;
  if (range) req.headers.emplace_back(std::string(object.range_header), RangeHeaderValue(*range));
  IMGPIPE_ASSIGN_OR_RETURN(auto stream, object.client->Open(std::move(req), object.sign));
  const auto& head = stream->Head();
  if (head.status == 416 && range && range->offset == 0) {
    IMGPIPE_ASSIGN_OR_RETURN(BlobInfo info, StatCloudObject(object));
    if (info.size == 0) return empty_reader(std::move(info));
  }
  if (head.status != 200 && head.status != 206) {
    std::string body = ReadErrorBody(*stream);
    return object.response_error("reading " + object.what, head, body);
  }
  IMGPIPE_ASSIGN_OR_RETURN(BlobInfo info, BlobInfoFromHead(head, object.container, object.key));
  IMGPIPE_TRY(CheckRangeAnswer(range, head.status, info.size, object.what));
  return std::unique_ptr<BlobReader>(std::make_unique<StreamBlobReader>(std::move(stream), std::move(info), object.what));
}

void PieceUploader::WaitOne() {
  Status s = running_.front().get();
  running_.pop_front();
  if (!s.ok() && !error_) error_ = s.error();
}

Status PieceUploader::Submit(std::function<Status()> upload) {
  while (running_.size() >= max_in_flight_) WaitOne();
  if (error_) return *error_;
  running_.push_back(std::async(std::launch::async, std::move(upload)));
  return Ok();
}

Status PieceUploader::Drain() {
  while (!running_.empty()) WaitOne();
  if (error_) return *error_;
  return Ok();
}

std::string ReadErrorBody(HttpClientStream& stream) {
  auto body = stream.ReadAll(64 * 1024);
  return body.ok() ? std::move(body).value() : std::string();
}

}  // namespace imgpipe
