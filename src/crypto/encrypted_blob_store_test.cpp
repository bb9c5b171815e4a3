#include "crypto/encrypted_blob_store.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <vector>

#include "crypto/local/local_key_provider.hpp"
#include "storage/local/local_blob_store.hpp"
#include "storage/no_local_files_blob_store.hpp"

namespace imgpipe {
namespace {

namespace fs = std::filesystem;

//! The local provider, with a switch that makes it unreachable and a count of unwraps (our own logic under test is
//! the decorator's; the provider is real).
class SwitchableProvider final : public KeyProvider {
 public:
  explicit SwitchableProvider(KeyProvider& real) : real_(real) {}
  std::string_view Name() const override { return "switchable"; }
  Result<WrappedKey> Wrap(const DataKey& key, std::string_view aad) override {
    if (down) return Down();
    return real_.Wrap(key, aad);
  }
  Result<DataKey> Unwrap(const WrappedKey& wrapped, std::string_view aad) override {
    if (down) return Down();
    ++unwraps;
    return real_.Unwrap(wrapped, aad);
  }
  Result<std::vector<KekVersion>> Versions() override { return real_.Versions(); }
  Result<KekVersion> Rotate() override { return real_.Rotate(); }
  Status Retire(uint32_t version) override { return real_.Retire(version); }
  Status Ping() override { return down ? Status(Down()) : real_.Ping(); }

  std::atomic<bool> down{false};
  std::atomic<int> unwraps{0};

 private:
  static Error Down() { return MakeError(ErrorKind::kUnavailable, "the vault is down (test)"); }
  KeyProvider& real_;
};

std::string Pattern(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

//! The store as a remote one, whose OpenRead runs `after_open` once the object is open (its size is known) and before
//! anything is read from it: a writer from outside imgpipe cutting the file in between.
class CutAfterOpenStore final : public NoLocalFilesBlobStore {
 public:
  CutAfterOpenStore(BlobStore& inner, std::function<void()> after_open)
      : NoLocalFilesBlobStore(inner), after_open_(std::move(after_open)) {}
  Result<std::unique_ptr<BlobReader>> OpenRead(std::string_view container, std::string_view key,
                                               std::optional<ByteRange> range = std::nullopt) override {
    auto reader = NoLocalFilesBlobStore::OpenRead(container, key, range);
    after_open_();
    return reader;
  }

 private:
  std::function<void()> after_open_;
};

//! A store seen as a remote one whose readers hand out at most `chunk` bytes per read, as a network body comes in
//! pieces of whatever size has arrived.
class TricklingStore final : public NoLocalFilesBlobStore {
 public:
  TricklingStore(BlobStore& inner, size_t chunk) : NoLocalFilesBlobStore(inner), chunk_(chunk) {}
  Result<std::unique_ptr<BlobReader>> OpenRead(std::string_view container, std::string_view key,
                                               std::optional<ByteRange> range = std::nullopt) override {
    IMGPIPE_ASSIGN_OR_RETURN(auto reader, NoLocalFilesBlobStore::OpenRead(container, key, range));
    return std::unique_ptr<BlobReader>(new Reader(std::move(reader), chunk_));
  }

 private:
  class Reader final : public BlobReader {
   public:
    Reader(std::unique_ptr<BlobReader> inner, size_t chunk) : inner_(std::move(inner)), chunk_(chunk) {}
    Result<size_t> Read(std::span<char> buf) override { return inner_->Read(buf.first(std::min(buf.size(), chunk_))); }
    const BlobInfo& Info() const override { return inner_->Info(); }

   private:
    std::unique_ptr<BlobReader> inner_;
    size_t chunk_;
  };
  size_t chunk_;
};

//! Every test runs twice: over the local store, whose files the decorator maps (the parameter is true), and over
//! the same store seen as a remote one, whose bytes it reads into a buffer.
class EncryptedBlobStoreTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "imgpipe-enc-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    inner_ = std::move(LocalBlobStore::Open(dir_ + "/blobs").value());
    local_ = std::move(LocalKeyProvider::Open(dir_ + "/keyring.json", clock_).value());
    provider_ = std::make_unique<SwitchableProvider>(*local_);
    remote_ = std::make_unique<NoLocalFilesBlobStore>(*inner_);
    store_ = std::make_unique<EncryptedBlobStore>(Mapped() ? static_cast<BlobStore&>(*inner_) : *remote_, *provider_,
                                                  clock_);
  }
  static bool Mapped() { return GetParam(); }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string RawPath(std::string_view key, std::string_view container = kOriginals) {
    return dir_ + "/blobs/" + std::string(container) + "/" + std::string(key);
  }
  std::string ReadRaw(std::string_view key, std::string_view container = kOriginals) {
    std::ifstream in(RawPath(key, container), std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  void WriteRaw(std::string_view key, const std::string& bytes, std::string_view container = kOriginals) {
    std::ofstream out(RawPath(key, container), std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  //! The whole object, or the error kind of the first failure.
  //! `buffer`: the size of each Read; the default is not a divisor of the segment size, so reads end mid-segment.
  Result<std::string> ReadAll(std::string_view key, std::optional<ByteRange> range = std::nullopt,
                              std::string_view container = kOriginals, size_t buffer = 10007) {
    IMGPIPE_ASSIGN_OR_RETURN(auto reader, store_->OpenRead(container, key, range));
    std::string out;
    std::vector<char> buf(buffer);
    for (;;) {
      IMGPIPE_ASSIGN_OR_RETURN(size_t n, reader->Read(std::span<char>(buf.data(), buf.size())));
      if (n == 0) break;
      out.append(buf.data(), n);
    }
    return out;
  }
  void PutInChunks(std::string_view key, const std::string& data, size_t chunk) {
    auto writer = store_->OpenWrite(kOriginals, key);
    ASSERT_TRUE(writer.ok()) << writer.error().message;
    for (size_t at = 0; at < data.size(); at += chunk) {
      ASSERT_TRUE((*writer)->Write(std::string_view(data).substr(at, chunk)).ok());
    }
    auto info = (*writer)->Commit();
    ASSERT_TRUE(info.ok()) << info.error().message;
    EXPECT_EQ(info->size, data.size());
  }
  void ExpectIntegrityError(std::string_view key, std::optional<ByteRange> range = std::nullopt) {
    auto r = ReadAll(key, range);
    ASSERT_FALSE(r.ok()) << "tampered object read back " << r->size() << " bytes";
    EXPECT_EQ(r.error().kind, ErrorKind::kIntegrity) << r.error().message;
  }

  std::string dir_;
  SystemClock clock_;
  std::unique_ptr<LocalBlobStore> inner_;
  std::unique_ptr<NoLocalFilesBlobStore> remote_;
  std::unique_ptr<LocalKeyProvider> local_;
  std::unique_ptr<SwitchableProvider> provider_;
  std::unique_ptr<EncryptedBlobStore> store_;
};

TEST_P(EncryptedBlobStoreTest, RoundTripsAtSegmentEdges) {
  const size_t sizes[] = {0, 1, kSegmentBytes - 1, kSegmentBytes, kSegmentBytes + 1, 3 * kSegmentBytes,
                          (5 << 20) + 777};
  uint32_t seed = 1;
  for (size_t size : sizes) {
    for (size_t chunk : {size_t{1000}, size_t{kSegmentBytes}, size_t{3 << 20}}) {
      if (size > 200000 && chunk == 1000) continue;  // slow and adds nothing
      std::string key = "rt/" + std::to_string(size) + "-" + std::to_string(chunk);
      std::string data = Pattern(size, seed++);
      PutInChunks(key, data, chunk);
      auto back = ReadAll(key);
      ASSERT_TRUE(back.ok()) << key << ": " << back.error().message;
      EXPECT_TRUE(*back == data) << key;
      auto stat = store_->Stat(kOriginals, key);
      ASSERT_TRUE(stat.ok());
      EXPECT_EQ(stat->size, size);
      EXPECT_EQ(ReadRaw(key).size(), CiphertextSize(size));
      if (size > (4 << 20)) {
        // A range across the edge of the decorator's 64-segment (4 MiB) mapping windows.
        const uint64_t at = 64 * kSegmentBytes - 12345;
        auto part = ReadAll(key, ByteRange{at, 3 * kSegmentBytes});
        ASSERT_TRUE(part.ok()) << key << ": " << part.error().message;
        EXPECT_TRUE(*part == data.substr(at, 3 * kSegmentBytes)) << key;
      }
    }
  }
  auto page = store_->List(kOriginals, "rt/");
  ASSERT_TRUE(page.ok());
  for (const BlobInfo& item : page->items) {
    EXPECT_EQ(std::to_string(item.size), item.key.substr(3, item.key.find('-') - 3)) << item.key;
  }
}

TEST_P(EncryptedBlobStoreTest, StoredBytesShowNoPlaintext) {
  std::string data = "\xff\xd8\xff\xe0JFIF Canon EOS 5D Mark IV " + Pattern(200000, 9) + " secret trailer";
  ASSERT_TRUE(store_->Put(kOriginals, "p/img", data).ok());
  std::string raw = ReadRaw("p/img");
  EXPECT_TRUE(HasEnvelopeMagic(raw));
  EXPECT_EQ(raw.find("JFIF"), std::string::npos);
  EXPECT_EQ(raw.find("Canon EOS"), std::string::npos);
  EXPECT_EQ(raw.find("secret trailer"), std::string::npos);
  EXPECT_EQ(raw.find(data.substr(1000, 64)), std::string::npos);
  EXPECT_FALSE(store_->LocalPath(kOriginals, "p/img").has_value());
  // The same plaintext twice gives different ciphertexts (a fresh key and nonce prefix per object).
  ASSERT_TRUE(store_->Put(kOriginals, "p/img2", data).ok());
  EXPECT_NE(ReadRaw("p/img2").substr(kHeaderBytes, 64), raw.substr(kHeaderBytes, 64));
}

TEST_P(EncryptedBlobStoreTest, RangesReadOnlyWhatTheyCover) {
  const std::string data = Pattern(4 * kSegmentBytes + 100, 3);
  ASSERT_TRUE(store_->Put(kOriginals, "r/obj", data).ok());
  const uint64_t S = kSegmentBytes;
  struct Case {
    uint64_t offset, length;
  };
  for (Case c : {Case{0, 1}, Case{0, S}, Case{S - 1, 2}, Case{S, S}, Case{S - 5, 2 * S + 10}, Case{3 * S + 7, 93},
                 Case{4 * S, 100}, Case{4 * S + 99, 1}, Case{10, UINT64_MAX}, Case{4 * S + 50, 1000}}) {
    auto got = ReadAll("r/obj", ByteRange{c.offset, c.length});
    ASSERT_TRUE(got.ok()) << c.offset << "+" << c.length << ": " << got.error().message;
    EXPECT_TRUE(*got == data.substr(c.offset, c.length)) << c.offset << "+" << c.length;
  }
  auto past = store_->OpenRead(kOriginals, "r/obj", ByteRange{data.size(), 1});
  ASSERT_FALSE(past.ok());
  EXPECT_EQ(past.error().kind, ErrorKind::kRangeNotSatisfiable);
  auto reader = store_->OpenRead(kOriginals, "r/obj", ByteRange{S, 10});
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ((*reader)->Info().size, data.size());  // the whole object's plaintext size, as for the inner store

  // Segment 3 damaged: ranges inside other segments still read (they never touch it), ranges over it fail.
  std::string raw = ReadRaw("r/obj");
  raw[kHeaderBytes + 3 * kSealedSegmentBytes + 10] ^= 0x40;
  WriteRaw("r/obj", raw);
  EXPECT_TRUE(ReadAll("r/obj", ByteRange{S, S}).ok());
  ExpectIntegrityError("r/obj", ByteRange{3 * S + 5, 10});
  ExpectIntegrityError("r/obj");
}

TEST_P(EncryptedBlobStoreTest, LargeReadsOpenSegmentsStraightIntoTheCallersBuffer) {
  // Buffers that take whole segments (opened in place, in batches of several per inner read) and buffers that end
  // mid-segment, over whole reads and ranges that start or end inside a segment.
  const uint64_t S = kSegmentBytes;
  const std::string data = Pattern(9 * S + 4321, 21);
  ASSERT_TRUE(store_->Put(kOriginals, "big/obj", data).ok());
  struct Case {
    uint64_t offset, length;
  };
  for (size_t buffer : {size_t{S}, size_t{S + 17}, size_t{256 * 1024}, size_t{1 << 20}, size_t{3 * S - 1}}) {
    auto whole = ReadAll("big/obj", std::nullopt, kOriginals, buffer);
    ASSERT_TRUE(whole.ok()) << buffer << ": " << whole.error().message;
    EXPECT_TRUE(*whole == data) << buffer;
    for (Case c : {Case{0, 5 * S}, Case{S + 3, 6 * S}, Case{2 * S, S}, Case{7 * S - 1, UINT64_MAX}, Case{9 * S, 4321},
                   Case{5, 9 * S}}) {
      auto got = ReadAll("big/obj", ByteRange{c.offset, c.length}, kOriginals, buffer);
      ASSERT_TRUE(got.ok()) << buffer << " " << c.offset << "+" << c.length << ": " << got.error().message;
      EXPECT_TRUE(*got == data.substr(c.offset, c.length)) << buffer << " " << c.offset << "+" << c.length;
    }
  }
  // A damaged segment in the middle of a batch fails the read with a large buffer too.
  std::string raw = ReadRaw("big/obj");
  raw[kHeaderBytes + 5 * kSealedSegmentBytes + 100] ^= 0x01;
  WriteRaw("big/obj", raw);
  auto reader = store_->OpenRead(kOriginals, "big/obj", std::nullopt);
  ASSERT_TRUE(reader.ok());
  std::vector<char> buf(1 << 20);
  auto first = (*reader)->Read(std::span<char>(buf.data(), buf.size()));
  ASSERT_FALSE(first.ok()) << "read " << *first << " bytes past a damaged segment";
  EXPECT_EQ(first.error().kind, ErrorKind::kIntegrity);
  auto again = (*reader)->Read(std::span<char>(buf.data(), buf.size()));
  EXPECT_FALSE(again.ok()) << "a failed reader must stay failed";
}

TEST_P(EncryptedBlobStoreTest, EveryKindOfTamperingFails) {
  const std::string data = Pattern(3 * kSegmentBytes + 500, 4);
  ASSERT_TRUE(store_->Put(kOriginals, "t/a", data).ok());
  ASSERT_TRUE(store_->Put(kOriginals, "t/b", Pattern(data.size(), 5)).ok());
  const std::string a = ReadRaw("t/a");
  const std::string b = ReadRaw("t/b");
  auto segment = [](const std::string& raw, uint64_t i) {
    return raw.substr(kHeaderBytes + i * kSealedSegmentBytes, kSealedSegmentBytes);
  };
  auto tampered = [&](const std::string& raw) {
    WriteRaw("t/a", raw);
    store_->key_cache().Clear();  // the provider must judge every header, not a cached key
    ExpectIntegrityError("t/a");
  };
  // One flipped bit anywhere: header fields, wrapped key, ciphertext, tag.
  // Key id (20) and KEK version (50) name a key that does not exist; the nonce prefix (55) and wrapped key (70)
  // fail the unwrap; the rest fail a segment.
  for (size_t at : {size_t{3}, size_t{20}, size_t{50}, size_t{55}, size_t{70}, kHeaderBytes + 5,
                    kHeaderBytes + kSegmentBytes + 3, a.size() - 1}) {
    std::string bad = a;
    bad[at] ^= 0x01;
    SCOPED_TRACE("flipped byte " + std::to_string(at));
    tampered(bad);
  }
  tampered(a.substr(0, a.size() - 1));                                   // truncated by a byte
  tampered(a.substr(0, a.size() - 16 - 500));                            // the last segment dropped
  tampered(a.substr(0, kHeaderBytes + kTagBytes));                       // cut to look like an empty object
  tampered(a.substr(0, kHeaderBytes + 2 * kSealedSegmentBytes));         // cut at a segment boundary
  tampered(a + std::string(16, '\0'));                                   // padded
  {
    // Padding a whole-segment object by one tag's length used to look like a valid size.
    ASSERT_TRUE(store_->Put(kOriginals, "t/full", Pattern(2 * kSegmentBytes, 6)).ok());
    WriteRaw("t/full", ReadRaw("t/full") + std::string(kTagBytes, '\0'));
    ExpectIntegrityError("t/full");
  }
  tampered(a.substr(0, kHeaderBytes) + segment(a, 0) + segment(a, 2) +   // a middle segment dropped
           a.substr(kHeaderBytes + 3 * kSealedSegmentBytes));
  tampered(a.substr(0, kHeaderBytes) + segment(a, 1) + segment(a, 0) +   // two segments swapped
           a.substr(kHeaderBytes + 2 * kSealedSegmentBytes));
  tampered(a.substr(0, kHeaderBytes) + segment(a, 0) + segment(b, 1) +   // a segment from another object
           a.substr(kHeaderBytes + 2 * kSealedSegmentBytes));
  tampered(b.substr(0, kHeaderBytes) + a.substr(kHeaderBytes));          // another object's header
  tampered(b);                                                           // another object moved here whole
  WriteRaw("t/a", a);
  auto restored = ReadAll("t/a");
  ASSERT_TRUE(restored.ok()) << restored.error().message;
  EXPECT_TRUE(*restored == data);
}

// Objects are never changed in place, but another process (an operator, an attacker with access to the folder) can
// cut a stored file short while it is being read: the reader fails with kIntegrity and returns no byte of the lost
// segments. Over a mapped file, touching the lost pages raises SIGBUS, which must become that error, not a crash.
TEST_P(EncryptedBlobStoreTest, FileCutShortWhileBeingReadIsAnIntegrityError) {
  const uint64_t S = kSegmentBytes;
  const std::string data = Pattern(6 * S + 99, 31);
  struct Cut {
    std::optional<ByteRange> range;
    uint64_t keep;  // stored bytes left
  };
  for (Cut cut : {Cut{std::nullopt, kHeaderBytes + 2 * kSealedSegmentBytes + 1000}, Cut{std::nullopt, 0},
                  Cut{ByteRange{S / 2, 4 * S}, kHeaderBytes + 2 * kSealedSegmentBytes},
                  Cut{std::nullopt, kHeaderBytes + 6 * kSealedSegmentBytes}}) {
    SCOPED_TRACE("cut to " + std::to_string(cut.keep) + (cut.range ? " (ranged)" : ""));
    ASSERT_TRUE(store_->Put(kOriginals, "cut/obj", data).ok());
    auto reader = store_->OpenRead(kOriginals, "cut/obj", cut.range);
    ASSERT_TRUE(reader.ok()) << reader.error().message;
    std::vector<char> buf(S);
    auto first = (*reader)->Read(std::span<char>(buf.data(), buf.size()));
    ASSERT_TRUE(first.ok()) << first.error().message;
    const uint64_t start = cut.range ? cut.range->offset : 0;
    std::string got(buf.data(), *first);
    ASSERT_EQ(::truncate(RawPath("cut/obj").c_str(), static_cast<off_t>(cut.keep)), 0);
    std::optional<Error> failed;
    for (;;) {
      auto n = (*reader)->Read(std::span<char>(buf.data(), buf.size()));
      if (!n.ok()) {
        failed = n.error();
        break;
      }
      if (*n == 0) break;
      got.append(buf.data(), *n);
    }
    ASSERT_TRUE(failed.has_value()) << "read " << got.size() << " bytes of a file cut short";
    EXPECT_EQ(failed->kind, ErrorKind::kIntegrity) << failed->message;
    // Every byte returned is genuine (a buffered reader may still return segments it had read ahead before the cut).
    EXPECT_TRUE(got == data.substr(start, got.size()));
    if (Mapped()) {
      // Nothing past the cut: those pages are gone from the mapping.
      const uint64_t whole_left = cut.keep < kHeaderBytes ? 0 : (cut.keep - kHeaderBytes) / kSealedSegmentBytes;
      EXPECT_LE(start + got.size(), std::max<uint64_t>(whole_left * S, S));
    }
    auto again = (*reader)->Read(std::span<char>(buf.data(), buf.size()));
    EXPECT_FALSE(again.ok()) << "a failed reader must stay failed";
  }
  // The process is fine afterwards, and so are reads of intact objects.
  ASSERT_TRUE(store_->Put(kOriginals, "cut/obj", data).ok());
  auto whole = ReadAll("cut/obj");
  ASSERT_TRUE(whole.ok()) << whole.error().message;
  EXPECT_TRUE(*whole == data);
}

TEST_P(EncryptedBlobStoreTest, FileCutBetweenOpenAndFirstReadIsAnIntegrityError) {
  // A whole read of a small object reads the header and its first segments with one inner read, sized from the
  // object's size at open: bytes missing from it must fail the read, never shorten it.
  const std::string data = Pattern(2 * kSegmentBytes + 500, 32);
  for (uint64_t keep : {uint64_t{0}, uint64_t{100}, uint64_t{kHeaderBytes}, kHeaderBytes + kSealedSegmentBytes,
                        kHeaderBytes + kSealedSegmentBytes + 1000, kHeaderBytes + 2 * kSealedSegmentBytes}) {
    SCOPED_TRACE("cut to " + std::to_string(keep));
    ASSERT_TRUE(store_->Put(kOriginals, "cut/open", data).ok());
    // Over the local store either way: objects of fewer than 4 segments are read, not mapped.
    CutAfterOpenStore cutting(*inner_, [&] {
      ASSERT_EQ(::truncate(RawPath("cut/open").c_str(), static_cast<off_t>(keep)), 0);
    });
    EncryptedBlobStore store(cutting, *provider_, clock_);
    std::string got;
    Status status = [&]() -> Status {
      IMGPIPE_ASSIGN_OR_RETURN(auto reader, store.OpenRead(kOriginals, "cut/open"));
      std::vector<char> buf(kSegmentBytes);
      for (;;) {
        IMGPIPE_ASSIGN_OR_RETURN(size_t n, reader->Read(std::span<char>(buf.data(), buf.size())));
        if (n == 0) return Ok();
        got.append(buf.data(), n);
      }
    }();
    ASSERT_FALSE(status.ok()) << "read " << got.size() << " bytes of a file cut short";
    EXPECT_EQ(status.error().kind, ErrorKind::kIntegrity) << status.error().message;
    EXPECT_TRUE(got == data.substr(0, got.size()));
  }
}

// The reader opens each segment as soon as its bytes are in, however the inner reads cut them: the header split
// across reads, segments ending mid-read, a segment reaching past the end of its buffer. Every cut gives the same
// bytes back, and a cut-short or altered object still fails.
TEST_P(EncryptedBlobStoreTest, BodiesArrivingInPiecesOfAnySizeReadBackExactly) {
  if (Mapped()) GTEST_SKIP() << "a trickling store is never mapped: the buffered run covers it";
  const uint64_t S = kSegmentBytes;
  const std::vector<uint64_t> sizes = {0, 1, S - 1, S, S + 1, 4 * S, 4 * S + 7, 9 * S + 123};
  for (size_t chunk : {size_t{1}, size_t{13}, size_t{4099}, size_t{S + 35}, size_t{5 * S}}) {
    TricklingStore trickling(*inner_, chunk);
    store_ = std::make_unique<EncryptedBlobStore>(trickling, *provider_, clock_);
    for (uint64_t size : sizes) {
      // Byte-at-a-time reads of the larger objects only take time: their cuts are covered by the other chunks.
      if (chunk == 1 && size > S + 1) continue;
      SCOPED_TRACE("object of " + std::to_string(size) + " bytes read " + std::to_string(chunk) + " at a time");
      const std::string key = "trickle/" + std::to_string(size);
      const std::string data = Pattern(size, static_cast<uint32_t>(size + 40));
      ASSERT_TRUE(store_->Put(kOriginals, key, data).ok());
      auto whole = ReadAll(key);
      ASSERT_TRUE(whole.ok()) << whole.error().message;
      EXPECT_TRUE(*whole == data);
      if (size > S) {
        auto part = ReadAll(key, ByteRange{S / 2 + 3, 2 * S + 5});
        ASSERT_TRUE(part.ok()) << part.error().message;
        EXPECT_TRUE(*part == data.substr(S / 2 + 3, 2 * S + 5));
        const std::string raw = ReadRaw(key);
        WriteRaw(key, raw.substr(0, raw.size() - 1000));
        ExpectIntegrityError(key);
        std::string flipped = raw;
        flipped[kHeaderBytes + S + 20] ^= 0x20;  // in segment 1, whatever its size
        WriteRaw(key, flipped);
        ExpectIntegrityError(key);
      }
    }
    store_.reset();
  }
}

TEST_P(EncryptedBlobStoreTest, LegacyPlaintextIsRefusedWithAHint) {
  ASSERT_TRUE(inner_->Put(kOriginals, "legacy/img", "\x89PNG\r\n\x1a\n plain old bytes").ok());
  auto r = ReadAll("legacy/img");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kIntegrity);
  EXPECT_NE(r.error().message.find("kek rewrap"), std::string::npos) << r.error().message;
}

// Whatever an attacker puts in the store reads as an integrity error, never as bytes and never as a crash: the
// hostile corpus stored as objects, whole and as the part after a genuine header.
TEST_P(EncryptedBlobStoreTest, HostileStoredBytesAreIntegrityErrors) {
  const char* env = std::getenv("IMGPIPE_CORPORA_DIR");
  fs::path corrupt = fs::path(env ? env : IMGPIPE_CORPORA_DIR) / "corrupt";
  ASSERT_TRUE(fs::is_directory(corrupt)) << corrupt;
  ASSERT_TRUE(store_->Put(kOriginals, "h/genuine", Pattern(kSegmentBytes + 10, 2)).ok());
  const std::string genuine_header = ReadRaw("h/genuine").substr(0, kHeaderBytes);
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(corrupt)) {
    if (!entry.is_regular_file() || entry.file_size() > (4 << 20)) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    for (const std::string& stored : {bytes, genuine_header + bytes}) {
      ASSERT_TRUE(inner_->Put(kOriginals, "h/hostile", stored).ok());
      auto r = ReadAll("h/hostile");
      ASSERT_FALSE(r.ok()) << entry.path();
      EXPECT_EQ(r.error().kind, ErrorKind::kIntegrity) << entry.path() << ": " << r.error().message;
      auto ranged = ReadAll("h/hostile", ByteRange{kSegmentBytes, 10});
      EXPECT_FALSE(ranged.ok() && !ranged->empty()) << entry.path();
    }
    ++files;
  }
  EXPECT_GT(files, 10);
}

TEST_P(EncryptedBlobStoreTest, ProviderDownRefusesWritesAndWritesNothing) {
  provider_->down = true;
  auto writer = store_->OpenWrite(kOriginals, "down/x");
  ASSERT_FALSE(writer.ok());
  EXPECT_EQ(writer.error().kind, ErrorKind::kUnavailable);
  auto put = store_->Put(kOriginals, "down/y", "data");
  ASSERT_FALSE(put.ok());
  EXPECT_EQ(put.error().kind, ErrorKind::kUnavailable);
  auto listed = inner_->List(kOriginals, "down/");
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->items.empty());
  EXPECT_TRUE(fs::is_empty(dir_ + "/blobs/.tmp"));
  Status ping = store_->Ping();
  ASSERT_FALSE(ping.ok());
  EXPECT_NE(ping.error().message.find("key provider"), std::string::npos);

  provider_->down = false;
  EXPECT_TRUE(store_->Ping().ok());
  ASSERT_TRUE(store_->Put(kOriginals, "down/y", "data").ok());
  EXPECT_EQ(*ReadAll("down/y"), "data");
}

TEST_P(EncryptedBlobStoreTest, DataKeysAreCachedForABoundedAge) {
  FakeClock clock(TimePoint(std::chrono::hours(1000)));
  EncryptedBlobStore::Options options;
  options.key_cache_age = std::chrono::minutes(5);
  EncryptedBlobStore store(*inner_, *provider_, clock, options);
  ASSERT_TRUE(store.Put(kOriginals, "c/x", "cached").ok());
  store.key_cache().Clear();
  auto read = [&] {
    auto reader = store.OpenRead(kOriginals, "c/x");
    ASSERT_TRUE(reader.ok()) << reader.error().message;
  };
  read();
  read();
  EXPECT_EQ(provider_->unwraps, 1);
  clock.Advance(std::chrono::minutes(5));
  read();
  EXPECT_EQ(provider_->unwraps, 2);
  // A cached key does not keep a downed vault's objects readable past the age either.
  provider_->down = true;
  read();
  clock.Advance(std::chrono::minutes(6));
  EXPECT_FALSE(store.OpenRead(kOriginals, "c/x").ok());
}

TEST_P(EncryptedBlobStoreTest, PutFileEncryptsAndConsumesThePlaintextFile) {
  std::string path = dir_ + "/spooled";
  std::string data = Pattern(3 * kSegmentBytes + 11, 8);
  std::ofstream(path, std::ios::binary) << data;
  auto info = store_->PutFile(kOriginals, "pf/x", path);
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(info->size, data.size());
  EXPECT_FALSE(fs::exists(path)) << "the plaintext spool file must not stay behind";
  EXPECT_TRUE(HasEnvelopeMagic(ReadRaw("pf/x")));
  EXPECT_TRUE(*ReadAll("pf/x") == data);
  provider_->down = true;
  std::ofstream(path, std::ios::binary) << data;
  EXPECT_FALSE(store_->PutFile(kOriginals, "pf/y", path).ok());
  EXPECT_TRUE(fs::exists(path));  // a failed put leaves the file to its owner
}

TEST_P(EncryptedBlobStoreTest, AbortedAndFailedWritersLeaveNothing) {
  {
    auto writer = store_->OpenWrite(kOriginals, "ab/x");
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Write(Pattern(100000, 1)).ok());
    (*writer)->Abort();
  }
  {
    auto writer = store_->OpenWrite(kOriginals, "ab/y");
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Write("dropped").ok());
  }  // destroyed uncommitted
  EXPECT_FALSE(inner_->Stat(kOriginals, "ab/x").ok());
  EXPECT_FALSE(inner_->Stat(kOriginals, "ab/y").ok());
  EXPECT_EQ(store_->Stat(kOriginals, "ab/x").error().kind, ErrorKind::kNotFound);
}

INSTANTIATE_TEST_SUITE_P(MappedAndBuffered, EncryptedBlobStoreTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Mapped" : "Buffered";
                         });

}  // namespace
}  // namespace imgpipe
