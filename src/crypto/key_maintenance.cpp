#include "crypto/key_maintenance.hpp"

#include <vector>

namespace imgpipe {

namespace {

constexpr size_t kExamples = 10;
constexpr size_t kCopyChunk = 1 << 20;

struct RawHead {
  std::string bytes;  //!< up to kHeaderBytes
  BlobInfo info;      //!< as stored (ciphertext size, etag)
};

Result<RawHead> ReadRawHead(BlobStore& inner, std::string_view container, std::string_view key) {
  RawHead head;
  auto reader = inner.OpenRead(container, key, ByteRange{0, kHeaderBytes});
  if (!reader.ok()) {
    // An empty object has no byte 0 on some backends: it is plaintext (an encrypted object is never empty).
    if (reader.error().kind != ErrorKind::kRangeNotSatisfiable) return reader.error();
    IMGPIPE_ASSIGN_OR_RETURN(head.info, inner.Stat(container, key));
    return head;
  }
  head.info = (*reader)->Info();
  head.bytes.resize(kHeaderBytes);
  size_t got = 0;
  while (got < head.bytes.size()) {
    IMGPIPE_ASSIGN_OR_RETURN(size_t n, (*reader)->Read(std::span<char>(head.bytes.data() + got,
                                                                          head.bytes.size() - got)));
    if (n == 0) break;
    got += n;
  }
  head.bytes.resize(got);
  return head;
}

// Copies `reader` to `writer` after dropping `skip` bytes; commits only if the object still has `etag`.
Result<RewrapOutcome> CopyAndCommit(BlobStore& inner, std::string_view container, std::string_view key,
                                    BlobReader& reader, BlobWriter& writer, uint64_t skip, const std::string& etag,
                                    RewrapOutcome done) {
  std::vector<char> buf(kCopyChunk);
  for (;;) {
    IMGPIPE_ASSIGN_OR_RETURN(size_t n, reader.Read(buf));
    if (n == 0) break;
    size_t drop = static_cast<size_t>(std::min<uint64_t>(skip, n));
    skip -= drop;
    if (Status s = writer.Write(std::string_view(buf.data() + drop, n - drop)); !s.ok()) {
      writer.Abort();
      return s.error();
    }
  }
  // Between this check and Commit a writer could still slip in; the window is one Stat long, and a writer's object
  // overwritten by this copy would be the same image's older bytes (renditions are rewritten only by reprocessing).
  auto now = inner.Stat(container, key);
  if (!now.ok() || now->etag != etag) {
    writer.Abort();
    return RewrapOutcome::kChangedMeanwhile;
  }
  IMGPIPE_TRY(writer.Commit());
  return done;
}

void Note(KeyScanReport* report, std::string_view container, std::string_view key, const std::string& problem) {
  if (report->examples.size() < kExamples) {
    report->examples.push_back(std::string(container) + "/" + std::string(key) + ": " + problem);
  }
}

// Calls `visit` for every object of every container, page by page.
Status ForEachObject(BlobStore& inner, const std::vector<std::string>& containers,
                     const std::function<Status(const std::string&, const BlobInfo&)>& visit) {
  for (const std::string& container : containers) {
    std::string continuation;
    do {
      IMGPIPE_ASSIGN_OR_RETURN(ListPage page, inner.List(container, "", continuation, 1000));
      for (const BlobInfo& item : page.items) IMGPIPE_TRY(visit(container, item));
      continuation = page.continuation;
    } while (!continuation.empty());
  }
  return Ok();
}

}  // namespace

Result<RewrapOutcome> RewrapObject(EncryptedBlobStore& store, std::string_view container, std::string_view key,
                                   uint32_t current_version) {
  BlobStore& inner = store.inner();
  IMGPIPE_ASSIGN_OR_RETURN(RawHead head, ReadRawHead(inner, container, key));
  if (!HasEnvelopeMagic(head.bytes)) {
    IMGPIPE_ASSIGN_OR_RETURN(auto reader, inner.OpenRead(container, key));
    IMGPIPE_ASSIGN_OR_RETURN(auto writer, store.OpenWrite(container, key));
    return CopyAndCommit(inner, container, key, *reader, *writer, 0, reader->Info().etag, RewrapOutcome::kEncrypted);
  }
  IMGPIPE_ASSIGN_OR_RETURN(EnvelopeHeader header, ParseHeader(head.bytes));
  if (header.wrapped.version == current_version) return RewrapOutcome::kAlreadyCurrent;
  IMGPIPE_ASSIGN_OR_RETURN(DataKey data_key, store.OpenDataKey(header, container, key));
  EnvelopeHeader next = header;  // same nonce prefix: the segments stay valid as they are
  IMGPIPE_ASSIGN_OR_RETURN(next.wrapped, store.provider().Wrap(data_key, WrapAad(header, container, key)));
  IMGPIPE_ASSIGN_OR_RETURN(std::string header_bytes, SerializeHeader(next));
  IMGPIPE_ASSIGN_OR_RETURN(auto reader, inner.OpenRead(container, key));
  if (reader->Info().etag != head.info.etag) return RewrapOutcome::kChangedMeanwhile;
  IMGPIPE_ASSIGN_OR_RETURN(auto writer, inner.OpenWrite(container, key));
  if (Status s = writer->Write(header_bytes); !s.ok()) {
    writer->Abort();
    return s.error();
  }
  return CopyAndCommit(inner, container, key, *reader, *writer, kHeaderBytes, head.info.etag,
                       RewrapOutcome::kRewrapped);
}

Result<KeyScanReport> ScanKeyUsage(EncryptedBlobStore& store, const std::vector<std::string>& containers) {
  KeyScanReport report;
  IMGPIPE_TRY(ForEachObject(store.inner(), containers, [&](const std::string& container, const BlobInfo& item) {
    ++report.objects;
    auto head = ReadRawHead(store.inner(), container, item.key);
    if (!head.ok()) {
      if (head.error().kind == ErrorKind::kNotFound) {  // deleted since the listing
        --report.objects;
        return Ok();
      }
      return Status(head.error());
    }
    if (!HasEnvelopeMagic(head->bytes)) {
      ++report.plaintext;
      Note(&report, container, item.key, "not encrypted");
      return Ok();
    }
    auto header = ParseHeader(head->bytes);
    if (!header.ok()) {
      ++report.unreadable;
      Note(&report, container, item.key, header.error().message);
      return Ok();
    }
    ++report.by_version[header->wrapped.version];
    return Ok();
  }));
  return report;
}

Result<KeyScanReport> RewrapAll(EncryptedBlobStore& store, const std::vector<std::string>& containers,
                                const std::function<void(const KeyScanReport&)>& progress) {
  IMGPIPE_ASSIGN_OR_RETURN(auto versions, store.provider().Versions());
  if (versions.empty()) return MakeError(ErrorKind::kUnavailable, "the key provider has no KEK version");
  const uint32_t current = versions.back().version;
  KeyScanReport report;
  IMGPIPE_TRY(ForEachObject(store.inner(), containers, [&](const std::string& container, const BlobInfo& item) {
    ++report.objects;
    auto outcome = RewrapObject(store, container, item.key, current);
    if (!outcome.ok()) {
      const Error& e = outcome.error();
      if (e.kind == ErrorKind::kNotFound) {  // deleted since the listing (retention)
        --report.objects;
      } else if (e.kind == ErrorKind::kIntegrity) {
        ++report.unreadable;
        Note(&report, container, item.key, e.message);
      } else {
        return Status(e);  // the vault or the store is down: stop; running again resumes
      }
    } else {
      switch (*outcome) {
        case RewrapOutcome::kRewrapped: ++report.rewrapped; break;
        case RewrapOutcome::kEncrypted: ++report.encrypted; break;
        case RewrapOutcome::kAlreadyCurrent: break;
        case RewrapOutcome::kChangedMeanwhile: ++report.changed_meanwhile; break;
      }
    }
    if (progress && report.objects % 1000 == 0) progress(report);
    return Ok();
  }));
  return report;
}

}  // namespace imgpipe
