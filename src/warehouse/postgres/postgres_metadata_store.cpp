#include "warehouse/postgres/postgres_metadata_store.hpp"

#include <libpq-fe.h>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstdio>
#include <memory>

#include "core/log.hpp"
#include "warehouse/postgres/postgres_migrations.hpp"

namespace imgpipe {

namespace {

// Listing pages are clamped to this many rows, whatever the caller asks (as in SQLite).
constexpr size_t kMaxPageSize = 1000;
// An analyst query's cell may be this large and no larger (SQLite's query connections have the same limit).
constexpr size_t kMaxCellBytes = 16 * 1024 * 1024;
// How long InsertImage may wait for the lock that creating a day partition takes on `images`.
constexpr std::string_view kPartitionLockTimeout = "2s";
// After a failed attempt to create a partition, rows of that day go to the default partition for this long.
constexpr auto kPartitionRetryAfter = std::chrono::minutes(1);
// Key of the advisory lock taken while creating partitions ("imgpipe" in ASCII, then 02).
constexpr int64_t kPartitionLock = 0x696d677069706502;
constexpr int64_t kMicrosPerDay = 86'400'000'000;

// The columns of `images` in the order BindImage() binds and ReadImage() reads them.
constexpr std::string_view kImageColumns =
    "id, sha256, source, source_ref, uploader_key_id, received_at, bytes, format, content_type, width, height, "
    "frames, has_alpha, colour_space, has_icc, orientation, exif_make, exif_model, exif_taken_at, gps_lat, gps_lon, "
    "gps_alt, lens_model, software, user_metadata, pipeline, original_key, status, processed_at, expires_at, "
    "expired_at, error, phash, dominant_colour";
constexpr int kImageColumnCount = 34;

const std::string& InsertImageSql() {
  static const std::string sql = [] {
    std::string s = "INSERT INTO images (" + std::string(kImageColumns) + ") VALUES (";
    for (int i = 1; i <= kImageColumnCount; ++i) s += (i > 1 ? ", $" : "$") + std::to_string(i);
    return s + ")";
  }();
  return sql;
}

const std::string& SelectImageSql() {
  // processing_starts is read, never inserted (it starts at 0).
  static const std::string sql = "SELECT " + std::string(kImageColumns) + ", processing_starts FROM images";
  return sql;
}

constexpr std::string_view kInsertJobSql =
    "INSERT INTO jobs (image_id, pipeline, attempts, not_before, enqueued_at) VALUES ($1, $2, 0, $3, $3)";
constexpr std::string_view kApiKeyColumns = "id, secret_hash, role, name, created_at, revoked_at";

std::string PhashHex(uint64_t phash) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(phash));
  return buf;
}

template <typename T>
std::optional<int64_t> OptionalInt(const std::optional<T>& v) {
  if (!v) return std::nullopt;
  return static_cast<int64_t>(*v);
}

int64_t DayOf(TimePoint t) {
  const int64_t us = ToUnixMicros(t);
  return us / kMicrosPerDay - (us % kMicrosPerDay < 0 ? 1 : 0);
}

//! Reads the columns of one row left to right; the first malformed value is reported by status().
class RowReader {
 public:
  RowReader(const PgResult& result, int row, std::string what) : result_(result), row_(row), what_(std::move(what)) {}

  std::string Text() { return std::string(result_.Text(row_, column_++)); }
  std::optional<std::string> OptionalText() {
    if (result_.IsNull(row_, column_)) {
      ++column_;
      return std::nullopt;
    }
    return Text();
  }
  int64_t Int() {
    std::string_view text = result_.Text(row_, column_);
    int64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size()) Fail("integer '" + std::string(text) + "'");
    ++column_;
    return value;
  }
  std::optional<int64_t> OptionalInt() {
    if (result_.IsNull(row_, column_)) {
      ++column_;
      return std::nullopt;
    }
    return Int();
  }
  double Double() {
    std::string_view text = result_.Text(row_, column_);
    double value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size()) Fail("number '" + std::string(text) + "'");
    ++column_;
    return value;
  }
  std::optional<double> OptionalDouble() {
    if (result_.IsNull(row_, column_)) {
      ++column_;
      return std::nullopt;
    }
    return Double();
  }
  bool Bool() {
    std::string_view text = result_.Text(row_, column_);
    if (text != "t" && text != "f") Fail("boolean '" + std::string(text) + "'");
    ++column_;
    return text == "t";
  }
  TimePoint Time() {
    TimePoint t{};
    std::string_view text = result_.Text(row_, column_);
    if (!ParsePgTime(text, &t)) Fail("time '" + std::string(text) + "'");
    ++column_;
    return t;
  }
  std::optional<TimePoint> OptionalTime() {
    if (result_.IsNull(row_, column_)) {
      ++column_;
      return std::nullopt;
    }
    return Time();
  }
  void Fail(const std::string& what) {
    if (error_.empty()) {
      error_ = what_ + " has a malformed " + what + " in column " + result_.ColumnName(column_) +
               "; the database was modified outside imgpipe";
    }
  }
  Status status() const {
    if (error_.empty()) return Ok();
    return MakeError(ErrorKind::kInternal, error_);
  }

 private:
  const PgResult& result_;
  int row_;
  std::string what_;
  int column_ = 0;
  std::string error_;
};

PgParams ImageParams(const ImageRecord& image) {
  PgParams p;
  p.Text(image.id.value())
      .Text(image.sha256)
      .Text(image.source)
      .Text(image.source_ref)
      .Text(image.uploader_key_id)
      .Time(image.received_at)
      .Int(static_cast<int64_t>(image.bytes))
      .Text(image.format)
      .Text(image.content_type)
      .Int(image.width)
      .Int(image.height)
      .Int(image.frames)
      .Bool(image.has_alpha)
      .Text(image.colour_space)
      .Bool(image.has_icc)
      .OptionalInt(OptionalInt(image.exif.orientation))
      .OptionalText(image.exif.make)
      .OptionalText(image.exif.model)
      .OptionalText(image.exif.taken_at)
      .OptionalDouble(image.exif.gps_lat)
      .OptionalDouble(image.exif.gps_lon)
      .OptionalDouble(image.exif.gps_alt)
      .OptionalText(image.exif.lens_model)
      .OptionalText(image.exif.software)
      .Text(image.user_metadata_json.empty() ? "{}" : image.user_metadata_json)
      .Text(image.pipeline)
      .Text(image.original_key)
      .Text(ImageStatusName(image.status))
      .OptionalTime(image.processed_at)
      .Time(image.expires_at)
      .OptionalTime(image.expired_at)
      .OptionalText(image.error)
      .OptionalText(image.phash ? std::optional<std::string>(PhashHex(*image.phash)) : std::nullopt)
      .OptionalText(image.dominant_colour);
  return p;
}

Result<ImageRecord> ReadImage(const PgResult& result, int row_index) {
  ImageRecord image;
  image.id = ImageId(std::string(result.Text(row_index, 0)));
  RowReader row(result, row_index, "image " + image.id.value());
  row.Text();  // id
  image.sha256 = row.Text();
  image.source = row.Text();
  image.source_ref = row.Text();
  image.uploader_key_id = row.Text();
  image.received_at = row.Time();
  image.bytes = static_cast<uint64_t>(row.Int());
  image.format = row.Text();
  image.content_type = row.Text();
  image.width = static_cast<int>(row.Int());
  image.height = static_cast<int>(row.Int());
  image.frames = static_cast<int>(row.Int());
  image.has_alpha = row.Bool();
  image.colour_space = row.Text();
  image.has_icc = row.Bool();
  if (auto orientation = row.OptionalInt()) image.exif.orientation = static_cast<int>(*orientation);
  image.exif.make = row.OptionalText();
  image.exif.model = row.OptionalText();
  image.exif.taken_at = row.OptionalText();
  image.exif.gps_lat = row.OptionalDouble();
  image.exif.gps_lon = row.OptionalDouble();
  image.exif.gps_alt = row.OptionalDouble();
  image.exif.lens_model = row.OptionalText();
  image.exif.software = row.OptionalText();
  image.user_metadata_json = row.Text();
  image.pipeline = row.Text();
  image.original_key = row.Text();
  std::string status = row.Text();
  if (!ParseImageStatus(status, &image.status)) row.Fail("status '" + status + "'");
  image.processed_at = row.OptionalTime();
  image.expires_at = row.Time();
  image.expired_at = row.OptionalTime();
  image.error = row.OptionalText();
  if (auto phash = row.OptionalText()) {
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(phash->data(), phash->data() + phash->size(), value, 16);
    if (ec != std::errc() || end != phash->data() + phash->size()) row.Fail("phash '" + *phash + "'");
    image.phash = value;
  }
  image.dominant_colour = row.OptionalText();
  image.processing_starts = static_cast<int>(row.Int());
  IMGPIPE_TRY(row.status());
  return image;
}

Result<RenditionRecord> ReadRendition(const PgResult& result, int row_index) {
  RenditionRecord r;
  RowReader row(result, row_index, "rendition");
  r.image_id = ImageId(row.Text());
  r.name = row.Text();
  r.key = row.Text();
  r.format = row.Text();
  r.content_type = row.Text();
  r.width = static_cast<int>(row.Int());
  r.height = static_cast<int>(row.Int());
  r.bytes = static_cast<uint64_t>(row.Int());
  r.created_at = row.Time();
  IMGPIPE_TRY(row.status());
  return r;
}

Result<ProcessingRun> ReadRun(const PgResult& result, int row_index) {
  ProcessingRun run;
  RowReader row(result, row_index, "processing run");
  run.image_id = ImageId(row.Text());
  run.pipeline = row.Text();
  run.attempt = static_cast<int>(row.Int());
  run.started_at = row.Time();
  run.finished_at = row.Time();
  run.status = row.Text();
  run.error = row.OptionalText();
  run.decode_seconds = row.Double();
  run.encode_seconds = row.Double();
  run.total_seconds = row.Double();
  run.script_name = row.Text();
  run.script_version = row.Text();
  IMGPIPE_TRY(row.status());
  return run;
}

Result<ApiKeyRecord> ReadApiKey(const PgResult& result, int row_index) {
  ApiKeyRecord key;
  RowReader row(result, row_index, "API key");
  key.id = row.Text();
  key.secret_hash = row.Text();
  std::string role = row.Text();
  if (!ParseRole(role, &key.role)) row.Fail("role '" + role + "'");
  key.name = row.Text();
  key.created_at = row.Time();
  key.revoked_at = row.OptionalTime();
  IMGPIPE_TRY(row.status());
  return key;
}

Status InsertRun(PgConnection& conn, const ImageId& id, const ProcessingRun& run) {
  IMGPIPE_TRY(conn.Exec("INSERT INTO processing_runs (image_id, pipeline, attempt, started_at, finished_at, status, "
                        "error, decode_seconds, encode_seconds, total_seconds, script_name, script_version) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                        PgParams()
                            .Text(id.value())
                            .Text(run.pipeline)
                            .Int(run.attempt)
                            .Time(run.started_at)
                            .Time(run.finished_at)
                            .Text(run.status)
                            .OptionalText(run.error)
                            .Double(run.decode_seconds)
                            .Double(run.encode_seconds)
                            .Double(run.total_seconds)
                            .Text(run.script_name)
                            .Text(run.script_version)));
  return Ok();
}

Error ImageNotFound(const ImageId& id) {
  return MakeError(ErrorKind::kNotFound, "image " + id.value() + " not found");
}

//! The image's partition key as the database printed it (passed back as a parameter, so plans touch one
//! partition), or nullopt if there is no such image.
Result<std::optional<std::string>> ReceivedAtOf(PgConnection& conn, const ImageId& id) {
  IMGPIPE_ASSIGN_OR_RETURN(auto result,
                           conn.Exec("SELECT received_at FROM image_ids WHERE id = $1", PgParams().Text(id.value())));
  if (result.Rows() == 0) return std::optional<std::string>();
  return std::optional<std::string>(std::string(result.Text(0, 0)));
}

//! Runs `update_sql` (its $1 the image id, $2 its partition key) on the image's row; kNotFound if there is no such
//! image. The statement's own WHERE decides whether the row changes.
Status UpdateImageRow(PgConnection& conn, const ImageId& id, const char* update_sql) {
  IMGPIPE_ASSIGN_OR_RETURN(auto received_at, ReceivedAtOf(conn, id));
  if (!received_at) return ImageNotFound(id);
  IMGPIPE_TRY(conn.Exec(update_sql, PgParams().Text(id.value()).Text(*received_at)));
  return Ok();
}

//! The image's status, locking its row until the transaction ends; nullopt if there is no such image.
struct LockedImage {
  std::string received_at;
  std::string status;
};
Result<std::optional<LockedImage>> LockImage(PgConnection& conn, const ImageId& id) {
  IMGPIPE_ASSIGN_OR_RETURN(auto received_at, ReceivedAtOf(conn, id));
  if (!received_at) return std::optional<LockedImage>();
  IMGPIPE_ASSIGN_OR_RETURN(auto result,
                           conn.Exec("SELECT status FROM images WHERE id = $1 AND received_at = $2 FOR UPDATE",
                                     PgParams().Text(id.value()).Text(*received_at)));
  if (result.Rows() == 0) return std::optional<LockedImage>();
  return std::optional<LockedImage>(LockedImage{*received_at, std::string(result.Text(0, 0))});
}

// ---------------------------------------------------------------------------------------------------------------
// Query helpers

//! One analyst parameter: its text and type. Strings are sent untyped first, so PostgreSQL types them from where
//! they are used (received_at >= $1 reads a time); if it cannot (SELECT $1), they are sent again as text.
struct QueryParam {
  std::optional<std::string> value;
  uint32_t type = pg_oid::kUnknownInfer;
  bool untyped = false;  //!< a string or null: typed from the context, else text
};

Result<QueryParam> ParseQueryParam(size_t index, const std::string& json) {
  boost::system::error_code ec;
  boost::json::value value = boost::json::parse(json, ec);
  auto invalid = [&](std::string_view why) {
    return MakeError(ErrorKind::kInvalidArgument,
                     "query parameter " + std::to_string(index) + " " + std::string(why) +
                         "; parameters are JSON scalars: a number, a string, true/false or null");
  };
  if (ec) return invalid("is not valid JSON (" + ec.message() + ")");
  QueryParam p;
  switch (value.kind()) {
    case boost::json::kind::null:
      p.untyped = true;
      break;
    case boost::json::kind::bool_:
      p.value = value.get_bool() ? "true" : "false";
      p.type = pg_oid::kBool;
      break;
    case boost::json::kind::int64:
      p.value = std::to_string(value.get_int64());
      p.type = pg_oid::kInt8;
      break;
    case boost::json::kind::uint64:
      if (value.get_uint64() > static_cast<uint64_t>(INT64_MAX)) return invalid("is an integer above 2^63-1");
      p.value = std::to_string(value.get_uint64());
      p.type = pg_oid::kInt8;
      break;
    case boost::json::kind::double_: {
      char buf[32];
      auto [end, conv] = std::to_chars(buf, buf + sizeof buf, value.get_double());
      p.value = std::string(buf, end);
      p.type = pg_oid::kFloat8;
      break;
    }
    case boost::json::kind::string:
      p.value = std::string(value.get_string());
      p.untyped = true;
      break;
    case boost::json::kind::array:
    case boost::json::kind::object:
      return invalid("is an array or object");
  }
  return p;
}

//! Appends `text` as a JSON string; bytes that are not UTF-8 become U+FFFD, so the response is always valid JSON.
void AppendJsonString(std::string& out, std::string_view text) {
  out += '"';
  size_t i = 0;
  while (i < text.size()) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
          if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
          } else {
            out += static_cast<char>(c);
          }
      }
      ++i;
      continue;
    }
    // A well-formed sequence: its length from the lead byte, no overlongs, no surrogates, at most U+10FFFF.
    const size_t len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    bool ok = len > 0 && i + len <= text.size();
    uint32_t cp = len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; ok && k < len; ++k) {
      auto cc = static_cast<unsigned char>(text[i + k]);
      if ((cc & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (ok && len == 3) ok = cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF);
    if (ok && len == 4) ok = cp >= 0x10000 && cp <= 0x10FFFF;
    if (ok) {
      out.append(text.substr(i, len));
      i += len;
    } else {
      out += "\\ufffd";
      ++i;
    }
  }
  out += '"';
}

std::string Base64(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t rest = bytes.size() - i;
    uint32_t n = static_cast<unsigned char>(bytes[i]) << 16;
    if (rest > 1) n |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    if (rest > 2) n |= static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[n >> 18];
    out += kAlphabet[(n >> 12) & 63];
    out += rest > 1 ? kAlphabet[(n >> 6) & 63] : '=';
    out += rest > 2 ? kAlphabet[n & 63] : '=';
  }
  return out;
}

//! bytea's text output ("\x00ff10") as the bytes it stands for.
std::string UnhexBytea(std::string_view text) {
  std::string bytes;
  if (!text.starts_with("\\x")) return std::string(text);
  auto nibble = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
  for (size_t i = 2; i + 1 < text.size(); i += 2) {
    bytes += static_cast<char>((nibble(text[i]) << 4) | nibble(text[i + 1]));
  }
  return bytes;
}

std::string CellJson(PGresult* result, int column) {
  if (PQgetisnull(result, 0, column)) return "null";
  std::string_view text(PQgetvalue(result, 0, column), static_cast<size_t>(PQgetlength(result, 0, column)));
  switch (PQftype(result, column)) {
    case pg_oid::kInt2:
    case pg_oid::kInt4:
    case pg_oid::kInt8:
    case pg_oid::kOid:
      return std::string(text);
    case pg_oid::kFloat4:
    case pg_oid::kFloat8:
    case pg_oid::kNumeric:
      // JSON has no NaN or infinity.
      if (text == "NaN" || text == "Infinity" || text == "-Infinity") return "null";
      return std::string(text);
    case pg_oid::kBool:
      return text == "t" ? "true" : "false";
    case pg_oid::kBytea:
      return "\"" + Base64(UnhexBytea(text)) + "\"";
    case pg_oid::kTimestampTz:
      if (auto rfc3339 = PgTimeToRfc3339(text)) return "\"" + *rfc3339 + "\"";
      [[fallthrough]];
    default: {
      std::string out;
      AppendJsonString(out, text);
      return out;
    }
  }
}

//! The Error for an analyst query's failure: the query's fault (kInvalidArgument with PostgreSQL's message) unless
//! it ran out of time or the server is in trouble.
Error AnalystError(PgConnection& conn, PGresult* result, std::chrono::milliseconds timeout) {
  Error error = conn.ErrorOf(result, "query");
  const std::string& sqlstate = conn.last_sqlstate();
  std::string message;
  if (result != nullptr) {
    if (const char* m = PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY)) message = m;
    if (const char* hint = PQresultErrorField(result, PG_DIAG_MESSAGE_HINT)) message += std::string(" (") + hint + ")";
  }
  if (message.empty()) message = error.message;
  if (sqlstate == "57014") {
    return MakeError(ErrorKind::kUnavailable,
                     "query stopped after its timeout of " + std::to_string(timeout.count()) + " ms (" + message +
                         "); narrow it, e.g. with a WHERE on received_at, or add a LIMIT");
  }
  if (error.kind == ErrorKind::kUnavailable && sqlstate != "55P03") return error;  // server trouble, not the query
  if (sqlstate == "42501") {
    message += "; queries run as the read-only role imgpipe_analyst, which may read the analysis tables and views "
               "(images, not its day partitions) but not api_keys or idempotency (secrets and stored responses are "
               "not analyst data)";
  } else if (sqlstate == "25006") {
    message += "; queries are read-only";
  }
  return MakeError(ErrorKind::kInvalidArgument, std::move(message));
}

using ResultPtr = std::unique_ptr<PGresult, decltype(&PQclear)>;

}  // namespace

// ---------------------------------------------------------------------------------------------------------------

Status PostgresMetadataStore::Migrate() {
  IMGPIPE_TRY(ApplyPostgresMigrations(db_, clock_));
  EnsurePartitions(clock_.Now());
  return Ok();
}

Result<int> PostgresMetadataStore::SchemaVersion() {
  int version = 0;
  IMGPIPE_TRY(db_.Run([&](PgConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto exists, conn.Exec("SELECT to_regclass('schema_migrations') IS NOT NULL"));
    if (exists.Text(0, 0) != "t") return Ok();
    IMGPIPE_ASSIGN_OR_RETURN(auto result, conn.Exec("SELECT coalesce(max(version), 0) FROM schema_migrations"));
    version = std::stoi(std::string(result.Text(0, 0)));
    return Ok();
  }));
  return version;
}

int PostgresMetadataStore::KnownSchemaVersion() const { return PostgresMigrations().back().version; }

Status PostgresMetadataStore::Ping() {
  return db_.Run([](PgConnection& conn) -> Status {
    IMGPIPE_TRY(conn.Exec("SELECT 1 FROM schema_migrations LIMIT 1"));
    return Ok();
  });
}

// Each statement deletes the rows its snapshot sees and inserts their sums: rows that triggers append meanwhile are
// not in the snapshot and stay for the next time; a second compactor blocks on the deleted rows, then skips them.
Status PostgresMetadataStore::CompactRollups() {
  static constexpr std::string_view kCompactions[] = {
      "WITH gone AS (DELETE FROM images_hourly RETURNING *) "
      "INSERT INTO images_hourly SELECT hour, source, format, sum(images), sum(bytes), sum(processed), sum(failed), "
      "sum(in_progress), sum(live_images), sum(live_bytes), sum(live_renditions), sum(live_rendition_bytes), "
      "sum(deleted_images), sum(deleted_bytes) FROM gone GROUP BY hour, source, format",
      "WITH gone AS (DELETE FROM images_by_shape RETURNING *) "
      "INSERT INTO images_by_shape SELECT format, size_bits, min_megapixels, sum(images), sum(bytes) FROM gone "
      "GROUP BY format, size_bits, min_megapixels",
      "WITH gone AS (DELETE FROM processing_latency_hourly RETURNING *) "
      "INSERT INTO processing_latency_hourly SELECT hour, pipeline, bucket, sum(runs), sum(total_seconds), "
      "max(max_seconds) FROM gone GROUP BY hour, pipeline, bucket",
      "WITH gone AS (DELETE FROM processing_latency_daily RETURNING *) "
      "INSERT INTO processing_latency_daily SELECT day, pipeline, bucket, sum(runs), sum(total_seconds), "
      "max(max_seconds) FROM gone GROUP BY day, pipeline, bucket",
      "WITH gone AS (DELETE FROM expirations_daily RETURNING *) "
      "INSERT INTO expirations_daily SELECT day, sum(images), sum(bytes) FROM gone GROUP BY day",
  };
  for (std::string_view sql : kCompactions) {
    IMGPIPE_TRY(db_.Transaction([&](PgConnection& conn) -> Status {
      IMGPIPE_TRY(conn.Exec(std::string(sql)));
      return Ok();
    }));
  }
  // Each compaction leaves the old rows dead: without a vacuum the views would still read past them (a bulk load
  // leaves a million). The tables are small once folded, so this is quick; autovacuum may be slower to come.
  return db_.Run([](PgConnection& conn) -> Status {
    IMGPIPE_TRY(conn.Exec("VACUUM (ANALYZE) images_hourly, images_by_shape, processing_latency_hourly, "
                          "processing_latency_daily, expirations_daily"));
    return Ok();
  });
}

Status PostgresMetadataStore::CreateDayPartition(int64_t day) {
  using namespace std::chrono;
  const year_month_day from{sys_days{days{day}}};
  const year_month_day to{sys_days{days{day + 1}}};
  if (from.year() < year{1970} || to.year() > year{9999}) {
    return MakeError(ErrorKind::kInvalidArgument, "no partitions for days outside 1970..9999");
  }
  char name[32], from_text[32], to_text[32];
  std::snprintf(name, sizeof name, "images_p%04d%02u%02u", static_cast<int>(from.year()),
                static_cast<unsigned>(from.month()), static_cast<unsigned>(from.day()));
  std::snprintf(from_text, sizeof from_text, "%04d-%02u-%02u 00:00:00+00", static_cast<int>(from.year()),
                static_cast<unsigned>(from.month()), static_cast<unsigned>(from.day()));
  std::snprintf(to_text, sizeof to_text, "%04d-%02u-%02u 00:00:00+00", static_cast<int>(to.year()),
                static_cast<unsigned>(to.month()), static_cast<unsigned>(to.day()));
  return db_.Transaction([&](PgConnection& conn) -> Status {
    IMGPIPE_TRY(conn.Exec("SET LOCAL lock_timeout = '" + std::string(kPartitionLockTimeout) + "'"));
    IMGPIPE_TRY(conn.Exec("SELECT pg_advisory_xact_lock(" + std::to_string(kPartitionLock) + ")"));
    IMGPIPE_ASSIGN_OR_RETURN(auto exists, conn.Exec("SELECT to_regclass($1) IS NOT NULL", PgParams().Text(name)));
    if (exists.Text(0, 0) == "t") return Ok();
    // The bounds are digits and dashes formatted above: nothing to quote.
    IMGPIPE_TRY(conn.Exec("CREATE TABLE " + std::string(name) + " PARTITION OF images FOR VALUES FROM ('" +
                          from_text + "') TO ('" + to_text + "')"));
    return Ok();
  });
}

void PostgresMetadataStore::EnsurePartitions(TimePoint t) {
  const int64_t day = DayOf(t);
  for (int64_t d : {day, day + 1}) {
    const auto now = std::chrono::steady_clock::now();
    {
      std::lock_guard lock(partitions_mu_);
      if (partitions_.count(d) != 0) continue;
      auto retry = partition_retry_.find(d);
      if (retry != partition_retry_.end() && now < retry->second) continue;
    }
    Status created = CreateDayPartition(d);
    std::lock_guard lock(partitions_mu_);
    if (created.ok()) {
      partitions_.insert(d);
      partition_retry_.erase(d);
    } else {
      partition_retry_[d] = now + kPartitionRetryAfter;
      LogWarn("cannot create a day partition of images; its rows go to images_default for now",
              {{"day_since_1970", d}, {"error", created.error().message}});
    }
  }
}

Status PostgresMetadataStore::InsertImage(const ImageRecord& image,
                                          const std::optional<IdempotencyRecord>& idempotency) {
  EnsurePartitions(image.received_at);
  return db_.Transaction([&](PgConnection& conn) -> Status {
    auto id = conn.Exec("INSERT INTO image_ids (id, received_at) VALUES ($1, $2)",
                        PgParams().Text(image.id.value()).Time(image.received_at));
    if (!id.ok()) {
      if (id.error().kind == ErrorKind::kConflict) {
        return MakeError(ErrorKind::kConflict, "image " + image.id.value() + " already exists");
      }
      return id.error();
    }
    IMGPIPE_TRY(conn.Exec(InsertImageSql(), ImageParams(image)));
    IMGPIPE_TRY(conn.Exec(kInsertJobSql,
                          PgParams().Text(image.id.value()).Text(image.pipeline).Time(clock_.Now())));
    if (!idempotency) return Ok();
    auto stored = conn.Exec(
        "INSERT INTO idempotency (api_key_id, key, request_hash, status_code, response_json, image_id, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        PgParams()
            .Text(idempotency->api_key_id)
            .Text(idempotency->key)
            .Text(idempotency->request_hash)
            .Int(idempotency->status_code)
            .Text(idempotency->response_json)
            .Text(idempotency->image_id.value().empty() ? image.id.value() : idempotency->image_id.value())
            .Time(idempotency->created_at));
    if (!stored.ok()) {
      if (stored.error().kind == ErrorKind::kConflict) {
        return MakeError(ErrorKind::kConflict, "idempotency key '" + idempotency->key +
                                                   "' was already used by this API key; replay its stored response");
      }
      return stored.error();
    }
    return Ok();
  });
}

Result<bool> PostgresMetadataStore::InsertImageIfAbsent(const ImageRecord& image) {
  EnsurePartitions(image.received_at);
  bool inserted = false;
  IMGPIPE_TRY(db_.Transaction([&](PgConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto id, conn.Exec("INSERT INTO image_ids (id, received_at) VALUES ($1, $2) "
                                                 "ON CONFLICT (id) DO NOTHING",
                                                 PgParams().Text(image.id.value()).Time(image.received_at)));
    inserted = id.AffectedRows() > 0;
    if (!inserted) return Ok();
    IMGPIPE_TRY(conn.Exec(InsertImageSql(), ImageParams(image)));
    IMGPIPE_TRY(conn.Exec(kInsertJobSql,
                          PgParams().Text(image.id.value()).Text(image.pipeline).Time(clock_.Now())));
    return Ok();
  }));
  return inserted;
}

Result<std::vector<bool>> PostgresMetadataStore::InsertImagesIfAbsent(const std::vector<ImageRecord>& images) {
  for (const ImageRecord& image : images) EnsurePartitions(image.received_at);
  std::vector<bool> inserted;
  IMGPIPE_TRY(db_.Transaction([&](PgConnection& conn) -> Status {
    inserted.assign(images.size(), false);  // the transaction may be retried from the start
    for (size_t i = 0; i < images.size(); ++i) {
      const ImageRecord& image = images[i];
      IMGPIPE_ASSIGN_OR_RETURN(auto id, conn.Exec("INSERT INTO image_ids (id, received_at) VALUES ($1, $2) "
                                                   "ON CONFLICT (id) DO NOTHING",
                                                   PgParams().Text(image.id.value()).Time(image.received_at)));
      inserted[i] = id.AffectedRows() > 0;
      if (!inserted[i]) continue;
      IMGPIPE_TRY(conn.Exec(InsertImageSql(), ImageParams(image)));
      IMGPIPE_TRY(conn.Exec(kInsertJobSql,
                            PgParams().Text(image.id.value()).Text(image.pipeline).Time(clock_.Now())));
    }
    return Ok();
  }));
  return inserted;
}

Result<std::optional<IdempotencyRecord>> PostgresMetadataStore::FindIdempotency(const std::string& api_key_id,
                                                                                const std::string& key) {
  std::optional<IdempotencyRecord> found;
  IMGPIPE_TRY(db_.Run([&](PgConnection& conn) -> Status {
    found.reset();
    IMGPIPE_ASSIGN_OR_RETURN(
        auto result, conn.Exec("SELECT api_key_id, key, request_hash, status_code, response_json, image_id, "
                               "created_at FROM idempotency WHERE api_key_id = $1 AND key = $2",
                               PgParams().Text(api_key_id).Text(key)));
    if (result.Rows() == 0) return Ok();
    IdempotencyRecord record;
    RowReader row(result, 0, "idempotency record");
    record.api_key_id = row.Text();
    record.key = row.Text();
    record.request_hash = row.Text();
    record.status_code = static_cast<int>(row.Int());
    record.response_json = row.Text();
    record.image_id = ImageId(row.OptionalText().value_or(""));
    record.created_at = row.Time();
    IMGPIPE_TRY(row.status());
    found = std::move(record);
    return Ok();
  }));
  return found;
}

Result<ImageRecord> PostgresMetadataStore::GetImage(const ImageId& id) {
  std::optional<ImageRecord> image;
  IMGPIPE_TRY(db_.Run([&](PgConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto received_at, ReceivedAtOf(conn, id));
    if (!received_at) return ImageNotFound(id);
    IMGPIPE_ASSIGN_OR_RETURN(auto result, conn.Exec(SelectImageSql() + " WHERE id = $1 AND received_at = $2",
                                                    PgParams().Text(id.value()).Text(*received_at)));
    if (result.Rows() == 0) return ImageNotFound(id);
    IMGPIPE_ASSIGN_OR_RETURN(image, ReadImage(result, 0));
    return Ok();
  }));
  return std::move(*image);
}

Result<ImagePage> PostgresMetadataStore::ListImages(const ImageFilter& filter) {
  const size_t limit = std::clamp<size_t>(filter.limit, 1, kMaxPageSize);
  std::string sql = SelectImageSql() + " WHERE true";
  PgParams params;
  auto next = [&] { return "$" + std::to_string(params.size()); };
  if (filter.received_from) {
    params.Time(*filter.received_from);
    sql += " AND received_at >= " + next();
  }
  if (filter.received_to) {
    params.Time(*filter.received_to);
    sql += " AND received_at < " + next();
  }
  if (filter.source) {
    params.Text(*filter.source);
    sql += " AND source = " + next();
  }
  if (filter.status) {
    params.Text(ImageStatusName(*filter.status));
    sql += " AND status = " + next();
  }
  if (!filter.after_id.empty()) {
    params.Text(filter.after_id);
    sql += (filter.newest_first ? " AND id < " : " AND id > ") + next();
  }
  // id columns have the "C" collation: byte order, as in SQLite, and the primary key's index serves the order.
  sql += filter.newest_first ? " ORDER BY id DESC" : " ORDER BY id ASC";
  params.Int(static_cast<int64_t>(limit + 1));  // one more tells whether another page exists
  sql += " LIMIT " + next();

  ImagePage page;
  IMGPIPE_TRY(db_.Run([&](PgConnection& conn) -> Status {
    page = ImagePage{};
    IMGPIPE_ASSIGN_OR_RETURN(auto result, conn.Exec(sql, params));
    for (int i = 0; i < result.Rows(); ++i) {
      if (page.items.size() == limit) {
        page.next_cursor = page.items.back().id.value();
        break;
      }
      IMGPIPE_ASSIGN_OR_RETURN(auto image, ReadImage(result, i));
      page.items.push_back(std::move(image));
    }
    return Ok();
  }));
  return page;
}

Result<std::vector<RenditionRecord>> PostgresMetadataStore::ListRenditions(const ImageId& id) {
  std::vector<RenditionRecord> renditions;
  IMGPIPE_TRY(db_.Run([&](PgConnection& conn) -> Status {
    renditions.clear();
    IMGPIPE_ASSIGN_OR_RETURN(
        auto result, conn.Exec("SELECT image_id, name, key, format, content_type, width, height, bytes, created_at "
                               "FROM renditions WHERE image_id = $1 ORDER BY name COLLATE \"C\"",
                               PgParams().Text(id.value())));
    for (int i = 0; i < result.Rows(); ++i) {
      IMGPIPE_ASSIGN_OR_RETURN(auto r, ReadRendition(result, i));
      renditions.push_back(std::move(r));
    }
    return Ok();
  }));
  return renditions;
}

Result<std::vector<ProcessingRun>> PostgresMetadataStore::ListRuns(const ImageId& id) {
  std::vector<ProcessingRun> runs;
  IMGPIPE_TRY(db_.Run([&](PgConnection& conn) -> Status {
    runs.clear();
    IMGPIPE_ASSIGN_OR_RETURN(
        auto result, conn.Exec("SELECT image_id, pipeline, attempt, started_at, finished_at, status, error, "
                               "decode_seconds, encode_seconds, total_seconds, script_name, script_version "
                               "FROM processing_runs "
                               "WHERE image_id = $1 ORDER BY id",
                               PgParams().Text(id.value())));
    for (int i = 0; i < result.Rows(); ++i) {
      IMGPIPE_ASSIGN_OR_RETURN(auto run, ReadRun(result, i));
      runs.push_back(std::move(run));
    }
    return Ok();
  }));
  return runs;
}

Status PostgresMetadataStore::MarkProcessing(const ImageId& id) {
  return db_.Run([&](PgConnection& conn) -> Status {
    // Processed, failed, expired or deleted rows are left as they are.
    return UpdateImageRow(conn, id,
                          "UPDATE images SET status = 'processing', processing_starts = processing_starts + 1 "
                          "WHERE id = $1 AND received_at = $2 AND status IN ('queued', 'processing')");
  });
}

Status PostgresMetadataStore::UncountProcessingStart(const ImageId& id) {
  return db_.Run([&](PgConnection& conn) -> Status {
    return UpdateImageRow(conn, id,
                          "UPDATE images SET processing_starts = greatest(processing_starts - 1, 0) "
                          "WHERE id = $1 AND received_at = $2");
  });
}

Status PostgresMetadataStore::RecordProcessed(const ImageId& id, std::optional<uint64_t> phash,
                                              std::optional<std::string> dominant_colour,
                                              const std::vector<RenditionRecord>& renditions,
                                              const ProcessingRun& run) {
  return db_.Transaction([&](PgConnection& conn) -> Status {
    // The row lock orders this against MarkExpired / MarkDeleted of the same image.
    IMGPIPE_ASSIGN_OR_RETURN(auto locked, LockImage(conn, id));
    if (!locked) return ImageNotFound(id);
    if (locked->status == "expired" || locked->status == "deleted") {
      return MakeError(ErrorKind::kConflict, "image " + id.value() + " is " + locked->status +
                                                 "; its processing results were not recorded (delete the renditions "
                                                 "just written and acknowledge the job)");
    }
    for (const RenditionRecord& r : renditions) {
      IMGPIPE_TRY(conn.Exec(
          "INSERT INTO renditions (image_id, name, key, format, content_type, width, height, bytes, created_at) "
          "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
          "ON CONFLICT (image_id, name) DO UPDATE SET key = excluded.key, format = excluded.format, "
          "content_type = excluded.content_type, width = excluded.width, height = excluded.height, "
          "bytes = excluded.bytes, created_at = excluded.created_at",
          PgParams()
              .Text(id.value())
              .Text(r.name)
              .Text(r.key)
              .Text(r.format)
              .Text(r.content_type)
              .Int(r.width)
              .Int(r.height)
              .Int(static_cast<int64_t>(r.bytes))
              .Time(r.created_at)));
    }
    IMGPIPE_TRY(conn.Exec("UPDATE images SET status = 'processed', processed_at = $3, phash = $4, "
                          "dominant_colour = $5, error = NULL WHERE id = $1 AND received_at = $2",
                          PgParams()
                              .Text(id.value())
                              .Text(locked->received_at)
                              .Time(run.finished_at)
                              .OptionalText(phash ? std::optional<std::string>(PhashHex(*phash)) : std::nullopt)
                              .OptionalText(dominant_colour)));
    return InsertRun(conn, id, run);
  });
}

Status PostgresMetadataStore::RecordFailure(const ImageId& id, const ProcessingRun& run, bool final) {
  return db_.Transaction([&](PgConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto received_at, ReceivedAtOf(conn, id));
    if (!received_at) return ImageNotFound(id);
    IMGPIPE_TRY(InsertRun(conn, id, run));
    if (!final) return Ok();
    IMGPIPE_TRY(conn.Exec("UPDATE images SET status = 'failed', error = $3 "
                          "WHERE id = $1 AND received_at = $2 AND status NOT IN ('expired', 'deleted')",
                          PgParams()
                              .Text(id.value())
                              .Text(*received_at)
                              .Text(run.error.value_or("processing failed (no reason recorded)"))));
    return Ok();
  });
}

Status PostgresMetadataStore::RecordLabels(const ImageId& id, const std::string& script_name,
                                           const std::string& script_version, const std::vector<ImageLabel>& labels) {
  return db_.Transaction([&](PgConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto received_at, ReceivedAtOf(conn, id));
    if (!received_at) return ImageNotFound(id);
    IMGPIPE_TRY(conn.Exec("DELETE FROM image_labels WHERE image_id = $1 AND script_name = $2 AND script_version = $3",
                          PgParams().Text(id.value()).Text(script_name).Text(script_version)));
    const TimePoint now = clock_.Now();
    for (const ImageLabel& label : labels) {
      IMGPIPE_TRY(conn.Exec("INSERT INTO image_labels (image_id, script_name, script_version, key, value, number, "
                            "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                            PgParams()
                                .Text(id.value())
                                .Text(script_name)
                                .Text(script_version)
                                .Text(label.key)
                                .Text(label.value)
                                .OptionalDouble(label.number)
                                .Time(now)));
    }
    return Ok();
  });
}

Result<bool> PostgresMetadataStore::RequeueImage(const ImageId& id, const std::string& pipeline, TimePoint now) {
  bool queued = false;
  IMGPIPE_TRY(db_.Transaction([&](PgConnection& conn) -> Status {
    queued = false;
    // The row lock orders this against a worker's RecordProcessed and the sweeper's MarkExpired of the same image.
    IMGPIPE_ASSIGN_OR_RETURN(auto locked, LockImage(conn, id));
    if (!locked) return ImageNotFound(id);
    IMGPIPE_ASSIGN_OR_RETURN(
        auto updated, conn.Exec("UPDATE images SET pipeline = $3, status = 'queued', error = NULL, "
                                "processing_starts = 0 "
                                "WHERE id = $1 AND received_at = $2 AND status IN ('processed', 'failed') "
                                "AND expires_at > $4",
                                PgParams().Text(id.value()).Text(locked->received_at).Text(pipeline).Time(now)));
    if (updated.AffectedRows() == 0) return Ok();
    IMGPIPE_TRY(conn.Exec(kInsertJobSql, PgParams().Text(id.value()).Text(pipeline).Time(clock_.Now())));
    queued = true;
    return Ok();
  }));
  return queued;
}

Result<std::vector<ImageRecord>> PostgresMetadataStore::FindExpired(TimePoint now, size_t limit) {
  std::vector<ImageRecord> images;
  IMGPIPE_TRY(db_.Run([&](PgConnection& conn) -> Status {
    images.clear();
    // The WHERE repeats the partial index's condition word for word so the planner uses it.
    IMGPIPE_ASSIGN_OR_RETURN(
        auto result,
        conn.Exec(SelectImageSql() +
                      " WHERE expires_at <= $1 AND status NOT IN ('expired', 'deleted') "
                      "AND NOT EXISTS (SELECT 1 FROM legal_holds AS h "
                      "WHERE h.image_id = images.id AND h.released_at IS NULL) "
                      "ORDER BY expires_at, id LIMIT $2",
                  PgParams().Time(now).Int(static_cast<int64_t>(std::min<size_t>(limit, INT64_MAX)))));
    for (int i = 0; i < result.Rows(); ++i) {
      IMGPIPE_ASSIGN_OR_RETURN(auto image, ReadImage(result, i));
      images.push_back(std::move(image));
    }
    return Ok();
  }));
  return images;
}

Status PostgresMetadataStore::MarkGone(const ImageId& id, TimePoint when, std::string_view update_sql) {
  return db_.Transaction([&](PgConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto received_at, ReceivedAtOf(conn, id));
    if (!received_at) return ImageNotFound(id);
    IMGPIPE_TRY(conn.Exec(update_sql, PgParams().Text(id.value()).Text(*received_at).Time(when)));
    IMGPIPE_TRY(conn.Exec("DELETE FROM jobs WHERE image_id = $1", PgParams().Text(id.value())));
    return Ok();
  });
}

Status PostgresMetadataStore::MarkExpired(const ImageId& id, TimePoint when) {
  return MarkGone(id, when,
                  "UPDATE images SET status = 'expired', expired_at = $3 "
                  "WHERE id = $1 AND received_at = $2 AND status NOT IN ('expired', 'deleted')");
}

Status PostgresMetadataStore::MarkDeleted(const ImageId& id, TimePoint when) {
  return MarkGone(id, when,
                  "UPDATE images SET status = 'deleted', expired_at = coalesce(expired_at, $3) "
                  "WHERE id = $1 AND received_at = $2 AND status <> 'deleted'");
}

// ---------------------------------------------------------------------------------------------------------------
// Legal holds and purges. A hold and a purge of one image both lock its row first (LockImage), so one of them waits
// for the other and then sees it: never a hold set on an image whose blobs are being deleted.

namespace {

constexpr std::string_view kHoldColumns = "image_id, reason, held_by, held_at";

Result<LegalHold> ReadHold(const PgResult& result, int row_index) {
  RowReader row(result, row_index, "legal hold");
  LegalHold hold{ImageId(row.Text()), row.Text(), row.Text(), row.Time()};
  IMGPIPE_TRY(row.status());
  return hold;
}

Result<std::optional<LegalHold>> HoldInForce(PgConnection& conn, const ImageId& id) {
  IMGPIPE_ASSIGN_OR_RETURN(auto result, conn.Exec("SELECT " + std::string(kHoldColumns) + " FROM legal_holds "
                                                  "WHERE image_id = $1 AND released_at IS NULL",
                                                  PgParams().Text(id.value())));
  if (result.Rows() == 0) return std::optional<LegalHold>();
  IMGPIPE_ASSIGN_OR_RETURN(auto hold, ReadHold(result, 0));
  return std::optional<LegalHold>(std::move(hold));
}

}  // namespace

Result<LegalHold> PostgresMetadataStore::SetLegalHold(const ImageId& id, const std::string& reason,
                                                      const std::string& held_by, TimePoint at) {
  LegalHold hold;
  IMGPIPE_TRY(db_.Transaction([&](PgConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto image, LockImage(conn, id));
    if (!image) return ImageNotFound(id);
    if (image->status == "expired" || image->status == "deleted") {
      return MakeError(ErrorKind::kConflict, "image " + id.value() + " is " + image->status + ": its blobs are gone");
    }
    IMGPIPE_ASSIGN_OR_RETURN(auto existing, HoldInForce(conn, id));
    if (existing) {
      hold = std::move(*existing);
      return Ok();
    }
    IMGPIPE_ASSIGN_OR_RETURN(auto purging, conn.Exec("SELECT 1 FROM purges WHERE image_id = $1 AND finished_at IS NULL",
                                                     PgParams().Text(id.value())));
    if (purging.Rows() > 0) {
      return MakeError(ErrorKind::kConflict, "image " + id.value() + " is being purged (" +
                                                 "retention or a delete began before the hold)");
    }
    IMGPIPE_TRY(conn.Exec("INSERT INTO legal_holds (image_id, reason, held_by, held_at) VALUES ($1, $2, $3, $4)",
                          PgParams().Text(id.value()).Text(reason).Text(held_by).Time(at)));
    hold = LegalHold{id, reason, held_by, at};
    return Ok();
  }));
  return hold;
}

Status PostgresMetadataStore::ReleaseLegalHold(const ImageId& id, const std::string& released_by, TimePoint at) {
  return db_.Run([&](PgConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto result, conn.Exec("UPDATE legal_holds SET released_by = $2, released_at = $3 "
                                                    "WHERE image_id = $1 AND released_at IS NULL",
                                                    PgParams().Text(id.value()).Text(released_by).Time(at)));
    if (result.AffectedRows() == 0) {
      return MakeError(ErrorKind::kNotFound, "image " + id.value() + " is not on legal hold");
    }
    return Ok();
  });
}

Result<std::optional<LegalHold>> PostgresMetadataStore::FindLegalHold(const ImageId& id) {
  std::optional<LegalHold> hold;
  IMGPIPE_TRY(db_.Run([&](PgConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(hold, HoldInForce(conn, id));
    return Ok();
  }));
  return hold;
}

Result<std::vector<LegalHold>> PostgresMetadataStore::ListLegalHolds() {
  std::vector<LegalHold> holds;
  IMGPIPE_TRY(db_.Run([&](PgConnection& conn) -> Status {
    holds.clear();
    IMGPIPE_ASSIGN_OR_RETURN(auto result, conn.Exec("SELECT " + std::string(kHoldColumns) + " FROM legal_holds "
                                                    "WHERE released_at IS NULL ORDER BY held_at, id"));
    for (int i = 0; i < result.Rows(); ++i) {
      IMGPIPE_ASSIGN_OR_RETURN(auto hold, ReadHold(result, i));
      holds.push_back(std::move(hold));
    }
    return Ok();
  }));
  return holds;
}

Result<int64_t> PostgresMetadataStore::BeginPurge(const PurgeRecord& purge) {
  int64_t purge_id = 0;
  IMGPIPE_TRY(db_.Transaction([&](PgConnection& conn) -> Status {
    if (purge.image_id) {
      IMGPIPE_TRY(LockImage(conn, *purge.image_id));
      IMGPIPE_ASSIGN_OR_RETURN(auto hold, HoldInForce(conn, *purge.image_id));
      if (hold) {
        return MakeError(ErrorKind::kConflict, "image " + purge.image_id->value() + " is on legal hold since " +
                                                   FormatRfc3339(hold->held_at) + " (" + hold->reason + ")");
      }
    }
    std::optional<std::string> image_id;
    if (purge.image_id) image_id = purge.image_id->value();
    IMGPIPE_ASSIGN_OR_RETURN(auto result, conn.Exec("INSERT INTO purges (image_id, what, reason, actor, started_at) "
                                                    "VALUES ($1, $2, $3, $4, $5) RETURNING id",
                                                    PgParams()
                                                        .OptionalText(image_id)
                                                        .Text(purge.what)
                                                        .Text(purge.reason)
                                                        .Text(purge.actor)
                                                        .Time(purge.started_at)));
    purge_id = std::stoll(std::string(result.Text(0, 0)));
    return Ok();
  }));
  return purge_id;
}

Status PostgresMetadataStore::FinishPurge(int64_t purge_id, int64_t objects, TimePoint at) {
  return db_.Run([&](PgConnection& conn) -> Status {
    IMGPIPE_TRY(conn.Exec("UPDATE purges SET finished_at = $2, objects = $3 WHERE id = $1",
                          PgParams().Int(purge_id).Time(at).Int(objects)));
    return Ok();
  });
}

Status PostgresMetadataStore::CreateApiKey(const ApiKeyRecord& key) {
  return db_.Run([&](PgConnection& conn) -> Status {
    auto inserted = conn.Exec("INSERT INTO api_keys (" + std::string(kApiKeyColumns) +
                                  ") VALUES ($1, $2, $3, $4, $5, $6)",
                              PgParams()
                                  .Text(key.id)
                                  .Text(key.secret_hash)
                                  .Text(RoleName(key.role))
                                  .Text(key.name)
                                  .Time(key.created_at)
                                  .OptionalTime(key.revoked_at));
    if (!inserted.ok()) {
      if (inserted.error().kind == ErrorKind::kConflict) {
        return MakeError(ErrorKind::kConflict,
                         "API key " + key.id + " (or one with the same secret) already exists");
      }
      return inserted.error();
    }
    return Ok();
  });
}

Result<ApiKeyRecord> PostgresMetadataStore::FindApiKeyByHash(const std::string& secret_hash) {
  std::optional<ApiKeyRecord> key;
  IMGPIPE_TRY(db_.Run([&](PgConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto result,
                             conn.Exec("SELECT " + std::string(kApiKeyColumns) + " FROM api_keys WHERE secret_hash = $1",
                                       PgParams().Text(secret_hash)));
    if (result.Rows() == 0) return MakeError(ErrorKind::kNotFound, "no API key has this secret");
    IMGPIPE_ASSIGN_OR_RETURN(key, ReadApiKey(result, 0));
    return Ok();
  }));
  return std::move(*key);
}

Result<std::vector<ApiKeyRecord>> PostgresMetadataStore::ListApiKeys() {
  std::vector<ApiKeyRecord> keys;
  IMGPIPE_TRY(db_.Run([&](PgConnection& conn) -> Status {
    keys.clear();
    IMGPIPE_ASSIGN_OR_RETURN(auto result, conn.Exec("SELECT " + std::string(kApiKeyColumns) +
                                                    " FROM api_keys ORDER BY created_at, id COLLATE \"C\""));
    for (int i = 0; i < result.Rows(); ++i) {
      IMGPIPE_ASSIGN_OR_RETURN(auto key, ReadApiKey(result, i));
      keys.push_back(std::move(key));
    }
    return Ok();
  }));
  return keys;
}

Status PostgresMetadataStore::RevokeApiKey(const std::string& id, TimePoint when) {
  return db_.Run([&](PgConnection& conn) -> Status {
    // A second revoke keeps the first time.
    IMGPIPE_ASSIGN_OR_RETURN(auto result,
                             conn.Exec("UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1",
                                       PgParams().Text(id).Time(when)));
    if (result.AffectedRows() == 0) return MakeError(ErrorKind::kNotFound, "API key " + id + " not found");
    return Ok();
  });
}

Result<int64_t> PostgresMetadataStore::CountApiKeys() {
  int64_t count = 0;
  IMGPIPE_TRY(db_.Run([&](PgConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto result, conn.Exec("SELECT count(*) FROM api_keys"));
    RowReader row(result, 0, "API key count");
    count = row.Int();
    return row.status();
  }));
  return count;
}

Result<bool> PostgresMetadataStore::AcquireLease(const std::string& name, const std::string& owner, TimePoint now,
                                                 std::chrono::milliseconds ttl) {
  bool held = false;
  IMGPIPE_TRY(db_.Run([&](PgConnection& conn) -> Status {
    // ON CONFLICT locks the existing row, so of two processes asking at once the second sees the first's update and
    // its WHERE is false: no row comes back.
    IMGPIPE_ASSIGN_OR_RETURN(
        auto result,
        conn.Exec("INSERT INTO leases (name, owner, expires_at) VALUES ($1, $2, $3) "
                  "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
                  "WHERE leases.owner = excluded.owner OR leases.expires_at <= $4 RETURNING owner",
                  PgParams().Text(name).Text(owner).Time(now + ttl).Time(now)));
    held = result.Rows() == 1;
    return Ok();
  }));
  return held;
}

Status PostgresMetadataStore::ReleaseLease(const std::string& name, const std::string& owner) {
  return db_.Run([&](PgConnection& conn) -> Status {
    IMGPIPE_TRY(conn.Exec("DELETE FROM leases WHERE name = $1 AND owner = $2", PgParams().Text(name).Text(owner)));
    return Ok();
  });
}

Result<QueryResult> PostgresMetadataStore::Query(const std::string& sql, const std::vector<std::string>& params_json,
                                                 size_t max_rows, std::chrono::milliseconds timeout) {
  std::vector<QueryParam> params;
  for (size_t i = 0; i < params_json.size(); ++i) {
    IMGPIPE_ASSIGN_OR_RETURN(auto p, ParseQueryParam(i + 1, params_json[i]));
    params.push_back(std::move(p));
  }
  std::vector<const char*> values;
  for (const QueryParam& p : params) values.push_back(p.value ? p.value->c_str() : nullptr);
  const int n = static_cast<int>(params.size());
  const int64_t timeout_ms = std::clamp<int64_t>(timeout.count(), 1, INT_MAX);

  QueryResult query_result;
  IMGPIPE_TRY(db_.RunUntrusted([&](PgConnection& conn) -> Status {
    PGconn* h = conn.handle();
    query_result = QueryResult{};
    // Read-only is the database's to enforce: a READ ONLY transaction refuses every write, and the role can read
    // only what it was granted. Both end with the transaction, which is always rolled back.
    IMGPIPE_TRY(conn.ExecScript("BEGIN; SET TRANSACTION READ ONLY; SET LOCAL ROLE " +
                                std::string(kPostgresAnalystRole) + "; SET LOCAL statement_timeout = " +
                                std::to_string(timeout_ms) + "; SAVEPOINT typed"));
    IMGPIPE_ASSIGN_OR_RETURN(
        auto escape, conn.Exec("SELECT has_function_privilege('pg_catalog.set_config(text, text, boolean)', "
                               "'EXECUTE')"));
    if (escape.Text(0, 0) != "f") {
      return MakeError(ErrorKind::kUnavailable,
                       "analyst queries are off: the role imgpipe_analyst may call set_config(), which would let a "
                       "query leave the role; a superuser must run REVOKE EXECUTE ON FUNCTION "
                       "pg_catalog.set_config(text, text, boolean) FROM PUBLIC in " + db_.description());
    }

    // Untyped strings first; if PostgreSQL cannot tell a parameter's type from the SQL, again with them as text.
    for (int pass = 0; pass < 2; ++pass) {
      std::vector<uint32_t> types;
      for (const QueryParam& p : params) types.push_back(p.untyped && pass == 1 ? pg_oid::kText : p.type);
      ResultPtr prepared(PQprepare(h, "", sql.c_str(), n, types.data()), PQclear);
      if (prepared && PQresultStatus(prepared.get()) == PGRES_COMMAND_OK) break;
      Error error = AnalystError(conn, prepared.get(), timeout);
      if (pass == 1 || conn.last_sqlstate() != "42P18") return error;
      IMGPIPE_TRY(conn.ExecScript("ROLLBACK TO SAVEPOINT typed"));
    }
    ResultPtr described(PQdescribePrepared(h, ""), PQclear);
    if (!described || PQresultStatus(described.get()) != PGRES_COMMAND_OK) {
      return AnalystError(conn, described.get(), timeout);
    }
    if (PQnparams(described.get()) != n) {
      return MakeError(ErrorKind::kInvalidArgument, "the query uses " + std::to_string(PQnparams(described.get())) +
                                                        " parameter(s) but " + std::to_string(n) +
                                                        " were given; bind them positionally as $1, $2, ...");
    }

    if (PQsendQueryPrepared(h, "", n, values.data(), nullptr, nullptr, 0) != 1) return conn.ErrorOf(nullptr, "query");
    // Rows arrive one at a time, so the cap bounds memory; at the cap the statement is cancelled.
    PQsetSingleRowMode(h);
    bool cancelled = false;
    std::optional<Error> failure;
    auto cancel = [&] {
      if (cancelled) return;
      cancelled = true;
      if (PGcancel* c = PQgetCancel(h)) {
        char why[256];
        PQcancel(c, why, sizeof why);  // if it fails, the rest of the rows are read and dropped
        PQfreeCancel(c);
      }
    };
    while (true) {
      ResultPtr r(PQgetResult(h), PQclear);
      if (!r) break;
      const ExecStatusType status = PQresultStatus(r.get());
      if (query_result.columns.empty() && (status == PGRES_SINGLE_TUPLE || status == PGRES_TUPLES_OK)) {
        for (int c = 0; c < PQnfields(r.get()); ++c) query_result.columns.emplace_back(PQfname(r.get(), c));
      }
      switch (status) {
        case PGRES_SINGLE_TUPLE: {
          if (cancelled) break;
          if (query_result.rows_json.size() >= max_rows) {
            query_result.truncated = true;
            cancel();
            break;
          }
          std::vector<std::string> cells;
          for (int c = 0; c < PQnfields(r.get()); ++c) {
            if (static_cast<size_t>(PQgetlength(r.get(), 0, c)) > kMaxCellBytes) {
              failure = MakeError(ErrorKind::kInvalidArgument,
                                  "column " + query_result.columns[c] + " of row " +
                                      std::to_string(query_result.rows_json.size() + 1) +
                                      " is over 16 MiB; select less of it (e.g. with substr())");
              cancel();
              break;
            }
            cells.push_back(CellJson(r.get(), c));
          }
          if (!failure) query_result.rows_json.push_back(std::move(cells));
          break;
        }
        case PGRES_TUPLES_OK:
          break;
        case PGRES_COMMAND_OK:
          if (!failure) {
            failure = MakeError(ErrorKind::kInvalidArgument,
                                "the statement returns no rows; queries are read-only, send one SELECT (or WITH, "
                                "VALUES, SHOW, EXPLAIN) statement");
          }
          break;
        case PGRES_EMPTY_QUERY:
          failure = MakeError(ErrorKind::kInvalidArgument, "the query is empty; send one SELECT statement");
          break;
        case PGRES_COPY_IN:
        case PGRES_COPY_OUT:
        case PGRES_COPY_BOTH:
          // The server now waits for COPY data: this connection is closed instead of being reused.
          conn.MarkBroken();
          return MakeError(ErrorKind::kInvalidArgument,
                           "COPY is not available to queries; use SELECT (and the CSV format of the API)");
        default:
          if (cancelled && failure) break;  // the cancel we sent for the failure above
          if (cancelled && query_result.truncated) {
            const char* state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
            if (state != nullptr && std::string_view(state) == "57014") break;  // our cancel at the row cap
          }
          if (!failure) failure = AnalystError(conn, r.get(), timeout);
          break;
      }
    }
    if (failure) return *failure;
    return Ok();
  }));
  return query_result;
}

}  // namespace imgpipe
