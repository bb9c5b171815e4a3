#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "core/result.hpp"
#include "core/records.hpp"

namespace imgpipe {

//! The warehouse: image facts, renditions, processing runs, API keys and idempotency records. The SQLite backend
//! (src/warehouse/sqlite) also holds the embedded job queue in the same database. All methods are thread-safe and
//! may be called from several processes on the same database (e.g. `imgpipe keys create` while `serve` runs).
class MetadataStore {
 public:
  virtual ~MetadataStore() = default;

  //! Applies numbered migrations not yet applied. Idempotent.
  virtual Status Migrate() = 0;
  //! The newest migration applied to the database (0 for an empty one), and the newest this binary knows.
  virtual Result<int> SchemaVersion() = 0;
  virtual int KnownSchemaVersion() const = 0;
  virtual Status Ping() = 0;

  //! Inserts the image row and its processing job in one transaction, plus `idempotency` when given. The job is
  //! durable when this returns ok: an accepted upload is always processed. kConflict if the id exists, or if the
  //! idempotency key was taken concurrently (the caller then replays FindIdempotency).
  virtual Status InsertImage(const ImageRecord& image, const std::optional<IdempotencyRecord>& idempotency) = 0;
  //! Inserts the image row and its job unless a row with this id exists; true if inserted. For stream sources whose
  //! deterministic ids make redeliveries idempotent.
  virtual Result<bool> InsertImageIfAbsent(const ImageRecord& image) = 0;
  //! InsertImageIfAbsent for many images in one transaction (a stream source's group commit): all rows and jobs are
  //! durable when this returns ok, none when it fails. Element i is true if images[i] was inserted. This default
  //! commits them one by one (still all-or-retry for the caller, whose redeliveries find the rows).
  virtual Result<std::vector<bool>> InsertImagesIfAbsent(const std::vector<ImageRecord>& images) {
    std::vector<bool> out;
    out.reserve(images.size());
    for (const ImageRecord& image : images) {
      IMGPIPE_ASSIGN_OR_RETURN(bool inserted, InsertImageIfAbsent(image));
      out.push_back(inserted);
    }
    return out;
  }
  virtual Result<std::optional<IdempotencyRecord>> FindIdempotency(const std::string& api_key_id,
                                                                   const std::string& key) = 0;

  virtual Result<ImageRecord> GetImage(const ImageId& id) = 0;
  virtual Result<ImagePage> ListImages(const ImageFilter& filter) = 0;
  virtual Result<std::vector<RenditionRecord>> ListRenditions(const ImageId& id) = 0;
  virtual Result<std::vector<ProcessingRun>> ListRuns(const ImageId& id) = 0;

  //! Marks the image `processing` (a worker picked it up) and adds one to its processing_starts, durably when this
  //! returns: call it before the work begins, so a worker that dies during the work (killed, out of memory, a crash
  //! in a decoder) has counted the attempt whatever its queue remembers. Images processed, failed, expired or deleted
  //! are left as they are. kNotFound if there is no such image.
  virtual Status MarkProcessing(const ImageId& id) = 0;
  //! Takes back one start counted by MarkProcessing (never below 0), for work handed back unfinished on a graceful
  //! shutdown, which is not an attempt. kNotFound if there is no such image.
  virtual Status UncountProcessingStart(const ImageId& id) = 0;
  //! In one transaction: upserts the renditions by (image_id, name), sets phash and dominant colour, sets status
  //! `processed` and processed_at, and appends the run. Re-running for the same image overwrites, never duplicates.
  //! kConflict, writing nothing, if the image is expired or deleted (the caller drops what it wrote and acks).
  virtual Status RecordProcessed(const ImageId& id, std::optional<uint64_t> phash,
                                 std::optional<std::string> dominant_colour,
                                 const std::vector<RenditionRecord>& renditions, const ProcessingRun& run) = 0;
  //! Replaces the labels of `id` from one script version (script_name, script_version) with `labels`, in one
  //! transaction: a re-run of the same version overwrites, never duplicates; other versions' labels stay, so analysts
  //! can compare versions. Call it before RecordProcessed. kNotFound if the image does not exist.
  virtual Status RecordLabels(const ImageId& id, const std::string& script_name, const std::string& script_version,
                              const std::vector<ImageLabel>& labels) = 0;
  //! Queues `id` again to be processed with `pipeline` (a script name, or "default"), for reprocessing stored images:
  //! sets the image's pipeline and status `queued`, its processing_starts to 0, and inserts its job, in one
  //! transaction. True if queued; false, changing nothing, if the image is not processed or failed (still queued or
  //! processing, expired, deleted) or its expires_at is at or before `now`. Earlier runs, renditions and labels stay.
  //! kNotFound if there is no such image.
  virtual Result<bool> RequeueImage(const ImageId& id, const std::string& pipeline, TimePoint now) = 0;
  //! Folds the rollup tables' rows of differences into one row per key (docs/WAREHOUSE.md, "Rollups"). Their sums
  //! are right either way; this keeps the views over them fast. Safe to run at any time, from several processes.
  //! SQLite keeps one row per key already and does nothing.
  virtual Status CompactRollups() { return Ok(); }
  //! A short name for messages ("sqlite", "postgres").
  virtual std::string_view BackendName() const { return "this"; }
  //! Appends a failed run; when `final` the image becomes `failed` with the error.
  virtual Status RecordFailure(const ImageId& id, const ProcessingRun& run, bool final) = 0;

  //! Images whose expires_at <= now and whose status is not yet expired or deleted, oldest first; never images on
  //! legal hold.
  virtual Result<std::vector<ImageRecord>> FindExpired(TimePoint now, size_t limit) = 0;
  //! Sets status `expired` (or `deleted`) with the time, and removes the image's job. The row and its rendition rows
  //! are kept: metadata outlives blobs. Expired and deleted rows never go back (only expired -> deleted).
  virtual Status MarkExpired(const ImageId& id, TimePoint when) = 0;
  virtual Status MarkDeleted(const ImageId& id, TimePoint when) = 0;

  //! Puts a live image on legal hold; returns the hold (the existing one, unchanged, if it is held already).
  //! kNotFound if there is no such image; kConflict if it is expired, deleted, or a purge of it has begun.
  virtual Result<LegalHold> SetLegalHold(const ImageId& id, const std::string& reason, const std::string& held_by,
                                         TimePoint at) = 0;
  //! Ends the hold (kept in the history with who and when). kNotFound if the image is not on hold.
  virtual Status ReleaseLegalHold(const ImageId& id, const std::string& released_by, TimePoint at) = 0;
  virtual Result<std::optional<LegalHold>> FindLegalHold(const ImageId& id) = 0;
  //! Every hold in force, oldest first.
  virtual Result<std::vector<LegalHold>> ListLegalHolds() = 0;
  //! Records that `purge` is about to delete blobs and returns its id. For an image (purge.image_id set), in one
  //! transaction with the check: kConflict if the image is on legal hold, so a hold and a purge never both win.
  virtual Result<int64_t> BeginPurge(const PurgeRecord& purge) = 0;
  //! Completes the record once the blobs are gone.
  virtual Status FinishPurge(int64_t purge_id, int64_t objects, TimePoint at) = 0;

  virtual Status CreateApiKey(const ApiKeyRecord& key) = 0;
  //! The key with this secret hash, revoked or not; kNotFound if none.
  virtual Result<ApiKeyRecord> FindApiKeyByHash(const std::string& secret_hash) = 0;
  virtual Result<std::vector<ApiKeyRecord>> ListApiKeys() = 0;
  virtual Status RevokeApiKey(const std::string& id, TimePoint when) = 0;
  virtual Result<int64_t> CountApiKeys() = 0;

  //! Takes or renews the lease `name` for `owner` until `now + ttl`; true if `owner` holds it when this returns,
  //! false if another owner holds it and it has not run out at `now`. Two callers asking at once never both get
  //! true. Times are the callers' clocks: processes sharing a lease need synchronised clocks (NTP; `imgpipe doctor`
  //! checks the skew). Used for work only one process may do at a time (the retention sweep).
  virtual Result<bool> AcquireLease(const std::string& name, const std::string& owner, TimePoint now,
                                    std::chrono::milliseconds ttl) = 0;
  //! Gives the lease up if `owner` holds it, so another process can take it at once; a no-op otherwise.
  virtual Status ReleaseLease(const std::string& name, const std::string& owner) = 0;

  //! Runs `sql` read-only (enforced by the database: a query_only connection and an authorizer, not by parsing), with
  //! positional `params` (JSON scalars), at most `max_rows` rows and `timeout`. kInvalidArgument with the database's
  //! message for bad or non-read-only SQL; kUnavailable... if the timeout hits.
  virtual Result<QueryResult> Query(const std::string& sql, const std::vector<std::string>& params_json,
                                    size_t max_rows, std::chrono::milliseconds timeout) = 0;
};

}  // namespace imgpipe
