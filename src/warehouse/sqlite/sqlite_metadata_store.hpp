#pragma once

#include "core/clock.hpp"
#include "warehouse/metadata_store.hpp"
#include "warehouse/sqlite/sqlite_database.hpp"

namespace imgpipe {

//! MetadataStore over a SQLite file (schema: docs/WAREHOUSE.md). Thread-safe; several processes may share the file.
//! Lifetimes: `db` and `clock` must outlive the store.
//!
//! Beyond MetadataStore's contract:
//! - Times are stored as RFC 3339 text with millisecond precision; times read back are truncated to milliseconds.
//! - The job written by InsertImage is ready at clock.Now().
//! - Rows that are `expired` or `deleted` never change status again except expired -> deleted: MarkProcessing and
//!   RecordFailure leave them alone, and RecordProcessed returns kConflict and writes nothing (the worker should
//!   delete the renditions it wrote and ack the job).
//! - MarkExpired / MarkDeleted also delete the image's job: there is nothing left to process.
//! - Query denies reading `api_keys` and `idempotency` (secrets and stored responses are not analyst data), and
//!   also PRAGMA, ATTACH, transactions and every kind of write, through an authorizer on a read-only connection.
class SqliteMetadataStore final : public MetadataStore {
 public:
  SqliteMetadataStore(SqliteDatabase& db, const Clock& clock) : db_(db), clock_(clock) {}

  Status Migrate() override;
  Result<int> SchemaVersion() override;
  int KnownSchemaVersion() const override;
  Status Ping() override;

  Status InsertImage(const ImageRecord& image, const std::optional<IdempotencyRecord>& idempotency) override;
  Result<bool> InsertImageIfAbsent(const ImageRecord& image) override;
  Result<std::vector<bool>> InsertImagesIfAbsent(const std::vector<ImageRecord>& images) override;
  Result<std::optional<IdempotencyRecord>> FindIdempotency(const std::string& api_key_id,
                                                           const std::string& key) override;

  Result<ImageRecord> GetImage(const ImageId& id) override;
  Result<ImagePage> ListImages(const ImageFilter& filter) override;
  Result<std::vector<RenditionRecord>> ListRenditions(const ImageId& id) override;
  Result<std::vector<ProcessingRun>> ListRuns(const ImageId& id) override;

  Status MarkProcessing(const ImageId& id) override;
  Status UncountProcessingStart(const ImageId& id) override;
  Status RecordProcessed(const ImageId& id, std::optional<uint64_t> phash, std::optional<std::string> dominant_colour,
                         const std::vector<RenditionRecord>& renditions, const ProcessingRun& run) override;
  Status RecordLabels(const ImageId& id, const std::string& script_name, const std::string& script_version,
                      const std::vector<ImageLabel>& labels) override;
  Result<bool> RequeueImage(const ImageId& id, const std::string& pipeline, TimePoint now) override;
  std::string_view BackendName() const override { return "sqlite"; }
  Status RecordFailure(const ImageId& id, const ProcessingRun& run, bool final) override;

  Result<std::vector<ImageRecord>> FindExpired(TimePoint now, size_t limit) override;
  Status MarkExpired(const ImageId& id, TimePoint when) override;
  Status MarkDeleted(const ImageId& id, TimePoint when) override;

  Result<LegalHold> SetLegalHold(const ImageId& id, const std::string& reason, const std::string& held_by,
                                 TimePoint at) override;
  Status ReleaseLegalHold(const ImageId& id, const std::string& released_by, TimePoint at) override;
  Result<std::optional<LegalHold>> FindLegalHold(const ImageId& id) override;
  Result<std::vector<LegalHold>> ListLegalHolds() override;
  Result<int64_t> BeginPurge(const PurgeRecord& purge) override;
  Status FinishPurge(int64_t purge_id, int64_t objects, TimePoint at) override;
  Status CreateApiKey(const ApiKeyRecord& key) override;
  Result<ApiKeyRecord> FindApiKeyByHash(const std::string& secret_hash) override;
  Result<std::vector<ApiKeyRecord>> ListApiKeys() override;
  Status RevokeApiKey(const std::string& id, TimePoint when) override;
  Result<int64_t> CountApiKeys() override;
  Result<bool> AcquireLease(const std::string& name, const std::string& owner, TimePoint now,
                            std::chrono::milliseconds ttl) override;
  Status ReleaseLease(const std::string& name, const std::string& owner) override;

  Result<QueryResult> Query(const std::string& sql, const std::vector<std::string>& params_json, size_t max_rows,
                            std::chrono::milliseconds timeout) override;

 private:
  SqliteDatabase& db_;
  const Clock& clock_;
};

}  // namespace imgpipe
