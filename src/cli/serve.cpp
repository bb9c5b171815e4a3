// `imgpipe serve`: the whole pipeline in one process; `imgpipe ingest`: the same process with only the Kafka stream
// source (and the HTTP listener, for /metrics and the health checks); `imgpipe gateway`: the HTTP API and the job
// producer (with queue.backend = "kafka", the outbox relay), no workers, no sweeper; `imgpipe worker`: processing
// workers only, with an HTTP listener for /livez, /readyz and /metrics. Wiring only.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <filesystem>
#include <functional>
#include <iostream>
#include <thread>

#include "api/routes.hpp"
#include "cli/common.hpp"
#include "core/ids.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"
#include "http/tls_context.hpp"
#include "api/image_json.hpp"
#include "ingest/kafka/kafka_source.hpp"
#include "processing/image_format.hpp"
#include "processing/image_probe.hpp"
#include "queue/embedded/embedded_job_queue.hpp"
#include "queue/kafka/kafka_image_events.hpp"
#include "queue/kafka/kafka_job_queue.hpp"
#include "queue/kafka/outbox_relay.hpp"
#include "queue/postgres/postgres_job_queue.hpp"
#include "retention/retention_sweeper.hpp"
#include "security/api_keys.hpp"
#include "warehouse/sqlite/sqlite_database.hpp"
#include "warehouse/sqlite/sqlite_metadata_store.hpp"
#include "worker/worker_pool.hpp"

namespace imgpipe {

namespace {

constexpr std::chrono::seconds kRollupCompactionInterval{30};
constexpr std::string_view kRollupCompactionLease = "rollup-compaction";

int Cores() { return std::max(1u, std::thread::hardware_concurrency()); }

ImageLimits LimitsFrom(const Config& cfg) {
  ImageLimits l;
  l.max_bytes = cfg.max_bytes;
  l.max_pixels = cfg.max_pixels;
  l.max_frames = cfg.max_frames;
  l.max_dimension = cfg.max_dimension;
  l.allowed.clear();
  for (const auto& name : cfg.allowed_formats) {
    ImageFormat f;
    if (ParseFormatName(name, &f)) l.allowed.push_back(f);
  }
  return l;
}

KafkaSourceOptions KafkaSourceOptionsFrom(const Config& cfg) {
  KafkaSourceOptions o;
  o.client = KafkaClientProperties(cfg);
  o.topics = cfg.ingest_topics;
  o.group_id = cfg.ingest_group_id;
  o.group_instance_id = cfg.ingest_group_instance_id;
  o.threads = cfg.ingest_threads;
  o.max_in_flight = cfg.ingest_max_in_flight;
  o.max_poll_interval = cfg.ingest_max_poll_interval;
  o.session_timeout = cfg.ingest_session_timeout;
  o.record.max_metadata_bytes = cfg.max_metadata_bytes;
  o.record.claim_containers = cfg.ingest_claim_containers;
  o.testing_seek_ahead = cfg.kafka_seek_ahead;
  return o;
}

enum class ServerRole { kServe, kIngest, kGateway, kWorker };

const char* RoleName(ServerRole role) {
  switch (role) {
    case ServerRole::kServe: return "serve";
    case ServerRole::kIngest: return "ingest";
    case ServerRole::kGateway: return "gateway";
    case ServerRole::kWorker: return "worker";
  }
  return "serve";
}

// A worker answers the health checks and /metrics only: it serves no API (and needs no API keys).
asio::awaitable<HttpResponse> HealthAndMetricsOnly(Api& api, HttpRequest& req) {
  const std::string_view path = req.path();
  if (path == "/livez" || path == "/readyz" || path == "/metrics") co_return co_await api.Handle(req);
  HttpResponse r = ErrorResponse(
      MakeError(ErrorKind::kNotFound, "imgpipe worker serves /livez, /readyz and /metrics only; the API is on the "
                                      "gateways"),
      req.request_id());
  r.route = "other";
  co_return r;
}

KafkaJobQueueOptions KafkaJobQueueOptionsFrom(const Config& cfg, int workers) {
  KafkaJobQueueOptions o;
  o.client = KafkaClientProperties(cfg);
  o.topic = cfg.kafka_jobs_topic;
  o.group_id = cfg.kafka_jobs_group_id;
  o.group_instance_id = cfg.kafka_jobs_group_instance_id;
  o.max_in_flight = cfg.kafka_jobs_max_in_flight > 0 ? cfg.kafka_jobs_max_in_flight : 2 * workers;
  o.revoke_grace = cfg.lease;
  o.session_timeout = cfg.kafka_jobs_session_timeout;
  // A rebalance may wait for jobs up to revoke_grace inside a poll: the poll interval must allow it. librdkafka also
  // refuses a poll interval shorter than the session; the queue never holds up its polls, so a longer one costs nothing.
  o.max_poll_interval = std::max({std::chrono::milliseconds(300000), 2 * cfg.lease, cfg.kafka_jobs_session_timeout});
  return o;
}

TlsSettings TlsSettingsFrom(std::string prefix, const std::string& cert, const std::string& key,
                            const std::string& client_ca, const std::string& client_auth) {
  TlsSettings t;
  t.cert_file = cert;
  t.key_file = key;
  t.client_ca_file = client_ca;
  t.client_auth = client_auth == "required"   ? ClientAuth::kRequired
                  : client_auth == "optional" ? ClientAuth::kOptional
                                              : ClientAuth::kNone;
  t.config_prefix = std::move(prefix);
  return t;
}

// Loads every listener's certificate files again (SIGHUP); a listener whose files fail keeps its current ones. The
// outcome is logged and audited as "config.reload"; the audit write goes to the blocking pool (it syncs a file).
void ReloadCertificates(const std::vector<std::shared_ptr<TlsContextHolder>>& holders, AuditLog* audit,
                        const Clock& clock, asio::thread_pool& blocking) {
  boost::json::object details;
  boost::json::array failed;
  boost::json::array reloaded;
  for (const auto& holder : holders) {
    if (!holder) continue;
    const std::string& listener = holder->settings().config_prefix;
    if (Status s = holder->Load(); !s.ok()) {
      LogError("certificate reload failed; the listener keeps its current certificate",
               {{"listener", listener}, {"error", s.error().message}});
      failed.push_back(boost::json::value(s.error().message));
    } else {
      LogInfo("certificate reloaded", {{"listener", listener}, {"cert", holder->settings().cert_file}});
      reloaded.push_back(boost::json::value(listener));
    }
  }
  if (reloaded.empty() && failed.empty()) LogInfo("SIGHUP: no TLS listener, nothing to reload", {});
  if (audit == nullptr) return;
  AuditEvent e;
  e.at = clock.Now();
  e.actor = "signal";
  e.action = "config.reload";
  e.target = "tls";
  e.outcome = failed.empty() ? "ok" : "error";
  e.details["reloaded"] = std::move(reloaded);
  if (!failed.empty()) e.details["errors"] = std::move(failed);
  asio::post(blocking, [audit, e = std::move(e)] {
    if (Status s = audit->Append(e); !s.ok()) {
      LogError("cannot write the audit log", {{"error", s.error().message}, {"action", e.action}});
    }
  });
}

int RunServer(int argc, char** argv, ServerRole role) {
  auto args = ParseArgs(argc, argv, 2, {"config", "listen", "data-dir"});
  if (!args) return kExitUsage;
  auto config = LoadConfigFromArgs(*args);
  if (!config) return kExitUsage;
  const Config& cfg = *config;
  if (role == ServerRole::kIngest && cfg.ingest_topics.empty()) {
    std::cerr << "imgpipe ingest: no topics to consume; set ingest.topics and kafka.brokers (docs/OPERATIONS.md)\n";
    return kExitUsage;
  }
  LogLevel level;
  if (ParseLogLevel(cfg.log_level, &level)) SetLogLevel(level);

  std::string host;
  uint16_t port = 0;
  if (!ParseHostPort(cfg.listen, &host, &port)) {
    std::cerr << "imgpipe: configuration error: server.listen \"" << cfg.listen << "\" is not HOST:PORT\n";
    return kExitUsage;
  }
  std::error_code fs_ec;
  std::filesystem::create_directories(cfg.data_dir, fs_ec);
  if (fs_ec) {
    std::cerr << "imgpipe: cannot create the data folder " << cfg.data_dir << ": " << fs_ec.message()
              << " (storage.data_dir)\n";
    return kExitFailure;
  }
  int lock_fd = -1;
  if (!LockDataDir(cfg.data_dir, &lock_fd)) {
    std::cerr << "imgpipe: another imgpipe serve is using the data folder " << cfg.data_dir
              << " (lock " << cfg.data_dir << "/imgpipe.lock); stop it or choose another --data-dir\n";
    return kExitFailure;
  }

  InitVips(cfg.vips_concurrency);
  std::unique_ptr<Clock> clock;
  if (cfg.clock_offset.count() != 0) {
    clock = std::make_unique<OffsetClock>(cfg.clock_offset);
    LogWarn("testing.clock_offset is set: this server's clock runs ahead; never do this in production",
            {{"offset_seconds", std::chrono::duration<double>(cfg.clock_offset).count()}});
  } else {
    clock = std::make_unique<SystemClock>();
  }

  // The warehouse (opened and migrated), and the job queue in the same database, so an image row and its job always
  // commit together: SQLite's embedded queue, or the jobs table of the PostgreSQL warehouse.
  // One key provider for the warehouse's key and the blobs' data keys (a PKCS#11 module is initialised once).
  std::unique_ptr<KeyProvider> key_provider;
  if (cfg.encryption_enabled) {
    auto opened = OpenKeyProvider(cfg, *clock, /*wait_for_keys=*/false);
    if (!opened.ok()) {
      LogError("cannot open the key provider", {{"error", opened.error().message}});
      return kExitFailure;
    }
    key_provider = std::move(opened).value();
  }
  auto warehouse = OpenWarehouse(cfg, *clock, /*migrate=*/true, key_provider.get());
  if (!warehouse.ok()) {
    LogError("cannot open the database", {{"error", warehouse.error().message}});
    return kExitFailure;
  }
  MetadataStore& store = *warehouse->store;
  std::unique_ptr<JobQueue> queue_backend;
  if (warehouse->pg) {
    // Other servers may share a PostgreSQL warehouse: leases are released by their owners, or run out.
    queue_backend = std::make_unique<PostgresJobQueue>(*warehouse->pg, *clock);
  } else {
    queue_backend = std::make_unique<EmbeddedJobQueue>(*warehouse->db, *clock);
    // We hold the data folder's lock, so leases left in the queue belong to a previous run that died.
    if (Status s = queue_backend->ReleaseLeases(""); !s.ok()) {
      LogWarn("cannot release old leases", {{"error", s.error().message}});
    }
  }
  // With queue.backend = "kafka" that same jobs table is the outbox: the relay publishes its rows to the jobs topic,
  // and workers consume the topic (src/queue/kafka).
  JobQueue& outbox = *queue_backend;
  const bool kafka_jobs = cfg.queue_backend == "kafka";
  // Every blob goes through the encryption decorator when encryption is on. If the key provider is away now the
  // server starts anyway and refuses writes (503) until it is back; /readyz says why.
  auto blob_stack = OpenBlobStack(cfg, *clock, /*wait_for_keys=*/false, /*install_lifecycle=*/true,
                                  key_provider.get());
  if (!blob_stack.ok()) {
    LogError("cannot open blob storage", {{"error", blob_stack.error().message}});
    return kExitFailure;
  }
  BlobStore& blobs = blob_stack->store();
  if (blob_stack->provider) {
    Status keys_ok = blob_stack->provider->Ping();
    LogInfo("encryption at rest", {{"provider", blob_stack->provider->Name()},
                                   {"warehouse_encrypted", WarehouseEncrypted(cfg)},
                                   {"ready", keys_ok.ok()},
                                   {"error", keys_ok.ok() ? std::string() : keys_ok.error().message}});
  } else {
    LogWarn("encryption at rest is off (encryption.enabled = false): blobs are stored in plaintext", {});
  }

  Metrics metrics;
  DeclareImgpipeMetrics(metrics);
  metrics.Set("imgpipe_build_info", {{"version", IMGPIPE_VERSION}}, 1);

  ApiKeys keys(store, *clock);
  auto bootstrap = keys.BootstrapAdmin();
  if (!bootstrap.ok()) {
    LogError("cannot create the first admin key", {{"error", bootstrap.error().message}});
    return kExitFailure;
  }

  IntakeOptions intake_options;
  intake_options.spool_dir = SpoolDir(cfg);
  intake_options.limits = LimitsFrom(cfg);
  intake_options.retention_originals = cfg.retention_originals;
  if (!cfg.default_script.empty()) intake_options.default_pipeline = cfg.default_script;
  intake_options.routes = cfg.routes;
  Intake intake(intake_options, blobs, store, outbox, *clock, &metrics, AcceptedJson);

  if (auto recovered = intake.RecoverSpool(); !recovered.ok()) {
    LogError("cannot recover the upload spool", {{"error", recovered.error().message}});
    return kExitFailure;
  } else if (*recovered > 0) {
    LogInfo("recovered interrupted uploads", {{"originals_removed", *recovered}});
  }

  // The stream source: the same intake as uploads, fed by Kafka.
  std::unique_ptr<KafkaSource> stream;
  if (!cfg.ingest_topics.empty() && (role == ServerRole::kServe || role == ServerRole::kIngest)) {
    KafkaSource::DeclareMetrics(metrics);
    stream = std::make_unique<KafkaSource>(KafkaSourceOptionsFrom(cfg), intake, store, blobs, *clock, &metrics);
  }

  RetentionPolicy policy;
  policy.originals = cfg.retention_originals;
  policy.renditions = cfg.retention_renditions;
  RetentionSweeper sweeper(policy, blobs, store, *clock, &metrics);
  auto audit = OpenAudit(cfg, *clock);
  if (!audit.ok()) {
    LogError("cannot open the audit log", {{"error", audit.error().message}});
    return kExitFailure;
  }
  sweeper.SetAudit(audit->get(), cfg.audit_retention);
  sweeper.SetLease(LeaseOwner("serve"), cfg.sweeper_lease);

  const bool run_workers =
      role == ServerRole::kWorker || (role == ServerRole::kServe && cfg.embedded_workers);
  const int worker_threads = cfg.worker_threads > 0 ? cfg.worker_threads : Cores();
  // The Kafka job queue's parts: the events sink (every role that changes an image), the outbox relay (every role
  // that accepts images) and the consumer (where workers run).
  std::unique_ptr<KafkaImageEvents> events;
  std::unique_ptr<OutboxRelay> relay;
  std::unique_ptr<KafkaJobQueue> kafka_queue;
  const std::string owner = std::string(RoleName(role)) + "-" + std::to_string(::getpid()) + "-" +
                            HexEncode(RandomBytes(4));
  if (kafka_jobs) {
    KafkaImageEvents::DeclareMetrics(metrics);
    OutboxRelay::DeclareMetrics(metrics);
    KafkaJobQueue::DeclareMetrics(metrics);
    auto producer = [&](const KafkaProperties& props) -> std::unique_ptr<KafkaProducer> {
      auto p = KafkaProducer::Create(props);
      if (!p.ok()) {
        LogError("cannot create a Kafka producer", {{"error", p.error().message}});
        return nullptr;
      }
      return std::move(p).value();
    };
    if (!cfg.kafka_events_topic.empty()) {
      auto p = producer(KafkaClientProperties(cfg));
      if (!p) return kExitFailure;
      events = std::make_unique<KafkaImageEvents>(cfg.kafka_events_topic, std::move(p), &metrics);
      sweeper.SetEvents(events.get());
    }
    if (role != ServerRole::kWorker) {
      OutboxRelayOptions ro;
      ro.jobs_topic = cfg.kafka_jobs_topic;
      ro.events_topic = cfg.kafka_events_topic;
      ro.owner = "relay-" + owner;
      ro.send_timeout = cfg.kafka_outbox_send_timeout;
      ro.lease = cfg.kafka_outbox_lease;
      // A record the broker has not acknowledged by the end of its round is dropped rather than sent later: its job
      // is back in the outbox by then, due again.
      KafkaProperties relay_props = KafkaClientProperties(cfg);
      relay_props["message.timeout.ms"] = std::to_string(cfg.kafka_outbox_send_timeout.count());
      auto p = producer(relay_props);
      if (!p) return kExitFailure;
      relay = std::make_unique<OutboxRelay>(ro, outbox, store, std::move(p), *clock, &metrics);
    }
    if (run_workers) {
      kafka_queue = std::make_unique<KafkaJobQueue>(KafkaJobQueueOptionsFrom(cfg, worker_threads), *clock, &metrics);
    }
  }
  // What workers lease from, and what /readyz and imgpipe_queue_depth report: the Kafka topic for a Kafka worker,
  // the warehouse's jobs table (the outbox, with Kafka) otherwise.
  JobQueue& queue = kafka_queue ? static_cast<JobQueue&>(*kafka_queue) : outbox;

  WorkerOptions wo;
  wo.threads = worker_threads;
  wo.lease = cfg.lease;
  wo.max_attempts = cfg.max_attempts;
  wo.retry_backoff = cfg.retry_backoff;
  wo.renditions = cfg.renditions;
  wo.spool_dir = SpoolDir(cfg);
  wo.owner = owner;
  wo.exec = ExecSandboxOptionsFrom(cfg);
  WorkerPool workers(wo, blobs, store, queue, *clock, &metrics);
  workers.SetEvents(events.get());

  int io_threads = cfg.http_threads > 0 ? cfg.http_threads : Cores();
  asio::io_context io(io_threads);
  // Declared before the blocking pool, which is joined (and its last compaction finished) before this is destroyed.
  asio::steady_timer compaction_timer(io);
  // Blocking work is mostly waiting on fsync; many threads let the filesystem and SQLite commit them in groups.
  asio::thread_pool blocking(static_cast<size_t>(std::max(32, 4 * Cores())));
  std::optional<RateLimiter> key_rate, address_rate;
  auto rate = [&](int per_second) {
    return RateLimiter::Options{.per_second = double(per_second), .burst = double(cfg.rate_burst)};
  };
  if (cfg.rate_per_key > 0) key_rate.emplace(rate(cfg.rate_per_key), *clock);
  if (cfg.rate_per_address > 0) address_rate.emplace(rate(cfg.rate_per_address), *clock);
  ApiContext api_context{cfg, blobs, store, queue, *clock, metrics, keys, intake, sweeper, blocking, audit->get(),
                         key_rate ? &*key_rate : nullptr, address_rate ? &*address_rate : nullptr};
  if (stream) {
    // An ingest process serves no uploads, so its readiness is its brokers: a refused login or an untrusted broker
    // certificate shows here, not only in the log.
    api_context.ready_checks.emplace_back("stream", [&stream] { return stream->Health(std::chrono::seconds(2)); });
  }
  Api api(std::move(api_context));

  // The public listener (the API) and, when admin.listen is set, the private one (admin endpoints, /metrics);
  // docs/OPERATIONS.md, "Listeners and TLS".
  std::shared_ptr<TlsContextHolder> public_tls, admin_tls;
  if (!cfg.tls_cert.empty()) {
    public_tls = std::make_shared<TlsContextHolder>(
        TlsSettingsFrom("server", cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca, cfg.tls_client_auth));
  }
  if (!cfg.admin_listen.empty() && !cfg.admin_tls_cert.empty()) {
    admin_tls = std::make_shared<TlsContextHolder>(TlsSettingsFrom(
        "admin", cfg.admin_tls_cert, cfg.admin_tls_key, cfg.admin_tls_client_ca, cfg.admin_tls_client_auth));
  }
  for (const auto& holder : {public_tls, admin_tls}) {
    if (!holder) continue;
    if (Status loaded = holder->Load(); !loaded.ok()) {
      LogError("cannot load the TLS certificate", {{"error", loaded.error().message}});
      return kExitFailure;
    }
  }
  std::optional<ConcurrencyLimiter> in_flight;
  if (cfg.max_in_flight > 0) in_flight.emplace(cfg.max_in_flight);
  ServerOptions so;
  so.max_header_bytes = cfg.max_header_bytes;
  for (const std::string& block : cfg.allow) so.allow.push_back(*ParseCidr(block));  // validated with the config
  for (const std::string& block : cfg.trusted_proxies) so.trusted_proxies.push_back(*ParseCidr(block));
  so.max_body_bytes = cfg.max_bytes + cfg.max_metadata_bytes + 64 * 1024;
  so.request_timeout = cfg.request_timeout;
  so.idle_timeout = cfg.idle_timeout;
  so.header_timeout = cfg.header_timeout;
  so.body_timeout = cfg.body_timeout;
  so.tls = public_tls;
  so.in_flight = in_flight ? &*in_flight : nullptr;
  so.in_flight_wait = cfg.in_flight_wait;
  so.metrics = &metrics;
  auto handler = [&api, role](HttpRequest& req) {
    return role == ServerRole::kWorker ? HealthAndMetricsOnly(api, req) : api.Handle(req);
  };
  auto access_log = [&metrics](const HttpRequest& req, const HttpResponse& res, double seconds) {
    std::string status = std::to_string(static_cast<int>(res.status));
    metrics.Add("imgpipe_http_requests_total",
                {{"method", std::string(req.header().method_string())}, {"route", res.route}, {"status", status}});
    metrics.Observe("imgpipe_http_request_duration_seconds", {{"route", res.route}}, seconds);
    LogInfo("request", {{"request_id", req.request_id()},
                        {"method", req.header().method_string()},
                        {"path", req.path()},
                        {"route", res.route},
                        {"status", static_cast<int>(res.status)},
                        {"seconds", seconds},
                        {"remote", req.remote()},
                        {"listener", req.listener() == Listener::kPrivate ? "private" : "public"}});
  };
  HttpServer server(io, so, handler, access_log);
  std::optional<HttpServer> admin_server;
  std::optional<uint16_t> admin_port;
  if (!cfg.admin_listen.empty()) {
    ServerOptions ao = so;
    ao.listener = Listener::kPrivate;
    ao.allow_key = "admin.allow";
    ao.allow.clear();
    for (const std::string& block : cfg.admin_allow) ao.allow.push_back(*ParseCidr(block));
    ao.tls = admin_tls;
    // Admin calls must get through while the API is overloaded: the private listener has no in-flight limit.
    ao.in_flight = nullptr;
    admin_server.emplace(io, ao, handler, access_log);
    std::string admin_host;
    uint16_t admin_want = 0;
    ParseHostPort(cfg.admin_listen, &admin_host, &admin_want);  // validated with the config
    auto admin_bound = admin_server->Listen(admin_host, admin_want);
    if (!admin_bound.ok()) {
      LogError("cannot listen", {{"error", admin_bound.error().message + " (admin.listen)"}});
      return kExitFailure;
    }
    admin_port = *admin_bound;
  }
  auto bound = server.Listen(host, port);
  if (!bound.ok()) {
    LogError("cannot listen", {{"error", bound.error().message}});
    return kExitFailure;
  }
  if (kafka_queue) {
    if (Status s = kafka_queue->Start(); !s.ok()) {
      LogError("cannot start the Kafka job consumer", {{"error", s.error().message}});
      return kExitFailure;
    }
  }
  if (relay) relay->Start();
  if (run_workers) workers.Start();
  if (role == ServerRole::kServe && cfg.sweeper_enabled) sweeper.Start(cfg.sweep_interval);
  // The PostgreSQL warehouse's rollups gain a row of differences per change; folding them often keeps the dashboard's
  // queries short (a no-op on SQLite). On the blocking pool: it is a few statements over small tables. With several
  // servers on one warehouse, the one holding the compaction lease does it: concurrent folds are correct but only
  // block each other, and each would VACUUM the same tables.
  const std::string compaction_owner = LeaseOwner("serve");
  std::function<void(std::chrono::seconds)> schedule_compaction = [&](std::chrono::seconds after) {
    compaction_timer.expires_after(after);
    compaction_timer.async_wait([&](const boost::system::error_code& ec) {
      if (ec) return;
      asio::post(blocking, [&] {
        auto held = store.AcquireLease(std::string(kRollupCompactionLease), compaction_owner, clock->Now(),
                                       3 * kRollupCompactionInterval);
        if (!held.ok()) {
          LogWarn("cannot take the rollup compaction lease", {{"error", held.error().message}});
        } else if (*held) {
          if (Status s = store.CompactRollups(); !s.ok()) {
            LogWarn("cannot compact the warehouse's rollups", {{"error", s.error().message}});
          } else {
            metrics.Add("imgpipe_rollup_compactions_total", {});
          }
        }
        schedule_compaction(kRollupCompactionInterval);
      });
    });
  };
  schedule_compaction(std::chrono::seconds(0));  // at once: fold what piled up while no server ran
  if (stream) {
    if (Status s = stream->Start(); !s.ok()) {
      LogError("cannot start the Kafka stream source", {{"error", s.error().message}});
      return kExitFailure;
    }
  }
  server.Start();
  if (admin_server) admin_server->Start();

  std::string base = std::string(public_tls ? "https" : "http") + "://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
                     std::to_string(*bound);
  if (!bootstrap->empty()) {
    std::cout << "imgpipe: created the first admin API key (shown once, store it now):\n  " << *bootstrap << "\n"
              << "try: curl -H \"Authorization: Bearer " << *bootstrap << "\" --data-binary @photo.jpg " << base
              << "/v1/images\n"
              << std::flush;
  }
  LogInfo("listening", {{"address", host},
                        {"port", *bound},
                        {"url", base},
                        {"data_dir", cfg.data_dir},
                        {"workers", run_workers ? wo.threads : 0},
                        {"role", RoleName(role)},
                        {"queue", cfg.queue_backend},
                        {"http_threads", io_threads},
                        {"tls", public_tls != nullptr}});
  if (admin_server) {
    LogInfo("private listener", {{"address", cfg.admin_listen}, {"port", *admin_port}, {"tls", admin_tls != nullptr}});
  }

  // SIGHUP reloads the listeners' certificates, keys and client CAs from their files: new handshakes use them, open
  // connections keep theirs. Nothing else is re-read (that needs a restart).
  asio::signal_set hangup(io, SIGHUP);
  std::function<void()> await_hangup = [&] {
    hangup.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      ReloadCertificates({public_tls, admin_tls}, audit->get(), *clock, blocking);
      await_hangup();
    });
  };
  await_hangup();

  asio::signal_set signals(io, SIGTERM, SIGINT);
  std::atomic<bool> shutting_down{false};
  signals.async_wait([&](const boost::system::error_code& ec, int signo) {
    if (ec) return;
    shutting_down = true;
    LogInfo("shutting down", {{"signal", signo}, {"grace_seconds", std::chrono::duration<double>(cfg.shutdown_grace).count()}});
    server.StopAccepting();
    if (admin_server) admin_server->StopAccepting();
    hangup.cancel();
    // Wait for requests in flight on a helper thread, then stop the I/O threads.
    std::thread([&] {
      auto deadline = std::chrono::steady_clock::now() + cfg.shutdown_grace;
      auto inflight = [&] { return server.inflight() + (admin_server ? admin_server->inflight() : 0); };
      while (inflight() > 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      if (inflight() > 0) LogWarn("shutdown grace ran out with requests in flight", {{"requests", inflight()}});
      io.stop();
    }).detach();
  });

  std::vector<std::thread> threads;
  for (int i = 1; i < io_threads; ++i) threads.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : threads) t.join();

  if (stream) stream->Stop();
  sweeper.Stop();
  // The drain: workers finish their jobs (or, past the grace, hand them back); then the Kafka consumer stores the
  // finished jobs' offsets, commits and leaves its group, so the others take its partitions at once.
  workers.Stop(cfg.shutdown_grace);
  if (kafka_queue) kafka_queue->Close();
  if (relay) relay->Stop();
  if (events) events->Stop(cfg.shutdown_grace);
  blocking.join();
  // So another server takes the compaction over at its next tick rather than when the lease runs out.
  if (Status s = store.ReleaseLease(std::string(kRollupCompactionLease), compaction_owner); !s.ok()) {
    LogWarn("cannot release the rollup compaction lease", {{"error", s.error().message}});
  }
  LogInfo("stopped", {});
  ::close(lock_fd);
  return kExitOk;
}

}  // namespace

int RunServe(int argc, char** argv) { return RunServer(argc, argv, ServerRole::kServe); }
int RunIngest(int argc, char** argv) { return RunServer(argc, argv, ServerRole::kIngest); }
int RunGateway(int argc, char** argv) { return RunServer(argc, argv, ServerRole::kGateway); }
int RunWorker(int argc, char** argv) { return RunServer(argc, argv, ServerRole::kWorker); }

}  // namespace imgpipe
