#include "warehouse/sqlite/sqlite_metadata_store.hpp"

#include <sqlite3.h>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <strings.h>

#include "warehouse/sqlite/migrations.hpp"

namespace imgpipe {

namespace {

// Listing pages are clamped to this many rows, whatever the caller asks.
constexpr size_t kMaxPageSize = 1000;

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
    for (int i = 1; i <= kImageColumnCount; ++i) s += (i > 1 ? ", ?" : "?") + std::to_string(i);
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
    "INSERT INTO jobs (image_id, pipeline, attempts, not_before, enqueued_at) VALUES (?1, ?2, 0, ?3, ?3)";

std::string PhashHex(uint64_t phash) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(phash));
  return buf;
}

std::optional<std::string> OptionalTime(const std::optional<TimePoint>& t) {
  if (!t) return std::nullopt;
  return FormatRfc3339(*t);
}

template <typename T>
std::optional<int64_t> OptionalInt(const std::optional<T>& v) {
  if (!v) return std::nullopt;
  return static_cast<int64_t>(*v);
}

//! Reads the columns of one row left to right; the first malformed value is reported by status().
class RowReader {
 public:
  RowReader(const SqliteStatement& stmt, std::string what) : stmt_(stmt), what_(std::move(what)) {}

  std::string Text() { return stmt_.Text(column_++); }
  std::optional<std::string> OptionalText() { return stmt_.OptionalText(column_++); }
  int64_t Int() { return stmt_.Int(column_++); }
  std::optional<int64_t> OptionalInt() { return stmt_.OptionalInt(column_++); }
  double Double() { return stmt_.Double(column_++); }
  std::optional<double> OptionalDouble() { return stmt_.OptionalDouble(column_++); }
  TimePoint Time() {
    TimePoint t{};
    std::string text = stmt_.Text(column_);
    if (!ParseRfc3339(text, &t)) Fail("time '" + text + "'");
    ++column_;
    return t;
  }
  std::optional<TimePoint> OptionalTime() {
    if (stmt_.IsNull(column_)) {
      ++column_;
      return std::nullopt;
    }
    return Time();
  }
  void Fail(const std::string& what) {
    if (error_.empty()) {
      error_ = what_ + " has a malformed " + what + " in column " +
               sqlite3_column_name(stmt_.handle(), column_) + "; the database was modified outside imgpipe";
    }
  }
  Status status() const {
    if (error_.empty()) return Ok();
    return MakeError(ErrorKind::kInternal, error_);
  }

 private:
  const SqliteStatement& stmt_;
  std::string what_;
  int column_ = 0;
  std::string error_;
};

void BindImage(SqliteStatement& stmt, const ImageRecord& image) {
  int i = 0;
  stmt.BindText(++i, image.id.value());
  stmt.BindText(++i, image.sha256);
  stmt.BindText(++i, image.source);
  stmt.BindText(++i, image.source_ref);
  stmt.BindText(++i, image.uploader_key_id);
  stmt.BindText(++i, FormatRfc3339(image.received_at));
  stmt.BindInt(++i, static_cast<int64_t>(image.bytes));
  stmt.BindText(++i, image.format);
  stmt.BindText(++i, image.content_type);
  stmt.BindInt(++i, image.width);
  stmt.BindInt(++i, image.height);
  stmt.BindInt(++i, image.frames);
  stmt.BindInt(++i, image.has_alpha ? 1 : 0);
  stmt.BindText(++i, image.colour_space);
  stmt.BindInt(++i, image.has_icc ? 1 : 0);
  stmt.BindOptionalInt(++i, OptionalInt(image.exif.orientation));
  stmt.BindOptionalText(++i, image.exif.make);
  stmt.BindOptionalText(++i, image.exif.model);
  stmt.BindOptionalText(++i, image.exif.taken_at);
  stmt.BindOptionalDouble(++i, image.exif.gps_lat);
  stmt.BindOptionalDouble(++i, image.exif.gps_lon);
  stmt.BindOptionalDouble(++i, image.exif.gps_alt);
  stmt.BindOptionalText(++i, image.exif.lens_model);
  stmt.BindOptionalText(++i, image.exif.software);
  stmt.BindText(++i, image.user_metadata_json.empty() ? "{}" : image.user_metadata_json);
  stmt.BindText(++i, image.pipeline);
  stmt.BindText(++i, image.original_key);
  stmt.BindText(++i, ImageStatusName(image.status));
  stmt.BindOptionalText(++i, OptionalTime(image.processed_at));
  stmt.BindText(++i, FormatRfc3339(image.expires_at));
  stmt.BindOptionalText(++i, OptionalTime(image.expired_at));
  stmt.BindOptionalText(++i, image.error);
  stmt.BindOptionalText(++i, image.phash ? std::optional<std::string>(PhashHex(*image.phash)) : std::nullopt);
  stmt.BindOptionalText(++i, image.dominant_colour);
}

Result<ImageRecord> ReadImage(const SqliteStatement& stmt) {
  ImageRecord image;
  image.id = ImageId(stmt.Text(0));
  RowReader row(stmt, "image " + image.id.value());
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
  image.has_alpha = row.Int() != 0;
  image.colour_space = row.Text();
  image.has_icc = row.Int() != 0;
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

Result<RenditionRecord> ReadRendition(const SqliteStatement& stmt) {
  RenditionRecord r;
  RowReader row(stmt, "rendition");
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

Result<ProcessingRun> ReadRun(const SqliteStatement& stmt) {
  ProcessingRun run;
  RowReader row(stmt, "processing run");
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

Result<ApiKeyRecord> ReadApiKey(const SqliteStatement& stmt) {
  ApiKeyRecord key;
  RowReader row(stmt, "API key");
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

constexpr std::string_view kApiKeyColumns = "id, secret_hash, role, name, created_at, revoked_at";

Status InsertRun(SqliteConnection& conn, const ImageId& id, const ProcessingRun& run) {
  IMGPIPE_ASSIGN_OR_RETURN(
      auto stmt,
      conn.Prepare("INSERT INTO processing_runs (image_id, pipeline, attempt, started_at, finished_at, status, error, "
                   "decode_seconds, encode_seconds, total_seconds, script_name, script_version) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"));
  stmt.BindText(1, id.value())
      .BindText(2, run.pipeline)
      .BindInt(3, run.attempt)
      .BindText(4, FormatRfc3339(run.started_at))
      .BindText(5, FormatRfc3339(run.finished_at))
      .BindText(6, run.status)
      .BindOptionalText(7, run.error)
      .BindDouble(8, run.decode_seconds)
      .BindDouble(9, run.encode_seconds)
      .BindDouble(10, run.total_seconds)
      .BindText(11, run.script_name)
      .BindText(12, run.script_version);
  return stmt.Run();
}

//! The image's status, or nullopt if there is no such row.
Result<std::optional<std::string>> ImageStatusOf(SqliteConnection& conn, const ImageId& id) {
  IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT status FROM images WHERE id = ?1"));
  stmt.BindText(1, id.value());
  IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return std::optional<std::string>();
  return std::optional<std::string>(stmt.Text(0));
}

Error ImageNotFound(const ImageId& id) {
  return MakeError(ErrorKind::kNotFound, "image " + id.value() + " not found");
}

// ---------------------------------------------------------------------------------------------------------------
// Query helpers

// Tables the analyst SQL may not read: API key hashes and stored upload responses are not analyst data.
constexpr const char* kHiddenTables[] = {"api_keys", "idempotency"};

constexpr const char* kIntrospectionPragmas[] = {"table_info",  "table_xinfo",      "table_list", "index_list",
                                                  "index_info",  "index_xinfo",      "foreign_key_list",
                                                  "function_list", "collation_list"};

struct QueryGuard {
  std::string denied_table;
  int denied_action = 0;
  std::chrono::steady_clock::time_point deadline;
  bool timed_out = false;
};

int AuthorizeQuery(void* user, int action, const char* arg1, const char* arg2, const char* /*db*/,
                   const char* /*view*/) {
  auto* guard = static_cast<QueryGuard*>(user);
  switch (action) {
    case SQLITE_SELECT:
    case SQLITE_RECURSIVE:
      return SQLITE_OK;
    case SQLITE_READ:  // arg1: table, arg2: column ("" for count(*))
      for (const char* hidden : kHiddenTables) {
        if (arg1 != nullptr && strcasecmp(arg1, hidden) == 0) {
          guard->denied_table = hidden;
          return SQLITE_DENY;
        }
      }
      return SQLITE_OK;
    case SQLITE_FUNCTION:  // arg2: function name
      if (arg2 != nullptr && strcasecmp(arg2, "load_extension") == 0) break;
      return SQLITE_OK;
    case SQLITE_PRAGMA:  // arg1: pragma name, arg2: its argument
      // Schema introspection only (also behind pragma_table_info() and friends); these pragmas change nothing.
      for (const char* allowed : kIntrospectionPragmas) {
        if (arg1 != nullptr && strcasecmp(arg1, allowed) == 0) return SQLITE_OK;
      }
      break;
    case SQLITE_UPDATE:  // arg1: table, arg2: column
      // Table-valued functions (json_each over user_metadata, pragma_table_info for schema discovery) register
      // themselves on first use with an "update" of the schema table. A real write to it still fails: the
      // connection is read-only and in defensive mode.
      if (arg1 != nullptr && strcasecmp(arg1, "sqlite_master") == 0) return SQLITE_OK;
      break;
    default:
      break;
  }
  guard->denied_action = action;
  return SQLITE_DENY;
}

int CheckDeadline(void* user) {
  auto* guard = static_cast<QueryGuard*>(user);
  if (std::chrono::steady_clock::now() < guard->deadline) return 0;
  guard->timed_out = true;
  return 1;  // interrupts the statement with SQLITE_INTERRUPT
}

std::string_view ActionName(int action) {
  switch (action) {
    case SQLITE_INSERT: return "INSERT";
    case SQLITE_UPDATE: return "UPDATE";
    case SQLITE_DELETE: return "DELETE";
    case SQLITE_PRAGMA: return "PRAGMA";
    case SQLITE_ATTACH: return "ATTACH";
    case SQLITE_DETACH: return "DETACH";
    case SQLITE_TRANSACTION: return "BEGIN/COMMIT/ROLLBACK";
    case SQLITE_SAVEPOINT: return "SAVEPOINT";
    case SQLITE_ANALYZE: return "ANALYZE";
    case SQLITE_REINDEX: return "REINDEX";
    case SQLITE_ALTER_TABLE: return "ALTER TABLE";
    case SQLITE_FUNCTION: return "load_extension()";
    case SQLITE_DROP_INDEX: case SQLITE_DROP_TABLE: case SQLITE_DROP_TEMP_INDEX: case SQLITE_DROP_TEMP_TABLE:
    case SQLITE_DROP_TEMP_TRIGGER: case SQLITE_DROP_TEMP_VIEW: case SQLITE_DROP_TRIGGER: case SQLITE_DROP_VIEW:
    case SQLITE_DROP_VTABLE:
      return "DROP";
    case SQLITE_CREATE_INDEX: case SQLITE_CREATE_TABLE: case SQLITE_CREATE_TEMP_INDEX: case SQLITE_CREATE_TEMP_TABLE:
    case SQLITE_CREATE_TEMP_TRIGGER: case SQLITE_CREATE_TEMP_VIEW: case SQLITE_CREATE_TRIGGER: case SQLITE_CREATE_VIEW:
    case SQLITE_CREATE_VTABLE:
      return "CREATE";
    default:
      return "this statement";
  }
}

Error QueryError(sqlite3* db, int rc, const QueryGuard& guard, std::chrono::milliseconds timeout) {
  std::string message = sqlite3_errmsg(db);
  if (guard.timed_out) {
    return MakeError(ErrorKind::kUnavailable,
                     "query stopped after its timeout of " + std::to_string(timeout.count()) +
                         " ms (" + message + "); narrow it, e.g. with a WHERE on received_at, or add a LIMIT");
  }
  if (!guard.denied_table.empty()) {
    message += ": the table " + guard.denied_table +
               " is not available to queries (API keys and stored responses are not analyst data)";
  } else if (guard.denied_action != 0) {
    message += ": queries are read-only, only SELECT and WITH statements run (refused: " +
               std::string(ActionName(guard.denied_action)) + ")";
  } else {
    switch (rc & 0xff) {
      case SQLITE_ERROR: case SQLITE_AUTH: case SQLITE_READONLY: case SQLITE_TOOBIG: case SQLITE_RANGE:
      case SQLITE_MISMATCH: case SQLITE_CONSTRAINT:
        break;  // the query's fault: syntax, unknown names, writes, values too large
      default:
        return SqliteError(db, rc, "running the query");  // busy, I/O, out of memory: not the query's fault
    }
  }
  return MakeError(ErrorKind::kInvalidArgument, std::move(message));
}

Status BindJsonParam(SqliteStatement& stmt, int index, const std::string& json) {
  boost::system::error_code ec;
  boost::json::value value = boost::json::parse(json, ec);
  auto invalid = [&](std::string_view why) {
    return MakeError(ErrorKind::kInvalidArgument,
                     "query parameter " + std::to_string(index) + " " + std::string(why) +
                         "; parameters are JSON scalars: a number, a string, true/false or null");
  };
  if (ec) return invalid("is not valid JSON (" + ec.message() + ")");
  switch (value.kind()) {
    case boost::json::kind::null: stmt.BindNull(index); break;
    case boost::json::kind::bool_: stmt.BindInt(index, value.get_bool() ? 1 : 0); break;
    case boost::json::kind::int64: stmt.BindInt(index, value.get_int64()); break;
    case boost::json::kind::uint64:
      if (value.get_uint64() > static_cast<uint64_t>(INT64_MAX)) return invalid("is an integer above 2^63-1");
      stmt.BindInt(index, static_cast<int64_t>(value.get_uint64()));
      break;
    case boost::json::kind::double_: stmt.BindDouble(index, value.get_double()); break;
    case boost::json::kind::string: stmt.BindText(index, value.get_string()); break;
    case boost::json::kind::array:
    case boost::json::kind::object:
      return invalid("is an array or object");
  }
  return Ok();
}

//! Appends `text` as a JSON string. Invalid UTF-8 (text cells may hold any bytes) becomes U+FFFD, so the response
//! is always valid JSON.
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
    // Length and minimum value of a well-formed sequence starting with c (no overlongs, no surrogates, <= U+10FFFF).
    size_t len = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 0;
    bool ok = len > 0 && i + len <= text.size();
    uint32_t cp = len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; ok && k < len; ++k) {
      auto cc = static_cast<unsigned char>(text[i + k]);
      if ((cc & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (ok) {
      ok = (len == 3 && cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF)) || (len == 4 && cp >= 0x10000 && cp <= 0x10FFFF) ||
           len == 2;
    }
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
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t n = (static_cast<unsigned char>(bytes[i]) << 16) | (static_cast<unsigned char>(bytes[i + 1]) << 8) |
                 static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[n >> 18];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += kAlphabet[n & 63];
  }
  if (size_t rest = bytes.size() - i; rest > 0) {
    uint32_t n = static_cast<unsigned char>(bytes[i]) << 16;
    if (rest == 2) n |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    out += kAlphabet[n >> 18];
    out += kAlphabet[(n >> 12) & 63];
    out += rest == 2 ? kAlphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string CellJson(sqlite3_stmt* stmt, int column) {
  switch (sqlite3_column_type(stmt, column)) {
    case SQLITE_INTEGER:
      return std::to_string(sqlite3_column_int64(stmt, column));
    case SQLITE_FLOAT: {
      double v = sqlite3_column_double(stmt, column);
      if (!std::isfinite(v)) return "null";  // JSON has no infinity
      char buf[32];
      auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
      return std::string(buf, end);
    }
    case SQLITE_TEXT: {
      std::string out;
      const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, column));
      AppendJsonString(out, std::string_view(text, static_cast<size_t>(sqlite3_column_bytes(stmt, column))));
      return out;
    }
    case SQLITE_BLOB: {
      const auto* blob = static_cast<const char*>(sqlite3_column_blob(stmt, column));
      size_t size = static_cast<size_t>(sqlite3_column_bytes(stmt, column));
      return "\"" + Base64(std::string_view(blob == nullptr ? "" : blob, size)) + "\"";
    }
    default:
      return "null";
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------

Status SqliteMetadataStore::Migrate() { return ApplySqliteMigrations(db_, clock_); }

Result<int> SqliteMetadataStore::SchemaVersion() {
  int version = 0;
  IMGPIPE_TRY(db_.Read([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT count(*) FROM sqlite_master WHERE name = 'schema_migrations'"));
    IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row || stmt.Int(0) == 0) return Ok();
    IMGPIPE_ASSIGN_OR_RETURN(auto newest, conn.Prepare("SELECT coalesce(max(version), 0) FROM schema_migrations"));
    IMGPIPE_ASSIGN_OR_RETURN(row, newest.Step());
    if (row) version = static_cast<int>(newest.Int(0));
    return Ok();
  }));
  return version;
}

int SqliteMetadataStore::KnownSchemaVersion() const { return SqliteMigrations().back().version; }

Status SqliteMetadataStore::Ping() {
  return db_.Read([](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT count(*) FROM schema_migrations"));
    return stmt.Run();
  });
}

Status SqliteMetadataStore::InsertImage(const ImageRecord& image,
                                        const std::optional<IdempotencyRecord>& idempotency) {
  return db_.Write([&](SqliteConnection& conn) -> Status {
    {
      IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare(InsertImageSql()));
      BindImage(stmt, image);
      if (Status s = stmt.Run(); !s.ok()) {
        if (s.error().kind == ErrorKind::kConflict) {
          return MakeError(ErrorKind::kConflict, "image " + image.id.value() + " already exists");
        }
        return s;
      }
    }
    {
      IMGPIPE_ASSIGN_OR_RETURN(auto job, conn.Prepare(kInsertJobSql));
      job.BindText(1, image.id.value()).BindText(2, image.pipeline).BindText(3, FormatRfc3339(clock_.Now()));
      IMGPIPE_TRY(job.Run());
    }
    if (!idempotency) return Ok();
    IMGPIPE_ASSIGN_OR_RETURN(
        auto stmt, conn.Prepare("INSERT INTO idempotency (api_key_id, key, request_hash, status_code, response_json, "
                                "image_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
    stmt.BindText(1, idempotency->api_key_id)
        .BindText(2, idempotency->key)
        .BindText(3, idempotency->request_hash)
        .BindInt(4, idempotency->status_code)
        .BindText(5, idempotency->response_json)
        .BindText(6, idempotency->image_id.value().empty() ? image.id.value() : idempotency->image_id.value())
        .BindText(7, FormatRfc3339(idempotency->created_at));
    if (Status s = stmt.Run(); !s.ok()) {
      if (s.error().kind == ErrorKind::kConflict) {
        return MakeError(ErrorKind::kConflict, "idempotency key '" + idempotency->key +
                                                   "' was already used by this API key; replay its stored response");
      }
      return s;
    }
    return Ok();
  });
}

Result<bool> SqliteMetadataStore::InsertImageIfAbsent(const ImageRecord& image) {
  bool inserted = false;
  IMGPIPE_TRY(db_.Write([&](SqliteConnection& conn) -> Status {
    {
      IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare(InsertImageSql() + " ON CONFLICT (id) DO NOTHING"));
      BindImage(stmt, image);
      IMGPIPE_TRY(stmt.Run());
    }
    inserted = conn.Changes() > 0;
    if (!inserted) return Ok();
    IMGPIPE_ASSIGN_OR_RETURN(auto job, conn.Prepare(kInsertJobSql));
    job.BindText(1, image.id.value()).BindText(2, image.pipeline).BindText(3, FormatRfc3339(clock_.Now()));
    return job.Run();
  }));
  return inserted;
}

Result<std::vector<bool>> SqliteMetadataStore::InsertImagesIfAbsent(const std::vector<ImageRecord>& images) {
  std::vector<bool> inserted;
  IMGPIPE_TRY(db_.Write([&](SqliteConnection& conn) -> Status {
    inserted.assign(images.size(), false);  // the write may be retried from the start
    const std::string insert = InsertImageSql() + " ON CONFLICT (id) DO NOTHING";
    const std::string now = FormatRfc3339(clock_.Now());
    for (size_t i = 0; i < images.size(); ++i) {
      {
        // Statements come from the connection's cache and are reset when they go out of scope.
        IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare(insert));
        BindImage(stmt, images[i]);
        IMGPIPE_TRY(stmt.Run());
      }
      inserted[i] = conn.Changes() > 0;
      if (!inserted[i]) continue;
      IMGPIPE_ASSIGN_OR_RETURN(auto job, conn.Prepare(kInsertJobSql));
      job.BindText(1, images[i].id.value()).BindText(2, images[i].pipeline).BindText(3, now);
      IMGPIPE_TRY(job.Run());
    }
    return Ok();
  }));
  return inserted;
}

Result<std::optional<IdempotencyRecord>> SqliteMetadataStore::FindIdempotency(const std::string& api_key_id,
                                                                              const std::string& key) {
  std::optional<IdempotencyRecord> found;
  IMGPIPE_TRY(db_.Read([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(
        auto stmt, conn.Prepare("SELECT api_key_id, key, request_hash, status_code, response_json, image_id, "
                                "created_at FROM idempotency WHERE api_key_id = ?1 AND key = ?2"));
    stmt.BindText(1, api_key_id).BindText(2, key);
    IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return Ok();
    IdempotencyRecord record;
    RowReader reader(stmt, "idempotency record");
    record.api_key_id = reader.Text();
    record.key = reader.Text();
    record.request_hash = reader.Text();
    record.status_code = static_cast<int>(reader.Int());
    record.response_json = reader.Text();
    record.image_id = ImageId(reader.OptionalText().value_or(""));
    record.created_at = reader.Time();
    IMGPIPE_TRY(reader.status());
    found = std::move(record);
    return Ok();
  }));
  return found;
}

Result<ImageRecord> SqliteMetadataStore::GetImage(const ImageId& id) {
  std::optional<ImageRecord> image;
  IMGPIPE_TRY(db_.Read([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare(SelectImageSql() + " WHERE id = ?1"));
    stmt.BindText(1, id.value());
    IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return ImageNotFound(id);
    IMGPIPE_ASSIGN_OR_RETURN(image, ReadImage(stmt));
    return Ok();
  }));
  return std::move(*image);
}

Result<ImagePage> SqliteMetadataStore::ListImages(const ImageFilter& filter) {
  const size_t limit = std::clamp<size_t>(filter.limit, 1, kMaxPageSize);
  // Parameter numbers are fixed whichever filters are present (?6, the limit, is always there), so each combination
  // is one cached statement.
  std::string sql = SelectImageSql() + " WHERE 1";
  if (filter.received_from) sql += " AND received_at >= ?1";
  if (filter.received_to) sql += " AND received_at < ?2";
  if (filter.source) sql += " AND source = ?3";
  if (filter.status) sql += " AND status = ?4";
  if (!filter.after_id.empty()) sql += filter.newest_first ? " AND id < ?5" : " AND id > ?5";
  sql += filter.newest_first ? " ORDER BY id DESC" : " ORDER BY id ASC";
  sql += " LIMIT ?6";

  ImagePage page;
  IMGPIPE_TRY(db_.Read([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare(sql));
    if (filter.received_from) stmt.BindText(1, FormatRfc3339(*filter.received_from));
    if (filter.received_to) stmt.BindText(2, FormatRfc3339(*filter.received_to));
    if (filter.source) stmt.BindText(3, *filter.source);
    if (filter.status) stmt.BindText(4, ImageStatusName(*filter.status));
    if (!filter.after_id.empty()) stmt.BindText(5, filter.after_id);
    stmt.BindInt(6, static_cast<int64_t>(limit + 1));  // one more tells whether another page exists
    while (true) {
      IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      if (page.items.size() == limit) {
        page.next_cursor = page.items.back().id.value();
        break;
      }
      IMGPIPE_ASSIGN_OR_RETURN(auto image, ReadImage(stmt));
      page.items.push_back(std::move(image));
    }
    return Ok();
  }));
  return page;
}

Result<std::vector<RenditionRecord>> SqliteMetadataStore::ListRenditions(const ImageId& id) {
  std::vector<RenditionRecord> renditions;
  IMGPIPE_TRY(db_.Read([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(
        auto stmt, conn.Prepare("SELECT image_id, name, key, format, content_type, width, height, bytes, created_at "
                                "FROM renditions WHERE image_id = ?1 ORDER BY name"));
    stmt.BindText(1, id.value());
    while (true) {
      IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) return Ok();
      IMGPIPE_ASSIGN_OR_RETURN(auto r, ReadRendition(stmt));
      renditions.push_back(std::move(r));
    }
  }));
  return renditions;
}

Result<std::vector<ProcessingRun>> SqliteMetadataStore::ListRuns(const ImageId& id) {
  std::vector<ProcessingRun> runs;
  IMGPIPE_TRY(db_.Read([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(
        auto stmt, conn.Prepare("SELECT image_id, pipeline, attempt, started_at, finished_at, status, error, "
                                "decode_seconds, encode_seconds, total_seconds, script_name, script_version FROM processing_runs "
                                "WHERE image_id = ?1 ORDER BY id"));
    stmt.BindText(1, id.value());
    while (true) {
      IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) return Ok();
      IMGPIPE_ASSIGN_OR_RETURN(auto run, ReadRun(stmt));
      runs.push_back(std::move(run));
    }
  }));
  return runs;
}

Status SqliteMetadataStore::MarkProcessing(const ImageId& id) {
  return db_.Write([&](SqliteConnection& conn) -> Status {
    {
      IMGPIPE_ASSIGN_OR_RETURN(
          auto stmt, conn.Prepare("UPDATE images SET status = 'processing', processing_starts = processing_starts + 1 "
                                  "WHERE id = ?1 AND status IN ('queued', 'processing')"));
      stmt.BindText(1, id.value());
      IMGPIPE_TRY(stmt.Run());
    }
    if (conn.Changes() > 0) return Ok();
    IMGPIPE_ASSIGN_OR_RETURN(auto status, ImageStatusOf(conn, id));
    if (!status) return ImageNotFound(id);
    return Ok();  // processed, failed, expired or deleted: left as it is
  });
}

Status SqliteMetadataStore::UncountProcessingStart(const ImageId& id) {
  return db_.Write([&](SqliteConnection& conn) -> Status {
    {
      IMGPIPE_ASSIGN_OR_RETURN(
          auto stmt, conn.Prepare("UPDATE images SET processing_starts = max(processing_starts - 1, 0) WHERE id = ?1"));
      stmt.BindText(1, id.value());
      IMGPIPE_TRY(stmt.Run());
    }
    if (conn.Changes() > 0) return Ok();
    return ImageNotFound(id);
  });
}

Status SqliteMetadataStore::RecordProcessed(const ImageId& id, std::optional<uint64_t> phash,
                                            std::optional<std::string> dominant_colour,
                                            const std::vector<RenditionRecord>& renditions, const ProcessingRun& run) {
  return db_.Write([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto status, ImageStatusOf(conn, id));
    if (!status) return ImageNotFound(id);
    if (*status == "expired" || *status == "deleted") {
      return MakeError(ErrorKind::kConflict, "image " + id.value() + " is " + *status +
                                                 "; its processing results were not recorded (delete the renditions "
                                                 "just written and acknowledge the job)");
    }
    for (const RenditionRecord& r : renditions) {
      IMGPIPE_ASSIGN_OR_RETURN(
          auto stmt,
          conn.Prepare("INSERT INTO renditions (image_id, name, key, format, content_type, width, height, bytes, "
                       "created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
                       "ON CONFLICT (image_id, name) DO UPDATE SET key = excluded.key, format = excluded.format, "
                       "content_type = excluded.content_type, width = excluded.width, height = excluded.height, "
                       "bytes = excluded.bytes, created_at = excluded.created_at"));
      stmt.BindText(1, id.value())
          .BindText(2, r.name)
          .BindText(3, r.key)
          .BindText(4, r.format)
          .BindText(5, r.content_type)
          .BindInt(6, r.width)
          .BindInt(7, r.height)
          .BindInt(8, static_cast<int64_t>(r.bytes))
          .BindText(9, FormatRfc3339(r.created_at));
      IMGPIPE_TRY(stmt.Run());
    }
    {
      IMGPIPE_ASSIGN_OR_RETURN(
          auto stmt, conn.Prepare("UPDATE images SET status = 'processed', processed_at = ?2, phash = ?3, "
                                  "dominant_colour = ?4, error = NULL WHERE id = ?1"));
      stmt.BindText(1, id.value())
          .BindText(2, FormatRfc3339(run.finished_at))
          .BindOptionalText(3, phash ? std::optional<std::string>(PhashHex(*phash)) : std::nullopt)
          .BindOptionalText(4, dominant_colour);
      IMGPIPE_TRY(stmt.Run());
    }
    return InsertRun(conn, id, run);
  });
}

Status SqliteMetadataStore::RecordLabels(const ImageId& id, const std::string& script_name,
                                         const std::string& script_version, const std::vector<ImageLabel>& labels) {
  return db_.Write([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto status, ImageStatusOf(conn, id));
    if (!status) return ImageNotFound(id);
    {
      IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare("DELETE FROM image_labels WHERE image_id = ?1 AND "
                                                       "script_name = ?2 AND script_version = ?3"));
      stmt.BindText(1, id.value()).BindText(2, script_name).BindText(3, script_version);
      IMGPIPE_TRY(stmt.Run());
    }
    const std::string now = FormatRfc3339(clock_.Now());
    for (const ImageLabel& label : labels) {
      IMGPIPE_ASSIGN_OR_RETURN(
          auto stmt, conn.Prepare("INSERT INTO image_labels (image_id, script_name, script_version, key, value, "
                                  "number, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
      stmt.BindText(1, id.value())
          .BindText(2, script_name)
          .BindText(3, script_version)
          .BindText(4, label.key)
          .BindText(5, label.value)
          .BindOptionalDouble(6, label.number)
          .BindText(7, now);
      IMGPIPE_TRY(stmt.Run());
    }
    return Ok();
  });
}

Result<bool> SqliteMetadataStore::RequeueImage(const ImageId& id, const std::string& pipeline, TimePoint now) {
  bool queued = false;
  IMGPIPE_TRY(db_.Write([&](SqliteConnection& conn) -> Status {
    queued = false;
    IMGPIPE_ASSIGN_OR_RETURN(auto status, ImageStatusOf(conn, id));
    if (!status) return ImageNotFound(id);
    {
      IMGPIPE_ASSIGN_OR_RETURN(
          auto stmt, conn.Prepare("UPDATE images SET pipeline = ?2, status = 'queued', error = NULL, "
                                  "processing_starts = 0 "
                                  "WHERE id = ?1 AND status IN ('processed', 'failed') AND expires_at > ?3"));
      stmt.BindText(1, id.value()).BindText(2, pipeline).BindText(3, FormatRfc3339(now));
      IMGPIPE_TRY(stmt.Run());
      if (conn.Changes() == 0) return Ok();
    }
    IMGPIPE_ASSIGN_OR_RETURN(auto job, conn.Prepare(kInsertJobSql));
    job.BindText(1, id.value()).BindText(2, pipeline).BindText(3, FormatRfc3339(clock_.Now()));
    IMGPIPE_TRY(job.Run());
    queued = true;
    return Ok();
  }));
  return queued;
}

Status SqliteMetadataStore::RecordFailure(const ImageId& id, const ProcessingRun& run, bool final) {
  return db_.Write([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto status, ImageStatusOf(conn, id));
    if (!status) return ImageNotFound(id);
    IMGPIPE_TRY(InsertRun(conn, id, run));
    if (!final) return Ok();
    IMGPIPE_ASSIGN_OR_RETURN(
        auto stmt, conn.Prepare("UPDATE images SET status = 'failed', error = ?2 "
                                "WHERE id = ?1 AND status NOT IN ('expired', 'deleted')"));
    stmt.BindText(1, id.value()).BindText(2, run.error.value_or("processing failed (no reason recorded)"));
    return stmt.Run();
  });
}

Result<std::vector<ImageRecord>> SqliteMetadataStore::FindExpired(TimePoint now, size_t limit) {
  std::vector<ImageRecord> images;
  IMGPIPE_TRY(db_.Read([&](SqliteConnection& conn) -> Status {
    // The WHERE repeats the partial index's condition word for word so the planner uses it.
    IMGPIPE_ASSIGN_OR_RETURN(
        auto stmt, conn.Prepare(SelectImageSql() +
                                " WHERE expires_at <= ?1 AND status NOT IN ('expired', 'deleted') "
                                "AND NOT EXISTS (SELECT 1 FROM legal_holds AS h "
                                "WHERE h.image_id = images.id AND h.released_at IS NULL) "
                                "ORDER BY expires_at, id LIMIT ?2"));
    stmt.BindText(1, FormatRfc3339(now)).BindInt(2, static_cast<int64_t>(std::min<size_t>(limit, INT64_MAX)));
    while (true) {
      IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) return Ok();
      IMGPIPE_ASSIGN_OR_RETURN(auto image, ReadImage(stmt));
      images.push_back(std::move(image));
    }
  }));
  return images;
}

namespace {

//! Sets `status` (expired or deleted) unless the row already has it (or is deleted), and drops the image's job.
Status MarkGone(SqliteDatabase& db, const ImageId& id, TimePoint when, std::string_view update_sql) {
  return db.Write([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto status, ImageStatusOf(conn, id));
    if (!status) return ImageNotFound(id);
    {
      IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare(update_sql));
      stmt.BindText(1, id.value()).BindText(2, FormatRfc3339(when));
      IMGPIPE_TRY(stmt.Run());
    }
    IMGPIPE_ASSIGN_OR_RETURN(auto job, conn.Prepare("DELETE FROM jobs WHERE image_id = ?1"));
    job.BindText(1, id.value());
    return job.Run();
  });
}

}  // namespace

Status SqliteMetadataStore::MarkExpired(const ImageId& id, TimePoint when) {
  return MarkGone(db_, id, when,
                  "UPDATE images SET status = 'expired', expired_at = ?2 "
                  "WHERE id = ?1 AND status NOT IN ('expired', 'deleted')");
}

Status SqliteMetadataStore::MarkDeleted(const ImageId& id, TimePoint when) {
  return MarkGone(db_, id, when,
                  "UPDATE images SET status = 'deleted', expired_at = coalesce(expired_at, ?2) "
                  "WHERE id = ?1 AND status <> 'deleted'");
}

// ---------------------------------------------------------------------------------------------------------------
// Legal holds and purges

namespace {

Result<std::optional<LegalHold>> HoldInForce(SqliteConnection& conn, const ImageId& id) {
  IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT image_id, reason, held_by, held_at FROM legal_holds "
                                                   "WHERE image_id = ?1 AND released_at IS NULL"));
  stmt.BindText(1, id.value());
  IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return std::optional<LegalHold>();
  RowReader r(stmt, "legal hold of image " + id.value());
  LegalHold hold{ImageId(r.Text()), r.Text(), r.Text(), r.Time()};
  IMGPIPE_TRY(r.status());
  return std::optional<LegalHold>(std::move(hold));
}

}  // namespace

Result<LegalHold> SqliteMetadataStore::SetLegalHold(const ImageId& id, const std::string& reason,
                                                    const std::string& held_by, TimePoint at) {
  LegalHold hold;
  IMGPIPE_TRY(db_.Write([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto status, ImageStatusOf(conn, id));
    if (!status) return ImageNotFound(id);
    if (*status == "expired" || *status == "deleted") {
      return MakeError(ErrorKind::kConflict, "image " + id.value() + " is " + *status + ": its blobs are gone");
    }
    IMGPIPE_ASSIGN_OR_RETURN(auto existing, HoldInForce(conn, id));
    if (existing) {
      hold = std::move(*existing);
      return Ok();
    }
    {
      IMGPIPE_ASSIGN_OR_RETURN(auto purging, conn.Prepare("SELECT count(*) FROM purges "
                                                          "WHERE image_id = ?1 AND finished_at IS NULL"));
      purging.BindText(1, id.value());
      IMGPIPE_ASSIGN_OR_RETURN(bool row, purging.Step());
      if (row && purging.Int(0) > 0) {
        return MakeError(ErrorKind::kConflict, "image " + id.value() + " is being purged (" +
                                                   "retention or a delete began before the hold)");
      }
    }
    IMGPIPE_ASSIGN_OR_RETURN(auto insert, conn.Prepare("INSERT INTO legal_holds (image_id, reason, held_by, held_at) "
                                                       "VALUES (?1, ?2, ?3, ?4)"));
    insert.BindText(1, id.value()).BindText(2, reason).BindText(3, held_by).BindText(4, FormatRfc3339(at));
    IMGPIPE_TRY(insert.Run());
    hold = LegalHold{id, reason, held_by, at};
    return Ok();
  }));
  return hold;
}

Status SqliteMetadataStore::ReleaseLegalHold(const ImageId& id, const std::string& released_by, TimePoint at) {
  return db_.Write([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare("UPDATE legal_holds SET released_by = ?2, released_at = ?3 "
                                                     "WHERE image_id = ?1 AND released_at IS NULL"));
    stmt.BindText(1, id.value()).BindText(2, released_by).BindText(3, FormatRfc3339(at));
    IMGPIPE_TRY(stmt.Run());
    if (conn.Changes() == 0) return MakeError(ErrorKind::kNotFound, "image " + id.value() + " is not on legal hold");
    return Ok();
  });
}

Result<std::optional<LegalHold>> SqliteMetadataStore::FindLegalHold(const ImageId& id) {
  std::optional<LegalHold> hold;
  IMGPIPE_TRY(db_.Read([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(hold, HoldInForce(conn, id));
    return Ok();
  }));
  return hold;
}

Result<std::vector<LegalHold>> SqliteMetadataStore::ListLegalHolds() {
  std::vector<LegalHold> holds;
  IMGPIPE_TRY(db_.Read([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT image_id, reason, held_by, held_at FROM legal_holds "
                                                     "WHERE released_at IS NULL ORDER BY held_at, id"));
    while (true) {
      IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) return Ok();
      RowReader r(stmt, "a legal hold");
      LegalHold hold{ImageId(r.Text()), r.Text(), r.Text(), r.Time()};
      IMGPIPE_TRY(r.status());
      holds.push_back(std::move(hold));
    }
  }));
  return holds;
}

Result<int64_t> SqliteMetadataStore::BeginPurge(const PurgeRecord& purge) {
  int64_t purge_id = 0;
  IMGPIPE_TRY(db_.Write([&](SqliteConnection& conn) -> Status {
    if (purge.image_id) {
      IMGPIPE_ASSIGN_OR_RETURN(auto hold, HoldInForce(conn, *purge.image_id));
      if (hold) {
        return MakeError(ErrorKind::kConflict, "image " + purge.image_id->value() + " is on legal hold since " +
                                                   FormatRfc3339(hold->held_at) + " (" + hold->reason + ")");
      }
    }
    IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare("INSERT INTO purges (image_id, what, reason, actor, started_at) "
                                                     "VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id"));
    std::optional<std::string> image_id;
    if (purge.image_id) image_id = purge.image_id->value();
    stmt.BindOptionalText(1, image_id)
        .BindText(2, purge.what)
        .BindText(3, purge.reason)
        .BindText(4, purge.actor)
        .BindText(5, FormatRfc3339(purge.started_at));
    IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return MakeError(ErrorKind::kInternal, "INSERT INTO purges returned no id");
    purge_id = stmt.Int(0);
    return stmt.Run();
  }));
  return purge_id;
}

Status SqliteMetadataStore::FinishPurge(int64_t purge_id, int64_t objects, TimePoint at) {
  return db_.Write([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare("UPDATE purges SET finished_at = ?2, objects = ?3 WHERE id = ?1"));
    stmt.BindInt(1, purge_id).BindText(2, FormatRfc3339(at)).BindInt(3, objects);
    return stmt.Run();
  });
}

Status SqliteMetadataStore::CreateApiKey(const ApiKeyRecord& key) {
  return db_.Write([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(
        auto stmt, conn.Prepare("INSERT INTO api_keys (" + std::string(kApiKeyColumns) +
                                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)"));
    stmt.BindText(1, key.id)
        .BindText(2, key.secret_hash)
        .BindText(3, RoleName(key.role))
        .BindText(4, key.name)
        .BindText(5, FormatRfc3339(key.created_at))
        .BindOptionalText(6, OptionalTime(key.revoked_at));
    if (Status s = stmt.Run(); !s.ok()) {
      if (s.error().kind == ErrorKind::kConflict) {
        return MakeError(ErrorKind::kConflict,
                         "API key " + key.id + " (or one with the same secret) already exists");
      }
      return s;
    }
    return Ok();
  });
}

Result<ApiKeyRecord> SqliteMetadataStore::FindApiKeyByHash(const std::string& secret_hash) {
  std::optional<ApiKeyRecord> key;
  IMGPIPE_TRY(db_.Read([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(
        auto stmt, conn.Prepare("SELECT " + std::string(kApiKeyColumns) + " FROM api_keys WHERE secret_hash = ?1"));
    stmt.BindText(1, secret_hash);
    IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return MakeError(ErrorKind::kNotFound, "no API key has this secret");
    IMGPIPE_ASSIGN_OR_RETURN(key, ReadApiKey(stmt));
    return Ok();
  }));
  return std::move(*key);
}

Result<std::vector<ApiKeyRecord>> SqliteMetadataStore::ListApiKeys() {
  std::vector<ApiKeyRecord> keys;
  IMGPIPE_TRY(db_.Read([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(
        auto stmt, conn.Prepare("SELECT " + std::string(kApiKeyColumns) + " FROM api_keys ORDER BY created_at, id"));
    while (true) {
      IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) return Ok();
      IMGPIPE_ASSIGN_OR_RETURN(auto key, ReadApiKey(stmt));
      keys.push_back(std::move(key));
    }
  }));
  return keys;
}

Status SqliteMetadataStore::RevokeApiKey(const std::string& id, TimePoint when) {
  return db_.Write([&](SqliteConnection& conn) -> Status {
    // A second revoke keeps the first time.
    IMGPIPE_ASSIGN_OR_RETURN(auto stmt,
                             conn.Prepare("UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1"));
    stmt.BindText(1, id).BindText(2, FormatRfc3339(when));
    IMGPIPE_TRY(stmt.Run());
    if (conn.Changes() == 0) return MakeError(ErrorKind::kNotFound, "API key " + id + " not found");
    return Ok();
  });
}

Result<int64_t> SqliteMetadataStore::CountApiKeys() {
  int64_t count = 0;
  IMGPIPE_TRY(db_.Read([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT count(*) FROM api_keys"));
    IMGPIPE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (row) count = stmt.Int(0);
    return Ok();
  }));
  return count;
}

Result<bool> SqliteMetadataStore::AcquireLease(const std::string& name, const std::string& owner, TimePoint now,
                                               std::chrono::milliseconds ttl) {
  bool held = false;
  IMGPIPE_TRY(db_.Write([&](SqliteConnection& conn) -> Status {
    // The update happens (and a row comes back) only for the holder or once the lease ran out; times are
    // FormatRfc3339's fixed format, whose string order is time order.
    IMGPIPE_ASSIGN_OR_RETURN(
        auto stmt, conn.Prepare("INSERT INTO leases (name, owner, expires_at) VALUES (?1, ?2, ?3) "
                                "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
                                "WHERE leases.owner = excluded.owner OR leases.expires_at <= ?4 RETURNING owner"));
    stmt.BindText(1, name).BindText(2, owner).BindText(3, FormatRfc3339(now + ttl)).BindText(4, FormatRfc3339(now));
    IMGPIPE_ASSIGN_OR_RETURN(held, stmt.Step());
    return Ok();
  }));
  return held;
}

Status SqliteMetadataStore::ReleaseLease(const std::string& name, const std::string& owner) {
  return db_.Write([&](SqliteConnection& conn) -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(auto stmt, conn.Prepare("DELETE FROM leases WHERE name = ?1 AND owner = ?2"));
    stmt.BindText(1, name).BindText(2, owner);
    return stmt.Run();
  });
}

Result<QueryResult> SqliteMetadataStore::Query(const std::string& sql, const std::vector<std::string>& params_json,
                                               size_t max_rows, std::chrono::milliseconds timeout) {
  QueryResult result;
  IMGPIPE_TRY(db_.RunUntrusted([&](SqliteConnection& conn) -> Status {
    sqlite3* db = conn.handle();
    QueryGuard guard;
    guard.deadline = std::chrono::steady_clock::now() + timeout;
    sqlite3_set_authorizer(db, AuthorizeQuery, &guard);
    // Checked every 1000 virtual-machine steps: often enough to stop within a millisecond or so of the deadline.
    sqlite3_progress_handler(db, 1000, CheckDeadline, &guard);

    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    int rc = sqlite3_prepare_v2(db, sql.c_str(), static_cast<int>(sql.size()), &raw, &tail);
    if (rc != SQLITE_OK) return QueryError(db, rc, guard, timeout);
    if (raw == nullptr) return MakeError(ErrorKind::kInvalidArgument, "the query is empty; send one SELECT statement");
    SqliteStatement stmt(raw, /*owned=*/true, nullptr);

    // Anything after the first statement other than whitespace and comments is refused, not ignored.
    sqlite3_stmt* extra = nullptr;
    int extra_rc = sqlite3_prepare_v2(db, tail, -1, &extra, nullptr);
    sqlite3_finalize(extra);
    if (extra_rc != SQLITE_OK || extra != nullptr) {
      return MakeError(ErrorKind::kInvalidArgument,
                       "the query has more than one statement; send exactly one SELECT statement");
    }

    const int wanted = sqlite3_bind_parameter_count(raw);
    if (static_cast<size_t>(wanted) != params_json.size()) {
      return MakeError(ErrorKind::kInvalidArgument, "the query uses " + std::to_string(wanted) +
                                                        " parameter(s) but " + std::to_string(params_json.size()) +
                                                        " were given; bind them positionally as ?1, ?2, ...");
    }
    for (size_t i = 0; i < params_json.size(); ++i) {
      IMGPIPE_TRY(BindJsonParam(stmt, static_cast<int>(i + 1), params_json[i]));
    }
    IMGPIPE_TRY(stmt.BindStatus());

    const int columns = sqlite3_column_count(raw);
    for (int c = 0; c < columns; ++c) {
      const char* name = sqlite3_column_name(raw, c);
      result.columns.emplace_back(name != nullptr ? name : "");
    }
    while (true) {
      rc = sqlite3_step(raw);
      if (rc == SQLITE_DONE) return Ok();
      if (rc != SQLITE_ROW) return QueryError(db, rc, guard, timeout);
      if (result.rows_json.size() >= max_rows) {
        result.truncated = true;
        return Ok();
      }
      std::vector<std::string> cells;
      cells.reserve(static_cast<size_t>(columns));
      for (int c = 0; c < columns; ++c) cells.push_back(CellJson(raw, c));
      result.rows_json.push_back(std::move(cells));
    }
  }));
  return result;
}

}  // namespace imgpipe
