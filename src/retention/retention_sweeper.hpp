#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "audit/audit_log.hpp"
#include "core/clock.hpp"
#include "core/image_events.hpp"
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

//! Deletes expired blobs and marks their rows `expired` (metadata stays for the analysts). Images on legal hold are
//! left alone until released. Every deletion is recorded in the warehouse's purge log. Two passes:
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

  //! Records each retention purge in `audit` and prunes its days older than `keep` at every sweep.
  //! Where "image.expired" events go; none by default. Call before Start().
  void SetEvents(ImageEvents* events) { events_ = events; }
  void SetAudit(AuditLog* audit, std::chrono::seconds keep) {
    audit_ = audit;
    audit_keep_ = keep;
  }

  //! Makes RunIfLeader (and so Start) sweep only while this process holds the warehouse's lease kSweeperLease as
  //! `owner`, taken or renewed for `ttl` before each sweep and between its batches: of all the processes sharing a
  //! warehouse, one sweeps at a time, and another takes over `ttl` after the holder died. Stop() gives it up.
  //! Call before Start.
  void SetLease(std::string owner, std::chrono::milliseconds ttl) {
    lease_owner_ = std::move(owner);
    lease_ttl_ = ttl;
  }

  //! One sweep as of `now`, lease or not.
  Result<SweepReport> RunOnce(TimePoint now);
  //! One sweep as of `now` if this process holds the lease (or none is set); nullopt, sweeping nothing, when
  //! another process holds it.
  Result<std::optional<SweepReport>> RunIfLeader(TimePoint now);
  //! Sweeps (RunIfLeader) every `interval` on a background thread until Stop().
  void Start(std::chrono::milliseconds interval);
  //! Stops the thread and releases the lease.
  void Stop();

  //! The lease's name in the warehouse's `leases` table.
  static constexpr const char* kSweeperLease = "retention-sweeper";

  //! Deletes every blob of one image (original and renditions) and records the purge (what, when, why, who) in the
  //! warehouse; returns how many objects went. kConflict, deleting nothing, if the image is on legal hold. Used by
  //! retention (reason "retention") and by DELETE /v1/images/{id} (reason "deleted", actor the API key).
  Result<int64_t> PurgeImage(const ImageId& id, const std::string& reason, const std::string& actor);

 private:
  //! Deletes the objects under `prefix` except those inside a folder of `keep`.
  Result<int64_t> DeletePrefix(std::string_view container, const std::string& prefix,
                               const std::set<std::string>& keep);
  static bool Kept(const std::string& key, const std::set<std::string>& keep);
  void Audit(const std::string& target, int64_t objects);
  //! Takes or renews the lease; true when there is none to take (SetLease not called).
  Result<bool> HoldLease(TimePoint now);

  RetentionPolicy policy_;
  BlobStore& blobs_;
  MetadataStore& store_;
  const Clock& clock_;
  Metrics* metrics_;
  AuditLog* audit_ = nullptr;
  ImageEvents* events_ = nullptr;
  std::chrono::seconds audit_keep_{0};
  std::string lease_owner_;  // empty: no lease
  std::chrono::milliseconds lease_ttl_{0};
  std::optional<bool> leader_;  // held the lease at the last look (none yet: nullopt); the sweeping thread's
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace imgpipe
