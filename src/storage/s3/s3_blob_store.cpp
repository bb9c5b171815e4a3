#include "storage/s3/s3_blob_store.hpp"

#include <openssl/evp.h>

#include <chrono>
#include <deque>
#include <thread>

#include "core/ids.hpp"
#include "core/log.hpp"
#include "http_client/encoding.hpp"
#include "storage/cloud_common.hpp"
#include "storage/local/local_blob_store.hpp"
#include "storage/xml.hpp"

namespace imgpipe {

namespace {

constexpr size_t kMinPartBytes = 5 << 20;  // S3's minimum for every part but the last
constexpr size_t kMaxParts = 10000;

std::string Describe(std::string_view container, std::string_view key) {
  return "s3:" + std::string(container) + "/" + std::string(key);
}

Error BadAnswer(std::string what) {
  return MakeError(ErrorKind::kUnavailable, "unexpected S3 answer: " + std::move(what), "storage_unavailable");
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------

class S3BlobStore::Writer final : public BlobWriter {
 public:
  Writer(S3BlobStore* store, std::string container, std::string key, std::string path)
      : store_(store), container_(std::move(container)), key_(std::move(key)), path_(std::move(path)) {}

  ~Writer() override {
    if (!done_) Abort();
  }

  Status Write(std::string_view data) override {
    if (done_) return MakeError(ErrorKind::kInternal, "write after commit or abort of " + Describe(container_, key_));
    while (!data.empty()) {
      size_t room = store_->options_.part_bytes - buffer_.size();
      size_t n = std::min(room, data.size());
      buffer_.append(data.substr(0, n));
      data.remove_prefix(n);
      if (buffer_.size() == store_->options_.part_bytes) {
        // The last full buffer waits for more data: an object of exactly one part stays one PutObject.
        if (data.empty()) break;
        if (auto s = FlushPart(); !s.ok()) {
          Abort();
          return s;
        }
      }
    }
    return Ok();
  }

  Result<BlobInfo> Commit() override {
    if (done_) return MakeError(ErrorKind::kInternal, "commit after commit or abort of " + Describe(container_, key_));
    auto info = upload_id_.empty() ? PutWhole() : CompleteMultipart();
    if (!info.ok() && !upload_id_.empty()) Abort();
    done_ = true;
    buffer_.clear();
    buffer_.shrink_to_fit();
    return info;
  }

  void Abort() override {
    (void)pieces_.Drain();  // parts still going up would otherwise land after the abort
    done_ = true;
    buffer_.clear();
    buffer_.shrink_to_fit();
    if (upload_id_.empty()) return;
    HttpClientRequest req;
    req.method = "DELETE";
    req.target = path_ + "?uploadId=" + UriEncode(upload_id_, false);
    auto res = store_->Send(std::move(req));
    if (!res.ok() || (res->head.status != 204 && res->head.status != 200 && res->head.status != 404)) {
      // The parts stay invisible; the bucket's lifecycle rule (AbortIncompleteMultipartUpload) removes them.
      LogWarn("s3: could not abort a multipart upload", {{"object", Describe(container_, key_)},
                                                           {"error", res.ok() ? std::to_string(res->head.status)
                                                                               : res.error().message}});
    }
    upload_id_.clear();
  }

 private:
  BlobInfo Info(const HttpClientResponseHead& head) const {
    BlobInfo info;
    info.container = container_;
    info.key = key_;
    info.size = size_;
    info.etag = std::string(head.Header("ETag").value_or(""));
    // The service's own time of the write: S3 answers PutObject without Last-Modified, but every answer has a Date.
    auto lm = head.Header("Last-Modified");
    auto date = head.Header("Date");
    if (!(lm && ParseHttpDate(*lm, &info.created)) && !(date && ParseHttpDate(*date, &info.created))) {
      info.created = std::chrono::system_clock::now();
    }
    return info;
  }

  void AddCreateOnly(HttpClientRequest& req) const {
    if (!store_->options_.create_only) return;
    req.headers.emplace_back("If-None-Match", "*");
    // A resent create-only write whose first attempt succeeded would fail with 412: never resend it.
    req.idempotent = false;
  }

  Result<BlobInfo> PutWhole() {
    HttpClientRequest req;
    req.method = "PUT";
    req.target = path_;
    req.body = buffer_;
    AddCreateOnly(req);
    size_ = buffer_.size();
    IMGPIPE_ASSIGN_OR_RETURN(auto res, store_->Send(std::move(req)));
    if (res.head.status != 200) return ResponseError("writing " + Describe(container_, key_), res.head, res.body);
    return Info(res.head);
  }

  Status StartMultipart() {
    HttpClientRequest req;
    req.method = "POST";
    req.target = path_ + "?uploads";
    req.idempotent = false;  // a resend would start a second upload
    IMGPIPE_ASSIGN_OR_RETURN(auto res, store_->Send(std::move(req)));
    if (res.head.status != 200) {
      return ResponseError("starting a multipart upload of " + Describe(container_, key_), res.head, res.body);
    }
    auto xml = ParseXml(res.body);
    if (!xml.ok()) return BadAnswer("CreateMultipartUpload: " + xml.error().message);
    upload_id_ = std::string(xml->ChildText("UploadId"));
    if (upload_id_.empty()) return BadAnswer("CreateMultipartUpload without an UploadId");
    return Ok();
  }

  Status FlushPart() {
    if (upload_id_.empty()) IMGPIPE_TRY(StartMultipart());
    if (etags_.size() >= kMaxParts) {
      return MakeError(ErrorKind::kTooLarge, Describe(container_, key_) + " needs more than " +
                                                 std::to_string(kMaxParts) + " parts");
    }
    // A deque keeps the slot's address while later parts are added.
    std::string* etag_slot = &etags_.emplace_back();
    const std::string target = path_ + "?partNumber=" + std::to_string(etags_.size()) +
                               "&uploadId=" + UriEncode(upload_id_, false);
    size_ += buffer_.size();
    auto upload = [this, target, etag_slot, body = std::move(buffer_)]() -> Status {
      HttpClientRequest req;
      req.method = "PUT";
      req.target = target;
      req.body = body;
      IMGPIPE_ASSIGN_OR_RETURN(auto res, store_->Send(std::move(req)));
      if (res.head.status != 200) {
        return ResponseError("uploading a part of " + Describe(container_, key_), res.head, res.body);
      }
      auto etag = res.head.Header("ETag");
      if (!etag || etag->empty()) return BadAnswer("UploadPart without an ETag");
      *etag_slot = std::string(*etag);
      return Ok();
    };
    buffer_ = std::string();
    buffer_.reserve(store_->options_.part_bytes);
    return pieces_.Submit(std::move(upload));
  }

  Result<BlobInfo> CompleteMultipart() {
    if (!buffer_.empty()) IMGPIPE_TRY(FlushPart());
    IMGPIPE_TRY(pieces_.Drain());
    std::string xml = "<CompleteMultipartUpload>";
    for (size_t i = 0; i < etags_.size(); ++i) {
      xml += "<Part><PartNumber>" + std::to_string(i + 1) + "</PartNumber><ETag>" + XmlEscape(etags_[i]) +
             "</ETag></Part>";
    }
    xml += "</CompleteMultipartUpload>";
    HttpClientRequest req;
    req.method = "POST";
    req.target = path_ + "?uploadId=" + UriEncode(upload_id_, false);
    req.headers.emplace_back("Content-Type", "application/xml");
    req.body = xml;
    req.idempotent = false;  // after a lost answer, a resend finds the upload gone (404)
    AddCreateOnly(req);
    IMGPIPE_ASSIGN_OR_RETURN(auto res, store_->Send(std::move(req)));
    if (res.head.status != 200) {
      return ResponseError("completing the upload of " + Describe(container_, key_), res.head, res.body);
    }
    // S3 may answer 200 and still report an error in the body.
    auto doc = ParseXml(res.body);
    if (doc.ok() && doc->name == "Error") {
      return MakeError(ErrorKind::kUnavailable, "completing the upload of " + Describe(container_, key_) + ": " +
                                                    std::string(doc->ChildText("Code")) + ": " +
                                                    std::string(doc->ChildText("Message")),
                       "storage_unavailable");
    }
    upload_id_.clear();  // completed: nothing to abort any more
    BlobInfo info = Info(res.head);
    if (doc.ok() && info.etag.empty()) info.etag = std::string(doc->ChildText("ETag"));
    return info;
  }

  S3BlobStore* store_;
  std::string container_, key_, path_;
  std::string buffer_;
  std::string upload_id_;
  std::deque<std::string> etags_;
  uint64_t size_ = 0;
  bool done_ = false;
  PieceUploader pieces_{2};  // last member: destroyed first, so running uploads finish before the buffers go
};

// ---------------------------------------------------------------------------------------------------------------

Result<std::unique_ptr<S3BlobStore>> S3BlobStore::Open(S3BlobStoreOptions options) {
  IMGPIPE_ASSIGN_OR_RETURN(HttpEndpoint ep, ParseHttpEndpoint(options.endpoint));
  if (options.bucket.size() < 3 || options.bucket.size() > 63) {
    return MakeError(ErrorKind::kInvalidArgument,
                     "storage.s3.bucket = \"" + options.bucket + "\": a bucket name has 3 to 63 characters");
  }
  for (char c : options.bucket) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) {
      return MakeError(ErrorKind::kInvalidArgument, "storage.s3.bucket = \"" + options.bucket +
                                                        "\": use lowercase letters, digits, '-' and '.'");
    }
  }
  if (options.access_key.empty() || options.secret_key.empty()) {
    return MakeError(ErrorKind::kInvalidArgument,
                     "no S3 credentials: set storage.s3.access_key and storage.s3.secret_key (e.g. through "
                     "IMGPIPE_STORAGE_S3_ACCESS_KEY and IMGPIPE_STORAGE_S3_SECRET_KEY)");
  }
  if (options.region.empty()) {
    return MakeError(ErrorKind::kInvalidArgument, "storage.s3.region is empty (e.g. \"us-east-1\")");
  }
  if (options.part_bytes < kMinPartBytes) {
    return MakeError(ErrorKind::kInvalidArgument, "S3 part size " + std::to_string(options.part_bytes) +
                                                      " is below the service's minimum of 5 MiB");
  }
  std::string bucket_path;
  if (options.addressing == S3Addressing::kVirtual) {
    ep.host = options.bucket + "." + ep.host;
    bucket_path = ep.base_path;
  } else {
    bucket_path = ep.base_path + "/" + options.bucket;
  }
  IMGPIPE_ASSIGN_OR_RETURN(auto client, HttpClient::Create(std::move(ep), options.http));
  return std::unique_ptr<S3BlobStore>(new S3BlobStore(std::move(options), std::move(client), bucket_path));
}

S3BlobStore::S3BlobStore(S3BlobStoreOptions options, std::unique_ptr<HttpClient> client, std::string bucket_path)
    : options_(std::move(options)), client_(std::move(client)), bucket_path_(std::move(bucket_path)) {
  sig_key_ = SigV4Key{options_.access_key, options_.secret_key, options_.region, "s3"};
}

Result<std::string> S3BlobStore::ObjectPath(std::string_view container, std::string_view key) const {
  IMGPIPE_TRY(ValidateBlobContainer(container));
  IMGPIPE_TRY(ValidateBlobKey(key));
  return bucket_path_ + "/" + std::string(container) + "/" + UriEncode(key, true);
}

Status S3BlobStore::Sign(HttpClientRequest& req) const {
  const std::string date = AmzDate(std::chrono::system_clock::now());
  // The body is in memory (one part or a small object), so it is hashed and the server checks it arrived intact.
  const std::string payload_hash = Sha256Hex(req.body);
  req.headers.emplace_back("x-amz-date", date);
  req.headers.emplace_back("x-amz-content-sha256", payload_hash);
  HttpHeaders to_sign = req.headers;
  to_sign.emplace_back("host", client_->endpoint().HostHeader());
  auto sig = SignV4(req.method, req.target, to_sign, payload_hash, sig_key_, date);
  req.headers.emplace_back("Authorization", std::move(sig.authorization));
  return Ok();
}

Result<HttpClientResponse> S3BlobStore::Send(HttpClientRequest req, size_t max_body) {
  return client_->Send(std::move(req), [this](HttpClientRequest& r) { return Sign(r); }, max_body);
}

Error S3BlobStore::ResponseError(std::string_view what, const HttpClientResponseHead& head, std::string_view body) {
  std::string code, message;
  if (!body.empty()) {
    if (auto xml = ParseXml(body); xml.ok() && xml->name == "Error") {
      code = std::string(xml->ChildText("Code"));
      message = std::string(xml->ChildText("Message"));
    }
  }
  Error e = HttpStatusError(what, "the S3 service", head.status, code, message);
  if (head.status == 501) e.code = "not_implemented";
  return e;
}

Status S3BlobStore::EnsureBucket() {
  if (bucket_ready_) return Ok();
  // Several writers may create the bucket at once (workers starting together). A server can answer one of them
  // with an error while another's create is still settling (SeaweedFS answered 404 NoSuchBucket there), so a failed
  // create asks whether the bucket exists now, and tries again a few times before giving up.
  constexpr int kAttempts = 4;
  const std::string target = bucket_path_.empty() ? "/" : bucket_path_;
  for (int attempt = 1;; ++attempt) {
    HttpClientRequest req;
    req.method = "PUT";
    req.target = target;
    IMGPIPE_ASSIGN_OR_RETURN(auto res, Send(std::move(req)));
    // 409 BucketAlreadyOwnedByYou / BucketAlreadyExists: it is there (a bucket we cannot use fails on first write).
    if (res.head.status == 200 || res.head.status == 409) break;
    HttpClientRequest head;
    head.method = "HEAD";
    head.target = target;
    auto exists = Send(std::move(head));
    if (exists.ok() && exists->head.status == 200) break;
    if (attempt == kAttempts) return ResponseError("creating bucket " + options_.bucket, res.head, res.body);
    std::this_thread::sleep_for(std::chrono::milliseconds(100 * attempt));
  }
  bucket_ready_ = true;
  return Ok();
}

Result<std::unique_ptr<BlobWriter>> S3BlobStore::OpenWrite(std::string_view container, std::string_view key) {
  IMGPIPE_ASSIGN_OR_RETURN(std::string path, ObjectPath(container, key));
  IMGPIPE_TRY(EnsureBucket());
  return std::unique_ptr<BlobWriter>(new Writer(this, std::string(container), std::string(key), std::move(path)));
}

Result<CloudObject> S3BlobStore::Object(std::string_view container, std::string_view key) const {
  CloudObject object;
  IMGPIPE_ASSIGN_OR_RETURN(object.target, ObjectPath(container, key));
  object.client = client_.get();
  object.sign = [this](HttpClientRequest& r) { return Sign(r); };
  object.response_error = &ResponseError;
  object.range_header = "Range";
  object.container = std::string(container);
  object.key = std::string(key);
  object.what = Describe(container, key);
  return object;
}

Result<std::unique_ptr<BlobReader>> S3BlobStore::OpenRead(std::string_view container, std::string_view key,
                                                          std::optional<ByteRange> range) {
  IMGPIPE_ASSIGN_OR_RETURN(CloudObject object, Object(container, key));
  return OpenCloudRead(object, range);
}

Result<BlobInfo> S3BlobStore::Stat(std::string_view container, std::string_view key) {
  IMGPIPE_ASSIGN_OR_RETURN(CloudObject object, Object(container, key));
  return StatCloudObject(object);
}

Status S3BlobStore::Delete(std::string_view container, std::string_view key) {
  IMGPIPE_ASSIGN_OR_RETURN(CloudObject object, Object(container, key));
  return DeleteCloudObject(object);
}

Result<ListPage> S3BlobStore::List(std::string_view container, std::string_view prefix,
                                   std::string_view continuation, size_t max_items) {
  IMGPIPE_TRY(ValidateBlobContainer(container));
  max_items = std::clamp<size_t>(max_items, 1, 1000);
  HttpClientRequest req;
  req.method = "GET";
  req.target = (bucket_path_.empty() ? "/" : bucket_path_) + "?list-type=2&max-keys=" + std::to_string(max_items) +
               "&prefix=" + UriEncode(std::string(container) + "/" + std::string(prefix), false);
  if (!continuation.empty()) req.target += "&continuation-token=" + UriEncode(continuation, false);
  IMGPIPE_ASSIGN_OR_RETURN(auto res, Send(std::move(req), 32 << 20));
  if (res.head.status == 404) return ListPage{};  // no bucket yet: nothing was ever written
  const std::string what = "listing s3:" + std::string(container) + "/" + std::string(prefix) + "*";
  if (res.head.status != 200) return ResponseError(what, res.head, res.body);
  auto xml = ParseXml(res.body);
  if (!xml.ok()) return BadAnswer(what + ": " + xml.error().message);
  return ParseS3ListObjects(*xml, container);
}

Status S3BlobStore::Ping() {
  HttpClientRequest req;
  req.method = "HEAD";
  req.target = bucket_path_.empty() ? "/" : bucket_path_;
  IMGPIPE_ASSIGN_OR_RETURN(auto res, Send(std::move(req)));
  if (res.head.status == 200 || res.head.status == 404) return Ok();
  return ResponseError("checking the S3 bucket " + options_.bucket, res.head, "");
}

Status S3BlobStore::PutLifecycle(const std::vector<S3LifecycleRule>& rules) {
  IMGPIPE_TRY(EnsureBucket());
  const std::string xml = S3LifecycleXml(rules);
  HttpClientRequest req;
  req.method = "PUT";
  req.target = (bucket_path_.empty() ? "/" : bucket_path_) + "?lifecycle";
  req.headers.emplace_back("Content-Type", "application/xml");
  // PutBucketLifecycleConfiguration requires an integrity header.
  std::string md5(16, '\0');
  unsigned int len = 0;
  EVP_Digest(xml.data(), xml.size(), reinterpret_cast<unsigned char*>(md5.data()), &len, EVP_md5(), nullptr);
  req.headers.emplace_back("Content-MD5", encoding::Base64Encode(md5));
  req.body = xml;
  IMGPIPE_ASSIGN_OR_RETURN(auto res, Send(std::move(req)));
  if (res.head.status != 200) {
    return ResponseError("installing the lifecycle rules of bucket " + options_.bucket, res.head, res.body);
  }
  return Ok();
}

Result<std::vector<S3LifecycleRule>> S3BlobStore::GetLifecycle() {
  HttpClientRequest req;
  req.method = "GET";
  req.target = (bucket_path_.empty() ? "/" : bucket_path_) + "?lifecycle";
  IMGPIPE_ASSIGN_OR_RETURN(auto res, Send(std::move(req)));
  if (res.head.status == 404) {
    auto xml = ParseXml(res.body);
    if (xml.ok() && xml->ChildText("Code") == "NoSuchLifecycleConfiguration") return std::vector<S3LifecycleRule>{};
  }
  if (res.head.status != 200) {
    return ResponseError("reading the lifecycle rules of bucket " + options_.bucket, res.head, res.body);
  }
  auto xml = ParseXml(res.body);
  if (!xml.ok()) return BadAnswer("GetBucketLifecycleConfiguration: " + xml.error().message);
  return ParseS3Lifecycle(*xml);
}

// ---------------------------------------------------------------------------------------------------------------

Result<ListPage> ParseS3ListObjects(const XmlElement& root, std::string_view container) {
  if (root.name != "ListBucketResult") return BadAnswer("ListObjectsV2 root element <" + root.name + ">");
  const std::string strip = std::string(container) + "/";
  ListPage page;
  for (const auto& c : root.children) {
    if (c.name != "Contents") continue;
    std::string_view key = c.ChildText("Key");
    if (!key.starts_with(strip) || key.size() == strip.size()) {
      return BadAnswer("ListObjectsV2 returned key \"" + std::string(key.substr(0, 200)) + "\" outside " + strip);
    }
    BlobInfo info;
    info.container = std::string(container);
    info.key = std::string(key.substr(strip.size()));
    auto size = ParseDecimal(c.ChildText("Size"));
    if (!size) return BadAnswer("object " + info.key + " has no valid Size");
    info.size = *size;
    info.etag = std::string(c.ChildText("ETag"));
    if (!ParseRfc3339(c.ChildText("LastModified"), &info.created)) {
      return BadAnswer("object " + info.key + " has no valid LastModified");
    }
    page.items.push_back(std::move(info));
  }
  if (root.ChildText("IsTruncated") == "true") {
    page.continuation = std::string(root.ChildText("NextContinuationToken"));
    if (page.continuation.empty()) return BadAnswer("a truncated ListObjectsV2 page without a continuation token");
  }
  return page;
}

std::vector<S3LifecycleRule> S3RetentionLifecycleRules(std::chrono::seconds originals,
                                                      std::chrono::seconds renditions) {
  constexpr int64_t kDay = 24 * 3600;
  std::vector<S3LifecycleRule> rules;
  auto add = [&](std::string_view container, std::chrono::seconds retention) {
    if (retention.count() <= 0) return;
    // Whole days, rounded up, plus one: S3 counts days from midnight UTC after the object's creation.
    int days = static_cast<int>((retention.count() + kDay - 1) / kDay) + 1;
    rules.push_back({"imgpipe-" + std::string(container), std::string(container) + "/", days, 0, true});
  };
  add(kOriginals, originals);
  add(kRenditions, renditions);
  rules.push_back({"imgpipe-incomplete-uploads", "", 0, 1, true});
  return rules;
}

namespace {

// Whether some object key could start with both prefixes: one of them starts with the other.
bool Overlap(std::string_view a, std::string_view b) { return a.starts_with(b) || b.starts_with(a); }

std::string Where(std::string_view prefix) {
  return prefix.empty() ? std::string("anywhere in the bucket") : "under \"" + std::string(prefix) + "\"";
}

std::string Days(int days) { return std::to_string(days) + (days == 1 ? " day" : " days"); }

}  // namespace

std::vector<S3LifecycleFinding> CompareS3Lifecycle(const std::vector<S3LifecycleRule>& installed,
                                                   const std::vector<S3LifecycleRule>& wanted) {
  std::vector<S3LifecycleFinding> findings;
  // What retention wants per container: days until expiry, 0 = keep forever (scripts always are).
  for (std::string_view container : {kOriginals, kRenditions, kScripts}) {
    const std::string prefix = std::string(container) + "/";
    int want = 0;
    for (const auto& w : wanted) {
      if (w.enabled && w.prefix == prefix && w.expiration_days > 0) want = w.expiration_days;
    }
    const std::string keep = want > 0 ? "retention wants " + Days(want) : "imgpipe keeps them until it deletes them";
    bool exact = false;
    for (const auto& r : installed) {
      if (!r.enabled || r.expiration_days <= 0 || !Overlap(r.prefix, prefix)) continue;
      if (want == 0 || r.expiration_days < want) {
        const std::string what = r.prefix == prefix ? ", before their retention ends (" + keep + ")"
                                                    : ", which includes " + prefix + " objects (" + keep + ")";
        findings.push_back({"rule \"" + r.id + "\" deletes objects " + Where(r.prefix) + " after " +
                                Days(r.expiration_days) + what,
                            true});
        exact = exact || r.prefix == prefix;  // reported; not also as missing
      } else if (r.prefix == prefix && r.expiration_days == want) {
        exact = true;
      } else if (r.prefix == prefix) {
        findings.push_back({"objects " + Where(prefix) + " expire after " + Days(r.expiration_days) + "; " + keep,
                            false});
        exact = true;  // reported; not also as missing
      }
    }
    if (want > 0 && !exact) {
      findings.push_back({"no rule expires objects " + Where(prefix) + " (" + keep + ")", false});
    }
  }
  for (const auto& w : wanted) {
    if (!w.enabled || w.abort_incomplete_upload_days <= 0) continue;
    bool found = false;
    for (const auto& r : installed) {
      found = found || (r.enabled && r.abort_incomplete_upload_days > 0 &&
                        r.abort_incomplete_upload_days <= w.abort_incomplete_upload_days &&
                        w.prefix.starts_with(r.prefix));
    }
    if (!found) {
      findings.push_back({"no rule aborts incomplete multipart uploads " + Where(w.prefix) + " after " +
                              Days(w.abort_incomplete_upload_days) + " (killed writers leave their parts stored)",
                          false});
    }
  }
  return findings;
}

std::string S3LifecycleXml(const std::vector<S3LifecycleRule>& rules) {
  std::string xml = "<LifecycleConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">";
  for (const auto& r : rules) {
    xml += "<Rule><ID>" + XmlEscape(r.id) + "</ID><Filter><Prefix>" + XmlEscape(r.prefix) + "</Prefix></Filter>";
    xml += std::string("<Status>") + (r.enabled ? "Enabled" : "Disabled") + "</Status>";
    if (r.expiration_days > 0) xml += "<Expiration><Days>" + std::to_string(r.expiration_days) + "</Days></Expiration>";
    if (r.abort_incomplete_upload_days > 0) {
      xml += "<AbortIncompleteMultipartUpload><DaysAfterInitiation>" +
             std::to_string(r.abort_incomplete_upload_days) + "</DaysAfterInitiation></AbortIncompleteMultipartUpload>";
    }
    xml += "</Rule>";
  }
  xml += "</LifecycleConfiguration>";
  return xml;
}

Result<std::vector<S3LifecycleRule>> ParseS3Lifecycle(const XmlElement& root) {
  if (root.name != "LifecycleConfiguration") return BadAnswer("lifecycle root element <" + root.name + ">");
  std::vector<S3LifecycleRule> rules;
  auto days = [](std::string_view text) -> std::optional<int> {
    if (text.empty()) return 0;
    auto v = ParseDecimal(text);
    if (!v || *v > 100000) return std::nullopt;
    return static_cast<int>(*v);
  };
  for (const auto& r : root.children) {
    if (r.name != "Rule") continue;
    S3LifecycleRule rule;
    rule.id = std::string(r.ChildText("ID"));
    if (const XmlElement* f = r.Child("Filter")) {
      rule.prefix = std::string(f->ChildText("Prefix"));
    } else {
      rule.prefix = std::string(r.ChildText("Prefix"));  // the older form without <Filter>
    }
    rule.enabled = r.ChildText("Status") == "Enabled";
    auto exp = days(r.Child("Expiration") ? r.Child("Expiration")->ChildText("Days") : "");
    auto abort = days(r.Child("AbortIncompleteMultipartUpload")
                          ? r.Child("AbortIncompleteMultipartUpload")->ChildText("DaysAfterInitiation")
                          : "");
    if (!exp || !abort) return BadAnswer("lifecycle rule \"" + rule.id + "\" has an invalid number of days");
    rule.expiration_days = *exp;
    rule.abort_incomplete_upload_days = *abort;
    rules.push_back(std::move(rule));
  }
  return rules;
}

}  // namespace imgpipe
