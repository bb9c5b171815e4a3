#include "worker/worker_pool.hpp"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>

#include "core/blob_keys.hpp"
#include "core/ids.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"
#include "processing/pipeline.hpp"
#include "scripts/script_runner.hpp"

namespace imgpipe {

namespace {

double Seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

// An original the store cannot show as a local file (encrypted, or remote) and at most this large is read whole into
// memory for the default pipeline instead of being copied to a spool file: no plaintext on disk, no write and read
// back. Workers times this bounds the memory it takes (two workers: 32 MiB), well within the memory target.
constexpr uint64_t kInMemoryOriginalBytes = 16 * 1024 * 1024;

// Copies a remote original to a local file for libvips; removes it when destroyed.
class LocalCopy {
 public:
  ~LocalCopy() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  Status Fetch(BlobStore& blobs, const std::string& key, const std::string& dir) {
    IMGPIPE_ASSIGN_OR_RETURN(auto reader, blobs.OpenRead(kOriginals, key));
    std::filesystem::create_directories(dir);
    path_ = dir + "/job-" + HexEncode(RandomBytes(8));
    std::ofstream out(path_, std::ios::binary);
    std::vector<char> buf(256 * 1024);
    for (;;) {
      IMGPIPE_ASSIGN_OR_RETURN(size_t n, reader->Read(buf));
      if (n == 0) break;
      out.write(buf.data(), static_cast<std::streamsize>(n));
    }
    if (!out.good()) return MakeError(ErrorKind::kUnavailable, "cannot write a local copy of the original to " + dir);
    return Ok();
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace

WorkerPool::WorkerPool(WorkerOptions options, BlobStore& blobs, MetadataStore& store, JobQueue& queue,
                       const Clock& clock, Metrics* metrics)
    : options_(std::move(options)),
      blobs_(blobs),
      store_(store),
      queue_(queue),
      clock_(clock),
      metrics_(metrics),
      scripts_(blobs, clock) {}

WorkerPool::~WorkerPool() { Stop(std::chrono::milliseconds(0)); }

void WorkerPool::Start() {
  for (int i = 0; i < std::max(1, options_.threads); ++i) threads_.emplace_back([this] { Loop(); });
}

void WorkerPool::Stop(std::chrono::milliseconds grace) {
  if (threads_.empty()) return;
  auto deadline = std::chrono::steady_clock::now() + grace;
  stop_deadline_ = deadline;
  stopping_ = true;
  queue_.Wake();
  while (busy_.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (busy_.load() > 0) {
    LogWarn("shutdown grace ran out with jobs in flight; their leases go back to the queue",
            {{"jobs", busy_.load()}});
    // The threads still run libvips; detach them and hand their jobs back. The process is about to exit. Work handed
    // back is not an attempt: the queue uncounts its leases, the warehouse its starts.
    Status released = queue_.ReleaseLeases(options_.owner);
    if (!released.ok()) LogWarn("could not release leases", {{"error", released.error().message}});
    std::multiset<std::string> unfinished;
    {
      std::lock_guard lock(in_flight_mu_);
      unfinished = in_flight_;
    }
    for (const std::string& id : unfinished) {
      Status uncounted = store_.UncountProcessingStart(ImageId(id));
      if (!uncounted.ok()) {
        LogWarn("could not uncount a start handed back", {{"image_id", id}, {"error", uncounted.error().message}});
      }
    }
    for (auto& t : threads_) t.detach();
  } else {
    for (auto& t : threads_) t.join();
  }
  threads_.clear();
}

void WorkerPool::WaitForStorage() {
  while (storage_down_ && !stopping_) {
    if (blobs_.Ping().ok()) {
      storage_down_ = false;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

void WorkerPool::Loop() {
  while (!stopping_) {
    WaitForStorage();
    auto jobs = queue_.Lease(options_.owner, 1, options_.lease, std::chrono::milliseconds(1000));
    if (!jobs.ok()) {
      LogWarn("cannot lease jobs", {{"error", jobs.error().message}});
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      continue;
    }
    for (const Job& job : *jobs) {
      WaitForStorage();  // a lease taken just before another thread found storage down waits here too
      ++busy_;
      ProcessJob(job);
      --busy_;
    }
  }
}

Status WorkerPool::RunPipeline(const ImageRecord& image, const Job& job, TimePoint started,
                               const ScriptBundle* script) {
  LocalCopy copy;
  std::string path;
  std::optional<std::string> in_memory;
  if (auto local = blobs_.LocalPath(kOriginals, image.original_key)) {
    path = *local;
  } else if (script == nullptr && image.bytes <= kInMemoryOriginalBytes) {
    IMGPIPE_ASSIGN_OR_RETURN(in_memory, blobs_.GetAll(kOriginals, image.original_key, kInMemoryOriginalBytes));
  } else {
    IMGPIPE_TRY(copy.Fetch(blobs_, image.original_key, options_.spool_dir));
    path = copy.path();
  }
  auto t0 = std::chrono::steady_clock::now();
  Result<PipelineOutput> out = PipelineOutput{};
  if (in_memory) {
    out = RunDefaultPipelineOnBuffer(*in_memory, options_.renditions);
  } else if (script == nullptr) {
    out = RunDefaultPipeline(path, options_.renditions);
  } else {
    ScriptRunLimits limits;
    limits.exec = options_.exec;
    IMGPIPE_ASSIGN_OR_RETURN(ScriptRunOutput ran, RunScript(*script, path, limits));
    if (ran.rejected) {
      return MakeError(ErrorKind::kInvalidArgument,
                       "rejected by script '" + script->name + "': " + *ran.rejected, "rejected_by_script");
    }
    std::vector<ImageLabel> labels;
    for (ScriptLabel& l : ran.labels) labels.push_back({std::move(l.key), std::move(l.value), l.number});
    IMGPIPE_TRY(store_.RecordLabels(image.id, script->name, script->version, labels));
    PipelineOutput converted;
    converted.renditions = std::move(ran.renditions);
    converted.phash = ran.phash;
    converted.dominant_colour = std::move(ran.dominant_colour);
    converted.decode_seconds = Seconds(std::chrono::steady_clock::now() - t0);
    out = std::move(converted);
  }
  if (!out.ok()) return out.error();
  if (metrics_) {
    metrics_->Observe("imgpipe_stage_duration_seconds", {{"stage", "process"}}, out->decode_seconds);
    metrics_->Observe("imgpipe_stage_duration_seconds", {{"stage", "encode"}}, out->encode_seconds);
  }
  std::vector<RenditionRecord> records;
  for (const RenditionOutput& r : out->renditions) {
    RenditionRecord rec;
    rec.image_id = image.id;
    rec.name = r.name;
    rec.key = RenditionBlobKey(image.id, r.name, r.extension);
    rec.format = r.format;
    rec.content_type = r.content_type;
    rec.width = r.width;
    rec.height = r.height;
    rec.bytes = r.bytes.size();
    rec.created_at = clock_.Now();
    auto put = blobs_.Put(kRenditions, rec.key, r.bytes);
    if (!put.ok()) return put.error();
    records.push_back(std::move(rec));
  }
  ProcessingRun run;
  run.image_id = image.id;
  run.pipeline = image.pipeline;
  run.attempt = job.attempts + 1;
  run.started_at = started;
  run.finished_at = clock_.Now();
  run.status = "processed";
  run.decode_seconds = out->decode_seconds;
  run.encode_seconds = out->encode_seconds;
  run.total_seconds = Seconds(std::chrono::steady_clock::now() - t0);
  if (script != nullptr) {
    run.script_name = script->name;
    run.script_version = script->version;
  }
  return store_.RecordProcessed(image.id, out->phash, out->dominant_colour, records, run);
}

void WorkerPool::PublishBeforeAck(ImageEvent event) {
  if (!events_) return;
  events_->Publish(std::move(event));
  // Once the job is acknowledged its queue forgets it (Kafka: the offset moves and is committed within a second), and
  // nothing would publish the event again after a crash. So the event must be on the events topic first; while the
  // broker is away this waits, as the job's ack could not be committed anyway. A stopping pool waits until its
  // shutdown grace runs out, then acks: the sink has the same grace to deliver the event.
  while (!events_->Flush(std::chrono::seconds(1))) {
    if (stopping_ && std::chrono::steady_clock::now() >= stop_deadline_.load()) {
      LogWarn("the shutdown grace ran out before the events topic acknowledged an event; it may be lost", {});
      return;
    }
  }
}

void WorkerPool::PublishFailed(const ProcessingRun& run) {
  if (!events_) return;
  ImageEvent e{"image.failed", run.image_id, clock_.Now(), {}};
  e.details["pipeline"] = run.pipeline;
  e.details["attempt"] = run.attempt;
  e.details["error"] = run.error.value_or("");
  PublishBeforeAck(std::move(e));
}

void WorkerPool::PublishProcessed(const ImageId& id, const std::string& pipeline, int attempt,
                                  const std::string& script_name, const std::string& script_version) {
  if (!events_) return;
  ImageEvent e{"image.processed", id, clock_.Now(), {}};
  e.details["pipeline"] = pipeline;
  e.details["attempt"] = attempt;
  if (!script_name.empty()) {
    e.details["script_name"] = script_name;
    e.details["script_version"] = script_version;
  }
  PublishBeforeAck(std::move(e));
}

void WorkerPool::RepublishOutcome(const ImageRecord& image) {
  if (!events_) return;
  auto runs = store_.ListRuns(image.id);
  if (!runs.ok() || runs->empty()) return;
  const ProcessingRun& last = runs->back();
  if (image.status == ImageStatus::kFailed) {
    PublishFailed(last);
    return;
  }
  PublishProcessed(image.id, last.pipeline, last.attempt, last.script_name, last.script_version);
}

void WorkerPool::ProcessJob(const Job& job) {
  TimePoint started = clock_.Now();
  auto image = store_.GetImage(job.image_id);
  if (!image.ok()) {
    if (image.error().kind == ErrorKind::kNotFound) {
      LogWarn("job for an unknown image dropped", {{"image_id", job.image_id.value()}});
      (void)queue_.Ack(job);
      return;
    }
    (void)queue_.Retry(job, clock_.Now() + options_.retry_backoff, image.error().message);
    return;
  }
  if (image->status == ImageStatus::kExpired || image->status == ImageStatus::kDeleted ||
      image->status == ImageStatus::kProcessed || image->status == ImageStatus::kFailed ||
      image->expires_at <= started) {
    // Nothing to do: already done (or given up) by an earlier run, or gone. A queue that delivers at least once
    // (Kafka) brings such jobs again after a crash; reprocessing sets the status back to queued first. The worker
    // that finished it may have died before its event was out (it acks only after): publish the outcome again.
    if (image->status == ImageStatus::kProcessed || image->status == ImageStatus::kFailed) RepublishOutcome(*image);
    (void)queue_.Ack(job);
    return;
  }
  // Attempts made before this one: as many as the queue counted or as the warehouse saw started, whichever is more.
  // The table queues count every lease; Kafka redelivers a record after a crash with the attempt count it had, so
  // there only processing_starts (committed by MarkProcessing before the work) shows a worker that died on this image.
  Job attempt = job;
  attempt.attempts = std::max(job.attempts, image->processing_starts);
  if (attempt.attempts >= options_.max_attempts) {
    // Every failure that finished was counted as a retry and dead-lettered at the last one, so getting here means the
    // last attempt never came back: the worker died on this image (killed, out of memory, a crash in a decoder).
    ProcessingRun run;
    run.image_id = image->id;
    run.pipeline = image->pipeline;
    run.attempt = attempt.attempts + 1;
    run.started_at = started;
    run.finished_at = started;
    run.status = "failed";
    run.error = "worker died during processing: gave up after " + std::to_string(attempt.attempts) +
                " attempts, the last of which did not finish (the worker was killed, crashed or ran out of memory "
                "while processing this image; queue.max_attempts)";
    (void)store_.RecordFailure(image->id, run, /*final=*/true);
    PublishFailed(run);
    Status dead = queue_.DeadLetter(attempt, run.error.value_or(""));
    if (!dead.ok()) LogWarn("cannot dead-letter a failed job yet", {{"error", dead.error().message}});
    if (metrics_) metrics_->Add("imgpipe_jobs_total", {{"outcome", "failed"}});
    LogWarn("processing given up: the worker died during it every time",
            {{"image_id", image->id.value()}, {"attempts", attempt.attempts}});
    return;
  }
  // The start is counted, durably, before any work: if this process dies during it, the next delivery knows.
  Status marked = store_.MarkProcessing(image->id);
  if (!marked.ok()) {
    (void)queue_.Retry(attempt, clock_.Now() + options_.retry_backoff, marked.error().message);
    return;
  }
  {
    std::lock_guard lock(in_flight_mu_);
    in_flight_.insert(image->id.value());
  }
  RunJob(*image, attempt, started);
  std::lock_guard lock(in_flight_mu_);
  if (auto it = in_flight_.find(image->id.value()); it != in_flight_.end()) in_flight_.erase(it);
}

void WorkerPool::RunJob(const ImageRecord& image, const Job& job, TimePoint started) {
  std::shared_ptr<const ScriptBundle> script;
  Status result = Ok();
  if (image.pipeline != "default" && !image.pipeline.empty()) {
    auto current = scripts_.Current(image.pipeline);
    if (current.ok()) {
      script = std::move(current).value();
    } else {
      result = current.error();
    }
  }
  if (result.ok()) result = RunPipeline(image, job, started, script.get());
  if (result.ok()) {
    // On the events topic before the ack: a crash in between publishes again (at least once), never loses it.
    PublishProcessed(image.id, image.pipeline, job.attempts + 1, script ? script->name : std::string(),
                     script ? script->version : std::string());
    Status acked = queue_.Ack(job);
    if (!acked.ok()) LogWarn("ack failed; the job will re-run harmlessly", {{"error", acked.error().message}});
    if (metrics_) metrics_->Add("imgpipe_jobs_total", {{"outcome", "processed"}});
    LogDebug("processed", {{"image_id", image.id.value()}});
    return;
  }
  const Error& err = result.error();
  if (err.kind == ErrorKind::kConflict) {
    // The image expired or was deleted while it was being processed: its renditions must not outlive it.
    auto left = blobs_.List(kRenditions, ImageBlobPrefix(image.id));
    if (left.ok()) {
      for (const BlobInfo& b : left->items) (void)blobs_.Delete(kRenditions, b.key);
    }
    (void)queue_.Ack(job);
    LogInfo("image went away while processing; results dropped", {{"image_id", image.id.value()}});
    return;
  }
  if (err.kind == ErrorKind::kUnavailable) storage_down_ = true;
  int attempt = job.attempts + 1;
  // A script's own errors and rejections (kInvalidArgument, kNotFound for a script that no longer exists) would
  // repeat on every attempt.
  bool permanent = err.kind == ErrorKind::kInvalidImage || err.kind == ErrorKind::kUnsupportedFormat ||
                   err.kind == ErrorKind::kTooLarge ||
                   (script != nullptr && err.kind == ErrorKind::kInvalidArgument) ||
                   (image.pipeline != "default" && err.kind == ErrorKind::kNotFound && !script);
  bool final = permanent || attempt >= options_.max_attempts;
  ProcessingRun run;
  run.image_id = image.id;
  run.pipeline = image.pipeline;
  run.attempt = attempt;
  run.started_at = started;
  run.finished_at = clock_.Now();
  run.status = final ? "failed" : "retrying";
  run.error = err.message;
  if (script != nullptr) {
    run.script_name = script->name;
    run.script_version = script->version;
  }
  Status recorded = store_.RecordFailure(image.id, run, final);
  if (!recorded.ok()) {
    LogWarn("cannot record a failed run", {{"image_id", image.id.value()}, {"error", recorded.error().message}});
  }
  LogWarn(final ? "processing failed" : "processing failed; will retry",
          {{"image_id", image.id.value()}, {"attempt", attempt}, {"error", err.message}});
  if (final) {
    PublishFailed(run);
    Status dead = queue_.DeadLetter(job, err.message);
    if (!dead.ok()) LogWarn("cannot dead-letter a failed job yet", {{"error", dead.error().message}});
    if (metrics_) metrics_->Add("imgpipe_jobs_total", {{"outcome", "failed"}});
    return;
  }
  // Exponential backoff with jitter: backoff * 2^(attempt-1) * [0.5, 1.5).
  static thread_local std::mt19937 rng(std::random_device{}());
  double factor = std::ldexp(1.0, std::min(attempt - 1, 16)) * std::uniform_real_distribution<>(0.5, 1.5)(rng);
  auto delay = std::chrono::duration_cast<std::chrono::microseconds>(options_.retry_backoff * factor);
  (void)queue_.Retry(job, clock_.Now() + delay, err.message);
  if (metrics_) metrics_->Add("imgpipe_jobs_total", {{"outcome", "retried"}});
}

}  // namespace imgpipe
