#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <set>

#include "core/clock.hpp"
#include "warehouse/metadata_store.hpp"
#include "warehouse/postgres/postgres_database.hpp"

namespace imgpipe {

//! MetadataStore over a PostgreSQL database (schema: docs/WAREHOUSE.md). Thread-safe; any number of processes may
//! share the database. Lifetimes: `db` and `clock` must outlive the store.
//!
//! Beyond MetadataStore's contract:
//! - Times are timestamptz: they read back exactly (microseconds).
//! - `images` is partitioned by UTC day of received_at. InsertImage creates the day's partition and the next day's
//!   when they are missing (Migrate creates today's and tomorrow's), so a new day rarely waits for DDL; if creating
//!   one fails (e.g. a long analyst query holds the table past lock_timeout) the row goes to the default partition
//!   and creation is tried again a minute later.
//! - InsertImage writes the job into the `jobs` table of the same database in the same transaction; PostgresJobQueue
//!   (src/queue/postgres) leases from it.
//! - user_metadata is jsonb: it reads back as the same JSON value, normalised (key order, spacing).
//! - Rows that are `expired` or `deleted` never change status again except expired -> deleted, as in SQLite;
//!   MarkExpired / MarkDeleted delete the image's job.
//! - Query runs the SQL in a READ ONLY transaction under the role imgpipe_analyst (SELECT on the analysis tables and
//!   views only: not api_keys, not idempotency) with statement_timeout, on a connection of its own pool, fetching
//!   rows one at a time and cancelling the statement at the row cap. Parameters are $1, $2...: JSON numbers bind as
//!   bigint or double precision, booleans as boolean, strings as untyped literals (their type comes from the
//!   context; as text where the context says nothing). Cells: numbers, booleans, strings, timestamptz as RFC 3339,
//!   bytea as base64. It refuses to run at all (kUnavailable) while imgpipe_analyst can call set_config().
class PostgresMetadataStore final : public MetadataStore {
 public:
  PostgresMetadataStore(PostgresDatabase& db, const Clock& clock) : db_(db), clock_(clock) {}

  Status Migrate() override;
  Result<int> SchemaVersion() override;
  int KnownSchemaVersion() const override;
  Status Ping() override;
  Status CompactRollups() override;

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
  Status RecordFailure(const ImageId& id, const ProcessingRun& run, bool final) override;
  Status RecordLabels(const ImageId& id, const std::string& script_name, const std::string& script_version,
                      const std::vector<ImageLabel>& labels) override;
  Result<bool> RequeueImage(const ImageId& id, const std::string& pipeline, TimePoint now) override;
  std::string_view BackendName() const override { return "postgres"; }

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
  //! Makes sure the partitions of `t`'s UTC day and the day after exist (best effort, see the class comment).
  void EnsurePartitions(TimePoint t);
  Status CreateDayPartition(int64_t day);
  Status MarkGone(const ImageId& id, TimePoint when, std::string_view update_sql);

  PostgresDatabase& db_;
  const Clock& clock_;
  std::mutex partitions_mu_;
  std::set<int64_t> partitions_;  //!< days (since 1970-01-01) whose partition exists
  //! Days whose partition could not be created -> when to try again.
  std::map<int64_t, std::chrono::steady_clock::time_point> partition_retry_;
};

}  // namespace imgpipe
