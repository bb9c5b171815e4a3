#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "audit/audit_log.hpp"
#include "config/config.hpp"
#include "core/clock.hpp"
#include "core/metrics.hpp"
#include "http/server.hpp"
#include "ingest/intake.hpp"
#include "queue/job_queue.hpp"
#include "retention/retention_sweeper.hpp"
#include "security/api_keys.hpp"
#include "security/caller_slots.hpp"
#include "security/rate_limiter.hpp"
#include "storage/blob_store.hpp"
#include "warehouse/metadata_store.hpp"

namespace imgpipe {

//! What the handlers use. Lifetimes: everything referenced must outlive the Api.
struct ApiContext {
  const Config& config;
  BlobStore& blobs;
  MetadataStore& store;
  JobQueue& queue;
  const Clock& clock;
  Metrics& metrics;
  ApiKeys& keys;
  Intake& intake;
  RetentionSweeper& retention;
  asio::thread_pool& blocking;  //!< for fsync, SQLite writes, libvips
  AuditLog* audit = nullptr;     //!< where authenticated actions are recorded; none when audit.enabled is false
  RateLimiter* key_rate = nullptr;      //!< per API key (limits.rate_per_key), none when off
  RateLimiter* address_rate = nullptr;  //!< per client address (limits.rate_per_address), none when off
  //! More checks for /readyz beside storage, database and queue (e.g. "stream": the Kafka stream source's brokers).
  std::vector<std::pair<std::string, std::function<Status()>>> ready_checks;
};

//! The HTTP API: routing, authentication and roles, and the handlers of docs/openapi.yaml.
class Api {
 public:
  explicit Api(ApiContext ctx) : ctx_(ctx) {
    if (ctx_.config.uploads_per_key > 0) upload_slots_.emplace(ctx_.config.uploads_per_key);
  }
  asio::awaitable<HttpResponse> Handle(HttpRequest& request);

 private:
  asio::awaitable<HttpResponse> Upload(HttpRequest& req, const ApiKeyRecord& key);
  // These block (SQLite, the disk): run them on the blocking pool.
  HttpResponse GetImage(HttpRequest& req, const std::string& id);
  HttpResponse ListImages(HttpRequest& req);
  HttpResponse GetBlob(HttpRequest& req, const std::string& id, const std::string* rendition);
  asio::awaitable<HttpResponse> DeleteImage(HttpRequest& req, const std::string& id, const ApiKeyRecord& key);
  //! GET, PUT ({"reason"}) and DELETE of /v1/images/{id}/hold; the caller checks the admin role.
  asio::awaitable<HttpResponse> Hold(HttpRequest& req, const std::string& id, const ApiKeyRecord& key);
  HttpResponse ListHolds(HttpRequest& req);
  asio::awaitable<HttpResponse> Query(HttpRequest& req);
  asio::awaitable<HttpResponse> CreateKey(HttpRequest& req);
  //! /v1/scripts and /v1/scripts/{name} (`name` empty for the former); the caller checks the admin role.
  //! src/api/scripts_api.hpp does the work.
  asio::awaitable<HttpResponse> Scripts(HttpRequest& req, std::string name);
  asio::awaitable<HttpResponse> ListKeys(HttpRequest& req);
  asio::awaitable<HttpResponse> RevokeKey(HttpRequest& req, const std::string& id);
  HttpResponse Ready(HttpRequest& req);
  //! 429 with Retry-After (whole seconds, at least 1) for a caller over its rate.
  HttpResponse RateLimited(const HttpRequest& req, std::chrono::milliseconds wait, const std::string& who);
  //! GET /v1/audit: records newest first (admin).
  HttpResponse ListAudit(HttpRequest& req);
  //! The audit record of an authenticated request, if its route and method are an audited action.
  std::optional<AuditEvent> AuditOf(const HttpRequest& req, const HttpResponse& r,
                                    const std::vector<std::string_view>& segs, const std::string& key_id) const;
  HttpResponse MetricsText(HttpRequest& req);

  //! The live image with this id, or kNotFound if unknown, deleted or expired (read-time expiry: the clock decides,
  //! not whether the sweeper ran yet).
  Result<ImageRecord> LiveImage(const std::string& id);

  ApiContext ctx_;
  std::optional<CallerSlots> upload_slots_;  //!< concurrent uploads per API key (limits.uploads_per_key)
};

//! Whether `path` (split into segments) is an admin endpoint, served only on the private listener when one is
//! configured (admin.listen): /metrics, /v1/audit, /v1/holds, /v1/images/{id}/hold, /v1/keys..., /v1/scripts...
bool IsAdminPath(const std::vector<std::string_view>& segments);

}  // namespace imgpipe
