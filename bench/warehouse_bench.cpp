// The warehouse benchmark's driver (bench/warehouse.py runs it): dashboard queries and metadata inserts through the
// real MetadataStore of either backend, with the settings imgpipe itself uses.
//
//   warehouse_bench sqlite PATH | sqlcipher PATH | postgres URL  migrate
//   warehouse_bench ...  exec SQL_FILE               -> runs a script in one write transaction (the bulk generator)
//   warehouse_bench ...  query QUERIES.json REPS     -> {"name": [milliseconds of each repetition], ...}
//   warehouse_bench ...  insert ROWS WRITERS         -> {"rows", "writers", "seconds", "rows_per_second"}
//
// QUERIES.json is a list of {"name", "sql", "params": [JSON scalar as text, ...]}. Each query runs once untimed (so
// the pages it reads are cached, as on a dashboard that refreshes), then REPS times through MetadataStore::Query, the
// path POST /v1/query takes (read-only connection, analyst role on PostgreSQL), with the API's default row cap.
// Inserts are complete, realistic image rows (EXIF, user metadata) with their job, each its own transaction, as an
// upload does; WRITERS threads share one store, as the upload handlers of one `serve` do.
// `sqlcipher` is the SQLite backend encrypted as imgpipe encrypts it (database.encrypt): the raw key comes from
// WAREHOUSE_BENCH_KEY ("x'<64 hex>'"), so the bench measures the cipher's cost, not the key provider.
#include <boost/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.hpp"
#include "core/ids.hpp"
#include "warehouse/postgres/postgres_database.hpp"
#include "warehouse/postgres/postgres_metadata_store.hpp"
#include "warehouse/sqlite/sqlite_database.hpp"
#include "warehouse/sqlite/sqlite_metadata_store.hpp"

namespace imgpipe {
namespace {

namespace json = boost::json;

[[noreturn]] void Die(const std::string& message) {
  std::cerr << "warehouse_bench: " << message << "\n";
  std::exit(1);
}

//! One backend's store with the database it lives on. Lifetimes: the store is destroyed before its database.
struct OpenStore {
  std::unique_ptr<SqliteDatabase> sqlite;
  std::unique_ptr<PostgresDatabase> postgres;
  std::unique_ptr<MetadataStore> store;
  ~OpenStore() { store.reset(); }
};

std::unique_ptr<OpenStore> Open(const std::string& backend, const std::string& target, const Clock& clock,
                                size_t writers) {
  auto open = std::make_unique<OpenStore>();
  if (backend == "sqlite" || backend == "sqlcipher") {
    SqliteDatabase::Options options;
    if (backend == "sqlcipher") {
      const char* key = std::getenv("WAREHOUSE_BENCH_KEY");
      if (key == nullptr || std::string_view(key).size() != 67) Die("sqlcipher needs WAREHOUSE_BENCH_KEY=x'<64 hex>'");
      options.key = key;
    }
    auto db = SqliteDatabase::Open(target, options);
    if (!db.ok()) Die(db.error().message);
    open->sqlite = std::move(db).value();
    open->store = std::make_unique<SqliteMetadataStore>(*open->sqlite, clock);
  } else if (backend == "postgres") {
    PostgresDatabase::Options options;
    options.url = target;
    options.pool_size = std::max<size_t>(writers, 8);  // database.pool_size, at least one connection per writer
    auto db = PostgresDatabase::Open(options);
    if (!db.ok()) Die(db.error().message);
    open->postgres = std::move(db).value();
    open->store = std::make_unique<PostgresMetadataStore>(*open->postgres, clock);
  } else {
    Die("backend must be sqlite or postgres, not " + backend);
  }
  if (Status s = open->store->Migrate(); !s.ok()) Die("migrate: " + s.error().message);
  return open;
}

double MillisecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

int Query(MetadataStore& store, const std::string& file, int reps) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  json::value queries = json::parse(text.str());
  json::object out;
  for (const json::value& q : queries.as_array()) {
    const std::string name(q.at("name").as_string());
    const std::string sql(q.at("sql").as_string());
    std::vector<std::string> params;
    for (const json::value& p : q.at("params").as_array()) params.emplace_back(p.as_string());
    json::array times;
    for (int rep = -1; rep < reps; ++rep) {
      auto start = std::chrono::steady_clock::now();
      auto result = store.Query(sql, params, 100000, std::chrono::seconds(60));
      double ms = MillisecondsSince(start);
      if (!result.ok()) Die(name + ": " + result.error().message);
      if (rep >= 0) times.push_back(ms);
    }
    out[name] = std::move(times);
    std::cerr << "warehouse_bench: " << name << " done\n";
  }
  std::cout << json::serialize(out) << "\n";
  return 0;
}

ImageRecord SyntheticImage(TimePoint received, uint64_t n) {
  static const char* kFormats[] = {"jpeg", "jpeg", "jpeg", "png", "webp", "heic"};
  ImageRecord image;
  image.id = NewImageId(received);
  char sha[65];
  std::snprintf(sha, sizeof sha, "%064llx", static_cast<unsigned long long>(n * 2654435761u + 17));
  image.sha256 = sha;
  image.source = n % 10 < 7 ? "upload" : "stream-a";
  image.source_ref = "bench-" + std::to_string(n);
  image.uploader_key_id = "k_bench";
  image.received_at = received;
  image.bytes = 50000 + (n * 7919) % 4000000;
  image.format = kFormats[n % 6];
  image.content_type = "image/" + image.format;
  image.width = 4032;
  image.height = 3024;
  image.colour_space = "srgb";
  image.exif.make = "Canon";
  image.exif.model = "EOS R5";
  image.exif.taken_at = "2025-12-31T23:59:58";
  image.exif.gps_lat = 48.85;
  image.exif.gps_lon = 2.29;
  image.exif.orientation = 1;
  image.user_metadata_json = R"({"album":"bench","n":)" + std::to_string(n) + "}";
  image.pipeline = "default";
  image.original_key = "originals/" + image.id.value();
  image.status = ImageStatus::kQueued;
  image.expires_at = received + std::chrono::hours(24 * 7);
  return image;
}

int Insert(MetadataStore& store, const Clock& clock, uint64_t rows, size_t writers) {
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (size_t w = 0; w < writers; ++w) {
    threads.emplace_back([&] {
      for (uint64_t n = next++; n < rows && !failed; n = next++) {
        Status s = store.InsertImage(SyntheticImage(clock.Now(), n), std::nullopt);
        if (!s.ok()) {
          std::cerr << "warehouse_bench: insert: " << s.error().message << "\n";
          failed = true;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  double seconds = MillisecondsSince(start) / 1000;
  if (failed) return 1;
  json::object out{{"rows", rows}, {"writers", writers}, {"seconds", seconds},
                   {"rows_per_second", static_cast<double>(rows) / seconds}};
  std::cout << json::serialize(out) << "\n";
  return 0;
}

int Main(int argc, char** argv) {
  if (argc < 4) Die("usage: warehouse_bench sqlite PATH|sqlcipher PATH|postgres URL "
               "migrate|compact|exec SQL_FILE|query FILE REPS|insert ROWS WRITERS");
  const std::string backend = argv[1], target = argv[2], command = argv[3];
  SystemClock clock;
  if (command == "migrate") {
    Open(backend, target, clock, 1);
    return 0;
  }
  if (command == "compact") {  // what `serve` does every few seconds; PostgreSQL's rollups need it after a bulk load
    auto open = Open(backend, target, clock, 1);
    if (Status s = open->store->CompactRollups(); !s.ok()) Die("compact: " + s.error().message);
    return 0;
  }
  if (command == "exec" && argc == 5) {
    if (backend == "postgres") Die("exec is for the SQLite backends (PostgreSQL's generator runs through psql)");
    auto open = Open(backend, target, clock, 1);
    std::ifstream in(argv[4]);
    std::stringstream script;
    script << in.rdbuf();
    Status s = open->sqlite->Write([&](SqliteConnection& conn) { return conn.Exec(script.str()); });
    if (!s.ok()) Die("exec: " + s.error().message);
    return 0;
  }
  if (command == "query" && argc == 6) {
    auto open = Open(backend, target, clock, 1);
    return Query(*open->store, argv[4], std::stoi(argv[5]));
  }
  if (command == "insert" && argc == 6) {
    const size_t writers = std::stoul(argv[5]);
    auto open = Open(backend, target, clock, writers);
    return Insert(*open->store, clock, std::stoull(argv[4]), writers);
  }
  Die("unknown command or wrong arguments: " + command);
}

}  // namespace
}  // namespace imgpipe

int main(int argc, char** argv) { return imgpipe::Main(argc, argv); }
