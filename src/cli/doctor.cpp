// `imgpipe doctor`: checks what imgpipe needs (config, data folder, disk, warehouse, blob store and its lifecycle
// rules, keys, clocks, Kafka)
// and says what to fix. Each check prints OK, WARN or FAIL; the exit status is 1 if any failed.
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "cli/common.hpp"
#include "core/clock.hpp"
#include "core/ids.hpp"
#include "kafka/kafka_client.hpp"
#include "storage/s3/s3_blob_store.hpp"

namespace imgpipe {

namespace fs = std::filesystem;

namespace {

using std::chrono::duration_cast;
using std::chrono::seconds;

// Clocks further apart than this put retention, leases and signed cloud requests at risk.
constexpr seconds kSkewWarn{2};
constexpr seconds kSkewFail{30};

class Report {
 public:
  void Ok(const std::string& check, const std::string& what) { Print("OK", check, what, ""); }
  void Warn(const std::string& check, const std::string& what, const std::string& fix) {
    Print("WARN", check, what, fix);
  }
  void Fail(const std::string& check, const std::string& what, const std::string& fix) {
    ++failures_;
    Print("FAIL", check, what, fix);
  }
  int failures() const { return failures_; }

 private:
  void Print(const char* level, const std::string& check, const std::string& what, const std::string& fix) {
    std::cout << std::left << std::setw(5) << level << std::setw(12) << check << what << "\n";
    if (!fix.empty()) std::cout << std::setw(17) << "" << "fix: " << fix << "\n";
  }
  int failures_ = 0;
};

std::string Octal(mode_t mode) {
  std::ostringstream out;
  out << std::oct << std::setw(4) << std::setfill('0') << (mode & 07777);
  return out.str();
}

void CheckPermissions(const Config& cfg, Report& r) {
  struct stat st {};
  if (::stat(cfg.data_dir.c_str(), &st) != 0) {
    r.Fail("data-dir", cfg.data_dir + " does not exist (" + std::strerror(errno) + ")",
           "create it (mkdir -m 700) for the user imgpipe runs as, or start `imgpipe serve` once");
    return;
  }
  if (st.st_uid != ::geteuid()) {
    r.Fail("data-dir", cfg.data_dir + " belongs to uid " + std::to_string(st.st_uid) + ", not to this user (uid " +
                           std::to_string(::geteuid()) + ")",
           "chown -R the folder to the user imgpipe runs as");
  } else if ((st.st_mode & S_IWOTH) != 0) {
    r.Fail("data-dir", cfg.data_dir + " is writable by everyone (mode " + Octal(st.st_mode) + ")",
           "chmod 700 " + cfg.data_dir);
  } else if ((st.st_mode & 077) != 0) {
    r.Warn("data-dir", cfg.data_dir + " can be read by others (mode " + Octal(st.st_mode) + ")",
           "chmod 700 " + cfg.data_dir + " (it holds the database and, by default, the keyring)");
  } else {
    r.Ok("data-dir", cfg.data_dir + " mode " + Octal(st.st_mode) + ", owned by this user");
  }
  if (cfg.database_backend != "postgres" && ::stat(DatabasePath(cfg).c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    r.Warn("data-dir", DatabasePath(cfg) + " can be read by others (mode " + Octal(st.st_mode) + ")",
           "chmod 600 " + DatabasePath(cfg) + "*");
  }
}

void CheckDisk(const Config& cfg, Report& r) {
  struct statvfs vfs {};
  if (::statvfs(cfg.data_dir.c_str(), &vfs) != 0) return;  // reported by the data-dir check
  const double free_bytes = static_cast<double>(vfs.f_bavail) * static_cast<double>(vfs.f_frsize);
  const double total = static_cast<double>(vfs.f_blocks) * static_cast<double>(vfs.f_frsize);
  std::ostringstream what;
  what << std::fixed << std::setprecision(1) << free_bytes / (1 << 30) << " GiB free of "
       << total / (1 << 30) << " GiB on the data folder's filesystem";
  const double upload_room = static_cast<double>(cfg.max_bytes) * 16;
  if (free_bytes < static_cast<double>(cfg.max_bytes) * 2) {
    r.Fail("disk", what.str(), "free space: uploads are spooled there (limits.max_bytes each) and will fail");
  } else if (free_bytes < upload_room || free_bytes < total * 0.05) {
    r.Warn("disk", what.str(), "free space or move storage.data_dir; under 5% or 16 uploads' room is too tight");
  } else {
    r.Ok("disk", what.str());
  }
}

// `theirs` is another party's clock read while ours went from `before` to `after`; it may lag by up to `resolution`
// (an HTTP Date counts whole seconds), so the true time there lies in [theirs, theirs + resolution). Only the gap between those two intervals is
// skew: the round trip and the header's rounding are not, so a slow request never reads as a clock problem.
void CheckSkew(const std::string& check, const std::string& against, TimePoint theirs,
               std::chrono::milliseconds resolution, TimePoint before, TimePoint after, Report& r) {
  std::chrono::microseconds skew{0};
  if (theirs + resolution < before) skew = duration_cast<std::chrono::microseconds>(before - (theirs + resolution));
  if (theirs > after) skew = duration_cast<std::chrono::microseconds>(theirs - after);
  std::ostringstream what_text;
  what_text << "this host's clock and " << against << "'s differ by " << std::fixed << std::setprecision(3)
            << static_cast<double>(skew.count()) / 1e6 << " s";
  const std::string what = what_text.str();
  const std::string fix = "synchronise the clocks (NTP/chrony); retention, the sweeper lease and signed cloud "
                          "requests depend on them";
  if (skew > kSkewFail) r.Fail(check, what, fix);
  else if (skew > kSkewWarn) r.Warn(check, what, fix);
  else r.Ok(check, what);
}

void CheckDatabase(const Config& cfg, const Clock& clock, bool keys_usable, Report& r) {
  const bool pg = cfg.database_backend == "postgres";
  const std::string where = pg ? "PostgreSQL at database.url" : "SQLite " + DatabasePath(cfg);
  if (!pg && !fs::exists(DatabasePath(cfg))) {
    r.Warn("database", where + " does not exist yet", "start `imgpipe serve` once (or `imgpipe migrate`)");
    return;
  }
  // Opening an encrypted warehouse opens the key provider, and a local one would make a missing keyring anew.
  if (WarehouseEncrypted(cfg) && !keys_usable) {
    r.Warn("database", where + " is encrypted and the keys are not usable: not checked", "fix the keys (above)");
    return;
  }
  auto wh = OpenWarehouse(cfg, clock, /*migrate=*/false);
  if (!wh.ok()) {
    r.Fail("database", "cannot open " + where + ": " + wh.error().message,
           pg ? "check database.url (IMGPIPE_DATABASE_URL), that PostgreSQL runs and accepts this host and user"
              : "check the data folder's permissions and free space");
    return;
  }
  auto version = wh->store->SchemaVersion();
  if (!version.ok()) {
    r.Fail("database", "cannot read the schema version from " + where + ": " + version.error().message,
           "check that the database user may read schema_migrations");
    return;
  }
  const int known = wh->store->KnownSchemaVersion();
  const std::string versions = "schema version " + std::to_string(*version) + ", this imgpipe knows " +
                               std::to_string(known);
  if (*version > known) {
    r.Fail("database", where + ": " + versions, "run the newer imgpipe that migrated it (docs/OPERATIONS.md, "
                                                "\"Upgrades\")");
  } else if (*version < known) {
    r.Warn("database", where + ": " + versions, "run `imgpipe migrate` (serve also migrates on start)");
  } else {
    r.Ok("database", where + " reachable, " + versions);
  }
  if (pg) {
    const TimePoint before = clock.Now();
    auto now = wh->store->Query("SELECT now()", {}, 1, std::chrono::seconds(10));
    const TimePoint after = clock.Now();
    TimePoint theirs;
    if (now.ok() && !now->rows_json.empty() && !now->rows_json[0].empty() &&
        ParseRfc3339(std::string(now->rows_json[0][0].substr(1, now->rows_json[0][0].size() - 2)), &theirs)) {
      CheckSkew("clock", "PostgreSQL", theirs, std::chrono::milliseconds(1), before, after, r);
    }
  }
}

void CheckBlobStore(const Config& cfg, const Clock& clock, Report& r) {
  auto store = OpenBlobStore(cfg);
  if (!store.ok()) {
    r.Fail("blob-store", "cannot open the " + cfg.blob_backend + " store: " + store.error().message,
           "check the storage.* settings and credentials (docs/OPERATIONS.md)");
    return;
  }
  BlobStore& blobs = **store;
  // A probe outside the day folders, which retention and the API never look at; removed at once.
  const std::string key = "doctor-probe/" + HexEncode(RandomBytes(8));
  const std::string payload = "imgpipe doctor " + key;
  const TimePoint before = clock.Now();
  auto put = blobs.Put(kOriginals, key, payload);
  const TimePoint after = clock.Now();
  if (!put.ok()) {
    r.Fail("blob-store", "cannot write a probe object to the " + cfg.blob_backend + " store: " + put.error().message,
           "check the store is reachable and the credentials may write (originals container / bucket)");
    return;
  }
  auto read = blobs.GetAll(kOriginals, key, 1 << 16);
  Status deleted = blobs.Delete(kOriginals, key);
  if (!read.ok() || *read != payload) {
    r.Fail("blob-store", "the probe object did not read back" + (read.ok() ? std::string() : ": " +
                                                                                 read.error().message),
           "check the store's consistency and read permissions");
    return;
  }
  if (!deleted.ok()) {
    r.Fail("blob-store", "cannot delete the probe object " + key + ": " + deleted.error().message,
           "give the credentials delete permission (retention needs it)");
    return;
  }
  r.Ok("blob-store", std::string(blobs.Name()) + " store: wrote, read back and deleted a probe object");
  // A cloud store dates the object by its own clock (Last-Modified, else the answer's Date), in whole seconds; and
  // servers may reuse a formatted Date for a while (the S3 test server's lags up to a second behind): 2 s of slack.
  if (cfg.blob_backend != "local") {
    CheckSkew("clock", "the blob store", put->created, std::chrono::seconds(2), before, after, r);
  }
}

// The store's own expiry (S3 bucket lifecycle) against retention: a rule that deletes sooner than retention, or any
// expiring rule while images are on legal hold, loses images the sweeper would keep.
void CheckLifecycle(const Config& cfg, const Clock& clock, bool keys_usable, Report& r) {
  if (cfg.blob_backend == "azure") {
    r.Ok("lifecycle", "Azure: imgpipe does not install or check a lifecycle management policy; the sweeper enforces "
                      "retention (to add the store's own expiry as a second line, see docs/OPERATIONS.md, \"The "
                      "lifecycle rule\")");
    return;
  }
  if (cfg.blob_backend != "s3") return;
  auto store = OpenBlobStore(cfg);
  if (!store.ok()) return;  // reported by the blob-store check
  auto* s3 = dynamic_cast<S3BlobStore*>(store->get());
  if (s3 == nullptr) return;
  const std::string bucket = "bucket " + cfg.s3_bucket;
  auto rules = s3->GetLifecycle();
  if (!rules.ok()) {
    if (rules.error().code == "not_implemented") {
      if (cfg.s3_lifecycle) {
        r.Fail("lifecycle", "the S3 server does not implement bucket lifecycle, and storage.s3.lifecycle = true",
               "set storage.s3.lifecycle = false (serve refuses to start otherwise); the sweeper enforces retention");
      } else {
        r.Ok("lifecycle", "the S3 server does not implement bucket lifecycle; the sweeper alone enforces retention");
      }
    } else if (rules.error().kind == ErrorKind::kNotFound) {
      r.Ok("lifecycle", bucket + " does not exist yet (made on the first write)" +
                            std::string(cfg.s3_lifecycle ? "; serve installs the lifecycle rule at start" : ""));
    } else {
      const std::string what = "cannot read the lifecycle rules of " + bucket + ": " + rules.error().message;
      const std::string fix = "allow s3:GetLifecycleConfiguration to imgpipe's credentials";
      if (cfg.s3_lifecycle) r.Fail("lifecycle", what, fix);
      else r.Warn("lifecycle", what, fix);
    }
    return;
  }
  const auto wanted = S3RetentionLifecycleRules(cfg.retention_originals, cfg.retention_renditions);
  const auto findings = CompareS3Lifecycle(*rules, wanted);
  bool expiring = false;
  for (const auto& rule : *rules) expiring = expiring || (rule.enabled && rule.expiration_days > 0);
  if (rules->empty() && !cfg.s3_lifecycle) {
    r.Ok("lifecycle", bucket + " has no lifecycle rule (storage.s3.lifecycle = false): the sweeper alone enforces "
                               "retention");
    return;
  }
  std::string fix = "run `imgpipe storage install-lifecycle` (it replaces the bucket's rules with retention's)";
  if (!cfg.s3_lifecycle) fix += ", or remove the bucket's rules";
  for (const auto& f : findings) {
    if (f.expires_early) r.Fail("lifecycle", bucket + ": " + f.message, fix);
    else r.Warn("lifecycle", bucket + ": " + f.message, fix);
  }
  if (findings.empty()) {
    r.Ok("lifecycle", bucket + ": the lifecycle rules match retention (see `imgpipe storage show-lifecycle`)");
  }
  // The bucket cannot see legal holds: an expiring rule deletes held images once they are old enough.
  if (!expiring || !keys_usable) return;
  auto wh = OpenWarehouse(cfg, clock, /*migrate=*/false);
  if (!wh.ok()) return;  // reported by the database check
  auto holds = wh->store->ListLegalHolds();
  if (holds.ok() && !holds->empty()) {
    r.Fail("lifecycle", std::to_string(holds->size()) + " image(s) are on legal hold and " + bucket +
                            " has expiring lifecycle rules, which do not see holds",
           "remove the bucket's lifecycle rules (and set storage.s3.lifecycle = false) while images are held");
  }
}

// True when the key provider wraps and unwraps (or encryption is off).
bool CheckKeys(const Config& cfg, const Clock& clock, Report& r) {
  if (!cfg.encryption_enabled) {
    r.Warn("keys", "encryption at rest is off (encryption.enabled = false)", "turn it on unless the store encrypts");
    return true;
  }
  const bool local = cfg.encryption_provider != "pkcs11";
  if (local) {
    const std::string path = KeyringPath(cfg);
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      // Opening it would create a new, empty keyring: every stored object would be unreadable with it.
      r.Fail("keys", "the keyring " + path + " is missing",
             "restore it (imgpipe restore, or your vault's copy); on a new installation `imgpipe serve` creates it");
      return false;
    }
    if ((st.st_mode & 037) != 0 || ((st.st_mode & 040) != 0 && st.st_gid != ::getegid())) {
      r.Fail("keys", "the keyring " + path + " can be read by others (mode " + Octal(st.st_mode) + ")",
             "chmod 600 " + path);
      return false;
    }
  }
  auto provider = OpenKeyProvider(cfg, clock, /*wait_for_keys=*/true);
  if (!provider.ok()) {
    r.Fail("keys", "cannot open the " + cfg.encryption_provider + " key provider: " + provider.error().message,
           local ? "check encryption.keyring and its file" :
                   "check encryption.pkcs11_module, pkcs11_token and the PIN, and that the token is present");
    return false;
  }
  const DataKey probe = DataKey::Random();
  auto wrapped = (*provider)->Wrap(probe, "imgpipe doctor");
  if (!wrapped.ok()) {
    r.Fail("keys", "cannot wrap a probe key: " + wrapped.error().message, "check the key provider (imgpipe kek list)");
    return false;
  }
  auto unwrapped = (*provider)->Unwrap(*wrapped, "imgpipe doctor");
  if (!unwrapped.ok() || std::memcmp(unwrapped->data(), probe.data(), DataKey::size()) != 0) {
    r.Fail("keys", "a probe key did not unwrap" + (unwrapped.ok() ? std::string() : ": " +
                                                                        unwrapped.error().message),
           "check the key provider (imgpipe kek list)");
    return false;
  }
  r.Ok("keys", std::string((*provider)->Name()) + " key provider: wrapped and unwrapped a probe key (KEK version " +
                   std::to_string(wrapped->version) + ")");
  return true;
}

// A TCP connection to each bootstrap broker tells a wrong address or a firewall from a broker problem; a metadata
// request with the configured security settings then proves that Kafka answers there and accepts them.
void CheckKafka(const Config& cfg, Report& r) {
  if (cfg.kafka_brokers.empty()) return;
  std::stringstream list(cfg.kafka_brokers);
  std::string broker;
  int reachable = 0;
  while (std::getline(list, broker, ',')) {
    auto colon = broker.rfind(':');
    if (colon == std::string::npos) {
      r.Fail("kafka", "broker \"" + broker + "\" has no port", "write each of kafka.brokers as host:port");
      continue;
    }
    std::string host = broker.substr(0, colon), port = broker.substr(colon + 1);
    if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    bool reached = false;
    if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) == 0) {
      for (addrinfo* a = res; a && !reached; a = a->ai_next) {
        int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        timeval tv{5, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        reached = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0;
        ::close(fd);
      }
      ::freeaddrinfo(res);
    }
    if (reached) {
      ++reachable;
      r.Ok("kafka", "broker " + broker + " accepts connections");
    } else {
      r.Fail("kafka", "cannot connect to broker " + broker, "check kafka.brokers and the network path to it");
    }
  }
  if (reachable == 0) return;
  auto cluster = DescribeKafkaCluster(KafkaClientProperties(cfg), std::chrono::seconds(10));
  if (!cluster.ok()) {
    const bool auth = cluster.error().kind == ErrorKind::kPermissionDenied;
    r.Fail("kafka", "the brokers accept connections, but the cluster did not answer: " + cluster.error().message,
           auth ? "check the [kafka] credentials (sasl_mechanism, sasl_username, sasl_password, ssl_*)"
                : "check that kafka.brokers names the brokers' client listener (not the controller's or another "
                  "service's) and that kafka.security_protocol matches it");
    return;
  }
  std::string advertised;
  for (const auto& b : cluster->brokers) advertised += (advertised.empty() ? "" : ", ") + b;
  r.Ok("kafka", "the cluster answers with " + std::to_string(cluster->brokers.size()) + " broker(s) (" + advertised +
                    ") and " + std::to_string(cluster->topics) + " topic(s)");
}

}  // namespace

int RunDoctor(int argc, char** argv) {
  auto args = ParseArgs(argc, argv, 2, {"config", "data-dir"});
  if (!args) return kExitUsage;
  Report r;
  auto config = LoadConfigFromArgs(*args);  // prints what is wrong
  if (!config) {
    r.Fail("config", "the configuration is not valid (above)", "fix the key named above");
    return kExitFailure;
  }
  r.Ok("config", args->Get("config") ? "loaded " + *args->Get("config") : std::string("defaults and IMGPIPE_*"));
  // The clock imgpipe would run on with this configuration, so the skew checks judge what serve would see.
  SystemClock system_clock;
  OffsetClock offset_clock(config->clock_offset);
  const Clock& clock = config->clock_offset.count() != 0 ? static_cast<const Clock&>(offset_clock) : system_clock;
  if (config->clock_offset.count() != 0) {
    r.Warn("config", "testing.clock_offset moves this configuration's clock " +
                         std::to_string(duration_cast<seconds>(config->clock_offset).count()) + " s ahead",
           "remove testing.clock_offset (IMGPIPE_TESTING_CLOCK_OFFSET): it is for tests, never for production");
  }
  CheckPermissions(*config, r);
  CheckDisk(*config, r);
  const bool keys_usable = CheckKeys(*config, clock, r);
  CheckDatabase(*config, clock, keys_usable, r);
  CheckBlobStore(*config, clock, r);
  CheckLifecycle(*config, clock, keys_usable, r);
  CheckKafka(*config, r);
  std::cout << (r.failures() == 0 ? "no problems that stop imgpipe\n"
                                  : std::to_string(r.failures()) + " check(s) failed\n");
  return r.failures() == 0 ? kExitOk : kExitFailure;
}

}  // namespace imgpipe
