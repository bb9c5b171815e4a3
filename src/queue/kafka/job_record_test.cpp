#include "queue/kafka/job_record.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/ids.hpp"

namespace imgpipe {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

Job SampleJob() {
  Job job;
  job.image_id = NewImageId(FromUnixMicros(1'700'000'000'000'000));
  job.pipeline = "faces-v2";
  job.enqueued_at = FromUnixMicros(1'700'000'000'123'000);
  return job;
}

std::string ErrorOf(const Result<JobRecord>& r) { return r.ok() ? "ok" : r.error().message; }

TEST(JobRecordTest, RoundTripWithHeaders) {
  Job job = SampleJob();
  auto r = ParseJobRecord(EncodeJobValue(job), "3", "2026-11-26T05:00:00.250Z");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->job.image_id, job.image_id);
  EXPECT_EQ(r->job.pipeline, "faces-v2");
  EXPECT_EQ(r->job.enqueued_at, job.enqueued_at);
  EXPECT_EQ(r->job.attempts, 3);
  ASSERT_TRUE(r->not_before);
  EXPECT_EQ(FormatRfc3339(*r->not_before), "2026-11-26T05:00:00.250Z");
  auto plain = ParseJobRecord(EncodeJobValue(job), std::nullopt, std::nullopt);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->job.attempts, 0);
  EXPECT_FALSE(plain->not_before);
}

TEST(JobRecordTest, AnEmptyPipelineTravelsAsDefault) {
  Job job = SampleJob();
  job.pipeline.clear();
  auto r = ParseJobRecord(EncodeJobValue(job), std::nullopt, std::nullopt);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->job.pipeline, "default");
}

TEST(JobRecordTest, HostileValuesAreRefusedWithTheReason) {
  const std::string id = SampleJob().image_id.value();
  auto value = [&](const std::string& fields) { return "{\"v\":1," + fields + "}"; };
  const std::string ok_rest = "\"pipeline\":\"default\",\"enqueued_at\":\"2026-11-26T05:00:00Z\"";
  EXPECT_THAT(ErrorOf(ParseJobRecord("", {}, {})), HasSubstr("not a JSON object"));
  EXPECT_THAT(ErrorOf(ParseJobRecord("[1,2]", {}, {})), HasSubstr("not a JSON object"));
  EXPECT_THAT(ErrorOf(ParseJobRecord("{\"v\":2}", {}, {})), HasSubstr("\"v\": 1"));
  EXPECT_THAT(ErrorOf(ParseJobRecord(value("\"image_id\":\"../../etc\"," + ok_rest), {}, {})),
              HasSubstr("image_id"));
  EXPECT_THAT(ErrorOf(ParseJobRecord(value("\"image_id\":\"" + id + "\",\"pipeline\":\"a/b\","
                                           "\"enqueued_at\":\"2026-11-26T05:00:00Z\""),
                                     {}, {})),
              HasSubstr("pipeline"));
  EXPECT_THAT(ErrorOf(ParseJobRecord(value("\"image_id\":\"" + id + "\",\"pipeline\":\"default\","
                                           "\"enqueued_at\":\"yesterday\""),
                                     {}, {})),
              HasSubstr("enqueued_at"));
  const std::string good = value("\"image_id\":\"" + id + "\"," + ok_rest);
  ASSERT_TRUE(ParseJobRecord(good, {}, {}).ok());
  EXPECT_THAT(ErrorOf(ParseJobRecord(good, "-1", {})), HasSubstr("imgpipe-attempts"));
  EXPECT_THAT(ErrorOf(ParseJobRecord(good, "3x", {})), HasSubstr("imgpipe-attempts"));
  EXPECT_THAT(ErrorOf(ParseJobRecord(good, "99999999999", {})), HasSubstr("imgpipe-attempts"));
  EXPECT_THAT(ErrorOf(ParseJobRecord(good, {}, "soon")), HasSubstr("imgpipe-not-before"));
  EXPECT_THAT(ErrorOf(ParseJobRecord(std::string(kMaxJobRecordBytes + 1, ' '), {}, {})), HasSubstr("bytes"));
  auto r = ParseJobRecord("{", {}, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "bad_job_record");
}

TEST(JobRecordTest, CorruptFilesAreNeverJobs) {
  const fs::path corrupt = fs::path(IMGPIPE_CORPORA_DIR) / "corrupt";
  ASSERT_TRUE(fs::is_directory(corrupt)) << corrupt;
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(corrupt)) {
    if (!entry.is_regular_file() || entry.file_size() > 1 << 20) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto r = ParseJobRecord(bytes, bytes.substr(0, 8), bytes.substr(0, 24));
    ASSERT_FALSE(r.ok()) << entry.path();
    EXPECT_EQ(r.error().code, "bad_job_record") << entry.path();
    ++files;
  }
  EXPECT_GT(files, 10);
}

}  // namespace
}  // namespace imgpipe
