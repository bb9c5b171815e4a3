#include "retention/retention_sweeper.hpp"

#include "core/blob_keys.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"

namespace imgpipe {

RetentionSweeper::RetentionSweeper(RetentionPolicy policy, BlobStore& blobs, MetadataStore& store,
                                   const Clock& clock, Metrics* metrics)
    : policy_(policy), blobs_(blobs), store_(store), clock_(clock), metrics_(metrics) {}

RetentionSweeper::~RetentionSweeper() { Stop(); }

Result<int64_t> RetentionSweeper::DeletePrefix(std::string_view container, const std::string& prefix) {
  int64_t deleted = 0;
  std::string continuation;
  do {
    IMGPIPE_ASSIGN_OR_RETURN(ListPage page, blobs_.List(container, prefix, continuation, 1000));
    for (const BlobInfo& b : page.items) {
      IMGPIPE_TRY(blobs_.Delete(container, b.key));
      ++deleted;
    }
    continuation = page.continuation;
  } while (!continuation.empty());
  return deleted;
}

Result<int64_t> RetentionSweeper::DeleteImageBlobs(const ImageId& id) {
  std::string prefix = ImageBlobPrefix(id);
  IMGPIPE_ASSIGN_OR_RETURN(int64_t a, DeletePrefix(kRenditions, prefix));
  IMGPIPE_ASSIGN_OR_RETURN(int64_t b, DeletePrefix(kOriginals, prefix));
  return a + b;
}

Result<SweepReport> RetentionSweeper::RunOnce(TimePoint now) {
  SweepReport report;
  for (;;) {
    IMGPIPE_ASSIGN_OR_RETURN(auto batch, store_.FindExpired(now, 200));
    if (batch.empty()) break;
    for (const ImageRecord& image : batch) {
      auto deleted = DeleteImageBlobs(image.id);
      if (!deleted.ok()) {
        ++report.errors;
        LogWarn("retention could not delete an image's blobs; will retry next sweep",
                {{"image_id", image.id.value()}, {"error", deleted.error().message}});
        continue;
      }
      report.deleted_blobs += *deleted;
      Status marked = store_.MarkExpired(image.id, now);
      if (!marked.ok()) {
        ++report.errors;
        continue;
      }
      ++report.expired_images;
      LogInfo("image expired", {{"image_id", image.id.value()}, {"blobs", *deleted}});
    }
    if (report.errors > 0) break;  // do not spin on the same failing rows
  }
  // Whole days past each container's retention (leftovers without a live row).
  auto sweep_days = [&](std::string_view container, std::chrono::seconds keep) -> Status {
    if (keep.count() <= 0) return Ok();
    // A day folder is past retention once its last second is: start one day before the boundary.
    TimePoint boundary = now - keep - std::chrono::hours(24);
    for (int d = 0; d < policy_.orphan_scan_days; ++d) {
      std::string prefix = DayPrefix(boundary - std::chrono::hours(24 * d));
      IMGPIPE_ASSIGN_OR_RETURN(int64_t n, DeletePrefix(container, prefix));
      report.deleted_blobs += n;
    }
    return Ok();
  };
  IMGPIPE_TRY(sweep_days(kOriginals, policy_.originals));
  IMGPIPE_TRY(sweep_days(kRenditions, policy_.renditions));
  if (metrics_) metrics_->Add("imgpipe_retention_expired_total", {}, static_cast<double>(report.expired_images));
  return report;
}

void RetentionSweeper::Start(std::chrono::milliseconds interval) {
  thread_ = std::thread([this, interval] {
    std::unique_lock lock(mu_);
    while (!stop_) {
      lock.unlock();
      auto r = RunOnce(clock_.Now());
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
}

}  // namespace imgpipe
