#include "retention/retention_sweeper.hpp"

#include <algorithm>

#include "core/blob_keys.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"

namespace imgpipe {

RetentionSweeper::RetentionSweeper(RetentionPolicy policy, BlobStore& blobs, MetadataStore& store,
                                   const Clock& clock, Metrics* metrics)
    : policy_(policy), blobs_(blobs), store_(store), clock_(clock), metrics_(metrics) {}

RetentionSweeper::~RetentionSweeper() { Stop(); }

Result<int64_t> RetentionSweeper::DeletePrefix(std::string_view container, const std::string& prefix,
                                               const std::set<std::string>& keep) {
  int64_t deleted = 0;
  std::string continuation;
  do {
    IMGPIPE_ASSIGN_OR_RETURN(ListPage page, blobs_.List(container, prefix, continuation, 1000));
    for (const BlobInfo& b : page.items) {
      if (Kept(b.key, keep)) continue;
      IMGPIPE_TRY(blobs_.Delete(container, b.key));
      ++deleted;
    }
    continuation = page.continuation;
  } while (!continuation.empty());
  return deleted;
}

bool RetentionSweeper::Kept(const std::string& key, const std::set<std::string>& keep) {
  // `keep` holds image folders ("yyyy/mm/dd/<id>/"); the only candidate is the greatest one not after the key.
  auto it = keep.upper_bound(key);
  return it != keep.begin() && key.starts_with(*std::prev(it));
}

Result<int64_t> RetentionSweeper::PurgeImage(const ImageId& id, const std::string& reason, const std::string& actor) {
  PurgeRecord purge;
  purge.image_id = id;
  purge.what = "image";
  purge.reason = reason;
  purge.actor = actor;
  purge.started_at = clock_.Now();
  // Refused (kConflict) while the image is on legal hold; once begun, a hold waits for the purge to finish.
  IMGPIPE_ASSIGN_OR_RETURN(int64_t purge_id, store_.BeginPurge(purge));
  const std::string prefix = ImageBlobPrefix(id);
  IMGPIPE_ASSIGN_OR_RETURN(int64_t renditions, DeletePrefix(kRenditions, prefix, {}));
  IMGPIPE_ASSIGN_OR_RETURN(int64_t originals, DeletePrefix(kOriginals, prefix, {}));
  IMGPIPE_TRY(store_.FinishPurge(purge_id, renditions + originals, clock_.Now()));
  return renditions + originals;
}

Result<SweepReport> RetentionSweeper::RunOnce(TimePoint now) {
  SweepReport report;
  for (;;) {
    IMGPIPE_ASSIGN_OR_RETURN(auto batch, store_.FindExpired(now, 200));
    if (batch.empty()) break;
    for (const ImageRecord& image : batch) {
      auto deleted = PurgeImage(image.id, "retention", "retention");
      if (!deleted.ok()) {
        ++report.errors;
        LogWarn("retention could not delete an image's blobs; will retry next sweep",
                {{"image_id", image.id.value()}, {"error", deleted.error().message}});
        continue;
      }
      report.deleted_blobs += *deleted;
      Audit(image.id.value(), *deleted);
      Status marked = store_.MarkExpired(image.id, now);
      if (!marked.ok()) {
        ++report.errors;
        continue;
      }
      ++report.expired_images;
      if (events_) {
        ImageEvent e{"image.expired", image.id, now, {}};
        e.details["expires_at"] = FormatRfc3339(image.expires_at);
        e.details["blobs_deleted"] = *deleted;
        events_->Publish(std::move(e));
      }
      LogInfo("image expired", {{"image_id", image.id.value()}, {"blobs", *deleted}});
    }
    if (report.errors > 0) break;  // do not spin on the same failing rows
    // A long sweep keeps its lease, and stops if another process took it meanwhile (this one stalled past it).
    IMGPIPE_ASSIGN_OR_RETURN(bool still_leader, HoldLease(clock_.Now()));
    if (!still_leader) {
      return MakeError(ErrorKind::kUnavailable, "lost the retention sweeper lease in the middle of a sweep (stalled "
                                                "longer than retention.lease?); another process sweeps now");
    }
  }
  // Whole days past each container's retention (leftovers without a live row), except the folders of images on
  // legal hold.
  std::set<std::string> held;
  IMGPIPE_ASSIGN_OR_RETURN(auto holds, store_.ListLegalHolds());
  for (const LegalHold& hold : holds) held.insert(ImageBlobPrefix(hold.image_id));
  auto sweep_days = [&](std::string_view container, std::chrono::seconds keep) -> Status {
    if (keep.count() <= 0) return Ok();
    // A day folder is past retention once its last second is: start one day before the boundary.
    TimePoint boundary = now - keep - std::chrono::hours(24);
    for (int d = 0; d < policy_.orphan_scan_days; ++d) {
      std::string prefix = DayPrefix(boundary - std::chrono::hours(24 * d));
      // Most days are empty: record a purge only when there is something to delete.
      IMGPIPE_ASSIGN_OR_RETURN(ListPage first, blobs_.List(container, prefix, {}, 1000));
      if (std::all_of(first.items.begin(), first.items.end(),
                      [&](const BlobInfo& b) { return Kept(b.key, held); })) {
        if (first.continuation.empty()) continue;
      }
      PurgeRecord purge;
      purge.what = std::string(container) + "/" + prefix;
      purge.reason = "leftovers past retention";
      purge.actor = "retention";
      purge.started_at = clock_.Now();
      IMGPIPE_ASSIGN_OR_RETURN(int64_t purge_id, store_.BeginPurge(purge));
      IMGPIPE_ASSIGN_OR_RETURN(int64_t n, DeletePrefix(container, prefix, held));
      IMGPIPE_TRY(store_.FinishPurge(purge_id, n, clock_.Now()));
      Audit(purge.what, n);
      report.deleted_blobs += n;
    }
    return Ok();
  };
  IMGPIPE_TRY(sweep_days(kOriginals, policy_.originals));
  IMGPIPE_TRY(sweep_days(kRenditions, policy_.renditions));
  if (metrics_) metrics_->Add("imgpipe_retention_expired_total", {}, static_cast<double>(report.expired_images));
  if (audit_) {
    if (auto pruned = audit_->Prune(audit_keep_); !pruned.ok()) {
      LogWarn("cannot prune the audit log", {{"error", pruned.error().message}});
    }
  }
  return report;
}

void RetentionSweeper::Audit(const std::string& target, int64_t objects) {
  if (!audit_) return;
  AuditEvent e;
  e.at = clock_.Now();
  e.actor = "retention";
  e.action = "retention.purge";
  e.target = target;
  e.outcome = "ok";
  e.details["objects"] = objects;
  if (Status s = audit_->Append(e); !s.ok()) {
    LogError("cannot write the audit log", {{"error", s.error().message}, {"action", e.action}});
  }
}

Result<bool> RetentionSweeper::HoldLease(TimePoint now) {
  if (lease_owner_.empty()) return true;
  IMGPIPE_ASSIGN_OR_RETURN(bool held, store_.AcquireLease(kSweeperLease, lease_owner_, now, lease_ttl_));
  if (leader_ != held) {
    if (held) {
      LogInfo("this process holds the retention sweeper lease and sweeps", {{"owner", lease_owner_}});
    } else {
      LogInfo("another process holds the retention sweeper lease; this one does not sweep", {{"owner", lease_owner_}});
    }
    leader_ = held;
  }
  if (metrics_) metrics_->Set("imgpipe_retention_sweeper_active", {}, held ? 1 : 0);
  return held;
}

Result<std::optional<SweepReport>> RetentionSweeper::RunIfLeader(TimePoint now) {
  // The lease runs on the clock, not on `now`: a sweep "as of" a later time (`retention run --now`) must not hold
  // the lease until then.
  IMGPIPE_ASSIGN_OR_RETURN(bool leader, HoldLease(clock_.Now()));
  if (!leader) return std::optional<SweepReport>();
  IMGPIPE_ASSIGN_OR_RETURN(SweepReport report, RunOnce(now));
  if (metrics_) metrics_->Add("imgpipe_retention_sweeps_total", {});
  return std::optional<SweepReport>(report);
}

void RetentionSweeper::Start(std::chrono::milliseconds interval) {
  thread_ = std::thread([this, interval] {
    std::unique_lock lock(mu_);
    while (!stop_) {
      lock.unlock();
      auto r = RunIfLeader(clock_.Now());
      if (!r.ok()) LogWarn("retention sweep failed", {{"error", r.error().message}});
      lock.lock();
      cv_.wait_for(lock, interval, [this] { return stop_; });
    }
  });
}

void RetentionSweeper::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (leader_.value_or(false)) {
    leader_ = false;
    // Another process may take over at once rather than after the lease ran out.
    if (Status s = store_.ReleaseLease(kSweeperLease, lease_owner_); !s.ok()) {
      LogWarn("cannot release the retention sweeper lease; another process takes over when it runs out",
              {{"error", s.error().message}});
    }
  }
}

}  // namespace imgpipe
