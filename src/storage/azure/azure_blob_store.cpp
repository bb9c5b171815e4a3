#include "storage/azure/azure_blob_store.hpp"

#include <charconv>
#include <cstdio>

#include "core/ids.hpp"
#include "http_client/encoding.hpp"
#include "storage/azure/azure_signing.hpp"
#include "storage/cloud_common.hpp"
#include "storage/local/local_blob_store.hpp"
#include "storage/xml.hpp"

namespace imgpipe {

namespace {

// The REST API version we speak; Azurite runs with --skipApiVersionCheck, real accounts accept it.
constexpr std::string_view kApiVersion = "2023-11-03";
// Largest block id count per blob is 50,000; with 4 MiB blocks that is ~195 GiB, far above any image.
constexpr size_t kMaxBlocks = 50000;

std::string Describe(std::string_view container, std::string_view key) {
  return "azure:" + std::string(container) + "/" + std::string(key);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------

class AzureBlobStore::Writer final : public BlobWriter {
 public:
  Writer(AzureBlobStore* store, std::string container, std::string key, std::string path)
      : store_(store), container_(std::move(container)), key_(std::move(key)), path_(std::move(path)),
        id_prefix_(HexEncode(RandomBytes(8))) {}

  Status Write(std::string_view data) override {
    if (done_) return MakeError(ErrorKind::kInternal, "write after commit or abort of " + Describe(container_, key_));
    while (!data.empty()) {
      size_t room = store_->options_.block_bytes - buffer_.size();
      size_t n = std::min(room, data.size());
      buffer_.append(data.substr(0, n));
      data.remove_prefix(n);
      if (buffer_.size() == store_->options_.block_bytes) {
        // Keep the last full buffer until more data arrives: an object of exactly one block stays one Put Blob.
        if (data.empty()) break;
        IMGPIPE_TRY(FlushBlock());
      }
    }
    return Ok();
  }

  Result<BlobInfo> Commit() override {
    if (done_) return MakeError(ErrorKind::kInternal, "commit after commit or abort of " + Describe(container_, key_));
    done_ = true;
    HttpClientRequest req;
    req.method = "PUT";
    std::string list_xml;
    if (block_ids_.empty()) {
      req.target = path_;
      req.headers.emplace_back("x-ms-blob-type", "BlockBlob");
      req.body = buffer_;
      size_ = buffer_.size();
    } else {
      if (!buffer_.empty()) IMGPIPE_TRY(FlushBlock());
      IMGPIPE_TRY(pieces_.Drain());
      list_xml = "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>";
      for (const auto& id : block_ids_) list_xml += "<Latest>" + id + "</Latest>";
      list_xml += "</BlockList>";
      req.target = path_ + "?comp=blocklist";
      req.headers.emplace_back("Content-Type", "application/xml");
      req.body = list_xml;
    }
    IMGPIPE_ASSIGN_OR_RETURN(auto res, store_->SendWrite(std::move(req), container_, /*resend=*/block_ids_.empty()));
    if (res.head.status != 201) {
      Error e = ResponseError("committing " + Describe(container_, key_), res.head, res.body);
      if (res.head.status == 400 && e.message.find("InvalidBlockList") != std::string::npos) {
        // Committing a block list discards every other uncommitted block of the blob, so of several concurrent
        // writers of one key the first to commit wins and the others find their blocks gone.
        e.kind = ErrorKind::kConflict;
        e.message += "; another writer committed this key concurrently";
      }
      return e;
    }
    BlobInfo info;
    info.container = container_;
    info.key = key_;
    info.size = size_;
    info.etag = std::string(res.head.Header("ETag").value_or(""));
    if (auto lm = res.head.Header("Last-Modified"); !lm || !ParseHttpDate(*lm, &info.created)) {
      info.created = std::chrono::system_clock::now();
    }
    buffer_.clear();
    buffer_.shrink_to_fit();
    return info;
  }

  void Abort() override {
    // Uncommitted blocks are invisible and expire on their own; there is nothing to undo.
    (void)pieces_.Drain();
    done_ = true;
    buffer_.clear();
    buffer_.shrink_to_fit();
  }

 private:
  Status FlushBlock() {
    if (block_ids_.size() >= kMaxBlocks) {
      return MakeError(ErrorKind::kTooLarge, Describe(container_, key_) + " needs more than " +
                                                 std::to_string(kMaxBlocks) + " blocks");
    }
    // Fixed-length ids (all ids of a blob must have one length), unique to this writer so concurrent writers of the
    // same key never overwrite each other's uncommitted blocks.
    char index[16];
    std::snprintf(index, sizeof index, "%06zu", block_ids_.size());
    std::string id = encoding::Base64Encode(id_prefix_ + "-" + index);
    const bool first = block_ids_.empty();
    block_ids_.push_back(id);
    size_ += buffer_.size();
    auto upload = [this, id = std::move(id), body = std::move(buffer_), first]() -> Status {
      HttpClientRequest req;
      req.method = "PUT";
      req.target = path_ + "?comp=block&blockid=" + UriEncode(id, false);
      req.body = body;
      IMGPIPE_ASSIGN_OR_RETURN(auto res, store_->SendWrite(std::move(req), container_, /*resend=*/first));
      if (res.head.status != 201) {
        return ResponseError("uploading a block of " + Describe(container_, key_), res.head, res.body);
      }
      return Ok();
    };
    buffer_ = std::string();
    buffer_.reserve(store_->options_.block_bytes);
    // The first block goes alone: it may have to make the container again, which later blocks then find.
    if (first) return upload();
    return pieces_.Submit(std::move(upload));
  }

  AzureBlobStore* store_;
  std::string container_, key_, path_;
  std::string id_prefix_;
  std::string buffer_;
  std::vector<std::string> block_ids_;
  uint64_t size_ = 0;  // bytes in flushed blocks; the buffer is added on commit
  bool done_ = false;
  PieceUploader pieces_{2};  // last member: destroyed first, so running uploads finish before the buffers go
};

// ---------------------------------------------------------------------------------------------------------------

Result<std::unique_ptr<AzureBlobStore>> AzureBlobStore::Open(AzureBlobStoreOptions options) {
  IMGPIPE_ASSIGN_OR_RETURN(HttpEndpoint ep, ParseHttpEndpoint(options.endpoint));
  if (options.account.empty()) {
    return MakeError(ErrorKind::kInvalidArgument, "storage.azure.account is empty; set the storage account name");
  }
  if (options.key.empty() && options.sas.empty()) {
    return MakeError(ErrorKind::kInvalidArgument,
                     "no Azure credentials: set storage.azure.key (account key) or storage.azure.sas (SAS token), "
                     "e.g. through IMGPIPE_STORAGE_AZURE_KEY");
  }
  if (!options.key.empty()) IMGPIPE_TRY(AzureSharedKeySignature("", options.key));
  if (options.sas.starts_with("?")) options.sas.erase(0, 1);
  IMGPIPE_TRY(ValidateContainerPrefix(options.container_prefix, "storage.azure.container_prefix"));
  if (options.block_bytes < 64 * 1024) options.block_bytes = 64 * 1024;
  IMGPIPE_ASSIGN_OR_RETURN(auto client, HttpClient::Create(std::move(ep), options.http));
  return std::unique_ptr<AzureBlobStore>(new AzureBlobStore(std::move(options), std::move(client)));
}

AzureBlobStore::AzureBlobStore(AzureBlobStoreOptions options, std::unique_ptr<HttpClient> client)
    : options_(std::move(options)), client_(std::move(client)) {}

Result<std::string> AzureBlobStore::ContainerPath(std::string_view container) const {
  IMGPIPE_TRY(ValidateBlobContainer(container));
  return client_->endpoint().base_path + "/" + options_.container_prefix + std::string(container);
}

Result<std::string> AzureBlobStore::Path(std::string_view container, std::string_view key) const {
  IMGPIPE_ASSIGN_OR_RETURN(std::string path, ContainerPath(container));
  IMGPIPE_TRY(ValidateBlobKey(key));
  return path + "/" + UriEncode(key, true);
}

Status AzureBlobStore::Sign(HttpClientRequest& req) const {
  req.headers.emplace_back("x-ms-date", FormatHttpDate(std::chrono::system_clock::now()));
  req.headers.emplace_back("x-ms-version", std::string(kApiVersion));
  if (options_.key.empty()) {
    req.target += (req.target.find('?') == std::string::npos ? "?" : "&") + options_.sas;
    return Ok();
  }
  std::string to_sign = AzureSharedKeyStringToSign(req.method, req.target, req.headers, req.body.size(),
                                                   options_.account);
  IMGPIPE_ASSIGN_OR_RETURN(std::string sig, AzureSharedKeySignature(to_sign, options_.key));
  req.headers.emplace_back("Authorization", "SharedKey " + options_.account + ":" + sig);
  return Ok();
}

Result<HttpClientResponse> AzureBlobStore::Send(HttpClientRequest req, size_t max_body) {
  return client_->Send(std::move(req), [this](HttpClientRequest& r) { return Sign(r); }, max_body);
}

Result<HttpClientResponse> AzureBlobStore::SendWrite(HttpClientRequest req, const std::string& container, bool resend) {
  HttpClientRequest copy = req;
  IMGPIPE_ASSIGN_OR_RETURN(auto res, Send(std::move(req)));
  if (res.head.status != 404 || res.head.Header("x-ms-error-code").value_or("") != "ContainerNotFound") return res;
  // The container went away after we made it (deleted, or an emulator restarted without its metadata): make it
  // again. A first block or a whole small object is sent again; later blocks went with the container, so the
  // writer fails and the next one starts afresh.
  {
    std::lock_guard lock(mu_);
    known_containers_.erase(container);
  }
  IMGPIPE_TRY(EnsureContainer(container));
  if (!resend) return res;
  return Send(std::move(copy));
}

Error AzureBlobStore::ResponseError(std::string_view what, const HttpClientResponseHead& head, std::string_view body) {
  std::string code(head.Header("x-ms-error-code").value_or(""));
  std::string message;
  if (!body.empty()) {
    if (auto xml = ParseXml(body); xml.ok() && xml->name == "Error") {
      if (code.empty()) code = std::string(xml->ChildText("Code"));
      message = std::string(xml->ChildText("Message"));
      if (size_t nl = message.find('\n'); nl != std::string::npos) message.resize(nl);
    }
  }
  return HttpStatusError(what, "Azure Blob Storage", head.status, code, message);
}

Status AzureBlobStore::EnsureContainer(std::string_view container) {
  {
    std::lock_guard lock(mu_);
    if (known_containers_.contains(container)) return Ok();
  }
  HttpClientRequest req;
  req.method = "PUT";
  IMGPIPE_ASSIGN_OR_RETURN(req.target, ContainerPath(container));
  req.target += "?restype=container";
  IMGPIPE_ASSIGN_OR_RETURN(auto res, Send(std::move(req)));
  // 409 ContainerAlreadyExists is the normal answer after the first start. A SAS rarely allows creating
  // containers (403): the operator made them, and a write into a missing one fails with a clear 404.
  const bool sas_cannot_create = options_.key.empty() && res.head.status == 403;
  if (res.head.status != 201 && res.head.status != 409 && !sas_cannot_create) {
    return ResponseError("creating container " + options_.container_prefix + std::string(container), res.head,
                         res.body);
  }
  std::lock_guard lock(mu_);
  known_containers_.emplace(container);
  return Ok();
}

Result<std::unique_ptr<BlobWriter>> AzureBlobStore::OpenWrite(std::string_view container, std::string_view key) {
  IMGPIPE_ASSIGN_OR_RETURN(std::string path, Path(container, key));
  IMGPIPE_TRY(EnsureContainer(container));
  return std::unique_ptr<BlobWriter>(new Writer(this, std::string(container), std::string(key), std::move(path)));
}

Result<CloudObject> AzureBlobStore::Object(std::string_view container, std::string_view key) const {
  CloudObject object;
  IMGPIPE_ASSIGN_OR_RETURN(object.target, Path(container, key));
  object.client = client_.get();
  object.sign = [this](HttpClientRequest& r) { return Sign(r); };
  object.response_error = &ResponseError;
  object.range_header = "x-ms-range";
  object.container = std::string(container);
  object.key = std::string(key);
  object.what = Describe(container, key);
  return object;
}

Result<std::unique_ptr<BlobReader>> AzureBlobStore::OpenRead(std::string_view container, std::string_view key,
                                                             std::optional<ByteRange> range) {
  IMGPIPE_ASSIGN_OR_RETURN(CloudObject object, Object(container, key));
  return OpenCloudRead(object, range);
}

Result<BlobInfo> AzureBlobStore::Stat(std::string_view container, std::string_view key) {
  IMGPIPE_ASSIGN_OR_RETURN(CloudObject object, Object(container, key));
  return StatCloudObject(object);
}

Status AzureBlobStore::Delete(std::string_view container, std::string_view key) {
  IMGPIPE_ASSIGN_OR_RETURN(CloudObject object, Object(container, key));
  return DeleteCloudObject(object);
}

Result<ListPage> AzureBlobStore::List(std::string_view container, std::string_view prefix,
                                      std::string_view continuation, size_t max_items) {
  IMGPIPE_ASSIGN_OR_RETURN(std::string path, ContainerPath(container));
  max_items = std::clamp<size_t>(max_items, 1, 5000);
  HttpClientRequest req;
  req.method = "GET";
  req.target = path + "?restype=container&comp=list&maxresults=" + std::to_string(max_items);
  if (!prefix.empty()) req.target += "&prefix=" + UriEncode(prefix, false);
  if (!continuation.empty()) req.target += "&marker=" + UriEncode(continuation, false);
  IMGPIPE_ASSIGN_OR_RETURN(auto res, Send(std::move(req), 32 << 20));
  if (res.head.status == 404) return ListPage{};  // no container yet: nothing was ever written to it
  const std::string what = "listing azure:" + std::string(container) + "/" + std::string(prefix) + "*";
  if (res.head.status != 200) return ResponseError(what, res.head, res.body);
  auto xml = ParseXml(res.body);
  if (!xml.ok()) {
    return MakeError(ErrorKind::kUnavailable, what + ": the service's answer is not valid XML: " + xml.error().message,
                     "storage_unavailable");
  }
  return ParseAzureListBlobs(*xml, container);
}

Status AzureBlobStore::Ping() {
  IMGPIPE_ASSIGN_OR_RETURN(std::string path, ContainerPath(kOriginals));
  HttpClientRequest req;
  req.method = "GET";
  req.target = path + "?restype=container";
  IMGPIPE_ASSIGN_OR_RETURN(auto res, Send(std::move(req)));
  if (res.head.status == 200 || res.head.status == 404) return Ok();
  return ResponseError("checking Azure Blob Storage", res.head, res.body);
}

// ---------------------------------------------------------------------------------------------------------------

Result<ListPage> ParseAzureListBlobs(const XmlElement& root, std::string_view container) {
  auto bad = [](std::string what) {
    return MakeError(ErrorKind::kUnavailable, "unexpected List Blobs answer: " + what, "storage_unavailable");
  };
  if (root.name != "EnumerationResults") return bad("the root element is <" + root.name + ">");
  ListPage page;
  if (const XmlElement* blobs = root.Child("Blobs")) {
    for (const auto& blob : blobs->children) {
      if (blob.name != "Blob") continue;
      BlobInfo info;
      info.container = std::string(container);
      info.key = std::string(blob.ChildText("Name"));
      if (info.key.empty()) return bad("a blob without a name");
      const XmlElement* props = blob.Child("Properties");
      if (!props) return bad("blob " + info.key + " has no properties");
      auto size = ParseDecimal(props->ChildText("Content-Length"));
      if (!size) return bad("blob " + info.key + " has no valid Content-Length");
      info.size = *size;
      info.etag = std::string(props->ChildText("Etag"));
      if (!ParseHttpDate(props->ChildText("Last-Modified"), &info.created)) {
        return bad("blob " + info.key + " has no valid Last-Modified");
      }
      page.items.push_back(std::move(info));
    }
  }
  page.continuation = std::string(root.ChildText("NextMarker"));
  return page;
}

}  // namespace imgpipe
