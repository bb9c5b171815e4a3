#include "storage/local/local_blob_store.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace imgpipe {
namespace {

namespace fs = std::filesystem;

class LocalBlobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "imgpipe-blob-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    base_ = tmpl;
    root_ = base_ + "/root";
    auto store = LocalBlobStore::Open(root_);
    ASSERT_TRUE(store.ok()) << store.error().message;
    store_ = std::move(store).value();
  }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    fs::remove_all(base_, ec);
  }

  std::string Get(std::string_view container, std::string_view key) {
    auto r = store_->GetAll(container, key, 1 << 30);
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? *r : std::string();
  }

  std::string ReadRange(std::string_view key, ByteRange range) {
    auto reader = store_->OpenRead(kOriginals, key, range);
    EXPECT_TRUE(reader.ok()) << reader.error().message;
    if (!reader.ok()) return {};
    std::string out;
    char buf[7];  // odd size so reads end mid-range
    for (;;) {
      auto n = (*reader)->Read(std::span<char>(buf, sizeof buf));
      EXPECT_TRUE(n.ok());
      if (!n.ok() || *n == 0) break;
      out.append(buf, *n);
    }
    return out;
  }

  size_t TempFileCount() const {
    size_t n = 0;
    for ([[maybe_unused]] auto& e : fs::directory_iterator(store_->TempDir())) ++n;
    return n;
  }

  std::string base_;
  std::string root_;
  std::unique_ptr<LocalBlobStore> store_;
};

TEST_F(LocalBlobStoreTest, ReadAfterWrite) {
  auto info = store_->Put(kOriginals, "ab/cd/image-1.jpg", "hello world");
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(info->size, 11u);
  EXPECT_EQ(info->key, "ab/cd/image-1.jpg");
  EXPECT_EQ(info->container, "originals");
  EXPECT_FALSE(info->etag.empty());
  EXPECT_EQ(Get(kOriginals, "ab/cd/image-1.jpg"), "hello world");

  auto stat = store_->Stat(kOriginals, "ab/cd/image-1.jpg");
  ASSERT_TRUE(stat.ok());
  EXPECT_EQ(stat->size, 11u);
  EXPECT_EQ(stat->etag, info->etag);
  EXPECT_EQ(stat->created, info->created);

  auto path = store_->LocalPath(kOriginals, "ab/cd/image-1.jpg");
  ASSERT_TRUE(path.has_value());
  std::ifstream file(*path, std::ios::binary);
  std::string on_disk((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  EXPECT_EQ(on_disk, "hello world");
  EXPECT_EQ(TempFileCount(), 0u);
}

TEST_F(LocalBlobStoreTest, OverwriteReplacesContentAndEtag) {
  auto first = store_->Put(kRenditions, "k", "first version");
  ASSERT_TRUE(first.ok());
  auto second = store_->Put(kRenditions, "k", "v2");
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(Get(kRenditions, "k"), "v2");
  EXPECT_NE(first->etag, second->etag);
  EXPECT_EQ(store_->Stat(kRenditions, "k")->size, 2u);
}

TEST_F(LocalBlobStoreTest, MissingObjectsAreNotFound) {
  EXPECT_EQ(store_->Stat(kOriginals, "nope").error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(store_->OpenRead(kOriginals, "nope").error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(store_->GetAll(kOriginals, "a/b/c", 100).error().kind, ErrorKind::kNotFound);
  EXPECT_FALSE(store_->LocalPath(kOriginals, "nope").has_value());
  // A folder of objects is not itself an object, and a path through an object is not one either.
  ASSERT_TRUE(store_->Put(kOriginals, "dir/obj", "x").ok());
  EXPECT_EQ(store_->Stat(kOriginals, "dir").error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(store_->OpenRead(kOriginals, "dir").error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(store_->Stat(kOriginals, "dir/obj/more").error().kind, ErrorKind::kNotFound);
  EXPECT_FALSE(store_->LocalPath(kOriginals, "dir").has_value());
}

TEST_F(LocalBlobStoreTest, RangesAreClampedAndCheckedAgainstTheSize) {
  std::string data;
  for (int i = 0; i < 100; ++i) data.push_back(static_cast<char>('A' + i % 26));
  ASSERT_TRUE(store_->Put(kOriginals, "r", data).ok());

  EXPECT_EQ(ReadRange("r", {0, 10}), data.substr(0, 10));
  EXPECT_EQ(ReadRange("r", {40, 20}), data.substr(40, 20));
  EXPECT_EQ(ReadRange("r", {90, 10}), data.substr(90));
  EXPECT_EQ(ReadRange("r", {95, 100}), data.substr(95));            // clamped to the end
  EXPECT_EQ(ReadRange("r", {99, UINT64_MAX}), data.substr(99));     // "to the end", no overflow
  EXPECT_EQ(ReadRange("r", {0, UINT64_MAX}), data);
  EXPECT_EQ(ReadRange("r", {10, 0}), "");

  auto past = store_->OpenRead(kOriginals, "r", ByteRange{100, 1});
  ASSERT_FALSE(past.ok());
  EXPECT_EQ(past.error().kind, ErrorKind::kRangeNotSatisfiable);
  EXPECT_EQ(store_->OpenRead(kOriginals, "r", ByteRange{UINT64_MAX, 1}).error().kind,
            ErrorKind::kRangeNotSatisfiable);

  auto reader = store_->OpenRead(kOriginals, "r", ByteRange{40, 20});
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ((*reader)->Info().size, 100u);  // Info describes the object, not the range

  ASSERT_TRUE(store_->Put(kOriginals, "empty", "").ok());
  EXPECT_EQ(ReadRange("empty", {0, 10}), "");
  EXPECT_EQ(store_->OpenRead(kOriginals, "empty", ByteRange{1, 1}).error().kind, ErrorKind::kRangeNotSatisfiable);
}

TEST_F(LocalBlobStoreTest, ListPagesThroughEveryKeyOnceInOrder) {
  std::set<std::string> expected;
  for (int i = 0; i < 2500; ++i) {
    // Spread over folders of different depths so pages end inside folders.
    std::string key = "p/" + std::to_string(i % 7) + (i % 3 == 0 ? "/deep/" : "/") + "k" + std::to_string(i);
    ASSERT_TRUE(store_->Put(kOriginals, key, std::to_string(i)).ok());
    expected.insert(key);
  }
  // Keys outside the prefix, sorting before and after it.
  ASSERT_TRUE(store_->Put(kOriginals, "a/outside", "x").ok());
  ASSERT_TRUE(store_->Put(kOriginals, "q/outside", "x").ok());
  ASSERT_TRUE(store_->Put(kOriginals, "p-sibling", "x").ok());

  std::vector<std::string> seen;
  std::string continuation;
  std::vector<size_t> page_sizes;
  for (int pages = 0; pages < 10; ++pages) {
    auto page = store_->List(kOriginals, "p/", continuation, 1000);
    ASSERT_TRUE(page.ok()) << page.error().message;
    page_sizes.push_back(page->items.size());
    for (auto& item : page->items) {
      seen.push_back(item.key);
      EXPECT_EQ(item.size, Get(kOriginals, item.key).size());
    }
    continuation = page->continuation;
    if (continuation.empty()) break;
  }
  EXPECT_EQ(page_sizes, (std::vector<size_t>{1000, 1000, 500}));
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  EXPECT_EQ(std::vector<std::string>(expected.begin(), expected.end()), seen);  // no gaps, no duplicates
}

TEST_F(LocalBlobStoreTest, ListOrderIsByteOrderOfWholeKeys) {
  // '/' sorts between '.' and '0', so a folder's keys interleave with sibling files by byte order.
  std::vector<std::string> keys = {"a-c", "a/b", "a/b.x", "a0", "a.b", "a", "b", "a/c/d", "aa"};
  keys.erase(std::find(keys.begin(), keys.end(), "a"));  // "a" and "a/..." cannot coexist locally
  for (auto& k : keys) ASSERT_TRUE(store_->Put(kScripts, k, k).ok()) << k;
  std::sort(keys.begin(), keys.end());

  std::vector<std::string> listed;
  std::string continuation;
  do {
    auto page = store_->List(kScripts, "", continuation, 2);
    ASSERT_TRUE(page.ok());
    for (auto& item : page->items) listed.push_back(item.key);
    continuation = page->continuation;
  } while (!continuation.empty());
  EXPECT_EQ(listed, keys);

  // Prefixes that end mid-segment match across folders and files alike.
  auto page = store_->List(kScripts, "a/", "", 100);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->items.size(), 3u);
  EXPECT_EQ(page->items[0].key, "a/b");
  EXPECT_EQ(page->items[2].key, "a/c/d");
  page = store_->List(kScripts, "a", "", 100);
  EXPECT_EQ(page->items.size(), keys.size() - 1);  // all but "b"
  page = store_->List(kScripts, "zz", "", 100);
  EXPECT_TRUE(page->items.empty());
  EXPECT_TRUE(page->continuation.empty());
}

TEST_F(LocalBlobStoreTest, ListOfAContainerNeverWrittenIsEmpty) {
  auto page = store_->List("tenant-7", "", "", 10);
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->items.empty());
  EXPECT_EQ(store_->List(kOriginals, "", "", 0).error().kind, ErrorKind::kInvalidArgument);
}

TEST_F(LocalBlobStoreTest, HostileKeysAndContainersAreRefused) {
  const std::vector<std::string> hostile_keys = {
      "",          "..",          ".",          "../x",       "a/../../x", "a/./b",     "/etc/passwd",
      "a//b",      "a/",          "a\\b",       "..\\x",      std::string("a\0b", 3),  "a\nb",
      "a\x7f",     "a b",         "a:b",        "%2e%2e/x",   "a/..",      "\xc3\xa9",  std::string(1025, 'a'),
      std::string(256, 'b') + "/c",
  };
  std::string source = base_ + "/source";
  std::ofstream(source) << "data";
  for (const auto& key : hostile_keys) {
    SCOPED_TRACE(testing::Message() << "key of " << key.size() << " bytes");
    EXPECT_EQ(store_->OpenWrite(kOriginals, key).error().kind, ErrorKind::kInvalidArgument);
    EXPECT_EQ(store_->OpenRead(kOriginals, key).error().kind, ErrorKind::kInvalidArgument);
    EXPECT_EQ(store_->Stat(kOriginals, key).error().kind, ErrorKind::kInvalidArgument);
    EXPECT_EQ(store_->Delete(kOriginals, key).error().kind, ErrorKind::kInvalidArgument);
    EXPECT_EQ(store_->PutFile(kOriginals, key, source).error().kind, ErrorKind::kInvalidArgument);
    EXPECT_EQ(store_->Put(kOriginals, key, "x").error().kind, ErrorKind::kInvalidArgument);
    EXPECT_FALSE(store_->LocalPath(kOriginals, key).has_value());
  }
  const std::vector<std::string> hostile_containers = {"", "..", ".tmp", "a/b", "Originals", "ab", "x y",
                                                       std::string(64, 'a'), "../root"};
  for (const auto& container : hostile_containers) {
    SCOPED_TRACE(container);
    EXPECT_EQ(store_->OpenWrite(container, "k").error().kind, ErrorKind::kInvalidArgument);
    EXPECT_EQ(store_->Stat(container, "k").error().kind, ErrorKind::kInvalidArgument);
    EXPECT_EQ(store_->List(container, "", "", 10).error().kind, ErrorKind::kInvalidArgument);
  }
  // Nothing was written anywhere: the source file is untouched and the base folder holds only it and the root.
  EXPECT_TRUE(fs::exists(source));
  std::set<std::string> in_base;
  for (auto& e : fs::directory_iterator(base_)) in_base.insert(e.path().filename().string());
  EXPECT_EQ(in_base, (std::set<std::string>{"root", "source"}));
  EXPECT_EQ(TempFileCount(), 0u);
}

TEST(ValidateBlobKeyTest, AcceptsTheDocumentedShape) {
  EXPECT_TRUE(ValidateBlobKey("a").ok());
  EXPECT_TRUE(ValidateBlobKey("01HZX/thumb-256.jpg").ok());
  EXPECT_TRUE(ValidateBlobKey("a/b_c/d.e-f/...").ok());  // "..." is a name, not a traversal
  EXPECT_TRUE(ValidateBlobKey(std::string(1024, 'k')).ok());
  auto bad = ValidateBlobKey("a/../b");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("\"..\""), std::string::npos) << bad.error().message;
  auto control = ValidateBlobKey("a\x01");
  ASSERT_FALSE(control.ok());
  EXPECT_NE(control.error().message.find("byte 0x01"), std::string::npos) << control.error().message;
}

TEST_F(LocalBlobStoreTest, ConcurrentWritersToOneKeyLeaveOneWholeObject) {
  constexpr int kWriters = 6;
  constexpr size_t kSize = 2 << 20;
  constexpr size_t kChunk = 64 * 1024;
  std::atomic<bool> done{false};
  std::atomic<int> torn_reads{0};
  std::thread reader([&] {
    while (!done) {
      auto r = store_->GetAll(kOriginals, "same", kSize);
      if (!r.ok()) continue;  // not written yet
      const std::string& s = *r;
      if (s.size() != kSize || std::count(s.begin(), s.end(), s[0]) != static_cast<long>(kSize)) ++torn_reads;
    }
  });
  std::vector<std::thread> writers;
  std::atomic<int> failures{0};
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      std::string chunk(kChunk, static_cast<char>('a' + w));
      auto writer = store_->OpenWrite(kOriginals, "same");
      if (!writer.ok()) return void(++failures);
      for (size_t written = 0; written < kSize; written += kChunk) {
        if (!(*writer)->Write(chunk).ok()) return void(++failures);
      }
      if (!(*writer)->Commit().ok()) ++failures;
    });
  }
  for (auto& t : writers) t.join();
  done = true;
  reader.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(torn_reads, 0);
  std::string final_object = Get(kOriginals, "same");
  ASSERT_EQ(final_object.size(), kSize);
  EXPECT_GE(final_object[0], 'a');
  EXPECT_LT(final_object[0], 'a' + kWriters);
  EXPECT_EQ(std::count(final_object.begin(), final_object.end(), final_object[0]), static_cast<long>(kSize));
  EXPECT_EQ(TempFileCount(), 0u);
}

// Delete prunes folders that look empty while a writer may be about to rename into them; the writer must recreate
// them and still succeed. Two threads each write and delete their own key in one folder, so the folder is emptied
// and recreated over and over under the other's feet.
TEST_F(LocalBlobStoreTest, WritesSucceedWhileSiblingsAreDeleted) {
  constexpr int kRounds = 300;
  std::atomic<int> failures{0};
  auto churn = [&](std::string key) {
    for (int i = 0; i < kRounds; ++i) {
      auto put = store_->Put(kRenditions, key, "x");
      if (!put.ok()) {
        ++failures;
        ADD_FAILURE() << put.error().message;
      }
      auto del = store_->Delete(kRenditions, key);
      if (!del.ok()) {
        ++failures;
        ADD_FAILURE() << del.error().message;
      }
    }
    if (!store_->Put(kRenditions, key, "last").ok()) ++failures;
  };
  std::thread a(churn, "d/x/a");
  std::thread b(churn, "d/x/b");
  a.join();
  b.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(Get(kRenditions, "d/x/a"), "last");
  EXPECT_EQ(Get(kRenditions, "d/x/b"), "last");
}

TEST_F(LocalBlobStoreTest, AbortLeavesNothingAndKeepsTheEarlierObject) {
  auto writer = store_->OpenWrite(kOriginals, "fresh/key");
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Write("partial").ok());
  EXPECT_EQ(TempFileCount(), 1u);
  (*writer)->Abort();
  EXPECT_EQ(store_->Stat(kOriginals, "fresh/key").error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(TempFileCount(), 0u);
  EXPECT_FALSE((*writer)->Write("more").ok());
  EXPECT_FALSE((*writer)->Commit().ok());
  EXPECT_EQ(store_->Stat(kOriginals, "fresh/key").error().kind, ErrorKind::kNotFound);

  ASSERT_TRUE(store_->Put(kOriginals, "kept", "original").ok());
  auto replacement = store_->OpenWrite(kOriginals, "kept");
  ASSERT_TRUE(replacement.ok());
  ASSERT_TRUE((*replacement)->Write("replacement that is never committed").ok());
  EXPECT_EQ(Get(kOriginals, "kept"), "original");  // not visible before Commit
  (*replacement)->Abort();
  EXPECT_EQ(Get(kOriginals, "kept"), "original");
}

TEST_F(LocalBlobStoreTest, WriterDestroyedMidWriteLeavesNothing) {
  {
    auto writer = store_->OpenWrite(kOriginals, "x/y/z");
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Write(std::string(1 << 20, 'z')).ok());
    EXPECT_EQ(TempFileCount(), 1u);
  }
  EXPECT_EQ(store_->Stat(kOriginals, "x/y/z").error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(TempFileCount(), 0u);
  EXPECT_FALSE(fs::exists(root_ + "/originals/x"));
}

TEST_F(LocalBlobStoreTest, WriterCannotCommitTwice) {
  auto writer = store_->OpenWrite(kOriginals, "once");
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Write("1").ok());
  ASSERT_TRUE((*writer)->Commit().ok());
  EXPECT_FALSE((*writer)->Write("2").ok());
  EXPECT_FALSE((*writer)->Commit().ok());
  (*writer)->Abort();  // after a commit: does not remove the object
  EXPECT_EQ(Get(kOriginals, "once"), "1");
}

// Deterministic bytes so the 64 MiB object can be checked without holding a copy.
char PatternByte(uint64_t i) { return static_cast<char>((i * 2654435761u) >> 13); }

TEST_F(LocalBlobStoreTest, LargeObjectStreamsThroughBoundedBuffers) {
  constexpr uint64_t kSize = 64ull << 20;
  constexpr size_t kChunk = 1 << 20;
  auto writer = store_->OpenWrite(kOriginals, "big/object");
  ASSERT_TRUE(writer.ok());
  std::string chunk(kChunk, '\0');
  for (uint64_t offset = 0; offset < kSize; offset += kChunk) {
    for (size_t i = 0; i < kChunk; ++i) chunk[i] = PatternByte(offset + i);
    ASSERT_TRUE((*writer)->Write(chunk).ok());
    // The writer holds at most its 256 KiB buffer: everything else is already in the temp file.
    uint64_t on_disk = 0;
    for (auto& e : fs::directory_iterator(store_->TempDir())) on_disk += e.file_size();
    EXPECT_GE(on_disk + 256 * 1024, offset + kChunk);
  }
  // Small writes are gathered, and still end up on disk in order.
  ASSERT_TRUE((*writer)->Write("tail").ok());
  auto info = (*writer)->Commit();
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(info->size, kSize + 4);

  EXPECT_EQ(store_->GetAll(kOriginals, "big/object", kSize).error().kind, ErrorKind::kTooLarge);

  auto reader = store_->OpenRead(kOriginals, "big/object");
  ASSERT_TRUE(reader.ok());
  std::vector<char> buf(300 * 1000);  // not a divisor of the chunk size
  uint64_t pos = 0;
  uint64_t mismatches = 0;
  std::string tail;
  for (;;) {
    auto n = (*reader)->Read(buf);
    ASSERT_TRUE(n.ok());
    if (*n == 0) break;
    for (size_t i = 0; i < *n; ++i, ++pos) {
      if (pos < kSize) {
        mismatches += buf[i] != PatternByte(pos);
      } else {
        tail.push_back(buf[i]);
      }
    }
  }
  EXPECT_EQ(pos, kSize + 4);
  EXPECT_EQ(mismatches, 0u);
  EXPECT_EQ(tail, "tail");
}

TEST_F(LocalBlobStoreTest, ChunksOfEverySizeAroundTheWriteBufferKeepTheirOrder) {
  // The writer gathers chunks in a 256 KiB buffer and writes a chunk that would overflow it together with the
  // gathered bytes in one writev; these sizes land before, on and across that edge, and past the 2 MiB steps at
  // which it starts the write-back early.
  const std::vector<size_t> sizes = {160, 65552,   196656,      1, (256 << 10) - 161, 256 << 10,  (256 << 10) + 1,
                                     3,   1 << 20, 100, (3 << 20) + 7, 0,                 5000, (256 << 10) - 5000};
  auto writer = store_->OpenWrite(kOriginals, "mixed");
  ASSERT_TRUE(writer.ok());
  std::string expected;
  for (size_t size : sizes) {
    std::string chunk(size, '\0');
    for (size_t i = 0; i < size; ++i) chunk[i] = PatternByte(expected.size() + i);
    ASSERT_TRUE((*writer)->Write(chunk).ok()) << size;
    expected += chunk;
  }
  auto info = (*writer)->Commit();
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(info->size, expected.size());
  EXPECT_EQ(Get(kOriginals, "mixed"), expected);
}

TEST_F(LocalBlobStoreTest, ReaderKeepsTheObjectItOpened) {
  ASSERT_TRUE(store_->Put(kOriginals, "snap", "old content").ok());
  auto reader = store_->OpenRead(kOriginals, "snap");
  ASSERT_TRUE(reader.ok());
  ASSERT_TRUE(store_->Put(kOriginals, "snap", "new").ok());
  ASSERT_TRUE(store_->Delete(kOriginals, "snap").ok());
  char buf[64];
  auto n = (*reader)->Read(std::span<char>(buf, sizeof buf));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf, *n), "old content");
}

TEST_F(LocalBlobStoreTest, DeleteIsIdempotentAndPrunesEmptyFolders) {
  ASSERT_TRUE(store_->Put(kOriginals, "a/b/c", "1").ok());
  ASSERT_TRUE(store_->Put(kOriginals, "a/d", "2").ok());
  ASSERT_TRUE(store_->Delete(kOriginals, "a/b/c").ok());
  EXPECT_EQ(store_->Stat(kOriginals, "a/b/c").error().kind, ErrorKind::kNotFound);
  EXPECT_FALSE(fs::exists(root_ + "/originals/a/b"));
  EXPECT_TRUE(fs::exists(root_ + "/originals/a"));  // still holds a/d
  EXPECT_TRUE(store_->Delete(kOriginals, "a/b/c").ok());
  EXPECT_TRUE(store_->Delete(kOriginals, "a").ok());  // a folder, not an object: nothing to delete
  EXPECT_EQ(Get(kOriginals, "a/d"), "2");
  ASSERT_TRUE(store_->Delete(kOriginals, "a/d").ok());
  EXPECT_FALSE(fs::exists(root_ + "/originals/a"));
  EXPECT_TRUE(fs::exists(root_ + "/originals"));  // the container stays
}

TEST_F(LocalBlobStoreTest, ObjectAndFolderUnderOneNameConflict) {
  ASSERT_TRUE(store_->Put(kOriginals, "name", "file").ok());
  EXPECT_EQ(store_->Put(kOriginals, "name/child", "x").error().kind, ErrorKind::kConflict);
  ASSERT_TRUE(store_->Put(kOriginals, "folder/child", "x").ok());
  EXPECT_EQ(store_->Put(kOriginals, "folder", "x").error().kind, ErrorKind::kConflict);
  EXPECT_EQ(Get(kOriginals, "name"), "file");
  EXPECT_EQ(Get(kOriginals, "folder/child"), "x");
  EXPECT_EQ(TempFileCount(), 0u);
}

TEST_F(LocalBlobStoreTest, PutFileRenamesOnTheSameFilesystem) {
  std::string source = base_ + "/upload.bin";
  std::ofstream(source, std::ios::binary) << "spooled upload";
  auto info = store_->PutFile(kOriginals, "up/1", source);
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(info->size, 14u);
  EXPECT_EQ(Get(kOriginals, "up/1"), "spooled upload");
  EXPECT_FALSE(fs::exists(source));  // consumed by the rename

  EXPECT_EQ(store_->PutFile(kOriginals, "up/2", base_ + "/missing").error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(store_->PutFile(kOriginals, "up/2", base_).error().kind, ErrorKind::kInvalidArgument);  // a folder
}

// A deferred write leaves its syncs to the batch: the file, its folder and the parent of each folder it created are
// recorded (a folder once for many objects), and the object is whole and readable at once.
TEST_F(LocalBlobStoreTest, DeferredWritesRecordTheirFoldersForOneSync) {
  DeferredSync deferred;
  for (int i = 0; i < 3; ++i) {
    std::string source = base_ + "/deferred" + std::to_string(i);
    std::ofstream(source, std::ios::binary) << "deferred " << i;
    ASSERT_TRUE(store_->PutFileDeferred(kOriginals, "day/" + std::to_string(i), source, deferred).ok());
    EXPECT_FALSE(fs::exists(source));
  }
  auto writer = store_->OpenWrite(kRenditions, "day/r");
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Write("rendition").ok());
  ASSERT_TRUE((*writer)->CommitDeferred(deferred).ok());
  EXPECT_EQ(deferred.folders(), (std::set<std::string>{root_ + "/originals", root_ + "/originals/day",
                                                        root_ + "/renditions", root_ + "/renditions/day"}));
  EXPECT_EQ(deferred.files(), (std::set<std::string>{root_ + "/originals/day/0", root_ + "/originals/day/1",
                                                      root_ + "/originals/day/2", root_ + "/renditions/day/r"}));
  EXPECT_EQ(Get(kOriginals, "day/1"), "deferred 1");
  EXPECT_EQ(Get(kRenditions, "day/r"), "rendition");
  EXPECT_TRUE(deferred.Sync().ok());
  EXPECT_EQ(TempFileCount(), 0u);

  // A folder that cannot be synced is an error naming it.
  DeferredSync gone;
  gone.AddFolder(base_ + "/no-such-folder");
  Status synced = gone.Sync();
  ASSERT_FALSE(synced.ok());
  EXPECT_EQ(synced.error().kind, ErrorKind::kUnavailable);
  EXPECT_NE(synced.error().message.find("no-such-folder"), std::string::npos);
}

// The default BlobStore::PutFile is what remote backends use; it must copy faithfully too.
TEST_F(LocalBlobStoreTest, DefaultPutFileStreamsTheFile) {
  std::string source = base_ + "/copy.bin";
  std::string content(3 << 20, 'c');
  content[12345] = 'X';
  std::ofstream(source, std::ios::binary) << content;
  auto info = store_->BlobStore::PutFile(kOriginals, "copied", source);
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(Get(kOriginals, "copied"), content);
  EXPECT_TRUE(fs::exists(source));
}

TEST_F(LocalBlobStoreTest, GetAllRefusesObjectsOverTheCap) {
  ASSERT_TRUE(store_->Put(kOriginals, "ten", "0123456789").ok());
  EXPECT_EQ(store_->GetAll(kOriginals, "ten", 9).error().kind, ErrorKind::kTooLarge);
  EXPECT_EQ(*store_->GetAll(kOriginals, "ten", 10), "0123456789");
}

TEST_F(LocalBlobStoreTest, OpenRemovesOnlyStaleTempFiles) {
  std::string stale = store_->TempDir() + "/w-stale1";
  std::string fresh = store_->TempDir() + "/w-fresh1";
  std::ofstream(stale) << "crashed writer";
  std::ofstream(fresh) << "live writer of another process";
  struct timespec times[2] = {{::time(nullptr) - 2 * 3600, 0}, {::time(nullptr) - 2 * 3600, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, stale.c_str(), times, 0), 0);

  auto reopened = LocalBlobStore::Open(root_);
  ASSERT_TRUE(reopened.ok());
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(fresh));
}

TEST_F(LocalBlobStoreTest, CreatedTimeComesFromTheInjectedClock) {
  FakeClock clock(FromUnixMicros(1'700'000'000'000'000));
  auto store = LocalBlobStore::Open(root_, &clock);
  ASSERT_TRUE(store.ok());
  auto info = (*store)->Put(kOriginals, "timed", "x");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->created, clock.Now());
  clock.Advance(std::chrono::hours(24 * 8));
  ASSERT_TRUE((*store)->Put(kOriginals, "later", "y").ok());
  EXPECT_EQ((*store)->Stat(kOriginals, "later")->created, clock.Now());
  EXPECT_EQ((*store)->Stat(kOriginals, "timed")->created, FromUnixMicros(1'700'000'000'000'000));
}

TEST_F(LocalBlobStoreTest, NewContainersAreCreatedOnFirstWrite) {
  ASSERT_TRUE(store_->Put("tenant-42", "k", "v").ok());
  EXPECT_EQ(Get("tenant-42", "k"), "v");
  EXPECT_EQ(store_->List("tenant-42", "", "", 10)->items.size(), 1u);
}

TEST_F(LocalBlobStoreTest, PingFailsWhenTheRootIsUnusable) {
  EXPECT_TRUE(store_->Ping().ok());
  fs::remove_all(store_->TempDir());
  auto ping = store_->Ping();
  ASSERT_FALSE(ping.ok());
  EXPECT_EQ(ping.error().kind, ErrorKind::kUnavailable);
  EXPECT_FALSE(store_->OpenWrite(kOriginals, "k").ok());
}

TEST(LocalBlobStoreOpenTest, RefusesARootThatIsAFile) {
  std::string tmpl = (fs::temp_directory_path() / "imgpipe-blobfile-XXXXXX").string();
  int fd = ::mkstemp(tmpl.data());
  ASSERT_GE(fd, 0);
  ::close(fd);
  auto store = LocalBlobStore::Open(tmpl);
  EXPECT_FALSE(store.ok());
  EXPECT_EQ(store.error().kind, ErrorKind::kUnavailable);
  ::unlink(tmpl.c_str());
}

}  // namespace
}  // namespace imgpipe
