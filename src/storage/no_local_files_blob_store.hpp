#pragma once

#include <memory>
#include <optional>
#include <string_view>

#include "storage/blob_store.hpp"

namespace imgpipe {

//! Another store as a remote backend looks to its callers: no LocalPath, and readers without a LocalFd. For tests of
//! code that takes another path over local files (the worker hands libvips a file, the encrypting decorator maps
//! it), so that both paths run over the same local store. Forwards everything else. `inner` must outlive it.
class NoLocalFilesBlobStore : public BlobStore {
 public:
  explicit NoLocalFilesBlobStore(BlobStore& inner) : inner_(inner) {}
  Result<std::unique_ptr<BlobWriter>> OpenWrite(std::string_view container, std::string_view key) override {
    return inner_.OpenWrite(container, key);
  }
  Result<std::unique_ptr<BlobReader>> OpenRead(std::string_view container, std::string_view key,
                                               std::optional<ByteRange> range = std::nullopt) override {
    IMGPIPE_ASSIGN_OR_RETURN(auto reader, inner_.OpenRead(container, key, range));
    return std::unique_ptr<BlobReader>(new Reader(std::move(reader)));
  }
  Result<BlobInfo> Stat(std::string_view container, std::string_view key) override {
    return inner_.Stat(container, key);
  }
  Status Delete(std::string_view container, std::string_view key) override { return inner_.Delete(container, key); }
  Result<ListPage> List(std::string_view container, std::string_view prefix, std::string_view continuation = {},
                        size_t max_items = 1000) override {
    return inner_.List(container, prefix, continuation, max_items);
  }
  Status Ping() override { return inner_.Ping(); }
  std::string_view Name() const override { return "no-local-files"; }

 private:
  class Reader final : public BlobReader {
   public:
    explicit Reader(std::unique_ptr<BlobReader> inner) : inner_(std::move(inner)) {}
    Result<size_t> Read(std::span<char> buf) override { return inner_->Read(buf); }
    const BlobInfo& Info() const override { return inner_->Info(); }

   private:
    std::unique_ptr<BlobReader> inner_;
  };

  BlobStore& inner_;
};

}  // namespace imgpipe
