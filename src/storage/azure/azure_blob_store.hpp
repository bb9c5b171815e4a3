#pragma once

#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

#include "http_client/http_client.hpp"
#include "storage/blob_store.hpp"

namespace imgpipe {

struct CloudObject;  // storage/cloud_common.hpp

struct AzureBlobStoreOptions {
  //! The account's blob endpoint: "https://<account>.blob.core.windows.net", or path-style for the emulator
  //! ("http://127.0.0.1:10000/devstoreaccount1").
  std::string endpoint;
  std::string account;
  std::string key;  //!< base64 account key (Shared Key), or
  std::string sas;  //!< a SAS token (query string, with or without '?'); used when `key` is empty
  //! Prepended to imgpipe's container names ("originals" -> "<prefix>originals"), so several deployments can share
  //! one account. Lowercase letters, digits and '-'.
  std::string container_prefix;
  //! Objects up to this size are one Put Blob; larger ones go up in blocks of this size (Put Block, then Put Block
  //! List; two blocks in flight while the next fills), so a writer holds at most three blocks in memory.
  size_t block_bytes = 4 << 20;
  HttpClientOptions http;
};

//! A BlobStore on Azure Blob Storage (block blobs) over its REST API.
//!
//! Visibility: a writer sends blocks as they fill; they stay uncommitted, and so invisible, until Commit() sends the
//! block list (or, for a small object, the one Put Blob). A writer that is aborted, destroyed or killed leaves only
//! uncommitted blocks, which the service drops after a week; readers never see a partial object. Concurrent writers
//! of one key use distinct block ids, so each commit is whole and the last one wins.
//!
//! Containers are created on first write. Reads of a missing container answer kNotFound, lists an empty page.
//! Errors: 404 -> kNotFound, 409/412 -> kConflict, 403 -> kPermissionDenied, 416 -> kRangeNotSatisfiable,
//! 429/5xx/timeouts (after retries) -> kUnavailable. Thread-safe.
class AzureBlobStore final : public BlobStore {
 public:
  //! kInvalidArgument if the options are unusable (bad endpoint, no credentials, a key that is not base64).
  static Result<std::unique_ptr<AzureBlobStore>> Open(AzureBlobStoreOptions options);

  Result<std::unique_ptr<BlobWriter>> OpenWrite(std::string_view container, std::string_view key) override;
  //! `range.length` is clamped to the end of the object. kRangeNotSatisfiable if `range.offset` is at or past the
  //! end, except offset 0 of an empty object. Info().size is the whole object's size.
  Result<std::unique_ptr<BlobReader>> OpenRead(std::string_view container, std::string_view key,
                                               std::optional<ByteRange> range = std::nullopt) override;
  Result<BlobInfo> Stat(std::string_view container, std::string_view key) override;
  Status Delete(std::string_view container, std::string_view key) override;
  //! `continuation` is the service's opaque NextMarker.
  Result<ListPage> List(std::string_view container, std::string_view prefix, std::string_view continuation = {},
                        size_t max_items = 1000) override;
  //! Ok if the service answers an authenticated request about the originals container.
  Status Ping() override;
  std::string_view Name() const override { return "azure"; }

 private:
  class Writer;

  explicit AzureBlobStore(AzureBlobStoreOptions options, std::unique_ptr<HttpClient> client);

  //! "/<base path>/<prefix><container>", validated.
  Result<std::string> ContainerPath(std::string_view container) const;
  //! "/<base path>/<prefix><container>/<key>", validated.
  Result<std::string> Path(std::string_view container, std::string_view key) const;
  //! Adds x-ms-date, x-ms-version and the Authorization header (or the SAS to the target).
  Status Sign(HttpClientRequest& req) const;
  //! How the shared cloud helpers (cloud_common) reach one object of this store.
  Result<CloudObject> Object(std::string_view container, std::string_view key) const;
  Result<HttpClientResponse> Send(HttpClientRequest req, size_t max_body = 1 << 20);
  Status EnsureContainer(std::string_view container);
  //! Send() for a write into `container`: if the container is gone, makes it again and, when `resend`, resends.
  Result<HttpClientResponse> SendWrite(HttpClientRequest req, const std::string& container, bool resend);
  //! The error for a failed response: the service's code and message from its XML body or x-ms-error-code.
  static Error ResponseError(std::string_view what, const HttpClientResponseHead& head, std::string_view body);

  AzureBlobStoreOptions options_;
  std::unique_ptr<HttpClient> client_;
  std::mutex mu_;
  std::set<std::string, std::less<>> known_containers_;
};

struct XmlElement;
//! The page in a List Blobs answer (EnumerationResults); kUnavailable naming what is missing or malformed.
Result<ListPage> ParseAzureListBlobs(const XmlElement& root, std::string_view container);

}  // namespace imgpipe
