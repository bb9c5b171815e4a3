#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"

namespace imgpipe {

//! One rendition of the default pipeline, e.g. a 256 px thumbnail.
struct RenditionConfig {
  std::string name;                 //!< [a-z0-9-]+, unique; used in URLs and blob keys
  int width = 0;                    //!< bounding box; the long edge fits inside
  int height = 0;
  std::string fit = "inside";       //!< "inside" (keep aspect, fit the box) | "cover" (fill the box, crop centre)
  std::string format = "auto";      //!< "auto" (jpeg, or webp when the image has alpha) | "jpeg" | "webp" | "png" | "avif"
  int quality = 82;                 //!< 1..100 for lossy formats
};

//! A rule choosing the processing script for incoming images that name none ([[processing.routes]],
//! docs/SCRIPTS.md). Every condition given must hold; the first route that matches wins.
struct RouteConfig {
  std::string script;                          //!< the script to run; "default" = the built-in pipeline
  std::string source;                          //!< "upload" | "kafka"; empty = any
  std::string topic;                           //!< the Kafka topic the record came from; empty = any
  std::vector<std::string> formats;            //!< detected formats ("jpeg", ...); empty = any
  uint64_t min_bytes = 0;
  uint64_t max_bytes = UINT64_MAX;
  uint64_t min_pixels = 0;                     //!< width x height of the first frame
  uint64_t max_pixels = UINT64_MAX;
  std::map<std::string, std::string> metadata; //!< user metadata key = value (its text; numbers as written)
};

//! Every setting imgpipe reads. Defaults are the embedded, one-machine mode. Names below are the TOML keys
//! ("section.key"); environment variables are IMGPIPE_SECTION_KEY; see docs/OPERATIONS.md.
struct Config {
  // [server]
  std::string listen = "127.0.0.1:8080";          //!< server.listen
  int http_threads = 0;                           //!< server.threads; 0 = number of cores
  uint64_t max_header_bytes = 16 * 1024;          //!< server.max_header_bytes
  std::chrono::milliseconds shutdown_grace{10000};//!< server.shutdown_grace ("10s")
  std::chrono::milliseconds request_timeout{60000};//!< server.request_timeout ("60s"): whole request deadline
  //! server.allow: address blocks that may connect ("10.0.0.0/8", "192.168.1.7"); empty = any. Others are closed.
  std::vector<std::string> allow;
  //! server.trusted_proxies: load balancers whose X-Forwarded-For names the client (rate limits, audit, logs)
  std::vector<std::string> trusted_proxies;
  std::chrono::milliseconds idle_timeout{30000};  //!< server.idle_timeout: keep-alive wait for the next request
  std::chrono::milliseconds header_timeout{10000};//!< server.header_timeout: first byte to end of header (slowloris)
  std::chrono::milliseconds body_timeout{15000};  //!< server.body_timeout: longest wait for the next body byte
  // TLS of the public listener (docs/OPERATIONS.md, "Listeners and TLS"); no certificate = plain HTTP
  std::string tls_cert;                           //!< server.tls_cert: PEM certificate chain
  std::string tls_key;                            //!< server.tls_key: PEM private key
  std::string tls_client_ca;                      //!< server.tls_client_ca: PEM CA(s) of accepted client certificates
  std::string tls_client_auth = "none";           //!< server.tls_client_auth: "none" | "optional" | "required"

  // [admin]  the private listener for admin endpoints and /metrics; off unless admin.listen is set
  std::string admin_listen;                       //!< admin.listen: HOST:PORT; "" = admin endpoints on server.listen
  std::vector<std::string> admin_allow;           //!< admin.allow: address blocks that may connect; empty = any
  std::string admin_tls_cert;                     //!< admin.tls_cert
  std::string admin_tls_key;                      //!< admin.tls_key
  std::string admin_tls_client_ca;                //!< admin.tls_client_ca
  std::string admin_tls_client_auth = "none";     //!< admin.tls_client_auth

  // [storage]
  std::string data_dir = "./imgpipe-data";        //!< storage.data_dir: database, blobs, spool
  std::string blob_backend = "local";             //!< storage.backend: "local" | "azure" | "s3"

  //! storage.ca_file: PEM file of extra CA certificates trusted for https storage endpoints (a private CA), on top
  //! of the system's store; "" = the system's store only
  std::string storage_ca_file;

  // [storage.azure]  (storage.backend = "azure"); the key and SAS are secrets: never logged or quoted back
  std::string azure_endpoint;                     //!< storage.azure.endpoint: https://<account>.blob.core.windows.net
  std::string azure_account;                      //!< storage.azure.account
  std::string azure_key;                          //!< storage.azure.key: base64 account key (Shared Key), or
  std::string azure_sas;                          //!< storage.azure.sas: a SAS token for the containers
  std::string azure_container_prefix = "imgpipe-";//!< storage.azure.container_prefix: "<prefix>originals"...

  // [storage.s3]  (storage.backend = "s3"); the secret key is never logged or quoted back
  std::string s3_endpoint;                        //!< storage.s3.endpoint: https://s3.<region>.amazonaws.com or any
  std::string s3_region = "us-east-1";            //!< storage.s3.region
  std::string s3_bucket;                          //!< storage.s3.bucket: one bucket, containers as key prefixes
  std::string s3_access_key;                      //!< storage.s3.access_key
  std::string s3_secret_key;                      //!< storage.s3.secret_key
  std::string s3_addressing = "path";             //!< storage.s3.addressing: "path" | "virtual"
  //! storage.s3.connect_host: connect here instead of resolving the endpoint's (bucket) host name; "" = resolve
  std::string s3_connect_host;
  bool s3_create_only = false;                    //!< storage.s3.create_only: If-None-Match: * on every write
  //! storage.s3.lifecycle: install the bucket's lifecycle rule (expiry after the retention days, abort incomplete
  //! uploads after a day) when `serve` starts
  bool s3_lifecycle = false;

  // [database]
  std::string database_backend = "sqlite";        //!< database.backend: "sqlite" | "postgres"
  //! database.url: libpq connection string or URI of the PostgreSQL warehouse (required with "postgres"; never
  //! logged with its password)
  std::string database_url;
  int database_pool_size = 8;                     //!< database.pool_size: PostgreSQL connections for imgpipe itself
  //! database.encrypt: the SQLite warehouse is encrypted (SQLCipher, keyed through the key provider) whenever this
  //! and encryption.enabled are both true
  bool database_encrypt = true;

  // [queue]
  //! queue.backend: "embedded" (the warehouse's jobs table) | "kafka" (the jobs table becomes the outbox of a
  //! Kafka jobs topic; docs/OPERATIONS.md, "Kafka job queue")
  std::string queue_backend = "embedded";
  int max_attempts = 5;                           //!< queue.max_attempts: then the image is failed
  std::chrono::milliseconds retry_backoff{1000};  //!< queue.retry_backoff: first retry delay, doubled each time
  std::chrono::milliseconds lease{60000};         //!< queue.lease: a job not finished by then is retried

  // [limits]
  uint64_t max_bytes = 50ull * 1024 * 1024;       //!< limits.max_bytes
  uint64_t max_pixels = 100'000'000;              //!< limits.max_pixels (all frames together)
  int max_frames = 1000;                          //!< limits.max_frames
  int max_dimension = 65500;                      //!< limits.max_dimension (either side)
  std::vector<std::string> allowed_formats = {"jpeg", "png", "webp", "gif", "tiff", "heic", "avif"};  //!< limits.allowed_formats
  uint64_t max_metadata_bytes = 8 * 1024;         //!< limits.max_metadata_bytes
  int rate_per_key = 0;                           //!< limits.rate_per_key: requests/s per API key; 0 = no limit
  int rate_per_address = 0;                       //!< limits.rate_per_address: requests/s per client address; 0 = none
  int rate_burst = 50;                            //!< limits.rate_burst: requests allowed at once above the rate
  int max_in_flight = 1024;                       //!< limits.max_in_flight: requests handled at once; 0 = no limit
  std::chrono::milliseconds in_flight_wait{5000}; //!< limits.in_flight_wait: wait for a slot, then 503
  int uploads_per_key = 64;                       //!< limits.uploads_per_key: concurrent uploads per API key; 0 = any

  // [retention]  durations like "7d", "36h", "0" (= keep forever)
  std::chrono::seconds retention_originals{7 * 24 * 3600};   //!< retention.originals
  std::chrono::seconds retention_renditions{7 * 24 * 3600};  //!< retention.renditions
  std::chrono::seconds sweep_interval{600};                   //!< retention.sweep_interval
  //! retention.sweeper: run the sweeper inside `serve`; off where one sweeper serves many processes (a single
  //! `imgpipe retention run` CronJob, deploy/k8s)
  bool sweeper_enabled = true;
  //! retention.lease: how long a sweeper holds the warehouse's sweeper lease without renewing it; processes sharing
  //! a warehouse sweep one at a time, and another takes over this long after the holder died
  std::chrono::seconds sweeper_lease{900};

  // [audit]  the hash-chained log of authenticated actions, in <data_dir>/audit (docs/OPERATIONS.md, "Audit log")
  bool audit_enabled = true;                                  //!< audit.enabled
  std::chrono::seconds audit_retention{365 * 24 * 3600};      //!< audit.retention: whole days older go; "0" = forever

  // [processing]
  int worker_threads = 0;                         //!< processing.workers; 0 = number of cores
  int vips_concurrency = 1;                       //!< processing.vips_concurrency: libvips threads per job
  bool embedded_workers = true;                   //!< processing.enabled: run workers inside `serve`
  std::string default_script;                     //!< processing.default_script: script for uploads naming none; "" = built-in
  std::string exec_user = "nobody";               //!< processing.exec_user: exec steps' user when imgpipe runs as root
  std::string exec_temp_dir;                      //!< processing.exec_temp_dir: parent of exec folders; "" = $TMPDIR or /tmp
  //! processing.exec_read_paths: absolute paths exec steps may read under Landlock; empty = the built-in list
  //! (docs/SCRIPTS.md)
  std::vector<std::string> exec_read_paths;
  std::vector<RenditionConfig> renditions = {
      {"thumb-256", 256, 256, "inside", "auto", 82},
      {"thumb-1024", 1024, 1024, "inside", "auto", 82},
  };                                               //!< [[processing.renditions]]
  std::vector<RouteConfig> routes;                //!< [[processing.routes]]; file only

  // [kafka]  the brokers and client security, shared by the stream source (and later the Kafka job queue)
  std::string kafka_brokers;                      //!< kafka.brokers: "host:port,host:port"; "" = no Kafka
  std::string kafka_client_id = "imgpipe";        //!< kafka.client_id
  std::string kafka_security_protocol = "plaintext";  //!< kafka.security_protocol: plaintext|ssl|sasl_plaintext|sasl_ssl
  std::string kafka_sasl_mechanism;               //!< kafka.sasl_mechanism: "" | PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
  std::string kafka_sasl_username;                //!< kafka.sasl_username
  std::string kafka_sasl_password;                //!< kafka.sasl_password (never logged)
  std::string kafka_ssl_ca_location;              //!< kafka.ssl_ca_location: PEM file of the CA(s) to trust
  std::string kafka_ssl_certificate_location;     //!< kafka.ssl_certificate_location: client certificate (mTLS)
  std::string kafka_ssl_key_location;             //!< kafka.ssl_key_location: its private key
  //! kafka.jobs_topic: the job queue's topic with queue.backend = "kafka"; retries go to "<topic>.retry", given-up
  //! jobs to "<topic>.dlq"
  std::string kafka_jobs_topic = "imgpipe.jobs";
  std::string kafka_jobs_group_id = "imgpipe-workers";  //!< kafka.jobs_group_id: the workers' consumer group
  //! kafka.jobs_session_timeout: a worker that stops heartbeating (killed) loses its partitions after this; the
  //! broker allows 6s..30min by default
  std::chrono::milliseconds kafka_jobs_session_timeout{45000};
  int kafka_jobs_max_in_flight = 0;               //!< kafka.jobs_max_in_flight: held before pausing; 0 = 2 x workers
  std::string kafka_jobs_group_instance_id;       //!< kafka.jobs_group_instance_id: a worker's static membership; "" = dynamic
  //! kafka.outbox_send_timeout: how long the outbox relay waits for the broker to acknowledge a round's events, and
  //! then its jobs (also librdkafka's message.timeout.ms for the relay's producer)
  std::chrono::milliseconds kafka_outbox_send_timeout{10000};
  //! kafka.outbox_lease: how long outbox rows a relay took stay its own; after a gateway dies, its rows wait this
  //! long before another relays them. More than twice kafka.outbox_send_timeout, so a live relay never loses them
  std::chrono::milliseconds kafka_outbox_lease{30000};
  //! kafka.events_topic: image.stored/processed/failed/expired events (docs/EVENTS.md); "" = none. Written when
  //! queue.backend = "kafka"
  std::string kafka_events_topic = "imgpipe.events";

  // [ingest]  the Kafka stream source (docs/OPERATIONS.md, "Kafka stream source")
  std::vector<std::string> ingest_topics;         //!< ingest.topics: topics to consume; empty = no stream source
  std::string ingest_group_id = "imgpipe-ingest"; //!< ingest.group_id: the consumer group
  std::string ingest_group_instance_id;           //!< ingest.group_instance_id: static membership; "" = dynamic
  int ingest_threads = 8;                         //!< ingest.threads: records taken in at once
  int ingest_max_in_flight = 128;                 //!< ingest.max_in_flight: records held before polling waits
  std::vector<std::string> ingest_claim_containers = {"incoming"};  //!< ingest.claim_containers: claim checks may name these
  std::chrono::milliseconds ingest_max_poll_interval{300000};  //!< ingest.max_poll_interval
  std::chrono::milliseconds ingest_session_timeout{45000};  //!< ingest.session_timeout: a dead member's partitions move after it
  // [encryption]  envelope encryption of every blob (docs/ENCRYPTION.md); the key provider holds the KEKs
  bool encryption_enabled = true;                 //!< encryption.enabled
  std::string encryption_provider = "local";      //!< encryption.provider: "local" | "pkcs11"
  std::string keyring_path;                       //!< encryption.keyring: local keyring file; "" = <data_dir>/keyring.json
  std::chrono::milliseconds key_cache_age{300000};//!< encryption.key_cache_age: unwrapped data keys kept at most this long
  std::string pkcs11_module;                      //!< encryption.pkcs11_module: path of the PKCS#11 module (.so)
  std::string pkcs11_token;                       //!< encryption.pkcs11_token: token label
  std::string pkcs11_pin;                         //!< encryption.pkcs11_pin: user PIN (prefer IMGPIPE_ENCRYPTION_PKCS11_PIN; never logged)
  std::string pkcs11_key_label = "imgpipe-kek";   //!< encryption.pkcs11_key_label: KEK objects are "<label>.v<N>"

  // [testing]
  std::chrono::milliseconds clock_offset{0};      //!< testing.clock_offset: shifts the clock forward (retention tests)
  int kafka_seek_ahead = 0;                        //!< testing.kafka_seek_ahead: simulates a Kafka client skipping records

  // [log]
  std::string log_level = "info";                 //!< log.level
};

//! Where a config came from, lowest priority first: defaults, the TOML file, IMGPIPE_* environment variables,
//! command-line flags. Each override is "section.key" -> text value as it would appear in TOML.
struct ConfigSources {
  std::string file_path;                          //!< empty: no file
  std::map<std::string, std::string> env;         //!< e.g. {"IMGPIPE_LIMITS_MAX_BYTES": "1000"}
  std::map<std::string, std::string> flags;       //!< e.g. {"server.listen": "127.0.0.1:0"}
};

//! Builds the config, validating every key and value. kInvalidArgument naming the key (and the file and line for
//! file errors) on an unknown key or a bad value; the CLI turns that into exit code 2.
//! Override values are read as they would be in TOML, but need no quotes: `8080`, `true`, `"a b"` and `a b` all work;
//! a list is `jpeg,png` or `["jpeg", "png"]`; sizes and durations are `50MiB`, `36h`. [[processing.renditions]] can be
//! set only in the file.
Result<Config> LoadConfig(const ConfigSources& sources);
//! As LoadConfig, with the file's text given directly; `source_name` names it in messages (sources.file_path is
//! ignored). For tests and the config fuzzer.
Result<Config> LoadConfigFromString(std::string_view toml_text, std::string_view source_name,
                                    const ConfigSources& sources = {});
//! The IMGPIPE_* variables of the current process environment, except the few that are not config keys
//! (IMGPIPE_CONFIG: the config file's path for the CLI; IMGPIPE_TEST: set by the test runner).
std::map<std::string, std::string> ImgpipeEnvironment();
//! Every config key ("section.key"), in the order of Config's fields.
std::vector<std::string> ConfigKeys();
//! Parses "7d", "36h", "15m", "30s", "250ms", or a bare number of seconds.
Result<std::chrono::milliseconds> ParseDuration(std::string_view text);
//! Parses "50MiB", "200KB", "1GiB", or a bare number of bytes.
Result<uint64_t> ParseByteSize(std::string_view text);

}  // namespace imgpipe
