#include "worker/worker_pool.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/blob_keys.hpp"
#include "core/ids.hpp"
#include "ingest/intake.hpp"
#include "processing/image_probe.hpp"
#include "processing/pipeline.hpp"
#include "queue/embedded/embedded_job_queue.hpp"
#include "scripts/script_store.hpp"
#include "storage/local/local_blob_store.hpp"
#include "storage/no_local_files_blob_store.hpp"
#include "warehouse/sqlite/sqlite_database.hpp"
#include "warehouse/sqlite/sqlite_metadata_store.hpp"

namespace imgpipe {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

const std::string kCorpora = IMGPIPE_CORPORA_DIR;

// The intake and the worker over real local storage and a real SQLite warehouse in a temp folder.
class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitVips(1);
    dir_ = std::filesystem::temp_directory_path() / ("imgpipe-worker-" + HexEncode(RandomBytes(6)));
    db_ = std::move(SqliteDatabase::Open(dir_ / "test.db").value());
    store_ = std::make_unique<SqliteMetadataStore>(*db_, clock_);
    ASSERT_TRUE(store_->Migrate().ok());
    queue_ = std::make_unique<EmbeddedJobQueue>(*db_, clock_);
    blobs_ = std::move(LocalBlobStore::Open((dir_ / "blobs").string()).value());
    IntakeOptions io;
    io.spool_dir = (dir_ / "spool").string();
    intake_ = std::make_unique<Intake>(io, *blobs_, *store_, *queue_, clock_, nullptr, nullptr);
    WorkerOptions wo;
    wo.renditions = Config{}.renditions;
    wo.spool_dir = io.spool_dir;
    wo.owner = "test";
    wo.max_attempts = 2;
    workers_ = std::make_unique<WorkerPool>(wo, *blobs_, *store_, *queue_, clock_, nullptr);
  }
  void TearDown() override {
    workers_.reset();
    intake_.reset();
    blobs_.reset();
    queue_.reset();
    store_.reset();
    db_.reset();
    std::filesystem::remove_all(dir_);
  }

  Result<IntakeResult> Upload(const std::string& bytes, const std::string& pipeline = "") {
    auto spool = intake_->BeginSpool();
    IMGPIPE_TRY(spool->Append(bytes));
    IMGPIPE_TRY(spool->Finish());
    IntakeRequest req;
    req.uploader_key_id = "key_test";
    req.pipeline = pipeline;
    return intake_->Accept(*spool, req);
  }

  Job LeaseOne() {
    auto jobs = queue_->Lease("test", 1, std::chrono::seconds(60), std::chrono::milliseconds(0));
    EXPECT_TRUE(jobs.ok());
    EXPECT_EQ(jobs->size(), 1u);
    return jobs->empty() ? Job{} : (*jobs)[0];
  }

  std::filesystem::path dir_;
  FakeClock clock_{FromUnixMicros(1'764'111'342'000'000)};
  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<SqliteMetadataStore> store_;
  std::unique_ptr<EmbeddedJobQueue> queue_;
  std::unique_ptr<LocalBlobStore> blobs_;
  std::unique_ptr<Intake> intake_;
  std::unique_ptr<WorkerPool> workers_;
};

TEST_F(WorkerTest, AcceptedUploadIsProcessedIntoStoredRenditions) {
  auto accepted = Upload(ReadFile(kCorpora + "/valid/kodak/kodim23.png"));
  ASSERT_TRUE(accepted.ok()) << accepted.error().message;
  EXPECT_EQ(accepted->image.status, ImageStatus::kQueued);
  workers_->ProcessJob(LeaseOne());
  auto image = store_->GetImage(accepted->image.id);
  ASSERT_TRUE(image.ok());
  EXPECT_EQ(image->status, ImageStatus::kProcessed);
  EXPECT_TRUE(image->phash.has_value());
  auto renditions = store_->ListRenditions(image->id);
  ASSERT_TRUE(renditions.ok());
  ASSERT_EQ(renditions->size(), 2u);
  for (const auto& r : *renditions) {
    auto info = blobs_->Stat(kRenditions, r.key);
    ASSERT_TRUE(info.ok()) << r.key;
    EXPECT_EQ(info->size, r.bytes);
    EXPECT_EQ(std::max(r.width, r.height), r.name == "thumb-256" ? 256 : 768) << r.name;  // kodim23 is 768x512
  }
  // The queue is empty: the job was acked.
  EXPECT_EQ(*queue_->Depth(), 0);
}

TEST_F(WorkerTest, AScriptRunsItsCurrentVersionAndRecordsLabelsOnceAndTheVersion) {
  ScriptStore scripts(*blobs_, clock_);
  auto pushed = scripts.Push("labels", {{"pipeline.toml",
                                         "[[steps]]\nop = \"thumbnail\"\nwidth = 100\n[[steps]]\nop = \"lua\"\n"
                                         "file = \"l.lua\"\n[[renditions]]\nname = \"small\"\n"},
                                        {"l.lua", "run.label('w', tostring(image.width()), image.width())"}});
  ASSERT_TRUE(pushed.ok()) << pushed.error().message;
  auto accepted = Upload(ReadFile(kCorpora + "/valid/kodak/kodim23.png"), "labels");
  ASSERT_TRUE(accepted.ok()) << accepted.error().message;
  Job job = LeaseOne();
  workers_->ProcessJob(job);
  workers_->ProcessJob(job);  // a re-run after a crash before the ack: labels replaced, not duplicated
  auto image = store_->GetImage(accepted->image.id);
  ASSERT_TRUE(image.ok());
  EXPECT_EQ(image->status, ImageStatus::kProcessed) << image->error.value_or("");
  auto renditions = store_->ListRenditions(image->id);
  ASSERT_TRUE(renditions.ok());
  ASSERT_EQ(renditions->size(), 1u);
  EXPECT_EQ((*renditions)[0].name, "small");
  EXPECT_EQ((*renditions)[0].width, 100);
  auto labels = store_->Query("SELECT script_version, key, value, number FROM image_labels", {}, 10,
                              std::chrono::seconds(10));
  ASSERT_TRUE(labels.ok());
  ASSERT_EQ(labels->rows_json.size(), 1u);
  EXPECT_EQ(labels->rows_json[0],
            (std::vector<std::string>{"\"" + pushed->version + "\"", "\"w\"", "\"100\"", "100"}));
  auto runs = store_->ListRuns(image->id);
  ASSERT_TRUE(runs.ok());
  ASSERT_FALSE(runs->empty());
  EXPECT_EQ(runs->back().script_name, "labels");
  EXPECT_EQ(runs->back().script_version, pushed->version);
}

TEST_F(WorkerTest, ARejectingScriptFailsTheImageAtOnceWithTheReason) {
  ScriptStore scripts(*blobs_, clock_);
  ASSERT_TRUE(scripts.Push("picky", {{"pipeline.toml", "[[steps]]\nop = \"lua\"\nfile = \"r.lua\"\n"},
                                     {"r.lua", "run.reject('no landscapes')"}})
                  .ok());
  auto accepted = Upload(ReadFile(kCorpora + "/valid/kodak/kodim23.png"), "picky");
  ASSERT_TRUE(accepted.ok());
  workers_->ProcessJob(LeaseOne());
  auto image = store_->GetImage(accepted->image.id);
  ASSERT_TRUE(image.ok());
  EXPECT_EQ(image->status, ImageStatus::kFailed);
  EXPECT_EQ(image->error.value_or(""), "rejected by script 'picky': no landscapes");
  EXPECT_EQ(*queue_->Depth(), 0);  // no retry
}

TEST_F(WorkerTest, ReRunningAJobOverwritesAndNeverDuplicates) {
  auto accepted = Upload(ReadFile(kCorpora + "/valid/kodak/kodim23.png"));
  ASSERT_TRUE(accepted.ok());
  Job job = LeaseOne();
  workers_->ProcessJob(job);
  // As after a crash between storing results and the ack: the same job runs again.
  workers_->ProcessJob(job);
  auto renditions = store_->ListRenditions(accepted->image.id);
  ASSERT_TRUE(renditions.ok());
  EXPECT_EQ(renditions->size(), 2u);
  auto listed = blobs_->List(kRenditions, ImageBlobPrefix(accepted->image.id));
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->items.size(), 2u);
}

TEST_F(WorkerTest, AnOriginalThatNoLongerDecodesEndsFailedWithItsError) {
  auto accepted = Upload(ReadFile(kCorpora + "/valid/kodak/kodim23.png"));
  ASSERT_TRUE(accepted.ok());
  // Corrupt the stored original behind the worker's back.
  ASSERT_TRUE(blobs_->Put(kOriginals, accepted->image.original_key, "not an image at all").ok());
  workers_->ProcessJob(LeaseOne());
  auto image = store_->GetImage(accepted->image.id);
  ASSERT_TRUE(image.ok());
  EXPECT_EQ(image->status, ImageStatus::kFailed);
  ASSERT_TRUE(image->error.has_value());
  EXPECT_FALSE(image->error->empty());
  auto runs = store_->ListRuns(image->id);
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_EQ((*runs)[0].status, "failed");
  EXPECT_EQ(*queue_->Depth(), 0);
}

// Records what the worker publishes.
struct RecordedEvents : ImageEvents {
  std::vector<ImageEvent> events;
  void Publish(ImageEvent e) override { events.push_back(std::move(e)); }
};

TEST_F(WorkerTest, ProcessedAndFailedImagesAreEventsAndARedeliveredJobOnlyPublishesAgain) {
  RecordedEvents events;
  workers_->SetEvents(&events);
  auto good = Upload(ReadFile(kCorpora + "/valid/kodak/kodim23.png"));
  ASSERT_TRUE(good.ok());
  workers_->ProcessJob(LeaseOne());
  auto bad = Upload(ReadFile(kCorpora + "/valid/kodak/kodim23.png") + "x");
  ASSERT_TRUE(bad.ok());
  ASSERT_TRUE(blobs_->Put(kOriginals, bad->image.original_key, "not an image at all").ok());
  Job failing = LeaseOne();
  workers_->ProcessJob(failing);
  ASSERT_EQ(events.events.size(), 2u);
  EXPECT_EQ(events.events[0].type, "image.processed");
  EXPECT_EQ(events.events[0].image_id, good->image.id);
  EXPECT_EQ(events.events[0].details.at("attempt").as_int64(), 1);
  EXPECT_EQ(events.events[1].type, "image.failed");
  EXPECT_EQ(events.events[1].image_id, bad->image.id);
  EXPECT_FALSE(events.events[1].details.at("error").as_string().empty());
  // A queue that delivers at least once (Kafka) may bring the failed image's job again: no second run, but its
  // event once more (the worker that failed it may have died before the event was out), the same as the first.
  workers_->ProcessJob(failing);
  ASSERT_EQ(events.events.size(), 3u);
  EXPECT_EQ(events.events[2].type, "image.failed");
  EXPECT_EQ(events.events[2].details, events.events[1].details);
  auto runs = store_->ListRuns(bad->image.id);
  ASSERT_TRUE(runs.ok());
  EXPECT_EQ(runs->size(), 1u);
  Job good_again;
  good_again.id = 9999;
  good_again.image_id = good->image.id;
  good_again.pipeline = "default";
  workers_->ProcessJob(good_again);
  ASSERT_EQ(events.events.size(), 4u);
  EXPECT_EQ(events.events[3].type, "image.processed");
  EXPECT_EQ(events.events[3].details, events.events[0].details);
  EXPECT_EQ(store_->ListRuns(good->image.id)->size(), 1u);
  const std::string encoded = EncodeImageEvent(events.events[0]);
  EXPECT_NE(encoded.find("\"type\":\"image.processed\""), std::string::npos) << encoded;
  EXPECT_NE(encoded.find("\"version\":1"), std::string::npos) << encoded;
}

// A sink whose events reach their topic only on the second Flush; it notes whether the job was still queued then.
struct SlowEvents : ImageEvents {
  explicit SlowEvents(JobQueue& queue) : queue(queue) {}
  void Publish(ImageEvent e) override { types.push_back(e.type); }
  bool Flush(std::chrono::milliseconds) override {
    jobs_at_flush.push_back(*queue.Depth());
    return jobs_at_flush.size() % 2 == 0;
  }
  JobQueue& queue;
  std::vector<std::string> types;
  std::vector<int64_t> jobs_at_flush;
};

TEST_F(WorkerTest, AJobIsAcknowledgedOnlyAfterItsEventReachedTheTopic) {
  SlowEvents events(*queue_);
  workers_->SetEvents(&events);
  auto good = Upload(ReadFile(kCorpora + "/valid/kodak/kodim23.png"));
  ASSERT_TRUE(good.ok());
  workers_->ProcessJob(LeaseOne());
  EXPECT_EQ(events.types, std::vector<std::string>{"image.processed"});
  // Both flushes saw the job still in the queue: a crash until the event was out would have run it again.
  EXPECT_EQ(events.jobs_at_flush, (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(*queue_->Depth(), 0);

  auto bad = Upload(ReadFile(kCorpora + "/valid/kodak/kodim23.png") + "x");
  ASSERT_TRUE(bad.ok());
  ASSERT_TRUE(blobs_->Put(kOriginals, bad->image.original_key, "not an image at all").ok());
  workers_->ProcessJob(LeaseOne());
  EXPECT_EQ(events.types, (std::vector<std::string>{"image.processed", "image.failed"}));
  EXPECT_EQ(events.jobs_at_flush, (std::vector<int64_t>{1, 1, 1, 1}));
  EXPECT_EQ(*queue_->Depth(), 0);
}

TEST_F(WorkerTest, AnImageWhoseLeasesNeverComeBackIsGivenUp) {
  auto accepted = Upload(ReadFile(kCorpora + "/valid/kodak/kodim23.png"));
  ASSERT_TRUE(accepted.ok());
  // Two workers die on it in turn (max_attempts is 2 here): their leases run out.
  for (int i = 0; i < 2; ++i) {
    LeaseOne();
    clock_.Advance(std::chrono::seconds(61));
  }
  workers_->ProcessJob(LeaseOne());
  auto image = store_->GetImage(accepted->image.id);
  ASSERT_TRUE(image.ok());
  EXPECT_EQ(image->status, ImageStatus::kFailed);
  ASSERT_TRUE(image->error.has_value());
  EXPECT_NE(image->error->find("gave up after 2 attempts"), std::string::npos) << *image->error;
  EXPECT_EQ(*queue_->Depth(), 0);
}

TEST_F(WorkerTest, AJobRedeliveredWithItsOldAttemptCountIsGivenUpByTheCountedStarts) {
  RecordedEvents events;
  workers_->SetEvents(&events);
  auto accepted = Upload(ReadFile(kCorpora + "/valid/kodak/kodim23.png"));
  ASSERT_TRUE(accepted.ok());
  Job job = LeaseOne();
  // Kafka redelivers a record after its worker died with the attempt count it had (0 here); only the warehouse saw
  // the two starts (max_attempts is 2), each committed before its work began.
  ASSERT_TRUE(store_->MarkProcessing(accepted->image.id).ok());
  ASSERT_TRUE(store_->MarkProcessing(accepted->image.id).ok());
  job.attempts = 0;
  workers_->ProcessJob(job);
  auto image = store_->GetImage(accepted->image.id);
  ASSERT_TRUE(image.ok());
  EXPECT_EQ(image->status, ImageStatus::kFailed);
  ASSERT_TRUE(image->error.has_value());
  EXPECT_NE(image->error->find("worker died during processing: gave up after 2 attempts"), std::string::npos)
      << *image->error;
  EXPECT_EQ(image->processing_starts, 2) << "giving up is not a start";
  EXPECT_EQ(*queue_->Depth(), 0);
  auto runs = store_->ListRuns(accepted->image.id);
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_EQ((*runs)[0].attempt, 3);
  ASSERT_EQ(events.events.size(), 1u);
  EXPECT_EQ(events.events[0].type, "image.failed");
}

TEST_F(WorkerTest, AProcessedImageCountedOneStart) {
  auto accepted = Upload(ReadFile(kCorpora + "/valid/kodak/kodim23.png"));
  ASSERT_TRUE(accepted.ok());
  workers_->ProcessJob(LeaseOne());
  auto image = store_->GetImage(accepted->image.id);
  EXPECT_EQ(image->status, ImageStatus::kProcessed);
  EXPECT_EQ(image->processing_starts, 1);
}

TEST_F(WorkerTest, RecoverSpoolRemovesOriginalsWhoseRowNeverCommitted) {
  auto accepted = Upload(ReadFile(kCorpora + "/valid/kodak/kodim23.png"));
  ASSERT_TRUE(accepted.ok());
  // A clean accept leaves no staged name behind.
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "spool"));
  // As if the process died after storing an original and before committing its row.
  ImageId orphan = NewImageId(clock_.Now());
  ASSERT_TRUE(blobs_->Put(kOriginals, OriginalBlobKey(orphan), "bytes of an unacknowledged upload").ok());
  std::ofstream(dir_ / "spool" / (orphan.value() + ".staged")) << "x";
  std::ofstream(dir_ / "spool" / "upload-leftover") << "x";
  // A staged name whose row did commit: the original must stay.
  std::ofstream(dir_ / "spool" / (accepted->image.id.value() + ".staged")) << "x";
  auto removed = intake_->RecoverSpool();
  ASSERT_TRUE(removed.ok()) << removed.error().message;
  EXPECT_EQ(*removed, 1);
  EXPECT_EQ(blobs_->Stat(kOriginals, OriginalBlobKey(orphan)).error().kind, ErrorKind::kNotFound);
  EXPECT_TRUE(blobs_->Stat(kOriginals, accepted->image.original_key).ok());
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "spool"));
}

TEST_F(WorkerTest, RefusedUploadStoresNothing) {
  auto refused = Upload("GIF89a\x01\x00\x01\x00 truncated nonsense that is no image");
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(refused.error().kind == ErrorKind::kInvalidImage) << refused.error().message;
  auto originals = blobs_->List(kOriginals, "");
  ASSERT_TRUE(originals.ok());
  EXPECT_TRUE(originals->items.empty());
  EXPECT_EQ(*queue_->Depth(), 0);
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "spool"));
}

//! The local store, with a switch that makes writes and Ping fail as unavailable (a key vault that went away).
class SwitchedOffStore final : public BlobStore {
 public:
  explicit SwitchedOffStore(BlobStore& real) : real_(real) {}
  Result<std::unique_ptr<BlobWriter>> OpenWrite(std::string_view c, std::string_view k) override {
    if (down) return Down();
    return real_.OpenWrite(c, k);
  }
  Result<std::unique_ptr<BlobReader>> OpenRead(std::string_view c, std::string_view k,
                                               std::optional<ByteRange> r = std::nullopt) override {
    return real_.OpenRead(c, k, r);
  }
  Result<BlobInfo> Stat(std::string_view c, std::string_view k) override { return real_.Stat(c, k); }
  Status Delete(std::string_view c, std::string_view k) override { return real_.Delete(c, k); }
  Result<ListPage> List(std::string_view c, std::string_view p, std::string_view cont = {},
                        size_t max = 1000) override {
    return real_.List(c, p, cont, max);
  }
  Status Ping() override { return down ? Status(Down()) : real_.Ping(); }
  std::string_view Name() const override { return "switched"; }
  std::atomic<bool> down{false};

 private:
  static Error Down() { return MakeError(ErrorKind::kUnavailable, "key provider unavailable (test)"); }
  BlobStore& real_;
};

TEST_F(WorkerTest, AStorageOutageCostsAnImageOneAttemptNotAll) {
  auto accepted = Upload(ReadFile(kCorpora + "/valid/kodak/kodim23.png"));
  ASSERT_TRUE(accepted.ok());
  const ImageId id = accepted->image.id;
  SwitchedOffStore switched(*blobs_);
  switched.down = true;
  WorkerOptions wo;
  wo.renditions = Config{}.renditions;
  wo.spool_dir = (dir_ / "spool").string();
  wo.owner = "outage";
  wo.max_attempts = 2;
  wo.retry_backoff = std::chrono::milliseconds(0);  // without the pause, the second attempt would come at once
  wo.threads = 2;
  WorkerPool pool(wo, switched, *store_, *queue_, clock_, nullptr);
  pool.Start();
  for (int i = 0; i < 600 && store_->ListRuns(id)->empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(store_->ListRuns(id)->size(), 1u);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  EXPECT_NE(store_->GetImage(id)->status, ImageStatus::kFailed) << "the outage used up the image's attempts";
  EXPECT_EQ(store_->ListRuns(id)->size(), 1u);
  switched.down = false;
  for (int i = 0; i < 600 && store_->GetImage(id)->status != ImageStatus::kProcessed; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  pool.Stop(std::chrono::seconds(30));
  EXPECT_EQ(store_->GetImage(id)->status, ImageStatus::kProcessed);
}

TEST_F(WorkerTest, ThreadsDrainTheQueue) {
  std::vector<ImageId> ids;
  std::string bytes = ReadFile(kCorpora + "/valid/kodak/kodim23.png");
  for (int i = 0; i < 4; ++i) {
    auto a = Upload(bytes);
    ASSERT_TRUE(a.ok());
    ids.push_back(a->image.id);
  }
  workers_->Start();
  for (int i = 0; i < 600 && *queue_->Depth() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  workers_->Stop(std::chrono::seconds(30));
  for (const auto& id : ids) EXPECT_EQ(store_->GetImage(id)->status, ImageStatus::kProcessed);
}

TEST_F(WorkerTest, AnOriginalWithNoLocalFileIsProcessedFromMemoryWithoutASpoolFile) {
  const std::string bytes = ReadFile(kCorpora + "/valid/kodak/kodim23.png");
  auto accepted = Upload(bytes);
  ASSERT_TRUE(accepted.ok()) << accepted.error().message;
  NoLocalFilesBlobStore remote(*blobs_);  // as a remote or encrypting store: no file to hand libvips
  // A spool "folder" that cannot exist: copying the original to a file would fail, so success means memory.
  const std::string blocked = (dir_ / "not-a-folder").string();
  std::ofstream(blocked) << "x";
  WorkerOptions wo;
  wo.renditions = Config{}.renditions;
  wo.spool_dir = blocked + "/spool";
  wo.owner = "test";
  WorkerPool workers(wo, remote, *store_, *queue_, clock_, nullptr);
  workers.ProcessJob(LeaseOne());
  auto image = store_->GetImage(accepted->image.id);
  ASSERT_TRUE(image.ok());
  EXPECT_EQ(image->status, ImageStatus::kProcessed) << image->error.value_or("");
  // The same renditions as the pipeline makes from the file.
  auto reference = RunDefaultPipeline(kCorpora + "/valid/kodak/kodim23.png", wo.renditions);
  ASSERT_TRUE(reference.ok());
  auto renditions = store_->ListRenditions(image->id);
  ASSERT_TRUE(renditions.ok());
  ASSERT_EQ(renditions->size(), reference->renditions.size());
  for (const auto& r : *renditions) {
    auto stored = blobs_->GetAll(kRenditions, r.key, 1 << 24);
    ASSERT_TRUE(stored.ok());
    bool matched = false;
    for (const auto& made : reference->renditions) matched |= made.name == r.name && made.bytes == *stored;
    EXPECT_TRUE(matched) << r.name;
  }
}

}  // namespace
}  // namespace imgpipe
