#include "crypto/mapped_file.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace imgpipe {
namespace {

namespace fs = std::filesystem;

class MappedFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "imgpipe-map-XXXXXX").string();
    fd_ = ::mkstemp(tmpl.data());
    ASSERT_GE(fd_, 0);
    path_ = tmpl;
    std::string bytes(kBytes, '\0');
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
    ASSERT_EQ(::write(fd_, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }
  void TearDown() override {
    ::close(fd_);
    ::unlink(path_.c_str());
  }

  static constexpr size_t kBytes = 5 * 4096 + 123;
  int fd_ = -1;
  std::string path_;
};

struct Sum {
  const char* data;
  size_t size;
  unsigned total = 0;
};

void AddUp(void* arg) {
  auto* s = static_cast<Sum*>(arg);
  // volatile: every page is touched even where the sum is not used afterwards.
  const volatile char* p = s->data;
  for (size_t i = 0; i < s->size; ++i) s->total += static_cast<unsigned char>(p[i]);
}

TEST_F(MappedFileTest, MapsTheBytesAskedForAtAnyOffset) {
  auto m = MappedFile::Map(fd_, 4096 + 10, 3 * 4096, "test file");
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->size(), 3u * 4096);
  EXPECT_EQ(m->data()[0], static_cast<char>((4096 + 10) * 7));
  Sum sum{m->data(), m->size()};
  EXPECT_TRUE(m->Guarded(AddUp, &sum));
  EXPECT_GT(sum.total, 0u);
}

TEST_F(MappedFileTest, PagesCutFromTheFileFailTheGuardedCallNotTheProcess) {
  auto m = MappedFile::Map(fd_, 0, kBytes, "test file");
  ASSERT_TRUE(m.ok()) << m.error().message;
  ASSERT_EQ(::ftruncate(fd_, 4096), 0);
  // Twice: the handler stays armed after it has caught one.
  for (int i = 0; i < 2; ++i) {
    Sum sum{m->data(), m->size()};
    EXPECT_FALSE(m->Guarded(AddUp, &sum));
  }
  Sum head{m->data(), 4096};
  EXPECT_TRUE(m->Guarded(AddUp, &head));  // the page still in the file reads as before
}

TEST_F(MappedFileTest, ASigbusOutsideAGuardStillKills) {
  auto m = MappedFile::Map(fd_, 0, kBytes, "test file");
  ASSERT_TRUE(m.ok()) << m.error().message;
  ASSERT_EQ(::ftruncate(fd_, 0), 0);
  // Installed by Map: a fault on a mapping that no guard covers must not be swallowed.
  Sum sum{m->data(), m->size()};
  EXPECT_DEATH(AddUp(&sum), "");
}

}  // namespace
}  // namespace imgpipe
