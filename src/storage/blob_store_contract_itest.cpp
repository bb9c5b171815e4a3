// The BlobStore contract: the same assertions against every backend. Local always runs; Azure needs Azurite
// (IMGPIPE_TEST_AZURE_* from scripts/services/azurite), S3 the S3 server (IMGPIPE_TEST_S3_* from
// scripts/services/s3); the bucket lifecycle tests need SeaweedFS (IMGPIPE_TEST_SEAWEEDFS_* from
// scripts/services/seaweedfs). Without them these tests skip, unless IMGPIPE_REQUIRE_AZURE / IMGPIPE_REQUIRE_S3 /
// IMGPIPE_REQUIRE_SEAWEEDFS is 1 (scripts/test sets them), when they fail.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <thread>

#include "core/ids.hpp"
#include "crypto/encrypted_blob_store.hpp"
#include "crypto/local/local_key_provider.hpp"
#include "storage/azure/azure_blob_store.hpp"
#include "storage/azure/azure_signing.hpp"
#include "storage/local/local_blob_store.hpp"
#include "storage/s3/s3_blob_store.hpp"

namespace imgpipe {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// Block and part sizes small enough that modest test objects take the multi-block path.
constexpr size_t kTestBlockBytes = 1 << 20;
constexpr size_t kTestPartBytes = 5 << 20;  // S3's minimum part size

struct Backend {
  std::string name;
  // Opens a store with a fresh namespace (temp folder, container prefix or bucket) so tests do not see each other.
  std::function<Result<std::unique_ptr<BlobStore>>(const std::string& unique)> open;
  std::string missing;  // why it cannot run here, if it cannot
  bool required = false;
};

// gtest prints a parameter's bytes unless told otherwise.
void PrintTo(const Backend& b, std::ostream* os) { *os << b.name; }

Backend LocalBackend() {
  return {"local", [](const std::string& unique) -> Result<std::unique_ptr<BlobStore>> {
            auto dir = std::filesystem::temp_directory_path() / ("imgpipe-contract-" + unique);
            IMGPIPE_ASSIGN_OR_RETURN(auto store, LocalBlobStore::Open(dir.string()));
            return std::unique_ptr<BlobStore>(std::move(store));
          },
          "", false};
}

AzureBlobStoreOptions AzureOptions(const std::string& unique) {
  AzureBlobStoreOptions o;
  o.endpoint = Env("IMGPIPE_TEST_AZURE_ENDPOINT");
  o.account = Env("IMGPIPE_TEST_AZURE_ACCOUNT");
  o.key = Env("IMGPIPE_TEST_AZURE_KEY");
  o.container_prefix = "t" + unique.substr(0, 8) + "-";
  o.block_bytes = kTestBlockBytes;
  return o;
}

Backend AzureBackend() {
  Backend b{"azure", [](const std::string& unique) -> Result<std::unique_ptr<BlobStore>> {
              IMGPIPE_ASSIGN_OR_RETURN(auto store, AzureBlobStore::Open(AzureOptions(unique)));
              return std::unique_ptr<BlobStore>(std::move(store));
            },
            "", false};
  if (Env("IMGPIPE_TEST_AZURE_ENDPOINT").empty()) b.missing = "IMGPIPE_TEST_AZURE_ENDPOINT is not set";
  b.required = Env("IMGPIPE_REQUIRE_AZURE") == "1";
  return b;
}

S3BlobStoreOptions S3Options(const std::string& unique) {
  S3BlobStoreOptions o;
  o.endpoint = Env("IMGPIPE_TEST_S3_ENDPOINT");
  o.region = Env("IMGPIPE_TEST_S3_REGION");
  o.access_key = Env("IMGPIPE_TEST_S3_ACCESS_KEY");
  o.secret_key = Env("IMGPIPE_TEST_S3_SECRET_KEY");
  o.bucket = "t" + unique.substr(0, 8);
  o.addressing = S3Addressing::kPath;
  o.create_only = false;
  o.part_bytes = kTestPartBytes;
  return o;
}

// An S3 server from scripts/services: its options, the variable naming its endpoint, the one that makes it required.
Backend S3ServerBackend(std::string name, S3BlobStoreOptions (*options)(const std::string&), const char* endpoint,
                        const char* require) {
  Backend b{std::move(name), [options](const std::string& unique) -> Result<std::unique_ptr<BlobStore>> {
              IMGPIPE_ASSIGN_OR_RETURN(auto store, S3BlobStore::Open(options(unique)));
              return std::unique_ptr<BlobStore>(std::move(store));
            },
            "", false};
  if (Env(endpoint).empty()) b.missing = std::string(endpoint) + " is not set";
  b.required = Env(require) == "1";
  return b;
}

Backend S3Backend() { return S3ServerBackend("s3", S3Options, "IMGPIPE_TEST_S3_ENDPOINT", "IMGPIPE_REQUIRE_S3"); }

// SeaweedFS (scripts/services/seaweedfs): the second S3 server, the one with bucket lifecycle.
S3BlobStoreOptions SeaweedOptions(const std::string& unique) {
  S3BlobStoreOptions o = S3Options(unique);
  o.endpoint = Env("IMGPIPE_TEST_SEAWEEDFS_ENDPOINT");
  o.region = Env("IMGPIPE_TEST_SEAWEEDFS_REGION");
  o.access_key = Env("IMGPIPE_TEST_SEAWEEDFS_ACCESS_KEY");
  o.secret_key = Env("IMGPIPE_TEST_SEAWEEDFS_SECRET_KEY");
  return o;
}

Backend SeaweedBackend() {
  return S3ServerBackend("seaweedfs", SeaweedOptions, "IMGPIPE_TEST_SEAWEEDFS_ENDPOINT", "IMGPIPE_REQUIRE_SEAWEEDFS");
}

// The encryption decorator over a backend, owning what it uses: the contract must hold through it unchanged.
class EncryptedStack final : public BlobStore {
 public:
  static Result<std::unique_ptr<BlobStore>> Open(std::unique_ptr<BlobStore> inner, const std::string& unique) {
    auto stack = std::unique_ptr<EncryptedStack>(new EncryptedStack());
    auto keyring = std::filesystem::temp_directory_path() / ("imgpipe-contract-keyring-" + unique + ".json");
    IMGPIPE_ASSIGN_OR_RETURN(stack->keys_, LocalKeyProvider::Open(keyring.string(), stack->clock_));
    stack->inner_ = std::move(inner);
    stack->store_ = std::make_unique<EncryptedBlobStore>(*stack->inner_, *stack->keys_, stack->clock_);
    return std::unique_ptr<BlobStore>(std::move(stack));
  }
  Result<std::unique_ptr<BlobWriter>> OpenWrite(std::string_view c, std::string_view k) override {
    return store_->OpenWrite(c, k);
  }
  Result<std::unique_ptr<BlobReader>> OpenRead(std::string_view c, std::string_view k,
                                               std::optional<ByteRange> r = std::nullopt) override {
    return store_->OpenRead(c, k, r);
  }
  Result<BlobInfo> Stat(std::string_view c, std::string_view k) override { return store_->Stat(c, k); }
  Status Delete(std::string_view c, std::string_view k) override { return store_->Delete(c, k); }
  Result<ListPage> List(std::string_view c, std::string_view p, std::string_view cont = {},
                        size_t max = 1000) override {
    return store_->List(c, p, cont, max);
  }
  Result<BlobInfo> PutFile(std::string_view c, std::string_view k, const std::string& path) override {
    return store_->PutFile(c, k, path);
  }
  Result<BlobInfo> PutFileDeferred(std::string_view c, std::string_view k, const std::string& path,
                                   DeferredSync& deferred) override {
    return store_->PutFileDeferred(c, k, path, deferred);
  }
  Status Ping() override { return store_->Ping(); }
  std::string_view Name() const override { return store_->Name(); }

 private:
  EncryptedStack() = default;
  SystemClock clock_;
  std::unique_ptr<BlobStore> inner_;
  std::unique_ptr<LocalKeyProvider> keys_;
  std::unique_ptr<EncryptedBlobStore> store_;
};

Backend Encrypted(Backend b) {
  auto open_inner = b.open;
  b.name = "encrypted_" + b.name;
  b.open = [open_inner](const std::string& unique) -> Result<std::unique_ptr<BlobStore>> {
    IMGPIPE_ASSIGN_OR_RETURN(auto inner, open_inner(unique));
    return EncryptedStack::Open(std::move(inner), unique);
  };
  return b;
}

// A deterministic byte pattern, different per seed, so a mixed-up or partial object is detected.
std::string Pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s[i] = static_cast<char>(x);
  }
  return s;
}

size_t RssBytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

class BlobStoreContract : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    const Backend& b = GetParam();
    if (!b.missing.empty()) {
      if (b.required) FAIL() << b.name << " is required (IMGPIPE_REQUIRE_*=1) but " << b.missing;
      GTEST_SKIP() << b.missing << "; start it with scripts/services/"
                   << (b.name.find("azure") != std::string::npos ? "azurite" : "s3");
    }
    unique_ = HexEncode(RandomBytes(6));
    auto store = b.open(unique_);
    ASSERT_TRUE(store.ok()) << store.error().message;
    store_ = std::move(store).value();
  }
  void TearDown() override {
    if (GetParam().name.find("local") != std::string::npos) {
      std::filesystem::remove_all(std::filesystem::temp_directory_path() / ("imgpipe-contract-" + unique_));
    }
    std::error_code ec;
    auto keyring = std::filesystem::temp_directory_path() / ("imgpipe-contract-keyring-" + unique_ + ".json");
    std::filesystem::remove(keyring, ec);
    std::filesystem::remove(keyring.string() + ".lock", ec);
  }

  std::string ReadAll(std::string_view container, std::string_view key) {
    auto r = store_->GetAll(container, key, 512 << 20);
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? std::move(r).value() : std::string();
  }

  std::string unique_;
  std::unique_ptr<BlobStore> store_;
};

TEST_P(BlobStoreContract, ReadAfterWrite) {
  const std::string data = Pattern(1000, 1);
  auto info = store_->Put(kOriginals, "2026/11/26/a/original", data);
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(info->size, data.size());
  EXPECT_FALSE(info->etag.empty());
  EXPECT_EQ(ReadAll(kOriginals, "2026/11/26/a/original"), data);
  auto stat = store_->Stat(kOriginals, "2026/11/26/a/original");
  ASSERT_TRUE(stat.ok()) << stat.error().message;
  EXPECT_EQ(stat->size, data.size());
  EXPECT_EQ(stat->key, "2026/11/26/a/original");
  EXPECT_TRUE(store_->Ping().ok());
}

// A write whose name's sync is deferred is whole and readable as soon as it returns, and durable after Sync().
TEST_P(BlobStoreContract, DeferredWritesAreReadableAndSyncTogether) {
  DeferredSync deferred;
  const std::string first = Pattern(70000, 3);
  auto writer = store_->OpenWrite(kOriginals, "2026/11/26/d/first");
  ASSERT_TRUE(writer.ok()) << writer.error().message;
  ASSERT_TRUE((*writer)->Write(first).ok());
  auto info = (*writer)->CommitDeferred(deferred);
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(info->size, first.size());

  const size_t folders_after_first = deferred.folders().size();
  const std::string second = Pattern(5000, 4);
  const auto source = std::filesystem::temp_directory_path() / ("imgpipe-contract-deferred-" + unique_);
  std::ofstream(source, std::ios::binary) << second;
  auto put = store_->PutFileDeferred(kOriginals, "2026/11/26/d/second", source.string(), deferred);
  std::filesystem::remove(source);
  ASSERT_TRUE(put.ok()) << put.error().message;
  EXPECT_EQ(ReadAll(kOriginals, "2026/11/26/d/first"), first);
  EXPECT_EQ(ReadAll(kOriginals, "2026/11/26/d/second"), second);
  // The second object shares the first one's folder syncs (a cloud backend records none at all).
  EXPECT_EQ(deferred.folders().size(), folders_after_first);
  EXPECT_LE(deferred.files().size(), 2u);
  EXPECT_TRUE(deferred.Sync().ok());
}

TEST_P(BlobStoreContract, EmptyObject) {
  ASSERT_TRUE(store_->Put(kRenditions, "empty", "").ok());
  EXPECT_EQ(ReadAll(kRenditions, "empty"), "");
  auto r = store_->OpenRead(kRenditions, "empty", ByteRange{0, 10});
  ASSERT_TRUE(r.ok()) << r.error().message;
  char buf[4];
  auto n = (*r)->Read(std::span<char>(buf, sizeof buf));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
}

TEST_P(BlobStoreContract, OverwriteReplacesWhole) {
  ASSERT_TRUE(store_->Put(kOriginals, "k", Pattern(3 * kTestBlockBytes / 2, 1)).ok());
  auto first = store_->Stat(kOriginals, "k");
  const std::string second = Pattern(100, 2);
  ASSERT_TRUE(store_->Put(kOriginals, "k", second).ok());
  EXPECT_EQ(ReadAll(kOriginals, "k"), second);
  auto stat = store_->Stat(kOriginals, "k");
  ASSERT_TRUE(stat.ok() && first.ok());
  EXPECT_EQ(stat->size, 100u);
  EXPECT_NE(stat->etag, first->etag);
}

TEST_P(BlobStoreContract, MissingObjectsAreNotFound) {
  auto r = store_->OpenRead(kOriginals, "never/written");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kNotFound) << r.error().message;
  auto s = store_->Stat(kScripts, "never/written");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().kind, ErrorKind::kNotFound) << s.error().message;
  auto page = store_->List(kScripts, "");
  ASSERT_TRUE(page.ok()) << page.error().message;
  EXPECT_TRUE(page->items.empty());
}

TEST_P(BlobStoreContract, InvalidKeysAreRefusedBeforeAnyRequest) {
  for (const char* bad : {"", "/abs", "a//b", "a/../b", "sp ace", "q?x"}) {
    auto w = store_->OpenWrite(kOriginals, bad);
    ASSERT_FALSE(w.ok()) << bad;
    EXPECT_EQ(w.error().kind, ErrorKind::kInvalidArgument);
  }
}

TEST_P(BlobStoreContract, RangedReads) {
  const std::string data = Pattern(5000, 3);
  ASSERT_TRUE(store_->Put(kOriginals, "r", data).ok());
  auto read_range = [&](uint64_t off, uint64_t len) -> Result<std::string> {
    IMGPIPE_ASSIGN_OR_RETURN(auto reader, store_->OpenRead(kOriginals, "r", ByteRange{off, len}));
    EXPECT_EQ(reader->Info().size, data.size());
    std::string out;
    char buf[1024];
    for (;;) {
      IMGPIPE_ASSIGN_OR_RETURN(size_t n, reader->Read(std::span<char>(buf, sizeof buf)));
      if (n == 0) return out;
      out.append(buf, n);
    }
  };
  auto a = read_range(10, 100);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(*a, data.substr(10, 100));
  auto b = read_range(4990, 100);  // clamped at the end
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_EQ(*b, data.substr(4990));
  auto c = read_range(1000, std::numeric_limits<uint64_t>::max());
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(*c, data.substr(1000));
  auto d = read_range(5000, 1);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().kind, ErrorKind::kRangeNotSatisfiable) << d.error().message;
}

TEST_P(BlobStoreContract, ListPaginatesWithPrefixInKeyOrder) {
  std::vector<std::string> want;
  for (int i = 6; i >= 0; --i) {
    std::string key = "day/img" + std::to_string(i) + "/original";
    ASSERT_TRUE(store_->Put(kOriginals, key, std::string(static_cast<size_t>(i + 1), 'x')).ok());
    want.push_back(key);
  }
  ASSERT_TRUE(store_->Put(kOriginals, "other/img/original", "y").ok());
  ASSERT_TRUE(store_->Put(kOriginals, "dax", "z").ok());
  std::sort(want.begin(), want.end());

  std::vector<std::string> got;
  std::string token;
  int pages = 0;
  do {
    auto page = store_->List(kOriginals, "day/", token, 3);
    ASSERT_TRUE(page.ok()) << page.error().message;
    EXPECT_LE(page->items.size(), 3u);
    for (const auto& item : page->items) {
      got.push_back(item.key);
      EXPECT_EQ(item.size, item.key[7] - '0' + 1u) << item.key;
      EXPECT_EQ(item.container, kOriginals);
    }
    token = page->continuation;
    ASSERT_LT(++pages, 10);
  } while (!token.empty());
  EXPECT_EQ(got, want);
  EXPECT_GE(pages, 3);
}

TEST_P(BlobStoreContract, DeleteIsIdempotent) {
  ASSERT_TRUE(store_->Put(kRenditions, "d/thumb", "abc").ok());
  EXPECT_TRUE(store_->Delete(kRenditions, "d/thumb").ok());
  EXPECT_TRUE(store_->Delete(kRenditions, "d/thumb").ok());
  EXPECT_TRUE(store_->Delete(kRenditions, "never/there").ok());
  auto s = store_->Stat(kRenditions, "d/thumb");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().kind, ErrorKind::kNotFound);
}

TEST_P(BlobStoreContract, LargeObjectStreamsWithBoundedMemory) {
  constexpr size_t kTotal = 200u << 20;
  constexpr size_t kChunk = 1 << 20;
  const std::string chunk_a = Pattern(kChunk, 7), chunk_b = Pattern(kChunk, 8);
  const size_t rss_before = RssBytes();
  size_t rss_peak = rss_before;
  {
    auto w = store_->OpenWrite(kOriginals, "big/original");
    ASSERT_TRUE(w.ok()) << w.error().message;
    for (size_t done = 0; done < kTotal; done += kChunk) {
      auto s = (*w)->Write((done / kChunk) % 2 ? chunk_b : chunk_a);
      ASSERT_TRUE(s.ok()) << s.error().message;
      rss_peak = std::max(rss_peak, RssBytes());
    }
    auto info = (*w)->Commit();
    ASSERT_TRUE(info.ok()) << info.error().message;
    EXPECT_EQ(info->size, kTotal);
  }
  auto r = store_->OpenRead(kOriginals, "big/original");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ((*r)->Info().size, kTotal);
  std::string buf(kChunk, '\0');
  size_t total = 0;
  bool same = true;
  std::string pending;
  for (;;) {
    auto n = (*r)->Read(std::span<char>(buf.data(), buf.size()));
    ASSERT_TRUE(n.ok()) << n.error().message;
    if (*n == 0) break;
    // Compare against the pattern chunk by chunk without holding the object.
    for (size_t i = 0; i < *n; ++i) {
      size_t at = total + i;
      const std::string& want = (at / kChunk) % 2 ? chunk_b : chunk_a;
      if (buf[i] != want[at % kChunk]) same = false;
    }
    total += *n;
    rss_peak = std::max(rss_peak, RssBytes());
  }
  EXPECT_EQ(total, kTotal);
  EXPECT_TRUE(same);
  // A whole-object buffer would add 200 MB; a block or part buffer plus a read buffer stays far below 64 MB.
  EXPECT_LT(rss_peak - rss_before, 64u << 20) << "RSS grew by " << (rss_peak - rss_before) / (1 << 20) << " MiB";
  RecordProperty("rss_growth_mib", static_cast<int>((rss_peak - rss_before) >> 20));
  EXPECT_TRUE(store_->Delete(kOriginals, "big/original").ok());
}

TEST_P(BlobStoreContract, ConcurrentWritersOfOneKeyLeaveOneWholeObject) {
  constexpr int kWriters = 4;
  std::vector<std::string> contents;
  for (int i = 0; i < kWriters; ++i) contents.push_back(Pattern(kTestBlockBytes * 2 + 1000 * i, 100 + i));
  std::vector<std::thread> threads;
  std::vector<int> outcome(kWriters, -1);  // 1 committed, 0 refused with kConflict, -1 anything else
  for (int i = 0; i < kWriters; ++i) {
    threads.emplace_back([&, i] {
      auto w = store_->OpenWrite(kOriginals, "same/key");
      if (!w.ok()) return;
      // Interleave the writers' pieces so their uploads overlap.
      std::string_view data = contents[i];
      while (!data.empty()) {
        size_t n = std::min<size_t>(data.size(), 256 * 1024);
        if (!(*w)->Write(data.substr(0, n)).ok()) return;
        data.remove_prefix(n);
        std::this_thread::yield();
      }
      auto info = (*w)->Commit();
      outcome[i] = info.ok() ? 1 : info.error().kind == ErrorKind::kConflict ? 0 : -1;
    });
  }
  for (auto& t : threads) t.join();
  // Every writer commits whole or is refused cleanly. Local and S3 accept all (the last commit wins); Azure discards
  // the other writers' uncommitted blocks when one commits, so they get kConflict.
  std::vector<std::string> committed;
  for (int i = 0; i < kWriters; ++i) {
    EXPECT_NE(outcome[i], -1) << "writer " << i;
    if (outcome[i] == 1) committed.push_back(contents[i]);
  }
  ASSERT_FALSE(committed.empty());
  if (GetParam().name.find("azure") == std::string::npos) {
    EXPECT_EQ(committed.size(), static_cast<size_t>(kWriters));
  }
  std::string got = ReadAll(kOriginals, "same/key");
  EXPECT_NE(std::find(committed.begin(), committed.end(), got), committed.end())
      << "the object (" << got.size() << " bytes) is none of the committed writers' whole contents";
}

TEST_P(BlobStoreContract, ConcurrentWritersOfDifferentKeys) {
  constexpr int kWriters = 8;
  std::vector<std::thread> threads;
  std::vector<Status> results(kWriters);
  for (int i = 0; i < kWriters; ++i) {
    threads.emplace_back([&, i] {
      auto r = store_->Put(kRenditions, "k" + std::to_string(i), Pattern(kTestBlockBytes + 7 * i, 200 + i));
      results[i] = r.ok() ? Ok() : Status(r.error());
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kWriters; ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].error().message;
    EXPECT_EQ(ReadAll(kRenditions, "k" + std::to_string(i)), Pattern(kTestBlockBytes + 7 * i, 200 + i));
  }
}

TEST_P(BlobStoreContract, AbortedOrDestroyedWriterLeavesNothing) {
  const std::string earlier = Pattern(50, 9);
  ASSERT_TRUE(store_->Put(kOriginals, "kept", earlier).ok());
  {
    auto w = store_->OpenWrite(kOriginals, "aborted");
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Write(Pattern(kTestPartBytes * 2 + 5, 10)).ok());  // past one block and one part
    (*w)->Abort();
  }
  {
    auto w = store_->OpenWrite(kOriginals, "kept");
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Write(Pattern(kTestPartBytes * 2 + 5, 11)).ok());
    // destroyed without Commit
  }
  auto s = store_->Stat(kOriginals, "aborted");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(ReadAll(kOriginals, "kept"), earlier);
  auto page = store_->List(kOriginals, "");
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_EQ(page->items[0].key, "kept");
}

// A writer process killed with -9 mid-stream: nothing becomes visible under its key.
TEST_P(BlobStoreContract, WriterKilledMidStreamLeavesNothing) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    auto store = GetParam().open(unique_);
    if (!store.ok()) _exit(2);
    auto w = (*store)->OpenWrite(kOriginals, "killed/original");
    if (!w.ok()) _exit(3);
    if (!(*w)->Write(Pattern(kTestPartBytes * 2 + 5, 12)).ok()) _exit(4);
    char c = 'w';
    if (write(fds[1], &c, 1) != 1) _exit(5);
    for (;;) pause();  // killed here, mid-object
  }
  close(fds[1]);
  char c = 0;
  ASSERT_EQ(read(fds[0], &c, 1), 1) << "the writer process failed before writing";
  close(fds[0]);
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status));
  auto s = store_->Stat(kOriginals, "killed/original");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().kind, ErrorKind::kNotFound);
  auto page = store_->List(kOriginals, "killed/");
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->items.empty());
}

// Azure with a SAS token instead of the account key: a container SAS made by MakeAzureServiceSas is accepted by the
// service for reads, writes, lists and deletes in that container.
TEST(AzureSas, AContainerSasWorksForEveryOperation) {
  Backend b = AzureBackend();
  if (!b.missing.empty()) {
    if (b.required) FAIL() << "IMGPIPE_REQUIRE_AZURE=1 but " << b.missing;
    GTEST_SKIP() << b.missing;
  }
  AzureBlobStoreOptions with_key = AzureOptions(HexEncode(RandomBytes(6)));
  auto owner = AzureBlobStore::Open(with_key);
  ASSERT_TRUE(owner.ok()) << owner.error().message;
  ASSERT_TRUE((*owner)->Put(kOriginals, "by-owner", "x").ok());  // creates the container

  AzureServiceSas sas;
  sas.permissions = "racwdl";
  sas.expiry = "2099-01-01T00:00:00Z";
  sas.account = with_key.account;
  sas.container = with_key.container_prefix + std::string(kOriginals);
  auto token = MakeAzureServiceSas(sas, with_key.key);
  ASSERT_TRUE(token.ok());
  AzureBlobStoreOptions with_sas = with_key;
  with_sas.key.clear();
  with_sas.sas = *token;
  auto store = AzureBlobStore::Open(with_sas);
  ASSERT_TRUE(store.ok()) << store.error().message;
  ASSERT_TRUE((*store)->Put(kOriginals, "by-sas", Pattern(kTestBlockBytes * 2 + 3, 5)).ok());
  EXPECT_EQ((*store)->GetAll(kOriginals, "by-sas", 8 << 20).value(), Pattern(kTestBlockBytes * 2 + 3, 5));
  EXPECT_EQ((*store)->GetAll(kOriginals, "by-owner", 10).value(), "x");
  auto page = (*store)->List(kOriginals, "by-");
  ASSERT_TRUE(page.ok()) << page.error().message;
  EXPECT_EQ(page->items.size(), 2u);
  EXPECT_TRUE((*store)->Delete(kOriginals, "by-sas").ok());
  // The SAS names one container: another is refused, as a permission problem.
  auto other = (*store)->Put(kRenditions, "nope", "x");
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().kind, ErrorKind::kPermissionDenied) << other.error().message;
  // A tampered signature is refused too.
  with_sas.sas = token->substr(0, token->size() - 6) + "AAAA%3D";
  auto forged = AzureBlobStore::Open(with_sas);
  ASSERT_TRUE(forged.ok());
  auto denied = (*forged)->Stat(kOriginals, "by-owner");
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.error().kind, ErrorKind::kPermissionDenied) << denied.error().message;
}

// S3-only features: create-only writes and the bucket lifecycle rule.
class S3Features : public ::testing::Test {
 protected:
  void SetUp() override {
    Backend b = S3Backend();
    if (!b.missing.empty()) {
      if (b.required) FAIL() << "IMGPIPE_REQUIRE_S3=1 but " << b.missing;
      GTEST_SKIP() << b.missing;
    }
    options_ = S3Options(HexEncode(RandomBytes(6)));
  }
  S3BlobStoreOptions options_;
};

TEST_F(S3Features, CreateOnlyWritesRefuseToReplaceAnObject) {
  options_.create_only = true;
  auto store = S3BlobStore::Open(options_);
  ASSERT_TRUE(store.ok()) << store.error().message;
  ASSERT_TRUE((*store)->Put(kOriginals, "once", "first").ok());
  auto again = (*store)->Put(kOriginals, "once", "second");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().kind, ErrorKind::kConflict) << again.error().message;
  // The multipart path is conditional too.
  auto big = (*store)->Put(kOriginals, "once", Pattern(kTestPartBytes + 10, 1));
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().kind, ErrorKind::kConflict) << big.error().message;
  EXPECT_EQ((*store)->GetAll(kOriginals, "once", 1 << 20).value(), "first");
}

// Versity (scripts/services/s3) does not implement bucket lifecycle: the answer must say so, for `imgpipe doctor`
// and for serve's refusal to start with storage.s3.lifecycle.
TEST_F(S3Features, LifecycleIsRefusedAsNotImplementedWhereTheServerLacksIt) {
  if (Env("IMGPIPE_TEST_S3_LIFECYCLE") != "0") GTEST_SKIP() << "this S3 server implements bucket lifecycle";
  auto store = S3BlobStore::Open(options_);
  ASSERT_TRUE(store.ok());
  Status put = (*store)->PutLifecycle(S3RetentionLifecycleRules(std::chrono::hours(7 * 24), std::chrono::hours(36)));
  ASSERT_FALSE(put.ok());
  EXPECT_EQ(put.error().code, "not_implemented") << put.error().message;
}

// The bucket lifecycle rule on a server that implements it (SeaweedFS): installed, read back, replaced.
class S3Lifecycle : public ::testing::Test {
 protected:
  void SetUp() override {
    Backend b = SeaweedBackend();
    if (!b.missing.empty()) {
      if (b.required) FAIL() << "IMGPIPE_REQUIRE_SEAWEEDFS=1 but " << b.missing;
      GTEST_SKIP() << b.missing;
    }
    auto store = S3BlobStore::Open(SeaweedOptions(HexEncode(RandomBytes(6))));
    ASSERT_TRUE(store.ok()) << store.error().message;
    store_ = std::move(*store);
  }
  const S3LifecycleRule* Find(const std::vector<S3LifecycleRule>& rules, std::string_view prefix) {
    for (const auto& r : rules) {
      if (r.prefix == prefix && r.expiration_days > 0) return &r;
    }
    return nullptr;
  }
  std::unique_ptr<S3BlobStore> store_;
};

TEST_F(S3Lifecycle, RetentionRulesAreInstalledAndReadBack) {
  using std::chrono::hours;
  // A bucket without a configuration has no rules (not an error).
  ASSERT_TRUE(store_->Put(kOriginals, "x", "y").ok());
  auto none = store_->GetLifecycle();
  ASSERT_TRUE(none.ok()) << none.error().message;
  EXPECT_TRUE(none->empty());

  const auto wanted = S3RetentionLifecycleRules(hours(7 * 24), hours(36));
  ASSERT_TRUE(store_->PutLifecycle(wanted).ok());
  auto back = store_->GetLifecycle();
  ASSERT_TRUE(back.ok()) << back.error().message;
  const S3LifecycleRule* originals = Find(*back, "originals/");
  ASSERT_NE(originals, nullptr) << "no expiring rule for originals/ read back";
  EXPECT_EQ(originals->expiration_days, 8);  // 7 days of retention, rounded up, plus one
  EXPECT_TRUE(originals->enabled);
  const S3LifecycleRule* renditions = Find(*back, "renditions/");
  ASSERT_NE(renditions, nullptr) << "no expiring rule for renditions/ read back";
  EXPECT_EQ(renditions->expiration_days, 3);
  for (const auto& f : CompareS3Lifecycle(*back, wanted)) ADD_FAILURE() << f.message;

  // Retention changed: installing again replaces the rules, it does not add to them.
  const auto longer = S3RetentionLifecycleRules(hours(30 * 24), std::chrono::seconds(0));
  ASSERT_TRUE(store_->PutLifecycle(longer).ok());
  back = store_->GetLifecycle();
  ASSERT_TRUE(back.ok()) << back.error().message;
  ASSERT_NE(Find(*back, "originals/"), nullptr);
  EXPECT_EQ(Find(*back, "originals/")->expiration_days, 31);
  EXPECT_EQ(Find(*back, "renditions/"), nullptr) << "the old renditions rule survived the replacement";
  EXPECT_TRUE(CompareS3Lifecycle(*back, longer).empty());
  // What the old retention would say of the new rules: originals are now late (not early), renditions unexpired.
  auto findings = CompareS3Lifecycle(*back, wanted);
  ASSERT_FALSE(findings.empty());
  for (const auto& f : findings) EXPECT_FALSE(f.expires_early) << f.message;
}

INSTANTIATE_TEST_SUITE_P(Backends, BlobStoreContract,
                         ::testing::Values(LocalBackend(), AzureBackend(), S3Backend(), SeaweedBackend(),
                                           Encrypted(LocalBackend()), Encrypted(AzureBackend()),
                                           Encrypted(S3Backend())),
                         [](const ::testing::TestParamInfo<Backend>& info) { return info.param.name; });

}  // namespace
}  // namespace imgpipe
