#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "core/clock.hpp"
#include "core/result.hpp"
#include "storage/blob_store.hpp"
#include "warehouse/metadata_store.hpp"

namespace imgpipe {

class Metrics;

//! Retention per container: how long blobs live after the image was received. 0 = forever.
struct RetentionPolicy {
  std::chrono::seconds originals{7 * 24 * 3600};
  std::chrono::seconds renditions{7 * 24 * 3600};
  //! How many days before the retention boundary the whole-day scan for leftovers looks back.
  int orphan_scan_days = 30;
};

struct SweepReport {
  int64_t expired_images = 0;   //!< rows marked expired
  int64_t deleted_blobs = 0;    //!< objects removed, originals, renditions and leftovers
  int64_t errors = 0;
};

//! Deletes expired blobs and marks their rows `expired` (metadata stays for the analysts). Two passes:
//! 1. rows whose expires_at passed: delete the image's blobs in both containers, then mark the row expired with the
//!    time (a crash in between leaves the row live; the next run deletes again, harmlessly);
//! 2. whole day folders older than each container's retention: delete whatever is left there (originals of uploads
//!    that crashed before their row was committed, renditions of a shorter rendition policy).
//! Reads never wait for the sweeper: the API refuses expired images by expires_at (read-time expiry).
class RetentionSweeper {
 public:
  RetentionSweeper(RetentionPolicy policy, BlobStore& blobs, MetadataStore& store, const Clock& clock,
                   Metrics* metrics);
  ~RetentionSweeper();

  //! One sweep as of `now`.
  Result<SweepReport> RunOnce(TimePoint now);
  //! Sweeps every `interval` on a background thread until Stop().
  void Start(std::chrono::milliseconds interval);
  void Stop();

  //! Deletes every blob of one image (original and renditions). Used by retention and by DELETE /v1/images/{id}.
  Result<int64_t> DeleteImageBlobs(const ImageId& id);

 private:
  Result<int64_t> DeletePrefix(std::string_view container, const std::string& prefix);

  RetentionPolicy policy_;
  BlobStore& blobs_;
  MetadataStore& store_;
  const Clock& clock_;
  Metrics* metrics_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace imgpipe
