#include "config/config.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

namespace imgpipe {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "imgpipe-config-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  //! Writes `text` as <tmp>/imgpipe.toml and returns sources naming it.
  ConfigSources WithFile(const std::string& text) {
    std::string path = dir_ + "/imgpipe.toml";
    std::ofstream(path, std::ios::binary) << text;
    ConfigSources sources;
    sources.file_path = path;
    return sources;
  }

  std::string dir_;
};

std::string ErrorOf(const Result<Config>& r) {
  EXPECT_FALSE(r.ok());
  if (r.ok()) return {};
  EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
  return r.error().message;
}

TEST(ConfigTest, DefaultsWithNoFile) {
  auto config = LoadConfig({});
  ASSERT_TRUE(config.ok()) << config.error().message;
  Config defaults;
  EXPECT_EQ(config->listen, "127.0.0.1:8080");
  EXPECT_EQ(config->max_bytes, defaults.max_bytes);
  EXPECT_EQ(config->retention_originals, 7 * 24h);
  EXPECT_EQ(config->blob_backend, "local");
  EXPECT_EQ(config->allowed_formats, defaults.allowed_formats);
  ASSERT_EQ(config->renditions.size(), 2u);
  EXPECT_EQ(config->renditions[0].name, "thumb-256");
  EXPECT_EQ(config->log_level, "info");
}

TEST_F(ConfigFileTest, ReadsEverySection) {
  auto config = LoadConfig(WithFile(R"(
[server]
listen = "0.0.0.0:9000"
threads = 4
max_header_bytes = "32KiB"
shutdown_grace = "5s"
request_timeout = 30

[storage]
data_dir = "/var/lib/imgpipe"
backend = "local"

[database]
backend = "sqlite"

[queue]
backend = "embedded"
max_attempts = 3
retry_backoff = "250ms"
lease = "2m"

[limits]
max_bytes = "20MiB"
max_pixels = 40_000_000
max_frames = 10
max_dimension = 20000
allowed_formats = ["jpeg", "PNG", "jxl"]
max_metadata_bytes = 4096

[retention]
originals = "36h"
renditions = "0"
sweep_interval = "15m"
sweeper = false
lease = "40m"

[audit]
enabled = false
retention = "90d"

[processing]
workers = 2
vips_concurrency = 2
enabled = false

[[processing.renditions]]
name = "small"
width = 320
height = 200
fit = "cover"
format = "webp"
quality = 70

[[processing.renditions]]
name = "large"
width = 2048
height = 2048

[log]
level = "debug"
)"));
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->listen, "0.0.0.0:9000");
  EXPECT_EQ(config->http_threads, 4);
  EXPECT_EQ(config->max_header_bytes, 32u * 1024);
  EXPECT_EQ(config->shutdown_grace, 5s);
  EXPECT_EQ(config->request_timeout, 30s);
  EXPECT_EQ(config->data_dir, "/var/lib/imgpipe");
  EXPECT_EQ(config->max_attempts, 3);
  EXPECT_EQ(config->retry_backoff, 250ms);
  EXPECT_EQ(config->lease, 2min);
  EXPECT_EQ(config->max_bytes, 20u << 20);
  EXPECT_EQ(config->max_pixels, 40'000'000u);
  EXPECT_EQ(config->max_frames, 10);
  EXPECT_EQ(config->max_dimension, 20000);
  EXPECT_EQ(config->allowed_formats, (std::vector<std::string>{"jpeg", "png", "jxl"}));
  EXPECT_EQ(config->max_metadata_bytes, 4096u);
  EXPECT_EQ(config->retention_originals, 36h);
  EXPECT_EQ(config->retention_renditions, 0s);
  EXPECT_EQ(config->sweep_interval, 15min);
  EXPECT_FALSE(config->sweeper_enabled);
  EXPECT_EQ(config->sweeper_lease, 40min);
  EXPECT_FALSE(config->audit_enabled);
  EXPECT_EQ(config->audit_retention, 90 * 24h);
  EXPECT_EQ(config->worker_threads, 2);
  EXPECT_EQ(config->vips_concurrency, 2);
  EXPECT_FALSE(config->embedded_workers);
  ASSERT_EQ(config->renditions.size(), 2u);
  EXPECT_EQ(config->renditions[0].name, "small");
  EXPECT_EQ(config->renditions[0].width, 320);
  EXPECT_EQ(config->renditions[0].height, 200);
  EXPECT_EQ(config->renditions[0].fit, "cover");
  EXPECT_EQ(config->renditions[0].format, "webp");
  EXPECT_EQ(config->renditions[0].quality, 70);
  EXPECT_EQ(config->renditions[1].fit, "inside");  // defaults for fields left out
  EXPECT_EQ(config->renditions[1].format, "auto");
  EXPECT_EQ(config->renditions[1].quality, 82);
  EXPECT_EQ(config->log_level, "debug");
}

TEST_F(ConfigFileTest, EnvBeatsFileAndFlagBeatsEnv) {
  auto sources = WithFile("[limits]\nmax_bytes = 1000\n[server]\nlisten = \"127.0.0.1:1\"\nthreads = 3\n");
  sources.env = {{"IMGPIPE_LIMITS_MAX_BYTES", "2000"}, {"IMGPIPE_SERVER_LISTEN", "127.0.0.1:2"}};
  sources.flags = {{"server.listen", "127.0.0.1:3"}};
  auto config = LoadConfig(sources);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->max_bytes, 2000u);         // env over file
  EXPECT_EQ(config->listen, "127.0.0.1:3");   // flag over env over file
  EXPECT_EQ(config->http_threads, 3);         // file over default
}

TEST(ConfigTest, OverrideTextReadsLikeTomlWithoutQuotes) {
  ConfigSources sources;
  sources.env = {
      {"IMGPIPE_LIMITS_ALLOWED_FORMATS", "jpeg, webp"},
      {"IMGPIPE_STORAGE_DATA_DIR", "\"/data/with space\""},
      {"IMGPIPE_PROCESSING_ENABLED", "false"},
      {"IMGPIPE_RETENTION_ORIGINALS", "7d"},
      {"IMGPIPE_LIMITS_MAX_BYTES", "50MiB"},
      {"IMGPIPE_TEST", "1"},  // set by the test runner; not a config key
      {"IMGPIPE_TEST_POSTGRES_URL", "postgresql://x"},  // test tooling, not a config key
      {"IMGPIPE_CONFIG", "/somewhere/imgpipe.toml"},
      {"HOME", "/root"},  // not ours
  };
  sources.flags = {{"limits.max_pixels", "1_000_000"}, {"queue.lease", "90"}, {"log.level", "\"warn\""}};
  auto config = LoadConfig(sources);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->allowed_formats, (std::vector<std::string>{"jpeg", "webp"}));
  EXPECT_EQ(config->data_dir, "/data/with space");
  EXPECT_FALSE(config->embedded_workers);
  EXPECT_EQ(config->retention_originals, 7 * 24h);
  EXPECT_EQ(config->max_bytes, 50u << 20);
  EXPECT_EQ(config->max_pixels, 1'000'000u);
  EXPECT_EQ(config->lease, 90s);
  EXPECT_EQ(config->log_level, "warn");

  sources.env = {{"IMGPIPE_LIMITS_ALLOWED_FORMATS", R"(["png", "gif"])"}};
  sources.flags.clear();
  config = LoadConfig(sources);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->allowed_formats, (std::vector<std::string>{"png", "gif"}));
}

TEST_F(ConfigFileTest, UnknownKeyInFileNamesLineAndSuggests) {
  auto sources = WithFile("# limits\n[limits]\nmax_byte = 10\n");
  std::string message = ErrorOf(LoadConfig(sources));
  EXPECT_EQ(message, "unknown config key \"limits.max_byte\" in " + sources.file_path +
                         " line 3 (did you mean \"limits.max_bytes\"?)");
}

TEST_F(ConfigFileTest, UnknownSectionsAndNestedTablesAreRefused) {
  EXPECT_THAT(ErrorOf(LoadConfig(WithFile("[limit]\nmax_bytes = 10\n"))),
              HasSubstr("unknown config key \"limit.max_bytes\""));
  EXPECT_THAT(ErrorOf(LoadConfig(WithFile("[limit]\nmax_bytes = 10\n"))),
              HasSubstr("did you mean \"limits.max_bytes\"?"));
  EXPECT_THAT(ErrorOf(LoadConfig(WithFile("[server.tls]\ncert = \"x\"\n"))), HasSubstr("\"server.tls\""));
  EXPECT_THAT(ErrorOf(LoadConfig(WithFile("colour = \"blue\"\n"))),
              HasSubstr("unknown config key \"colour\" in "));
  EXPECT_THAT(ErrorOf(LoadConfig(WithFile("server = 3\n"))), HasSubstr("expected a [server] table"));
}

TEST(ConfigTest, UnknownKeyFromEnvironmentNamesTheVariable) {
  ConfigSources sources;
  sources.env = {{"IMGPIPE_LIMITS_MAX_BYTE", "10"}};
  EXPECT_EQ(ErrorOf(LoadConfig(sources)),
            "unknown config key \"limits.max_byte\" from IMGPIPE_LIMITS_MAX_BYTE (did you mean "
            "IMGPIPE_LIMITS_MAX_BYTES?)");
  sources.env = {{"IMGPIPE_DEBUG", "1"}};
  EXPECT_THAT(ErrorOf(LoadConfig(sources)), HasSubstr("unknown config key \"debug\" from IMGPIPE_DEBUG"));
}

TEST(ConfigTest, UnknownKeyFromFlagNamesTheFlag) {
  ConfigSources sources;
  sources.flags = {{"server.lisen", "127.0.0.1:1"}};
  EXPECT_EQ(ErrorOf(LoadConfig(sources)),
            "unknown config key \"server.lisen\" from flag --server.lisen (did you mean \"server.listen\"?)");
  sources.flags = {{"nonsense", "1"}};
  std::string message = ErrorOf(LoadConfig(sources));
  EXPECT_THAT(message, HasSubstr("unknown config key \"nonsense\""));
  EXPECT_THAT(message, ::testing::Not(HasSubstr("did you mean")));
}

TEST(ConfigTest, BadValuesNameKeySourceAndProblem) {
  auto error_for = [](std::string env, std::string value) {
    ConfigSources sources;
    sources.env = {{env, value}};
    return ErrorOf(LoadConfig(sources));
  };
  EXPECT_THAT(error_for("IMGPIPE_SERVER_LISTEN", "abc"),
              HasSubstr("bad value for server.listen from IMGPIPE_SERVER_LISTEN: \"abc\" is not HOST:PORT"));
  EXPECT_THAT(error_for("IMGPIPE_SERVER_LISTEN", "127.0.0.1:70000"), HasSubstr("port 70000 is over 65535"));
  EXPECT_THAT(error_for("IMGPIPE_SERVER_LISTEN", "::1:80"), HasSubstr("is not HOST:PORT"));
  ConfigSources ipv6;
  ipv6.env = {{"IMGPIPE_SERVER_LISTEN", "[::1]:0"}};
  EXPECT_TRUE(LoadConfig(ipv6).ok());
  EXPECT_THAT(error_for("IMGPIPE_SERVER_THREADS", "many"),
              HasSubstr("bad value for server.threads from IMGPIPE_SERVER_THREADS: \"many\" is not an integer"));
  EXPECT_THAT(error_for("IMGPIPE_SERVER_THREADS", "5000"), HasSubstr("5000 is out of range 0..1024"));
  EXPECT_THAT(error_for("IMGPIPE_PROCESSING_ENABLED", "yes"), HasSubstr("\"yes\" is not true or false"));
  EXPECT_THAT(error_for("IMGPIPE_LIMITS_MAX_BYTES", "50 parsecs"), HasSubstr("\"50 parsecs\" is not a size"));
  EXPECT_THAT(error_for("IMGPIPE_LIMITS_MAX_BYTES", "0"), HasSubstr("out of range"));
  EXPECT_THAT(error_for("IMGPIPE_RETENTION_ORIGINALS", "1 week"), HasSubstr("\"1 week\" is not a duration"));
  EXPECT_THAT(error_for("IMGPIPE_RETENTION_SWEEP_INTERVAL", "0"), HasSubstr("the minimum is 1s"));
  EXPECT_THAT(error_for("IMGPIPE_RETENTION_ORIGINALS", "1500ms"), HasSubstr("not a whole number of seconds"));
  EXPECT_THAT(error_for("IMGPIPE_LIMITS_ALLOWED_FORMATS", "jpeg,exe"),
              HasSubstr("\"exe\" is not a format imgpipe knows"));
  EXPECT_THAT(error_for("IMGPIPE_LIMITS_ALLOWED_FORMATS", ""), HasSubstr("the list is empty"));
  EXPECT_THAT(error_for("IMGPIPE_LOG_LEVEL", "verbose"), HasSubstr("\"verbose\" is not one of debug, info, warn, error"));
  EXPECT_THAT(error_for("IMGPIPE_QUEUE_BACKEND", "rabbitmq"),
              HasSubstr("bad value for queue.backend from IMGPIPE_QUEUE_BACKEND: \"rabbitmq\" is not a backend; "
                        "supported: embedded, kafka"));
  EXPECT_THAT(error_for("IMGPIPE_QUEUE_BACKEND", "kafka"), HasSubstr("kafka.brokers"));
  EXPECT_THAT(error_for("IMGPIPE_KAFKA_JOBS_TOPIC", "a/b"), HasSubstr("not a Kafka topic name"));
  EXPECT_THAT(error_for("IMGPIPE_KAFKA_EVENTS_TOPIC", "x y"), HasSubstr("not a Kafka topic name"));
  EXPECT_THAT(error_for("IMGPIPE_KAFKA_JOBS_GROUP_ID", "\"\""), HasSubstr("must not be empty"));
  EXPECT_THAT(error_for("IMGPIPE_STORAGE_BACKEND", "gcs"), HasSubstr("supported: local, azure, s3"));
  EXPECT_THAT(error_for("IMGPIPE_DATABASE_BACKEND", "mysql"), HasSubstr("\"mysql\" is not a backend; supported: sqlite"));
  EXPECT_THAT(error_for("IMGPIPE_PROCESSING_RENDITIONS", "x"), HasSubstr("only in the config file"));
  EXPECT_THAT(error_for("IMGPIPE_STORAGE_DATA_DIR", "\"\""), HasSubstr("must not be empty"));
}

TEST(ConfigTest, KafkaJobQueueKeys) {
  auto defaults = LoadConfig({});
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->queue_backend, "embedded");
  EXPECT_EQ(defaults->kafka_jobs_topic, "imgpipe.jobs");
  EXPECT_EQ(defaults->kafka_events_topic, "imgpipe.events");
  ConfigSources ok;
  ok.env = {{"IMGPIPE_QUEUE_BACKEND", "kafka"},
            {"IMGPIPE_KAFKA_BROKERS", "127.0.0.1:9092"},
            {"IMGPIPE_KAFKA_JOBS_TOPIC", "team.jobs"},
            {"IMGPIPE_KAFKA_JOBS_GROUP_ID", "team-workers"},
            {"IMGPIPE_KAFKA_JOBS_MAX_IN_FLIGHT", "4"},
            {"IMGPIPE_KAFKA_JOBS_SESSION_TIMEOUT", "6s"},
            {"IMGPIPE_KAFKA_JOBS_GROUP_INSTANCE_ID", "worker-0"},
            {"IMGPIPE_KAFKA_EVENTS_TOPIC", "\"\""}};
  auto config = LoadConfig(ok);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->queue_backend, "kafka");
  EXPECT_EQ(config->kafka_jobs_topic, "team.jobs");
  EXPECT_EQ(config->kafka_jobs_group_id, "team-workers");
  EXPECT_EQ(config->kafka_jobs_max_in_flight, 4);
  EXPECT_EQ(config->kafka_jobs_session_timeout, std::chrono::seconds(6));
  EXPECT_EQ(config->kafka_jobs_group_instance_id, "worker-0");
  EXPECT_EQ(config->kafka_events_topic, "");
  EXPECT_EQ(defaults->kafka_jobs_group_instance_id, "");
}

TEST(ConfigTest, OutboxLeaseMustOutlastARelayRound) {
  auto defaults = LoadConfig({});
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->kafka_outbox_send_timeout, std::chrono::seconds(10));
  EXPECT_EQ(defaults->kafka_outbox_lease, std::chrono::seconds(30));
  ConfigSources ok;
  ok.env = {{"IMGPIPE_KAFKA_OUTBOX_SEND_TIMEOUT", "3s"}, {"IMGPIPE_KAFKA_OUTBOX_LEASE", "7s"}};
  auto config = LoadConfig(ok);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->kafka_outbox_send_timeout, std::chrono::seconds(3));
  EXPECT_EQ(config->kafka_outbox_lease, std::chrono::seconds(7));

  ConfigSources short_lease;
  short_lease.env = {{"IMGPIPE_KAFKA_OUTBOX_SEND_TIMEOUT", "3s"}, {"IMGPIPE_KAFKA_OUTBOX_LEASE", "6s"}};
  const std::string error = ErrorOf(LoadConfig(short_lease));
  EXPECT_THAT(error, HasSubstr("kafka.outbox_lease"));
  EXPECT_THAT(error, HasSubstr("more than twice kafka.outbox_send_timeout"));
  ConfigSources too_short;
  too_short.env = {{"IMGPIPE_KAFKA_OUTBOX_SEND_TIMEOUT", "10ms"}};
  EXPECT_THAT(ErrorOf(LoadConfig(too_short)), HasSubstr("kafka.outbox_send_timeout"));
}

TEST(ConfigTest, SessionTimeoutsTheBrokerAndLibrdkafkaWouldRefuseAreRefusedAtStart) {
  ConfigSources long_jobs_session;
  long_jobs_session.env = {{"IMGPIPE_KAFKA_JOBS_SESSION_TIMEOUT", "31m"}};
  EXPECT_THAT(ErrorOf(LoadConfig(long_jobs_session)), HasSubstr("kafka.jobs_session_timeout"));
  ConfigSources ten_minutes;
  ten_minutes.env = {{"IMGPIPE_KAFKA_JOBS_SESSION_TIMEOUT", "10m"}};
  EXPECT_TRUE(LoadConfig(ten_minutes).ok());  // the worker's poll interval grows to match

  ConfigSources ingest_pair;
  ingest_pair.env = {{"IMGPIPE_INGEST_SESSION_TIMEOUT", "2m"}, {"IMGPIPE_INGEST_MAX_POLL_INTERVAL", "1m"}};
  const std::string error = ErrorOf(LoadConfig(ingest_pair));
  EXPECT_THAT(error, HasSubstr("ingest.session_timeout"));
  EXPECT_THAT(error, HasSubstr("at most ingest.max_poll_interval"));
  ingest_pair.env = {{"IMGPIPE_INGEST_SESSION_TIMEOUT", "1m"}, {"IMGPIPE_INGEST_MAX_POLL_INTERVAL", "1m"}};
  EXPECT_TRUE(LoadConfig(ingest_pair).ok());
}

TEST(ConfigTest, KafkaAndIngestKeys) {
  auto defaults = LoadConfig({});
  ASSERT_TRUE(defaults.ok());
  EXPECT_TRUE(defaults->ingest_topics.empty());
  EXPECT_EQ(defaults->ingest_group_id, "imgpipe-ingest");
  EXPECT_EQ(defaults->ingest_claim_containers, std::vector<std::string>{"incoming"});

  ConfigSources ok;
  ok.env = {{"IMGPIPE_KAFKA_BROKERS", "127.0.0.1:9092, kafka-2:9093"},
            {"IMGPIPE_KAFKA_SECURITY_PROTOCOL", "sasl_ssl"},
            {"IMGPIPE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"},
            {"IMGPIPE_KAFKA_SASL_PASSWORD", "hunter2"},
            {"IMGPIPE_INGEST_TOPICS", "cams.raw,uploads"},
            {"IMGPIPE_INGEST_GROUP_INSTANCE_ID", "ingest-1"},
            {"IMGPIPE_INGEST_MAX_IN_FLIGHT", "8"},
            {"IMGPIPE_INGEST_SESSION_TIMEOUT", "6s"}};
  auto config = LoadConfig(ok);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->kafka_brokers, "127.0.0.1:9092, kafka-2:9093");
  EXPECT_EQ(config->kafka_sasl_mechanism, "SCRAM-SHA-512");
  EXPECT_EQ(config->ingest_topics, (std::vector<std::string>{"cams.raw", "uploads"}));
  EXPECT_EQ(config->ingest_group_instance_id, "ingest-1");
  EXPECT_EQ(config->ingest_max_in_flight, 8);
  EXPECT_EQ(config->ingest_session_timeout, std::chrono::seconds(6));
  EXPECT_EQ(LoadConfig(ConfigSources{})->ingest_session_timeout, std::chrono::seconds(45));
  ConfigSources long_session;
  long_session.env = {{"IMGPIPE_INGEST_SESSION_TIMEOUT", "2h"}};
  EXPECT_THAT(ErrorOf(LoadConfig(long_session)), HasSubstr("ingest.session_timeout"));

  ConfigSources no_brokers;
  no_brokers.env = {{"IMGPIPE_INGEST_TOPICS", "cams"}};
  EXPECT_THAT(ErrorOf(LoadConfig(no_brokers)), HasSubstr("kafka.brokers"));
  ConfigSources bad;
  bad.env = {{"IMGPIPE_KAFKA_BROKERS", "kafka-1"},
             {"IMGPIPE_INGEST_TOPICS", "ok,bad topic"},
             {"IMGPIPE_KAFKA_SASL_MECHANISM", "GSSAPI"},
             {"IMGPIPE_KAFKA_SASL_PASSWORD", "s3cret\x01"},
             {"IMGPIPE_INGEST_CLAIM_CONTAINERS", "renditions"}};
  const std::string message = ErrorOf(LoadConfig(bad));
  EXPECT_THAT(message, HasSubstr("kafka.brokers"));
  EXPECT_THAT(message, HasSubstr("\"bad topic\" is not a Kafka topic name"));
  EXPECT_THAT(message, HasSubstr("kafka.sasl_mechanism"));
  EXPECT_THAT(message, HasSubstr("ingest.claim_containers"));
  EXPECT_EQ(message.find("s3cret"), std::string::npos) << message;
  ConfigSources dlq;
  dlq.env = {{"IMGPIPE_KAFKA_BROKERS", "k:9092"}, {"IMGPIPE_INGEST_TOPICS", "cams.dlq"}};
  EXPECT_THAT(ErrorOf(LoadConfig(dlq)), HasSubstr("dead-letter"));
}

TEST(ConfigTest, PostgresNeedsItsUrlWhichIsNeverQuotedBack) {
  ConfigSources postgres;
  postgres.env = {{"IMGPIPE_DATABASE_BACKEND", "postgres"},
                  {"IMGPIPE_DATABASE_URL", "postgresql://imgpipe:s3cret@db:5432/imgpipe"},
                  {"IMGPIPE_DATABASE_POOL_SIZE", "16"}};
  auto config = LoadConfig(postgres);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->database_backend, "postgres");
  EXPECT_EQ(config->database_url, "postgresql://imgpipe:s3cret@db:5432/imgpipe");
  EXPECT_EQ(config->database_pool_size, 16);
  EXPECT_EQ(LoadConfig({}).value().database_pool_size, 8);

  ConfigSources no_url;
  no_url.env = {{"IMGPIPE_DATABASE_BACKEND", "postgres"}};
  EXPECT_THAT(ErrorOf(LoadConfig(no_url)), HasSubstr("database.url"));
  ConfigSources bad;
  bad.env = {{"IMGPIPE_DATABASE_URL", "postgresql://u:s3cret@h/d\x01x"}, {"IMGPIPE_DATABASE_POOL_SIZE", "0"}};
  const std::string message = ErrorOf(LoadConfig(bad));
  EXPECT_THAT(message, HasSubstr("control characters"));
  EXPECT_THAT(message, HasSubstr("database.pool_size"));
  EXPECT_EQ(message.find("s3cret"), std::string::npos) << message;
}

TEST_F(ConfigFileTest, BadValuesInFileNameTheLineAndType) {
  auto sources = WithFile("[server]\nthreads = \"four\"\n\n[limits]\nmax_pixels = -5\n");
  std::string message = ErrorOf(LoadConfig(sources));
  // Both problems, in line order.
  EXPECT_THAT(message, HasSubstr("2 config errors: bad value for server.threads in " + sources.file_path +
                                 " line 2: expected an integer, found a string \"four\"; bad value for "
                                 "limits.max_pixels in " +
                                 sources.file_path + " line 5"));
  EXPECT_THAT(ErrorOf(LoadConfig(WithFile("[processing]\nenabled = 1\n"))),
              HasSubstr("expected true or false, found an integer 1"));
  EXPECT_THAT(ErrorOf(LoadConfig(WithFile("[limits]\nmax_bytes = 1.5\n"))),
              HasSubstr("found a number with a fraction"));
  EXPECT_THAT(ErrorOf(LoadConfig(WithFile("[limits]\nallowed_formats = [\"jpeg\", 3]\n"))),
              HasSubstr("expected an array of strings, found an integer in it"));
}

TEST_F(ConfigFileTest, TestingSectionShiftsTheClock) {
  auto config = LoadConfig(WithFile("[testing]\nclock_offset = \"8d\"\n"));
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->clock_offset, 8 * 24h);
  ConfigSources sources;
  sources.env = {{"IMGPIPE_TESTING_CLOCK_OFFSET", "1h"}};
  EXPECT_EQ(LoadConfig(sources)->clock_offset, 1h);
}

TEST_F(ConfigFileTest, TestingKafkaSeekAheadIsACountOfRecords) {
  EXPECT_EQ(LoadConfig(WithFile(""))->kafka_seek_ahead, 0);
  auto config = LoadConfig(WithFile("[testing]\nkafka_seek_ahead = 3\n"));
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->kafka_seek_ahead, 3);
  EXPECT_THAT(ErrorOf(LoadConfig(WithFile("[testing]\nkafka_seek_ahead = -1\n"))), HasSubstr("kafka_seek_ahead"));
}

TEST_F(ConfigFileTest, ManyProblemsAreCountedAndTheFirstListed) {
  std::string text = "[server]\n";
  for (int i = 0; i < 500; ++i) text += "junk" + std::to_string(i) + " = 1\n";
  std::string message = ErrorOf(LoadConfig(WithFile(text)));
  EXPECT_THAT(message, ::testing::StartsWith("500 config errors: unknown config key \"server.junk0\""));
  EXPECT_THAT(message, HasSubstr("server.junk9\""));
  EXPECT_THAT(message, ::testing::Not(HasSubstr("server.junk10\"")));
  EXPECT_THAT(message, ::testing::EndsWith("; ..."));
}

TEST_F(ConfigFileTest, RenditionsAreValidated) {
  auto error_for = [&](const std::string& tables) { return ErrorOf(LoadConfig(WithFile(tables))); };
  EXPECT_THAT(error_for("[[processing.renditions]]\nname = \"a\"\nwidth = 10\nheight = 10\nfit = \"stretch\"\n"),
              HasSubstr("bad value for processing.renditions[0].fit"));
  EXPECT_THAT(error_for("[[processing.renditions]]\nname = \"Big_One\"\nwidth = 10\nheight = 10\n"),
              HasSubstr("is not a rendition name"));
  EXPECT_THAT(error_for("[[processing.renditions]]\nname = \"a\"\nwidth = 0\nheight = 10\n"),
              HasSubstr("0 is out of range 1..16384"));
  EXPECT_THAT(error_for("[[processing.renditions]]\nname = \"a\"\nheight = 10\n"), HasSubstr("missing \"width\""));
  EXPECT_THAT(error_for("[[processing.renditions]]\nname = \"a\"\nwidth = 1\nheight = 1\nqualty = 5\n"),
              HasSubstr("unknown config key \"processing.renditions[0].qualty\" in " + dir_ +
                        "/imgpipe.toml line 5 (did you mean \"processing.renditions[0].quality\"?)"));
  EXPECT_THAT(error_for("[[processing.renditions]]\nname = \"a\"\nwidth = 1\nheight = 1\n"
                        "[[processing.renditions]]\nname = \"a\"\nwidth = 2\nheight = 2\n"),
              HasSubstr("\"a\" is used twice"));
  EXPECT_THAT(error_for("[processing]\nrenditions = 5\n"), HasSubstr("expected [[processing.renditions]] tables"));
  // An empty list is allowed: originals only.
  auto none = LoadConfig(WithFile("[processing]\nrenditions = []\n"));
  ASSERT_TRUE(none.ok()) << none.error().message;
  EXPECT_TRUE(none->renditions.empty());
}

TEST_F(ConfigFileTest, SyntaxErrorsGiveLineAndColumn) {
  auto sources = WithFile("[server]\nlisten = \"127.0.0.1:80\"\nthreads = = 4\n");
  std::string message = ErrorOf(LoadConfig(sources));
  EXPECT_THAT(message, HasSubstr("config file " + sources.file_path + " line 3 column "));
}

TEST_F(ConfigFileTest, MissingOrHugeFileIsRefused) {
  ConfigSources sources;
  sources.file_path = dir_ + "/absent.toml";
  EXPECT_THAT(ErrorOf(LoadConfig(sources)), HasSubstr("cannot read config file " + dir_ + "/absent.toml"));
  std::string huge = "# " + std::string(2 << 20, 'x') + "\n";
  EXPECT_THAT(ErrorOf(LoadConfig(WithFile(huge))), HasSubstr("the limit is 1 MiB"));
}

TEST(ConfigTest, LoadConfigFromStringUsesTheGivenName) {
  auto config = LoadConfigFromString("[log]\nlevel = \"error\"\n", "inline.toml");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->log_level, "error");
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[log]\nlevl = 1\n", "inline.toml")), HasSubstr("in inline.toml line 2"));
}

TEST(ConfigTest, ImgpipeEnvironmentSkipsNonConfigVariables) {
  ::setenv("IMGPIPE_LOG_LEVEL", "warn", 1);
  ::setenv("IMGPIPE_TEST", "1", 1);
  ::setenv("IMGPIPE_CONFIG", "x.toml", 1);
  ::setenv("IMGPIPE_TEST_SOMETHING", "1", 1);
  auto env = ImgpipeEnvironment();
  ::unsetenv("IMGPIPE_LOG_LEVEL");
  ::unsetenv("IMGPIPE_TEST_SOMETHING");
  EXPECT_EQ(env.count("IMGPIPE_TEST_SOMETHING"), 0u);
  EXPECT_EQ(env["IMGPIPE_LOG_LEVEL"], "warn");
  EXPECT_EQ(env.count("IMGPIPE_TEST"), 0u);
  EXPECT_EQ(env.count("IMGPIPE_CONFIG"), 0u);
  for (auto& [name, value] : env) EXPECT_TRUE(name.starts_with("IMGPIPE_")) << name;
}

TEST(ConfigTest, DefaultScriptIsAScriptNameOrEmpty) {
  auto config = LoadConfigFromString("[processing]\ndefault_script = \"square-v2\"\n", "inline.toml");
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->default_script, "square-v2");
  EXPECT_EQ(LoadConfigFromString("", "inline.toml")->default_script, "");
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[processing]\ndefault_script = \"../etc\"\n", "inline.toml")),
              HasSubstr("default_script"));
}

TEST(ConfigTest, ExecSettingsAreValidated) {
  auto config = LoadConfigFromString(
      "[processing]\nexec_user = \"imgpipe-exec\"\nexec_temp_dir = \"/var/tmp\"\n"
      "exec_read_paths = [\"/usr\", \"/srv/venv\"]\n",
      "inline.toml");
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->exec_user, "imgpipe-exec");
  EXPECT_EQ(config->exec_temp_dir, "/var/tmp");
  EXPECT_EQ(config->exec_read_paths, (std::vector<std::string>{"/usr", "/srv/venv"}));
  auto defaults = LoadConfigFromString("", "inline.toml");
  EXPECT_EQ(defaults->exec_user, "nobody");
  EXPECT_TRUE(defaults->exec_read_paths.empty());
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[processing]\nexec_user = \"root\"\n", "inline.toml")),
              HasSubstr("processing.exec_user"));
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[processing]\nexec_temp_dir = \"tmp\"\n", "inline.toml")),
              HasSubstr("not an absolute path"));
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[processing]\nexec_read_paths = [\"usr\"]\n", "inline.toml")),
              HasSubstr("exec_read_paths"));
}

TEST(ConfigTest, RoutesAreReadInOrderAndValidated) {
  auto config = LoadConfigFromString(R"(
[[processing.routes]]
script = "cameras"
source = "kafka"
topic = "camera-frames"

[[processing.routes]]
script = "big-png"
format = ["png", "TIFF"]
min_bytes = "1MiB"
max_pixels = 50000000
metadata = { camera = "front", floor = 2, night = true }

[[processing.routes]]
script = "default"
)", "inline.toml");
  ASSERT_TRUE(config.ok()) << config.error().message;
  ASSERT_EQ(config->routes.size(), 3u);
  EXPECT_EQ(config->routes[0].script, "cameras");
  EXPECT_EQ(config->routes[0].source, "kafka");
  EXPECT_EQ(config->routes[0].topic, "camera-frames");
  EXPECT_EQ(config->routes[1].formats, (std::vector<std::string>{"png", "tiff"}));
  EXPECT_EQ(config->routes[1].min_bytes, 1u << 20);
  EXPECT_EQ(config->routes[1].max_pixels, 50'000'000u);
  EXPECT_EQ(config->routes[1].metadata,
            (std::map<std::string, std::string>{{"camera", "front"}, {"floor", "2"}, {"night", "true"}}));
  EXPECT_EQ(config->routes[2].script, "default");

  EXPECT_THAT(ErrorOf(LoadConfigFromString("[[processing.routes]]\nsource = \"upload\"\n", "a.toml")),
              HasSubstr("missing \"script\""));
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[[processing.routes]]\nscript = \"x\"\nsource = \"ftp\"\n", "a.toml")),
              HasSubstr("processing.routes[0].source"));
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[[processing.routes]]\nscript = \"x\"\nfromat = \"png\"\n", "a.toml")),
              HasSubstr("processing.routes[0].fromat"));
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[[processing.routes]]\nscript = \"x\"\nformat = \"bmpx\"\n", "a.toml")),
              HasSubstr("not a format"));
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[[processing.routes]]\nscript = \"x\"\nmin_bytes = 10\nmax_bytes = 5\n",
                                           "a.toml")),
              HasSubstr("minimum is above its maximum"));
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[[processing.routes]]\nscript = \"x\"\nmetadata = { a = [1] }\n",
                                           "a.toml")),
              HasSubstr("metadata"));
  EXPECT_THAT(ErrorOf(LoadConfigFromString("", "a.toml", {.env = {{"IMGPIPE_PROCESSING_ROUTES", "x"}}})),
              HasSubstr("only in the config file"));
}

TEST(ConfigTest, CloudStorageSettingsFromTheFileAndTheEnvironment) {
  ConfigSources sources;
  sources.env = {{"IMGPIPE_STORAGE_BACKEND", "s3"},
                 {"IMGPIPE_STORAGE_S3_ENDPOINT", "http://127.0.0.1:7070"},
                 {"IMGPIPE_STORAGE_S3_BUCKET", "imgpipe-prod"},
                 {"IMGPIPE_STORAGE_S3_ACCESS_KEY", "AKIDEXAMPLE"},
                 {"IMGPIPE_STORAGE_S3_SECRET_KEY", "s3cr3t/with+chars"},
                 {"IMGPIPE_STORAGE_S3_CREATE_ONLY", "true"},
                 {"IMGPIPE_STORAGE_AZURE_KEY", "a2V5"}};
  auto config = LoadConfig(sources);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->blob_backend, "s3");
  EXPECT_EQ(config->s3_bucket, "imgpipe-prod");
  EXPECT_EQ(config->s3_secret_key, "s3cr3t/with+chars");
  EXPECT_TRUE(config->s3_create_only);
  EXPECT_EQ(config->s3_addressing, "path");
  EXPECT_EQ(config->s3_connect_host, "");
  EXPECT_EQ(config->azure_key, "a2V5");
  auto virtual_hosted = LoadConfigFromString(
      "[storage.s3]\naddressing = \"virtual\"\nconnect_host = \"127.0.0.1\"\n", "inline.toml");
  ASSERT_TRUE(virtual_hosted.ok()) << virtual_hosted.error().message;
  EXPECT_EQ(virtual_hosted->s3_connect_host, "127.0.0.1");

  auto azure = LoadConfigFromString(
      "[storage]\nbackend = \"azure\"\n[storage.azure]\nendpoint = \"https://acct.blob.core.windows.net\"\n"
      "account = \"acct\"\nsas = \"sv=2022-11-02&sig=x\"\ncontainer_prefix = \"prod-\"\n",
      "inline.toml");
  ASSERT_TRUE(azure.ok()) << azure.error().message;
  EXPECT_EQ(azure->azure_account, "acct");
  EXPECT_EQ(azure->azure_sas, "sv=2022-11-02&sig=x");
  EXPECT_EQ(azure->azure_container_prefix, "prod-");
}

TEST(ConfigTest, CloudStorageProblemsNameTheKeyAndNeverShowSecrets) {
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[storage]\nbackend = \"azure\"\n", "inline.toml")),
              HasSubstr("storage.azure.endpoint"));
  EXPECT_THAT(ErrorOf(LoadConfigFromString(
                  "[storage]\nbackend = \"s3\"\n[storage.s3]\nendpoint = \"http://h:1\"\nbucket = \"bkt\"\n",
                  "inline.toml")),
              HasSubstr("storage.s3.secret_key"));
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[storage]\nca_file = \"certs/ca.pem\"\n", "inline.toml")),
              HasSubstr("not an absolute path"));
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[storage.s3]\naddressing = \"sideways\"\n", "inline.toml")),
              HasSubstr("storage.s3.addressing"));
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[storage.s3]\nconnect_host = \"h:80/x\"\n", "inline.toml")),
              HasSubstr("storage.s3.connect_host"));
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[storage.s3]\nbuckett = \"x\"\n", "inline.toml")),
              HasSubstr("storage.s3.bucket"));  // did you mean
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[storage.s3]\nendpoint = \"ftp://h\"\n", "inline.toml")),
              HasSubstr("http:// or https://"));
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[storage.s3]\nbucket = \"Upper_Case\"\n", "inline.toml")),
              HasSubstr("storage.s3.bucket"));
  // imgpipe installs the store's own expiry on S3 only; on Azure it says where the equivalent policy is set.
  const std::string azure_lifecycle =
      ErrorOf(LoadConfigFromString("[storage]\nbackend = \"azure\"\n[storage.azure]\nendpoint = \"https://a.b\"\n"
                                   "account = \"acct\"\nkey = \"a2V5\"\n[storage.s3]\nlifecycle = true\n",
                                   "inline.toml"));
  EXPECT_THAT(azure_lifecycle, HasSubstr("storage.s3.lifecycle"));
  EXPECT_THAT(azure_lifecycle, HasSubstr("lifecycle management policy"));
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[storage.s3]\nlifecycle = true\n", "inline.toml")),
              HasSubstr("storage.backend = \"s3\" only"));
  std::string error = ErrorOf(LoadConfigFromString("[storage.azure]\nkey = \"top secret value\"\n", "inline.toml"));
  EXPECT_THAT(error, HasSubstr("storage.azure.key"));
  EXPECT_EQ(error.find("top secret"), std::string::npos) << error;
}

TEST(ConfigTest, EncryptionIsOnByDefaultAndPkcs11NeedsItsSettings) {
  auto defaults = LoadConfigFromString("", "inline.toml");
  ASSERT_TRUE(defaults.ok());
  EXPECT_TRUE(defaults->encryption_enabled);
  EXPECT_EQ(defaults->encryption_provider, "local");
  EXPECT_EQ(defaults->key_cache_age, 5min);
  EXPECT_TRUE(defaults->database_encrypt);
  auto plain_db = LoadConfigFromString("[database]\nencrypt = false\n", "inline.toml");
  ASSERT_TRUE(plain_db.ok()) << plain_db.error().message;
  EXPECT_FALSE(plain_db->database_encrypt);
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[database]\nencrypt = \"yes\"\n", "inline.toml")),
              HasSubstr("database.encrypt"));
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[encryption]\nprovider = \"vault\"\n", "inline.toml")),
              HasSubstr("encryption.provider"));
  auto missing = ErrorOf(LoadConfigFromString("[encryption]\nprovider = \"pkcs11\"\n", "inline.toml"));
  EXPECT_THAT(missing, HasSubstr("encryption.pkcs11_module"));
  EXPECT_THAT(missing, HasSubstr("encryption.pkcs11_pin"));
  ConfigSources env;
  env.env["IMGPIPE_ENCRYPTION_PKCS11_PIN"] = "s3cret-pin";
  env.env["IMGPIPE_ENCRYPTION_PKCS11_MODULE"] = "/usr/lib/softhsm/libsofthsm2.so";
  env.env["IMGPIPE_ENCRYPTION_PKCS11_TOKEN"] = "imgpipe";
  auto hsm = LoadConfigFromString("[encryption]\nprovider = \"pkcs11\"\n", "inline.toml", env);
  ASSERT_TRUE(hsm.ok()) << hsm.error().message;
  EXPECT_EQ(hsm->pkcs11_pin, "s3cret-pin");
  EXPECT_EQ(hsm->pkcs11_key_label, "imgpipe-kek");
  // A bad PIN value is refused without echoing it.
  auto bad_pin = ErrorOf(LoadConfigFromString("[encryption]\nprovider = \"pkcs11\"\npkcs11_pin = 1234\n", "inline.toml"));
  EXPECT_THAT(bad_pin, HasSubstr("encryption.pkcs11_pin"));
  EXPECT_THAT(bad_pin, Not(HasSubstr("1234")));
  EXPECT_THAT(ErrorOf(LoadConfigFromString("[encryption]\npkcs11_key_label = \"a b\"\n", "inline.toml")),
              HasSubstr("pkcs11_key_label"));
  auto off = LoadConfigFromString("[encryption]\nenabled = false\nprovider = \"pkcs11\"\n", "inline.toml");
  EXPECT_TRUE(off.ok());  // pkcs11 settings are only needed when encryption is on
}

TEST(ConfigTest, ListenersTlsAndAbuseLimits) {
  auto defaults = LoadConfigFromString("", "inline.toml");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->admin_listen, "");  // one plain listener, as the quickstart expects
  EXPECT_EQ(defaults->tls_cert, "");
  EXPECT_EQ(defaults->tls_client_auth, "none");
  EXPECT_EQ(defaults->header_timeout, 10s);
  EXPECT_EQ(defaults->max_in_flight, 1024);
  EXPECT_EQ(defaults->uploads_per_key, 64);
  ConfigSources env;
  env.env["IMGPIPE_ADMIN_LISTEN"] = "127.0.0.1:9443";
  env.env["IMGPIPE_ADMIN_ALLOW"] = "10.0.0.0/8,127.0.0.1";
  env.env["IMGPIPE_ADMIN_TLS_CERT"] = "admin.crt";
  env.env["IMGPIPE_ADMIN_TLS_KEY"] = "admin.key";
  env.env["IMGPIPE_ADMIN_TLS_CLIENT_CA"] = "ops-ca.crt";
  env.env["IMGPIPE_ADMIN_TLS_CLIENT_AUTH"] = "required";
  env.env["IMGPIPE_SERVER_TLS_CERT"] = "api.crt";
  env.env["IMGPIPE_SERVER_TLS_KEY"] = "api.key";
  env.env["IMGPIPE_SERVER_HEADER_TIMEOUT"] = "2s";
  env.env["IMGPIPE_LIMITS_IN_FLIGHT_WAIT"] = "250ms";
  env.env["IMGPIPE_LIMITS_UPLOADS_PER_KEY"] = "0";
  auto c = LoadConfigFromString("", "inline.toml", env);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->admin_listen, "127.0.0.1:9443");
  EXPECT_EQ(c->admin_allow, (std::vector<std::string>{"10.0.0.0/8", "127.0.0.1"}));
  EXPECT_EQ(c->admin_tls_client_auth, "required");
  EXPECT_EQ(c->tls_key, "api.key");
  EXPECT_EQ(c->header_timeout, 2s);
  EXPECT_EQ(c->in_flight_wait, 250ms);
  EXPECT_EQ(c->uploads_per_key, 0);

  auto refused = [](std::string_view toml) { return ErrorOf(LoadConfigFromString(toml, "inline.toml")); };
  EXPECT_THAT(refused("[server]\ntls_cert = \"a.crt\"\n"), HasSubstr("server.tls_key"));
  EXPECT_THAT(refused("[server]\ntls_client_auth = \"required\"\n"), HasSubstr("server.tls_cert"));
  EXPECT_THAT(refused("[server]\ntls_cert = \"a\"\ntls_key = \"b\"\ntls_client_auth = \"optional\"\n"),
              HasSubstr("server.tls_client_ca"));
  EXPECT_THAT(refused("[server]\ntls_cert = \"a\"\ntls_key = \"b\"\ntls_client_ca = \"c\"\n"),
              HasSubstr("server.tls_client_auth"));
  EXPECT_THAT(refused("[server]\ntls_client_auth = \"sometimes\"\n"), HasSubstr("is not one of none"));
  EXPECT_THAT(refused("[admin]\nallow = [\"10.0.0.0/8\"]\n"), HasSubstr("admin.listen"));
  EXPECT_THAT(refused("[admin]\nlisten = \"127.0.0.1:8080\"\n"), HasSubstr("same address as server.listen"));
  EXPECT_THAT(refused("[admin]\nlisten = \"nowhere\"\n"), HasSubstr("admin.listen"));
  EXPECT_THAT(refused("[admin]\nallow = [\"10.0.0.0/33\"]\nlisten = \"127.0.0.1:1\"\n"), HasSubstr("admin.allow"));
  EXPECT_THAT(refused("[limits]\nmax_in_flight = -1\n"), HasSubstr("limits.max_in_flight"));
  EXPECT_THAT(refused("[server]\nbody_timeout = \"0\"\n"), HasSubstr("server.body_timeout"));
}

TEST(ConfigTest, EveryKeyIsDocumentedInOperations) {
  // docs/OPERATIONS.md's key table ("| `section.key` | default | meaning |") and ConfigKeys() name the same keys.
  std::ifstream doc(std::string(IMGPIPE_SOURCE_DIR) + "/docs/OPERATIONS.md");
  ASSERT_TRUE(doc) << "docs/OPERATIONS.md";
  std::set<std::string> documented;
  for (std::string line; std::getline(doc, line);) {
    if (!line.starts_with("| `")) continue;
    std::string key = line.substr(3, line.find('`', 3) - 3);
    if (key.starts_with("[[")) key = key.substr(2, key.size() - 4);
    if (key.find('.') != std::string::npos && !key.ends_with(".yaml")) documented.insert(key);
  }
  auto keys = ConfigKeys();
  EXPECT_GT(keys.size(), 70u);
  for (const std::string& key : keys) EXPECT_TRUE(documented.contains(key)) << key << " is not in docs/OPERATIONS.md";
  for (const std::string& key : documented) {
    EXPECT_NE(std::find(keys.begin(), keys.end(), key), keys.end()) << key << " is documented but not a config key";
  }
}

TEST(ParseDurationTest, UnitsAndBareSeconds) {
  EXPECT_EQ(*ParseDuration("7d"), 7 * 24h);
  EXPECT_EQ(*ParseDuration("36h"), 36h);
  EXPECT_EQ(*ParseDuration("15m"), 15min);
  EXPECT_EQ(*ParseDuration("30s"), 30s);
  EXPECT_EQ(*ParseDuration("250ms"), 250ms);
  EXPECT_EQ(*ParseDuration("0"), 0ms);
  EXPECT_EQ(*ParseDuration("90"), 90s);
  EXPECT_EQ(*ParseDuration(" 10 S "), 10s);
  for (std::string_view bad : {"", "s", "-5s", "1.5h", "5 minutes", "10y", "1h30m", "99999999999999999999d"}) {
    auto r = ParseDuration(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_THAT(r.error().message, HasSubstr("is not a duration")) << bad;
    }
  }
}

TEST(ParseByteSizeTest, BinaryAndDecimalUnits) {
  EXPECT_EQ(*ParseByteSize("50MiB"), 50ull << 20);
  EXPECT_EQ(*ParseByteSize("200KB"), 200'000u);
  EXPECT_EQ(*ParseByteSize("1GiB"), 1ull << 30);
  EXPECT_EQ(*ParseByteSize("1gb"), 1'000'000'000u);
  EXPECT_EQ(*ParseByteSize("3 kib"), 3072u);
  EXPECT_EQ(*ParseByteSize("123"), 123u);
  EXPECT_EQ(*ParseByteSize("7B"), 7u);
  EXPECT_EQ(*ParseByteSize("16TiB"), 16ull << 40);
  for (std::string_view bad : {"", "MiB", "-1", "1.5MiB", "10 parsecs", "20000000TiB", "18446744073709551616"}) {
    auto r = ParseByteSize(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_THAT(r.error().message, HasSubstr("is not a size")) << bad;
    }
  }
}

TEST(ConfigTest, NonAsciiFilesAreRefusedWithTheirLine) {
  auto config = LoadConfigFromString("[log]\nlevel = \"info\"\nde\xc5\xa3 = 1\n", "odd.toml");
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.error().message.find("odd.toml line 3: non-ASCII"), std::string::npos) << config.error().message;
  ConfigSources sources;
  sources.env = {{"IMGPIPE_STORAGE_DATA_DIR", "/data/caf\xc3\xa9"}};
  auto from_env = LoadConfig(sources);
  ASSERT_TRUE(from_env.ok()) << from_env.error().message;
  EXPECT_EQ(from_env->data_dir, "/data/caf\xc3\xa9");
}

}  // namespace
}  // namespace imgpipe
