#pragma once

#include <openssl/evp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "config/config.hpp"
#include "core/clock.hpp"
#include "core/records.hpp"
#include "core/result.hpp"
#include "processing/image_probe.hpp"
#include "queue/job_queue.hpp"
#include "storage/blob_store.hpp"
#include "warehouse/metadata_store.hpp"

namespace imgpipe {

class Metrics;

struct IntakeOptions {
  std::string spool_dir;                       //!< local folder for uploads in flight (same filesystem as blobs)
  ImageLimits limits;
  std::chrono::seconds retention_originals{7 * 24 * 3600};  //!< 0 = keep forever
  std::string default_pipeline = "default";
  std::vector<RouteConfig> routes;             //!< [[processing.routes]]: chosen before default_pipeline
};

//! The bytes of one image on their way in: hashed, counted against the byte limit, and their format checked against
//! the allow-list as soon as the first bytes are in, so a refused upload stops early. Bytes collect in memory (at
//! most kMemoryBytes) and go to a local spool file only through Flush(), which blocks on the disk: the HTTP layer
//! calls it on its blocking pool, never on an I/O thread (a write can wait behind another request's fsync in the
//! filesystem journal, and would stall every connection of that thread). An image that never needed a Flush() stays
//! in memory: it is validated and stored from there, with no spool file at all (with encryption on, the plaintext
//! then never touches the disk, and the store writes the sealed bytes once instead of copying a spool file). The
//! spool file, if any, is removed when this is destroyed, unless Intake moved it into the store. Not thread-safe.
class Spool {
 public:
  static constexpr size_t kMemoryBytes = 256 * 1024;

  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  //! Never blocks on the disk. kTooLarge past limits.max_bytes; kUnsupportedFormat once the head shows a format
  //! outside the allow-list.
  Status Append(std::string_view data);
  //! True when the bytes in memory should be flushed before more are appended.
  bool NeedsFlush() const { return pending_.size() >= kMemoryBytes; }
  //! Writes the bytes in memory to the spool file (creating it on first use). Blocks on the disk.
  Status Flush();
  //! Call at the end of the bytes: flushes and closes the file if there is one (else the bytes stay in memory), and
  //! checks the format if fewer than 64 bytes came. May block on the disk.
  Status Finish();
  //! After Finish(): true if the image is only in memory (memory()), false if it is in the file at path().
  bool in_memory() const { return fd_ < 0 && !file_created_; }
  //! The image's bytes when in_memory().
  std::string_view memory() const { return pending_; }
  uint64_t bytes() const { return bytes_; }
  //! Hex SHA-256 of everything appended; valid after Finish().
  const std::string& sha256() const { return sha256_; }
  const std::string& path() const { return path_; }

 private:
  friend class Intake;
  Spool(std::string path, const ImageLimits& limits);
  Status CheckHead();

  std::string path_;
  int fd_ = -1;              // opened by the first Flush()
  bool file_created_ = false;
  const ImageLimits& limits_;
  EVP_MD_CTX* sha_ = nullptr;
  std::string head_;         // the first bytes, for the format check
  bool head_checked_ = false;
  std::string pending_;      // appended, not yet written
  uint64_t bytes_ = 0;
  std::string sha256_;
  bool moved_ = false;       // the file now belongs to the blob store
};

//! What the caller knows about an image besides its bytes.
struct IntakeRequest {
  std::string uploader_key_id;
  std::string source = "upload";
  std::string source_ref;
  std::string metadata_json = "{}";          //!< a validated JSON object
  std::string pipeline;                       //!< empty = routed (IntakeOptions::routes), else the default
  std::string topic;                          //!< stream sources: the Kafka topic, for routing
  std::optional<std::string> idempotency_key;
  std::string request_hash;                   //!< for idempotency: identifies the request's content
  std::optional<ImageId> id;                  //!< a deterministic id (stream sources); a fresh one when empty
  //! When the retention window starts: the record's own time for stream sources (whose id, and so the day folder
  //! of its blobs, carries that time); the intake's clock when empty.
  std::optional<TimePoint> retention_start;
};

//! The outcome of Accept(): the stored image, or the first answer replayed for an idempotent retry.
struct IntakeResult {
  ImageRecord image;
  bool replayed = false;
  int status_code = 201;
  std::string response_json;  //!< set for replays (the stored first answer) and for fresh accepts
};

//! A stream record's original, stored and waiting for its row: Intake::Stage() makes it, CommitStaged() commits the
//! rows of many at once. The original's bytes are durable; the sync of its name is deferred to CommitStaged(), which
//! syncs the folders of the whole batch once before the rows (so a row never names an object a crash could lose).
//! While it lives, a journal name "<id>.staged" in the spool records that the blob may have no row yet, so a crash
//! before the commit leaves RecoverSpool() a way to remove the blob.
class StagedImage {
 public:
  StagedImage() = default;
  ~StagedImage();
  StagedImage(StagedImage&& other) noexcept;
  StagedImage& operator=(StagedImage&& other) noexcept;

  ImageRecord image;  //!< the row to commit

 private:
  friend class Intake;
  std::string journal_;
  DeferredSync sync_;  // the original's folder, synced by CommitStaged()
};

//! The one intake path shared by uploads and stream records: validate, store the original, then one transaction
//! with the image row and its job (and the idempotency record). Thread-safe; its methods block (fsync, SQLite,
//! libvips), so the HTTP layer runs them on the blocking pool.
//!
//! Guarantee: when Accept() returns ok the original is durable in the blob store and the row and job are committed,
//! so the image will be processed whatever crashes afterwards. When it returns an error nothing was stored (a blob
//! written before a failed commit is deleted; if the process dies in between, a "<id>.staged" name in the spool
//! records it, and RecoverSpool() at the next start removes the blob; retention's whole-day pass is the last line).
class Intake {
 public:
  //! Renders the 201 body for an accepted image; stored with the idempotency record for replays.
  using ResponseRenderer = std::function<std::string(const ImageRecord&)>;

  Intake(IntakeOptions options, BlobStore& blobs, MetadataStore& store, JobQueue& queue, const Clock& clock,
         Metrics* metrics, ResponseRenderer renderer);

  //! A new, empty spool. Cheap and never blocks: the file is created by its first Flush().
  std::unique_ptr<Spool> BeginSpool();
  //! For a request with an idempotency key: the stored answer, if any. kConflict if it was for another body.
  Result<std::optional<IntakeResult>> FindReplay(const IntakeRequest& request);
  //! Finishes the spool if the caller did not, validates, stores and commits. Blocks.
  Result<IntakeResult> Accept(Spool& spool, const IntakeRequest& request);

  //! The first half of Accept() for a stream record (request.id set, no idempotency key): finishes the spool,
  //! validates and stores the original under its deterministic key. Errors as for Accept(); nothing to undo on an
  //! error (a redelivery writes the same object again).
  Result<StagedImage> Stage(Spool& spool, const IntakeRequest& request);
  //! The second half for many staged images: syncs the folders of their originals (once per folder), then their rows
  //! and jobs in one transaction (group commit). Element i is true if staged[i] was inserted, false if its row
  //! existed (a redelivery). On error nothing was committed.
  Result<std::vector<bool>> CommitStaged(const std::vector<StagedImage*>& staged);

  //! Call at start-up, while holding the data folder's lock and before accepting uploads: removes the originals of
  //! uploads interrupted between storing the blob and committing the row (never acknowledged), and the spool's
  //! leftovers. Returns how many originals it removed.
  Result<int> RecoverSpool();

  const IntakeOptions& options() const { return options_; }

 private:
  // Finishes the spool, validates, and fills the row (id, facts, route, retention) without storing anything.
  Result<ImageRecord> Validate(Spool& spool, const IntakeRequest& request);
  Result<IntakeResult> ReplayOrConflict(const IdempotencyRecord& rec, const IntakeRequest& request);
  // The intent journal "<id>.staged" in the spool folder, made before the original is stored.
  Status WriteJournal(const Spool& spool, const std::string& journal);
  // Stores the finished spool's image as the original under `key`: from memory, or from its file. With `deferred`,
  // its syncs are left to it (see DeferredSync).
  Status StoreOriginal(Spool& spool, const std::string& key, DeferredSync* deferred = nullptr);

  IntakeOptions options_;
  BlobStore& blobs_;
  MetadataStore& store_;
  JobQueue& queue_;
  const Clock& clock_;
  Metrics* metrics_;
  ResponseRenderer renderer_;
};

}  // namespace imgpipe
