#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hpp"
#include "core/image_events.hpp"
#include "core/clock.hpp"
#include "core/result.hpp"
#include "queue/job_queue.hpp"
#include "scripts/exec_sandbox.hpp"
#include "scripts/script_cache.hpp"
#include "storage/blob_store.hpp"
#include "warehouse/metadata_store.hpp"

namespace imgpipe {

class Metrics;

struct WorkerOptions {
  int threads = 1;
  std::chrono::milliseconds lease{60000};
  int max_attempts = 5;
  std::chrono::milliseconds retry_backoff{1000};
  std::vector<RenditionConfig> renditions;
  std::string spool_dir;  //!< where originals of remote stores are copied for libvips
  std::string owner;      //!< lease owner name, unique per process
  ExecSandboxOptions exec;  //!< how scripts' exec steps run
};

//! Threads that lease jobs, run the default pipeline, store the renditions and record the outcome.
//!
//! Idempotent by construction: rendition keys are deterministic and rows are upserted, so a job re-run after a crash
//! (its lease ran out) overwrites what the first run left and never duplicates. A job is acked only after its
//! renditions are durable and its row says processed. Failures retry with exponential backoff; an image that does
//! not decode, or that failed queue.max_attempts times, becomes `failed` with its error. An image whose `pipeline`
//! names a processing script (docs/SCRIPTS.md) runs that script's current version; its labels are recorded before
//! the run, and a script error or a rejection fails the image at once (a script is deterministic).
class WorkerPool {
 public:
  WorkerPool(WorkerOptions options, BlobStore& blobs, MetadataStore& store, JobQueue& queue, const Clock& clock,
             Metrics* metrics);
  ~WorkerPool();

  //! Where "image.processed" and "image.failed" events go; none by default. A job is acknowledged (or dead-lettered)
  //! only once its event has left the sink's buffer (ImageEvents::Flush). Call before Start().
  void SetEvents(ImageEvents* events) { events_ = events; }

  void Start();
  //! Stops leasing; waits up to `grace` for jobs in flight, then returns the leases of unfinished ones to the queue.
  void Stop(std::chrono::milliseconds grace);

  //! Processes one leased job to the end (ack, retry or fail). Exposed for tests.
  void ProcessJob(const Job& job);
  int busy() const { return busy_.load(); }

 private:
  void Loop();
  //! Returns once storage answers Ping, or at once if no job found it down (or when stopping).
  void WaitForStorage();
  //! ProcessJob's part after the start is counted: the pipeline, then ack, retry or fail.
  void RunJob(const ImageRecord& image, const Job& job, TimePoint started);
  //! `script` is null for the built-in default pipeline.
  Status RunPipeline(const ImageRecord& image, const Job& job, TimePoint started, const ScriptBundle* script);
  //! Publishes `event` and waits until the events topic has it (or the pool stops), so the job's ack comes after.
  void PublishBeforeAck(ImageEvent event);
  void PublishFailed(const ProcessingRun& run);
  //! image.processed; `script_name` is empty for the built-in default pipeline.
  void PublishProcessed(const ImageId& id, const std::string& pipeline, int attempt, const std::string& script_name,
                        const std::string& script_version);
  //! For a job whose image is already processed or failed: its event again, from the image's last run.
  void RepublishOutcome(const ImageRecord& image);

  WorkerOptions options_;
  BlobStore& blobs_;
  MetadataStore& store_;
  JobQueue& queue_;
  const Clock& clock_;
  Metrics* metrics_;
  ImageEvents* events_ = nullptr;
  ScriptCache scripts_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::chrono::steady_clock::time_point> stop_deadline_{};  //!< set by Stop() before stopping_
  std::atomic<int> busy_{0};
  //! Set when a job failed because storage (or the key vault behind it) was unavailable: workers then wait for
  //! blobs_.Ping() before leasing or processing more, so an outage costs an image one or two attempts (the failed
  //! one, and a lease another thread took meanwhile), not all of them.
  std::atomic<bool> storage_down_{false};
  std::vector<std::thread> threads_;
  //! Ids of the images whose start MarkProcessing counted and whose job has not ended yet; Stop() uncounts those it
  //! hands back.
  std::mutex in_flight_mu_;
  std::multiset<std::string> in_flight_;
};

}  // namespace imgpipe
