#include "scripts/script_store.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "storage/local/local_blob_store.hpp"

namespace imgpipe {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class ScriptStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("imgpipe-scripts-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    auto blobs = LocalBlobStore::Open(root_.string());
    ASSERT_TRUE(blobs.ok()) << blobs.error().message;
    blobs_ = std::move(blobs).value();
    store_ = std::make_unique<ScriptStore>(*blobs_, clock_);
  }
  void TearDown() override {
    store_.reset();
    blobs_.reset();
    fs::remove_all(root_);
  }

  static std::map<std::string, std::string> Script(int width) {
    return {{"pipeline.toml", "description = \"w" + std::to_string(width) + "\"\n[[steps]]\nop = \"thumbnail\"\nwidth = " +
                                  std::to_string(width) + "\n[[steps]]\nop = \"lua\"\nfile = \"l.lua\"\n"},
            {"l.lua", "run.label('w', '" + std::to_string(width) + "')\n"}};
  }

  fs::path root_;
  SystemClock clock_;
  std::unique_ptr<LocalBlobStore> blobs_;
  std::unique_ptr<ScriptStore> store_;
};

TEST_F(ScriptStoreTest, PushStoresAContentAddressedVersionAndMovesCurrent) {
  auto first = store_->Push("thumbs", Script(100));
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_EQ(first->version.size(), 64u);
  EXPECT_TRUE(blobs_->Stat(kScripts, "thumbs/versions/" + first->version + ".json").ok());
  EXPECT_EQ(store_->CurrentVersion("thumbs").value(), first->version);

  auto again = store_->Push("thumbs", Script(100));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->version, first->version);  // same files, same version; history unchanged

  auto second = store_->Push("thumbs", Script(200));
  ASSERT_TRUE(second.ok());
  EXPECT_NE(second->version, first->version);
  auto shown = store_->Show("thumbs");
  ASSERT_TRUE(shown.ok()) << shown.error().message;
  EXPECT_EQ(shown->current_version, second->version);
  EXPECT_EQ(shown->description, "w200");
  EXPECT_THAT(shown->history, ElementsAre(first->version, second->version));

  auto got = store_->Get("thumbs", first->version);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->files, Script(100));
  EXPECT_EQ(got->manifest.steps[0].width, 100);
}

TEST_F(ScriptStoreTest, RollbackReturnsToThePreviousVersionUntilNoneIsLeft) {
  auto first = store_->Push("thumbs", Script(100));
  auto second = store_->Push("thumbs", Script(200));
  ASSERT_TRUE(first.ok() && second.ok());
  auto rolled = store_->Rollback("thumbs");
  ASSERT_TRUE(rolled.ok()) << rolled.error().message;
  EXPECT_EQ(rolled->current_version, first->version);
  EXPECT_EQ(store_->CurrentVersion("thumbs").value(), first->version);
  EXPECT_THAT(rolled->history, ElementsAre(first->version));
  auto none = store_->Rollback("thumbs");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().kind, ErrorKind::kConflict);
  // The rolled-back version stays stored (immutable) and can be pushed again.
  EXPECT_TRUE(store_->Get("thumbs", second->version).ok());
}

TEST_F(ScriptStoreTest, ListNamesEveryScript) {
  ASSERT_TRUE(store_->Push("b-script", Script(1)).ok());
  ASSERT_TRUE(store_->Push("a-script", Script(2)).ok());
  auto list = store_->List();
  ASSERT_TRUE(list.ok()) << list.error().message;
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "a-script");
  EXPECT_EQ((*list)[1].name, "b-script");
  EXPECT_EQ((*list)[1].description, "w1");
}

TEST_F(ScriptStoreTest, BadScriptsAreRefusedAndNothingIsStored) {
  auto files = Script(100);
  files["l.lua"] = "run.label('w',\n  \n end";
  auto bad_lua = store_->Push("thumbs", files);
  ASSERT_FALSE(bad_lua.ok());
  EXPECT_EQ(bad_lua.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_THAT(bad_lua.error().message, HasSubstr("l.lua:3:"));

  files = Script(100);
  files["pipeline.toml"] += "[[steps]]\nop = \"explode\"\n";
  auto bad_step = store_->Push("thumbs", files);
  ASSERT_FALSE(bad_step.ok());
  EXPECT_THAT(bad_step.error().message, HasSubstr("pipeline.toml:9: step 'explode' is unknown"));

  EXPECT_FALSE(store_->Push("Bad Name", Script(1)).ok());
  EXPECT_FALSE(store_->Push("thumbs", {{"l.lua", "return"}}).ok());  // no pipeline.toml
  files = Script(1);
  files["../evil.lua"] = "";
  EXPECT_FALSE(store_->Push("thumbs", files).ok());
  files = Script(1);
  files["result.json"] = "{}";  // reserved by the exec protocol
  auto reserved = store_->Push("thumbs", files);
  ASSERT_FALSE(reserved.ok());
  EXPECT_THAT(reserved.error().message, HasSubstr("reserved"));
  files = Script(1);
  files["input.png"] = "";
  EXPECT_FALSE(store_->Push("thumbs", files).ok());

  auto current = store_->CurrentVersion("thumbs");
  ASSERT_FALSE(current.ok());
  EXPECT_EQ(current.error().kind, ErrorKind::kNotFound);
  auto list = store_->List();
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
}

TEST_F(ScriptStoreTest, ProgramsAndBinaryFilesAreStoredAsPushed) {
  auto files = Script(64);
  files["labels.py"] = "print('hi')\n";
  std::string binary = "\xff\xd8\xff\xe0";
  for (int i = 0; i < 300; ++i) binary.push_back(static_cast<char>(i));
  files["example.jpg"] = binary;
  files["odd.bin"] = std::string("\x00\x01\xc0\x80", 4);  // NUL and an overlong form: not text
  auto pushed = store_->Push("thumbs", files);
  ASSERT_TRUE(pushed.ok()) << pushed.error().message;
  auto got = store_->Get("thumbs", pushed->version);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->files, files);
  EXPECT_EQ(got->version, pushed->version);
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

// A script that names an example image is run over it at push; its failure refuses the push with where and why.
TEST_F(ScriptStoreTest, PushRunsTheExampleAndRefusesAScriptWhoseExampleFails) {
  const std::string example = ReadFile(fs::path(IMGPIPE_CORPORA_DIR) / "valid/libjpeg-turbo-testimages/testorig.jpg");
  ASSERT_FALSE(example.empty());
  auto files = Script(100);
  files["pipeline.toml"] = "example = \"example.jpg\"\n" + files["pipeline.toml"];
  files["example.jpg"] = example;
  auto good = store_->Push("thumbs", files);
  ASSERT_TRUE(good.ok()) << good.error().message;

  files["l.lua"] = "local x = 1\nif image.width() > 10 then error('too wide for me') end\n";
  auto failing = store_->Push("thumbs", files);
  ASSERT_FALSE(failing.ok());
  EXPECT_EQ(failing.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_THAT(failing.error().message, HasSubstr("pipeline.toml:1: the example run over 'example.jpg' failed: "));
  EXPECT_THAT(failing.error().message, HasSubstr("l.lua:2: too wide for me"));

  files["l.lua"] = "run.reject('not a cat')\n";
  auto rejected = store_->Push("thumbs", files);
  ASSERT_FALSE(rejected.ok());
  EXPECT_THAT(rejected.error().message, HasSubstr("rejected the example: not a cat"));

  files["l.lua"] = "run.label('ok', 'yes')\n";
  files["example.jpg"] = example.substr(0, example.size() / 3);  // truncated: does not decode
  auto broken = store_->Push("thumbs", files);
  ASSERT_FALSE(broken.ok());
  EXPECT_THAT(broken.error().message, HasSubstr("the example run over 'example.jpg' failed"));

  files.erase("example.jpg");
  auto missing = store_->Push("thumbs", files);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.error().message, HasSubstr("pipeline.toml:1: example 'example.jpg' is not in the script folder"));

  // Only the first, good version was stored.
  auto shown = store_->Show("thumbs");
  ASSERT_TRUE(shown.ok());
  EXPECT_EQ(shown->history, std::vector<std::string>{good->version});
}

TEST(Base64, RoundTripsEveryLength) {
  for (size_t n = 0; n < 10; ++n) {
    std::string bytes;
    for (size_t i = 0; i < n; ++i) bytes.push_back(static_cast<char>(0xF0 + i));
    auto back = Base64Decode(Base64Encode(bytes));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, bytes);
  }
  EXPECT_FALSE(Base64Decode("abc").ok());
  EXPECT_FALSE(Base64Decode("a*c=").ok());
  EXPECT_TRUE(IsUtf8("h\xc3\xa9llo"));
  EXPECT_FALSE(IsUtf8("\xc3"));
  EXPECT_FALSE(IsUtf8("\xed\xa0\x80"));  // a surrogate
}

}  // namespace
}  // namespace imgpipe
