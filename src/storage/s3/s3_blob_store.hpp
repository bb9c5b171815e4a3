#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "http_client/http_client.hpp"
#include "storage/blob_store.hpp"
#include "storage/s3/sigv4.hpp"

namespace imgpipe {

struct CloudObject;  // storage/cloud_common.hpp

enum class S3Addressing {
  kPath,     //!< http(s)://endpoint/<bucket>/<key> (S3-compatible servers, emulators)
  kVirtual,  //!< http(s)://<bucket>.endpoint/<key> (AWS's default)
};

struct S3BlobStoreOptions {
  std::string endpoint;  //!< e.g. "https://s3.eu-west-1.amazonaws.com" or "http://127.0.0.1:7070"
  std::string region = "us-east-1";
  std::string bucket;
  std::string access_key;
  std::string secret_key;
  S3Addressing addressing = S3Addressing::kPath;
  //! Send `If-None-Match: *` on every write so an existing object is never replaced (kConflict instead). Only for
  //! servers that implement conditional writes; imgpipe's keys are unique per image, so overwrites are not needed.
  bool create_only = false;
  //! Objects up to this size are one PutObject; larger ones a multipart upload in parts of this size (>= 5 MiB);
  //! two parts go up at once while the next fills, so a writer holds at most three parts in memory.
  size_t part_bytes = 8 << 20;
  HttpClientOptions http;
};

//! One rule of a bucket's lifecycle configuration, as imgpipe writes and reads it.
struct S3LifecycleRule {
  std::string id;
  std::string prefix;
  int expiration_days = 0;              //!< 0: none
  int abort_incomplete_upload_days = 0; //!< 0: none
  bool enabled = true;
};

//! A BlobStore on an S3-compatible service. All of imgpipe's containers share one bucket: the object of
//! <container>/<key> is the S3 object "<container>/<key>".
//!
//! Visibility: a small object is one PutObject, visible whole when it returns. A large one is a multipart upload:
//! parts are invisible until CompleteMultipartUpload in Commit(); Abort(), destroying the writer or a failed part
//! aborts the upload, and a killed writer leaves only an incomplete upload (invisible; the lifecycle rule from
//! InstallLifecycle removes it after a day). With create_only, a second writer of an existing key gets kConflict.
//!
//! The bucket is created on first write if missing. Errors: 404 -> kNotFound, 409/412 -> kConflict,
//! 403 -> kPermissionDenied, 416 -> kRangeNotSatisfiable, 429/5xx/timeouts (after retries) -> kUnavailable.
//! Thread-safe.
class S3BlobStore final : public BlobStore {
 public:
  //! kInvalidArgument if the options are unusable (bad endpoint, empty bucket or credentials, parts < 5 MiB).
  static Result<std::unique_ptr<S3BlobStore>> Open(S3BlobStoreOptions options);

  Result<std::unique_ptr<BlobWriter>> OpenWrite(std::string_view container, std::string_view key) override;
  //! `range.length` is clamped to the end of the object. kRangeNotSatisfiable if `range.offset` is at or past the
  //! end, except offset 0 of an empty object. Info().size is the whole object's size.
  Result<std::unique_ptr<BlobReader>> OpenRead(std::string_view container, std::string_view key,
                                               std::optional<ByteRange> range = std::nullopt) override;
  Result<BlobInfo> Stat(std::string_view container, std::string_view key) override;
  Status Delete(std::string_view container, std::string_view key) override;
  //! `continuation` is the service's opaque continuation token (ListObjectsV2).
  Result<ListPage> List(std::string_view container, std::string_view prefix, std::string_view continuation = {},
                        size_t max_items = 1000) override;
  //! Ok if the service answers an authenticated HEAD of the bucket (a missing bucket is fine: it is made on write).
  Status Ping() override;
  std::string_view Name() const override { return "s3"; }

  //! Replaces the bucket's lifecycle configuration with `rules`. kUnavailable with code "not_implemented" when the
  //! server does not implement bucket lifecycle (501).
  Status PutLifecycle(const std::vector<S3LifecycleRule>& rules);
  //! The bucket's lifecycle rules; empty if it has none. Same errors as PutLifecycle.
  Result<std::vector<S3LifecycleRule>> GetLifecycle();

 private:
  class Writer;

  S3BlobStore(S3BlobStoreOptions options, std::unique_ptr<HttpClient> client, std::string bucket_path);

  //! "<bucket path>/<container>/<key>" (key encoded), validated.
  Result<std::string> ObjectPath(std::string_view container, std::string_view key) const;
  Status Sign(HttpClientRequest& req) const;
  //! How the shared cloud helpers (cloud_common) reach one object of this store.
  Result<CloudObject> Object(std::string_view container, std::string_view key) const;
  Result<HttpClientResponse> Send(HttpClientRequest req, size_t max_body = 1 << 20);
  Status EnsureBucket();
  static Error ResponseError(std::string_view what, const HttpClientResponseHead& head, std::string_view body);

  S3BlobStoreOptions options_;
  std::unique_ptr<HttpClient> client_;
  std::string bucket_path_;  // "/<bucket>" (path style) or "" (virtual-hosted)
  SigV4Key sig_key_;
  std::atomic<bool> bucket_ready_{false};
};

struct XmlElement;
//! The page in a ListObjectsV2 answer (ListBucketResult), keys with "<container>/" removed; kUnavailable naming what
//! is missing or malformed.
Result<ListPage> ParseS3ListObjects(const XmlElement& root, std::string_view container);
//! The rules that back imgpipe's retention up on the bucket: "originals/" and "renditions/" expire one day after
//! their retention (so the sweeper, which honours legal holds and records the purge, normally goes first; a zero
//! retention means keep forever: no rule), and incomplete multipart uploads are aborted after a day.
std::vector<S3LifecycleRule> S3RetentionLifecycleRules(std::chrono::seconds originals, std::chrono::seconds renditions);
//! One way a bucket's lifecycle rules differ from what imgpipe's retention wants (CompareS3Lifecycle).
struct S3LifecycleFinding {
  std::string message;         //!< one sentence for an operator, naming the prefix and the days
  bool expires_early = false;  //!< objects imgpipe keeps would be deleted before their retention ends
};
//! Compares the rules read from a bucket with `wanted` (S3RetentionLifecycleRules), in effect: rule IDs and order do
//! not matter (servers may rename or reorder rules); disabled rules count as absent. A finding is expires_early when
//! an enabled rule expires objects of an imgpipe container (originals, renditions, scripts) sooner than `wanted`
//! does, or at all where `wanted` keeps them forever. Empty: the bucket does what retention wants.
std::vector<S3LifecycleFinding> CompareS3Lifecycle(const std::vector<S3LifecycleRule>& installed,
                                                   const std::vector<S3LifecycleRule>& wanted);
//! The lifecycle configuration document for `rules`.
std::string S3LifecycleXml(const std::vector<S3LifecycleRule>& rules);
//! The rules of a LifecycleConfiguration document; kUnavailable if malformed.
Result<std::vector<S3LifecycleRule>> ParseS3Lifecycle(const XmlElement& root);

}  // namespace imgpipe
