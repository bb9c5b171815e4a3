#include "api/routes.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value_from.hpp>

#include <array>
#include <cstdlib>
#include <map>

#include "api/dashboard.hpp"
#include "api/image_json.hpp"
#include "api/list_params.hpp"
#include "api/query_format.hpp"
#include "api/scripts_api.hpp"
#include "core/ids.hpp"
#include "core/log.hpp"
#include "http/multipart_parser.hpp"
#include "http/range.hpp"
#include "scripts/script_store.hpp"

namespace imgpipe {

namespace json = boost::json;
namespace http = beast::http;

namespace {

constexpr size_t kChunk = 64 * 1024;

HttpResponse JsonResponse(http::status status, const json::value& body) {
  HttpResponse r;
  r.status = status;
  r.body = json::serialize(body);
  return r;
}

std::vector<std::string_view> Segments(std::string_view path) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') ++i;
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    if (j > i) out.push_back(path.substr(i, j - i));
    i = j;
  }
  return out;
}

double SecondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Receives a multipart upload: the "file" part into the spool, the "metadata" part into a string.
class UploadParts final : public MultipartHandler {
 public:
  UploadParts(Spool& spool, size_t max_metadata) : spool_(spool), max_metadata_(max_metadata) {}

  Status OnPartBegin(const MultipartPart& part) override {
    if (part.name == "file") {
      if (seen_file_) return MakeError(ErrorKind::kInvalidArgument, "multipart body has more than one \"file\" part");
      seen_file_ = true;
      current_ = Kind::kFile;
    } else if (part.name == "metadata") {
      current_ = Kind::kMetadata;
      has_metadata_ = true;
    } else {
      current_ = Kind::kIgnored;
    }
    return Ok();
  }
  Status OnPartData(std::string_view data) override {
    switch (current_) {
      case Kind::kFile: return spool_.Append(data);
      case Kind::kMetadata:
        if (metadata_.size() + data.size() > max_metadata_) {
          return MakeError(ErrorKind::kInvalidArgument, "the metadata part is larger than " +
                                                            std::to_string(max_metadata_) +
                                                            " bytes (limits.max_metadata_bytes)");
        }
        metadata_.append(data);
        return Ok();
      case Kind::kIgnored: return Ok();
    }
    return Ok();
  }
  Status OnPartEnd() override { return Ok(); }

  bool seen_file() const { return seen_file_; }
  bool has_metadata() const { return has_metadata_; }
  const std::string& metadata() const { return metadata_; }

 private:
  enum class Kind { kFile, kMetadata, kIgnored };
  Spool& spool_;
  size_t max_metadata_;
  Kind current_ = Kind::kIgnored;
  bool seen_file_ = false;
  bool has_metadata_ = false;
  std::string metadata_;
};

bool ValidIdempotencyKey(std::string_view key) {
  if (key.empty() || key.size() > 255) return false;
  for (char c : key) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

}  // namespace

bool IsAdminPath(const std::vector<std::string_view>& segs) {
  if (segs.size() == 1) return segs[0] == "metrics";
  if (segs.size() < 2 || segs[0] != "v1") return false;
  if (segs[1] == "audit" || segs[1] == "holds" || segs[1] == "keys" || segs[1] == "scripts") return true;
  return segs[1] == "images" && segs.size() == 4 && segs[3] == "hold";
}

asio::awaitable<HttpResponse> Api::Handle(HttpRequest& req) {
  auto segs = Segments(req.path());
  auto method = req.method();
  bool read = method == http::verb::get || method == http::verb::head;
  auto not_allowed = [&](std::string allow) {
    HttpResponse r = ErrorResponse(MakeError(ErrorKind::kInvalidArgument,
                                             std::string(req.header().method_string()) + " is not allowed here; use " +
                                                 allow,
                                             "method_not_allowed"),
                                   req.request_id());
    r.status = http::status::method_not_allowed;
    r.SetHeader("Allow", allow);
    return r;
  };

  if (segs.size() == 1 && (segs[0] == "livez" || segs[0] == "readyz")) {
    HttpResponse r;
    if (!read) r = not_allowed("GET");
    else if (segs[0] == "livez") r = JsonResponse(http::status::ok, json::object{{"status", "ok"}});
    else r = co_await RunBlocking(ctx_.blocking, [&] { return Ready(req); });
    r.route = segs[0] == "livez" ? "/livez" : "/readyz";
    co_return r;
  }

  // With a private listener, each path is served on one listener only; the other answers as if it did not exist,
  // before authentication, so the public side reveals nothing of the admin surface but this hint.
  if (!ctx_.config.admin_listen.empty() && IsAdminPath(segs) != (req.listener() == Listener::kPrivate)) {
    HttpResponse r = ErrorResponse(
        MakeError(ErrorKind::kNotFound, std::string(req.path()) +
                                            (IsAdminPath(segs) ? " is served on the private listener only (admin.listen)"
                                                               : " is served on the public listener only (server.listen)")),
        req.request_id());
    r.route = "wrong_listener";
    co_return r;
  }

  // The dashboard's static files are public; every API call the app makes carries the bearer key.
  if (!segs.empty() && segs[0] == "dashboard") co_return ServeDashboard(req);

  // Everything that touches SQLite or the disk runs on the blocking pool: an I/O thread that waits stalls all of its
  // connections.
  // Per address before authenticating, so guessing keys costs the guesser too; per key after.
  if (ctx_.address_rate) {
    const std::string address(req.remote());
    if (auto wait = ctx_.address_rate->Take(address)) {
      const std::string who = "address " + address;
      co_return RateLimited(req, *wait, who);
    }
  }
  std::string_view authorization = req.Header("Authorization");
  auto key = co_await RunBlocking(ctx_.blocking, [&] { return ctx_.keys.Authenticate(authorization); });
  if (!key.ok()) {
    HttpResponse r = ErrorResponse(key.error(), req.request_id());
    co_return r;
  }
  if (ctx_.key_rate) {
    if (auto wait = ctx_.key_rate->Take(key->id)) {
      const std::string who = "API key " + key->id;
      co_return RateLimited(req, *wait, who);
    }
  }
  Role role = key->role;
  auto forbid = [&](std::string_view what) {
    return ErrorResponse(MakeError(ErrorKind::kPermissionDenied,
                                   "API key " + key->id + " has role " + std::string(RoleName(role)) +
                                       ", which may not " + std::string(what)),
                         req.request_id());
  };

  HttpResponse r;
  std::string route;
  if (segs.size() == 1 && segs[0] == "metrics") {
    route = "/metrics";
    if (!read) r = not_allowed("GET");
    else if (!RoleAllowed(role, {})) r = forbid("read metrics");
    else r = co_await RunBlocking(ctx_.blocking, [&] { return MetricsText(req); });
  } else if (segs.size() >= 2 && segs[0] == "v1" && segs[1] == "images") {
    if (segs.size() == 2) {
      route = "/v1/images";
      if (method == http::verb::post) {
        if (RoleAllowed(role, {Role::kUploader})) r = co_await Upload(req, *key); else r = forbid("upload images");
      } else if (read) {
        if (RoleAllowed(role, {Role::kReader})) {
          r = co_await RunBlocking(ctx_.blocking, [&] { return ListImages(req); });
        } else {
          r = forbid("list images");
        }
      } else {
        r = not_allowed("GET, POST");
      }
    } else if (segs.size() == 3) {
      route = "/v1/images/{id}";
      std::string id(segs[2]);
      if (read) {
        if (RoleAllowed(role, {Role::kUploader, Role::kReader})) {
          r = co_await RunBlocking(ctx_.blocking, [&] { return GetImage(req, id); });
        } else {
          r = forbid("read images");
        }
      } else if (method == http::verb::delete_) {
        if (RoleAllowed(role, {})) r = co_await DeleteImage(req, id, *key); else r = forbid("delete images");
      } else {
        r = not_allowed("GET, DELETE");
      }
    } else if (segs.size() == 4 && segs[3] == "hold") {
      route = "/v1/images/{id}/hold";
      std::string id(segs[2]);
      if (!RoleAllowed(role, {})) r = forbid("manage legal holds");
      else if (method == http::verb::put || method == http::verb::delete_ || read) r = co_await Hold(req, id, *key);
      else r = not_allowed("GET, PUT, DELETE");
    } else if (segs.size() == 4 && segs[3] == "original") {
      route = "/v1/images/{id}/original";
      std::string id(segs[2]);
      if (!read) r = not_allowed("GET, HEAD");
      else if (RoleAllowed(role, {Role::kReader})) {
        r = co_await RunBlocking(ctx_.blocking, [&] { return GetBlob(req, id, nullptr); });
      } else {
        r = forbid("download originals");
      }
    } else if (segs.size() == 5 && segs[3] == "renditions") {
      route = "/v1/images/{id}/renditions/{name}";
      std::string id(segs[2]);
      std::string name(segs[4]);
      if (!read) r = not_allowed("GET, HEAD");
      else if (RoleAllowed(role, {Role::kReader})) {
        r = co_await RunBlocking(ctx_.blocking, [&] { return GetBlob(req, id, &name); });
      } else {
        r = forbid("download renditions");
      }
    } else {
      r = ErrorResponse(MakeError(ErrorKind::kNotFound, "no such resource: " + std::string(req.path())),
                        req.request_id());
    }
  } else if (segs.size() == 2 && segs[0] == "v1" && segs[1] == "audit") {
    route = "/v1/audit";
    if (!read) r = not_allowed("GET");
    else if (!RoleAllowed(role, {})) r = forbid("read the audit log");
    else if (!ctx_.audit) r = ErrorResponse(MakeError(ErrorKind::kNotFound, "the audit log is off (audit.enabled)"),
                                            req.request_id());
    else r = co_await RunBlocking(ctx_.blocking, [&] { return ListAudit(req); });
  } else if (segs.size() == 2 && segs[0] == "v1" && segs[1] == "holds") {
    route = "/v1/holds";
    if (!read) r = not_allowed("GET");
    else if (!RoleAllowed(role, {})) r = forbid("list legal holds");
    else r = co_await RunBlocking(ctx_.blocking, [&] { return ListHolds(req); });
  } else if (segs.size() == 2 && segs[0] == "v1" && segs[1] == "query") {
    route = "/v1/query";
    if (method != http::verb::post) r = not_allowed("POST");
    else if (RoleAllowed(role, {Role::kAnalyst})) r = co_await Query(req); else r = forbid("run analyst queries");
  } else if (segs.size() >= 2 && segs[0] == "v1" && segs[1] == "keys" && segs.size() <= 3) {
    route = segs.size() == 2 ? "/v1/keys" : "/v1/keys/{id}";
    if (!RoleAllowed(role, {})) {
      r = forbid("manage API keys");
    } else if (segs.size() == 2) {
      if (method == http::verb::post) r = co_await CreateKey(req);
      else if (read) r = co_await ListKeys(req);
      else r = not_allowed("GET, POST");
    } else {
      if (method == http::verb::delete_) r = co_await RevokeKey(req, std::string(segs[2]));
      else r = not_allowed("DELETE");
    }
  } else if (segs.size() >= 2 && segs[0] == "v1" && segs[1] == "scripts" && segs.size() <= 3) {
    route = segs.size() == 2 ? "/v1/scripts" : "/v1/scripts/{name}";
    if (!RoleAllowed(role, {})) r = forbid("manage processing scripts");
    else {
      // A named local, not a temporary: g++ 12 mishandles temporaries passed to a coroutine's by-value parameter.
      std::string script_name = segs.size() == 3 ? std::string(segs[2]) : std::string();
      r = co_await Scripts(req, script_name);
    }
  } else {
    r = ErrorResponse(MakeError(ErrorKind::kNotFound, "no such resource: " + std::string(req.path())),
                      req.request_id());
  }
  if (!route.empty()) r.route = route;
  r.SetHeader("X-Imgpipe-Key-Id", key->id);
  if (ctx_.audit) {
    if (std::optional<AuditEvent> event = AuditOf(req, r, segs, key->id)) {
      Status written = co_await RunBlocking(ctx_.blocking, [&] { return ctx_.audit->Append(*event); });
      if (!written.ok()) {
        // The action already happened; what failed is its record. Loud, and counted for alerting.
        LogError("cannot write the audit log", {{"error", written.error().message}, {"action", event->action}});
        ctx_.metrics.Add("imgpipe_audit_errors_total", {});
      }
    }
  }
  co_return r;
}

std::optional<AuditEvent> Api::AuditOf(const HttpRequest& req, const HttpResponse& r,
                                       const std::vector<std::string_view>& segs, const std::string& key_id) const {
  // (method, route) -> action, for the actions docs/OPERATIONS.md lists; reads other than originals are not.
  static const std::map<std::pair<http::verb, std::string_view>, std::string_view> kActions = {
      {{http::verb::post, "/v1/images"}, "image.upload"},
      {{http::verb::delete_, "/v1/images/{id}"}, "image.delete"},
      {{http::verb::get, "/v1/images/{id}/original"}, "image.read_original"},
      {{http::verb::head, "/v1/images/{id}/original"}, "image.read_original"},
      {{http::verb::put, "/v1/images/{id}/hold"}, "hold.set"},
      {{http::verb::delete_, "/v1/images/{id}/hold"}, "hold.release"},
      {{http::verb::post, "/v1/query"}, "query"},
      {{http::verb::post, "/v1/keys"}, "key.create"},
      {{http::verb::delete_, "/v1/keys/{id}"}, "key.revoke"},
      {{http::verb::post, "/v1/scripts"}, "script.push"},
      {{http::verb::post, "/v1/scripts/{name}"}, "script.change"},
      {{http::verb::put, "/v1/scripts/{name}"}, "script.change"},
      {{http::verb::delete_, "/v1/scripts/{name}"}, "script.change"},
  };
  auto it = kActions.find({req.method(), r.route});
  if (it == kActions.end()) return std::nullopt;
  AuditEvent e;
  e.at = ctx_.clock.Now();
  e.actor = key_id;
  e.action = std::string(it->second);
  // The thing acted on: the id in the path, else what a create made (Location, or the new key's id).
  if (segs.size() >= 3) {
    e.target = std::string(segs[2]);
  } else {
    for (const auto& [name, value] : r.headers) {
      if (name == "Location") e.target = value.substr(value.rfind('/') + 1);
    }
    if (e.target.empty() && r.status == http::status::created) {
      json::error_code ec;
      json::value body = json::parse(r.body, ec);
      if (!ec && body.is_object()) {
        if (const json::value* id = body.as_object().if_contains("id"); id && id->is_string()) {
          e.target = std::string(id->as_string());
        }
      }
    }
  }
  e.remote = std::string(req.remote());
  const int status = static_cast<int>(r.status);
  e.outcome = status < 400 ? "ok" : std::to_string(status);
  e.details["status"] = status;
  for (const auto& [name, value] : r.audit_details) e.details[name] = value;
  return e;
}

HttpResponse Api::RateLimited(const HttpRequest& req, std::chrono::milliseconds wait, const std::string& who) {
  const int64_t seconds = std::max<int64_t>(1, (wait.count() + 999) / 1000);
  ctx_.metrics.Add("imgpipe_rate_limited_total", {{"by", who.starts_with("API key") ? "key" : "address"}});
  HttpResponse r = ErrorResponse(MakeError(ErrorKind::kRateLimited,
                                           "too many requests from " + who + "; retry in " +
                                               std::to_string(seconds) + " s (limits.rate_per_key, "
                                               "limits.rate_per_address)"),
                                 req.request_id());
  r.SetHeader("Retry-After", std::to_string(seconds));
  r.route = "rate_limited";
  return r;
}

HttpResponse Api::Ready(HttpRequest& req) {
  json::object checks;
  bool ok = true;
  auto check = [&](const char* name, Status s) {
    checks[name] = s.ok() ? "ok" : s.error().message;
    ok = ok && s.ok();
  };
  check("storage", ctx_.blobs.Ping());
  check("database", ctx_.store.Ping());
  check("queue", ctx_.queue.Ping());
  for (const auto& [name, ready] : ctx_.ready_checks) check(name.c_str(), ready());
  return JsonResponse(ok ? http::status::ok : http::status::service_unavailable,
                      json::object{{"status", ok ? "ready" : "not_ready"}, {"checks", std::move(checks)}});
}

HttpResponse Api::MetricsText(HttpRequest& req) {
  auto depth = ctx_.queue.Depth();
  if (depth.ok()) ctx_.metrics.Set("imgpipe_queue_depth", {}, static_cast<double>(*depth));
  HttpResponse r;
  r.body = ctx_.metrics.Render();
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  return r;
}

Result<ImageRecord> Api::LiveImage(const std::string& id) {
  auto not_found = MakeError(ErrorKind::kNotFound, "no image with id \"" + id + "\"");
  if (!IsValidImageId(id)) return not_found;
  auto image = ctx_.store.GetImage(ImageId(id));
  if (!image.ok()) return image.error().kind == ErrorKind::kNotFound ? not_found : image.error();
  if (image->status == ImageStatus::kDeleted) {
    return MakeError(ErrorKind::kNotFound, "image " + id + " was deleted");
  }
  auto expired = [&] {
    return MakeError(ErrorKind::kNotFound, "image " + id + " expired at " + FormatRfc3339(image->expires_at) +
                                               " (retention.originals); its metadata stays in the warehouse");
  };
  if (image->status == ImageStatus::kExpired) return expired();
  if (image->expires_at <= ctx_.clock.Now()) {
    // Past its retention, but a legal hold keeps it readable until released.
    IMGPIPE_ASSIGN_OR_RETURN(auto hold, ctx_.store.FindLegalHold(image->id));
    if (!hold) return expired();
  }
  return image;
}

asio::awaitable<HttpResponse> Api::Upload(HttpRequest& req, const ApiKeyRecord& key) {
  auto started = std::chrono::steady_clock::now();
  const Config& cfg = ctx_.config;
  auto refuse = [&](const Error& e) {
    ctx_.metrics.Add("imgpipe_uploads_total", {{"outcome", "refused"}, {"code", std::string(e.Code())}});
    return ErrorResponse(e, req.request_id());
  };
  // Multipart framing and the metadata part add to the file's bytes; allow for them in the declared length.
  uint64_t framing_allowance = cfg.max_metadata_bytes + 64 * 1024;
  if (auto len = req.ContentLength(); len && *len > cfg.max_bytes + framing_allowance) {
    co_return refuse(MakeError(ErrorKind::kTooLarge,
                               "upload is " + std::to_string(*len) + " bytes; the limit is " +
                                   std::to_string(cfg.max_bytes) + " bytes (limits.max_bytes)",
                               "too_large"));
  }
  // Per key, so one client's parallel uploads cannot take every spool and blocking thread; 429 since it is that
  // client's own doing, and the other keys are served meanwhile.
  CallerSlots::Slot upload_slot = upload_slots_ ? upload_slots_->TryTake(key.id) : CallerSlots::Slot();
  if (upload_slots_) {
    if (!upload_slot) {
      ctx_.metrics.Add("imgpipe_rate_limited_total", {{"by", "uploads_per_key"}});
      HttpResponse r = ErrorResponse(MakeError(ErrorKind::kRateLimited,
                                               "API key " + key.id + " already has " +
                                                   std::to_string(cfg.uploads_per_key) +
                                                   " uploads in progress; retry when one has finished "
                                                   "(limits.uploads_per_key)"),
                                     req.request_id());
      r.SetHeader("Retry-After", "1");
      co_return r;
    }
  }
  IntakeRequest ir;
  ir.uploader_key_id = key.id;
  if (auto idem = req.Header("Idempotency-Key"); !idem.empty()) {
    if (!ValidIdempotencyKey(idem)) {
      co_return refuse(MakeError(ErrorKind::kInvalidArgument,
                                 "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces"));
    }
    ir.idempotency_key = std::string(idem);
  }
  if (auto p = req.QueryParam("pipeline"); p && !p->empty()) {
    // "default" is the built-in pipeline; any other name must be a pushed processing script (docs/SCRIPTS.md).
    if (*p != "default") {
      Status known = co_await RunBlocking(ctx_.blocking, [&] { return CheckScriptExists(ctx_.blobs, ctx_.clock, *p); });
      if (!known.ok()) co_return refuse(known.error());
    }
    ir.pipeline = *p;
  }

  std::unique_ptr<Spool> spool = ctx_.intake.BeginSpool();
  Spool& sp = *spool;

  std::string metadata = "{}";
  std::string_view content_type = req.Header("Content-Type");
  std::array<char, kChunk> buf;
  bool multipart = content_type.size() >= 10 && beast::iequals(content_type.substr(0, 10), "multipart/");
  if (multipart) {
    auto boundary = MultipartBoundary(content_type);
    if (!boundary.ok()) co_return refuse(boundary.error());
    UploadParts parts(sp, cfg.max_metadata_bytes);
    MultipartParser parser(*boundary, &parts);
    for (;;) {
      auto n = co_await req.ReadBody(buf);
      if (!n.ok()) co_return refuse(n.error());
      if (*n == 0) break;
      Status fed = parser.Feed(std::string_view(buf.data(), *n));
      if (!fed.ok()) co_return refuse(fed.error());
      if (sp.NeedsFlush()) {
        Status flushed = co_await RunBlocking(ctx_.blocking, [&] { return sp.Flush(); });
        if (!flushed.ok()) co_return refuse(flushed.error());
      }
    }
    Status fin = parser.Finish();
    if (!fin.ok()) co_return refuse(fin.error());
    if (!parts.seen_file()) {
      co_return refuse(MakeError(ErrorKind::kInvalidArgument, "multipart upload has no \"file\" part"));
    }
    if (parts.has_metadata()) {
      auto m = ValidateUserMetadata(parts.metadata(), cfg.max_metadata_bytes);
      if (!m.ok()) co_return refuse(m.error());
      metadata = *m;
    }
  } else {
    if (auto h = req.Header("X-Imgpipe-Metadata"); !h.empty()) {
      auto m = ValidateUserMetadata(h, cfg.max_metadata_bytes);
      if (!m.ok()) co_return refuse(m.error());
      metadata = *m;
    }
    for (;;) {
      auto n = co_await req.ReadBody(buf);
      if (!n.ok()) co_return refuse(n.error());
      if (*n == 0) break;
      Status appended = sp.Append(std::string_view(buf.data(), *n));
      if (!appended.ok()) co_return refuse(appended.error());
      if (sp.NeedsFlush()) {
        Status flushed = co_await RunBlocking(ctx_.blocking, [&] { return sp.Flush(); });
        if (!flushed.ok()) co_return refuse(flushed.error());
      }
    }
  }
  ctx_.metrics.Observe("imgpipe_stage_duration_seconds", {{"stage", "receive"}}, SecondsSince(started));
  ir.metadata_json = metadata;

  auto accepted = co_await RunBlocking(ctx_.blocking, [&]() -> Result<IntakeResult> {
    IMGPIPE_TRY(sp.Finish());
    ir.request_hash = Sha256Hex(sp.sha256() + "\n" + metadata);
    return ctx_.intake.Accept(sp, ir);
  });
  if (!accepted.ok()) {
    if (accepted.error().kind == ErrorKind::kInternal || accepted.error().kind == ErrorKind::kUnavailable) {
      LogError("upload failed", {{"request_id", req.request_id()}, {"error", accepted.error().message}});
    }
    co_return refuse(accepted.error());
  }
  HttpResponse r;
  r.status = static_cast<http::status>(accepted->status_code);
  r.body = accepted->response_json;
  r.SetHeader("Location", "/v1/images/" + accepted->image.id.value());
  if (accepted->replayed) {
    r.SetHeader("Idempotent-Replayed", "true");
  } else {
    ctx_.metrics.Add("imgpipe_uploads_total", {{"outcome", "accepted"}, {"code", "created"}});
  }
  co_return r;
}

HttpResponse Api::GetImage(HttpRequest& req, const std::string& id) {
  auto image = LiveImage(id);
  if (!image.ok()) return ErrorResponse(image.error(), req.request_id());
  auto renditions = ctx_.store.ListRenditions(image->id);
  if (!renditions.ok()) return ErrorResponse(renditions.error(), req.request_id());
  auto hold = ctx_.store.FindLegalHold(image->id);
  if (!hold.ok()) return ErrorResponse(hold.error(), req.request_id());
  json::object body = ImageToJson(*image, *renditions);
  body["legal_hold"] = *hold ? json::value(HoldToJson(**hold)) : json::value(nullptr);
  return JsonResponse(http::status::ok, std::move(body));
}

HttpResponse Api::ListImages(HttpRequest& req) {
  auto filter = ParseImageListQuery(req.query());
  if (!filter.ok()) return ErrorResponse(filter.error(), req.request_id());
  const ImageFilter& f = *filter;
  auto page = ctx_.store.ListImages(f);
  if (!page.ok()) return ErrorResponse(page.error(), req.request_id());
  json::array items;
  TimePoint now = ctx_.clock.Now();
  bool wants_gone = f.status && (*f.status == ImageStatus::kExpired || *f.status == ImageStatus::kDeleted);
  for (const ImageRecord& image : page->items) {
    // Read-time expiry: an image past its retention is listed only when expired images are asked for.
    bool gone = image.status == ImageStatus::kDeleted || image.status == ImageStatus::kExpired ||
                image.expires_at <= now;
    if (gone && !wants_gone) continue;
    auto renditions = ctx_.store.ListRenditions(image.id);
    items.push_back(ImageToJson(image, renditions.ok() ? *renditions : std::vector<RenditionRecord>{}));
  }
  json::object body;
  body["items"] = std::move(items);
  body["next_cursor"] = page->next_cursor.empty() ? json::value(nullptr) : json::value(page->next_cursor);
  return JsonResponse(http::status::ok, body);
}

HttpResponse Api::GetBlob(HttpRequest& req, const std::string& id, const std::string* rendition) {
  auto image = LiveImage(id);
  if (!image.ok()) return ErrorResponse(image.error(), req.request_id());
  std::string_view container = kOriginals;
  std::string key = image->original_key;
  std::string content_type = image->content_type;
  std::string etag;
  if (rendition) {
    auto renditions = ctx_.store.ListRenditions(image->id);
    if (!renditions.ok()) return ErrorResponse(renditions.error(), req.request_id());
    const RenditionRecord* found = nullptr;
    for (const auto& r : *renditions) {
      if (r.name == *rendition) found = &r;
    }
    if (!found) {
      std::string why = image->status == ImageStatus::kProcessed
                            ? "image " + id + " has no rendition \"" + *rendition + "\""
                            : "image " + id + " is " + std::string(ImageStatusName(image->status)) +
                                  "; rendition \"" + *rendition + "\" is not made yet";
      return ErrorResponse(MakeError(ErrorKind::kNotFound, why), req.request_id());
    }
    container = kRenditions;
    key = found->key;
    content_type = found->content_type;
  }
  auto info = ctx_.blobs.Stat(container, key);
  if (!info.ok()) {
    if (info.error().kind == ErrorKind::kNotFound) {
      return ErrorResponse(MakeError(ErrorKind::kNotFound, "the bytes of image " + id + " are gone"),
                              req.request_id());
    }
    return ErrorResponse(info.error(), req.request_id());
  }
  etag = "\"" + (rendition ? info->etag : image->sha256) + "\"";
  HttpResponse r;
  r.SetHeader("ETag", etag);
  r.SetHeader("Accept-Ranges", "bytes");
  r.SetHeader("Cache-Control", "private, max-age=3600");
  if (auto inm = req.Header("If-None-Match"); !inm.empty() && (inm == etag || inm == "*" ||
                                                               inm.find(etag) != std::string_view::npos)) {
    r.status = http::status::not_modified;
    return r;
  }
  auto range = ParseRangeHeader(req.Header("Range"), info->size);
  if (!range.ok()) {
    HttpResponse e = ErrorResponse(range.error(), req.request_id());
    e.SetHeader("Content-Range", "bytes */" + std::to_string(info->size));
    return e;
  }
  auto reader = ctx_.blobs.OpenRead(container, key, *range);
  if (!reader.ok()) return ErrorResponse(reader.error(), req.request_id());
  r.content_type = content_type;
  r.stream = std::move(*reader);
  if (*range) {
    const ByteRange& br = **range;
    r.status = http::status::partial_content;
    r.stream_length = br.length;
    r.SetHeader("Content-Range", "bytes " + std::to_string(br.offset) + "-" +
                                     std::to_string(br.offset + br.length - 1) + "/" + std::to_string(info->size));
  } else {
    r.stream_length = info->size;
  }
  return r;
}

asio::awaitable<HttpResponse> Api::DeleteImage(HttpRequest& req, const std::string& id, const ApiKeyRecord& key) {
  auto result = co_await RunBlocking(ctx_.blocking, [&]() -> Status {
    IMGPIPE_ASSIGN_OR_RETURN(ImageRecord image, LiveImage(id));
    // kConflict (409) while the image is on legal hold.
    IMGPIPE_TRY(ctx_.retention.PurgeImage(image.id, "deleted", key.id));
    return ctx_.store.MarkDeleted(image.id, ctx_.clock.Now());
  });
  if (!result.ok()) co_return ErrorResponse(result.error(), req.request_id());
  LogInfo("image deleted", {{"image_id", id}, {"request_id", req.request_id()}});
  HttpResponse r;
  r.status = http::status::no_content;
  co_return r;
}

asio::awaitable<HttpResponse> Api::Hold(HttpRequest& req, const std::string& id, const ApiKeyRecord& key) {
  std::string reason;
  if (req.method() == http::verb::put) {
    // {"reason": "..."}: why, for the audit; required, so a hold is never anonymous.
    auto body = co_await req.ReadAll(16 * 1024);
    if (!body.ok()) co_return ErrorResponse(body.error(), req.request_id());
    json::error_code ec;
    json::value v = json::parse(*body, ec);
    const json::value* r = !ec && v.is_object() ? v.as_object().if_contains("reason") : nullptr;
    if (!r || !r->is_string() || r->as_string().empty() || r->as_string().size() > 1000) {
      co_return ErrorResponse(MakeError(ErrorKind::kInvalidArgument,
                                        "body must be a JSON object {\"reason\": \"...\"} with a reason of 1 to 1000 "
                                        "characters"),
                              req.request_id());
    }
    reason = std::string(r->as_string());
  }
  auto result = co_await RunBlocking(ctx_.blocking, [&]() -> Result<HttpResponse> {
    auto unknown = MakeError(ErrorKind::kNotFound, "no image with id \"" + id + "\"");
    if (!IsValidImageId(id)) return unknown;
    ImageId image_id(id);
    if (req.method() == http::verb::put) {
      IMGPIPE_ASSIGN_OR_RETURN(LegalHold hold, ctx_.store.SetLegalHold(image_id, reason, key.id, ctx_.clock.Now()));
      LogInfo("legal hold set", {{"image_id", id}, {"key_id", key.id}, {"reason", hold.reason}});
      return JsonResponse(http::status::ok, HoldToJson(hold));
    }
    if (req.method() == http::verb::delete_) {
      IMGPIPE_TRY(ctx_.store.ReleaseLegalHold(image_id, key.id, ctx_.clock.Now()));
      LogInfo("legal hold released", {{"image_id", id}, {"key_id", key.id}});
      HttpResponse r;
      r.status = http::status::no_content;
      return r;
    }
    IMGPIPE_ASSIGN_OR_RETURN(auto hold, ctx_.store.FindLegalHold(image_id));
    if (!hold) return MakeError(ErrorKind::kNotFound, "image " + id + " is not on legal hold");
    return JsonResponse(http::status::ok, HoldToJson(*hold));
  });
  if (!result.ok()) co_return ErrorResponse(result.error(), req.request_id());
  co_return std::move(*result);
}

HttpResponse Api::ListAudit(HttpRequest& req) {
  auto parsed = ParseAuditQuery(req.query());
  if (!parsed.ok()) return ErrorResponse(parsed.error(), req.request_id());
  const AuditFilter& filter = *parsed;
  auto records = ctx_.audit->Read(filter);
  if (!records.ok()) return ErrorResponse(records.error(), req.request_id());
  json::array items;
  for (const AuditRecord& rec : *records) {
    items.push_back(json::object{{"seq", rec.seq},
                                 {"at", FormatRfc3339(rec.event.at)},
                                 {"actor", rec.event.actor},
                                 {"action", rec.event.action},
                                 {"target", rec.event.target},
                                 {"remote", rec.event.remote},
                                 {"outcome", rec.event.outcome},
                                 {"details", rec.event.details},
                                 {"hash", rec.hash}});
  }
  return JsonResponse(http::status::ok, json::object{{"items", std::move(items)}});
}

HttpResponse Api::ListHolds(HttpRequest& req) {
  auto holds = ctx_.store.ListLegalHolds();
  if (!holds.ok()) return ErrorResponse(holds.error(), req.request_id());
  json::array items;
  for (const LegalHold& hold : *holds) items.push_back(HoldToJson(hold));
  return JsonResponse(http::status::ok, json::object{{"items", std::move(items)}});
}

asio::awaitable<HttpResponse> Api::Query(HttpRequest& req) {
  auto body = co_await req.ReadAll(64 * 1024);
  if (!body.ok()) co_return ErrorResponse(body.error(), req.request_id());
  json::error_code ec;
  json::value v = json::parse(*body, ec);
  if (ec || !v.is_object() || !v.as_object().contains("sql") || !v.as_object().at("sql").is_string()) {
    co_return ErrorResponse(MakeError(ErrorKind::kInvalidArgument,
                                      "body must be a JSON object {\"sql\": \"...\", \"params\": [...], "
                                      "\"format\": \"json\"|\"csv\"}"),
                            req.request_id());
  }
  const json::object& o = v.as_object();
  std::string sql(o.at("sql").as_string());
  // Every answer from here on carries the statement into the audit record.
  auto audited = [&](HttpResponse r) {
    r.audit_details.emplace_back("sql", sql);
    return r;
  };
  std::vector<std::string> params;
  if (o.contains("params")) {
    if (!o.at("params").is_array()) {
      co_return audited(ErrorResponse(MakeError(ErrorKind::kInvalidArgument, "params must be an array"),
                                      req.request_id()));
    }
    for (const auto& p : o.at("params").as_array()) params.push_back(json::serialize(p));
  }
  std::string format = o.contains("format") && o.at("format").is_string() ? std::string(o.at("format").as_string())
                                                                           : "json";
  if (format != "json" && format != "csv") {
    co_return audited(ErrorResponse(MakeError(ErrorKind::kInvalidArgument, "format must be \"json\" or \"csv\""),
                                    req.request_id()));
  }
  LogInfo("analyst query", {{"request_id", req.request_id()}, {"sql", sql}});
  auto result = co_await RunBlocking(ctx_.blocking, [&] {
    return ctx_.store.Query(sql, params, 100000, std::chrono::milliseconds(10000));
  });
  if (!result.ok()) co_return audited(ErrorResponse(result.error(), req.request_id()));
  HttpResponse r;
  r.audit_details.emplace_back("sql", sql);
  if (format == "csv") {
    r.body = QueryResultCsv(*result, "\r\n");
    r.content_type = "text/csv; charset=utf-8";
    if (result->truncated) r.SetHeader("X-Imgpipe-Truncated", "true");
    co_return r;
  }
  std::string out = "{\"columns\":" + json::serialize(json::value_from(result->columns)) + ",\"rows\":[";
  for (size_t i = 0; i < result->rows_json.size(); ++i) {
    if (i) out += ",";
    out += "[";
    for (size_t j = 0; j < result->rows_json[i].size(); ++j) {
      if (j) out += ",";
      out += result->rows_json[i][j];
    }
    out += "]";
  }
  out += "],\"truncated\":";
  out += result->truncated ? "true}" : "false}";
  r.body = std::move(out);
  co_return r;
}

asio::awaitable<HttpResponse> Api::Scripts(HttpRequest& req, std::string name) {
  const http::verb method = req.header().method();
  auto respond = [&](http::status ok, const Result<json::value>& out) {
    return out.ok() ? JsonResponse(ok, out.value()) : ErrorResponse(out.error(), req.request_id());
  };
  if (name.empty() && method == http::verb::post) {
    auto body = co_await req.ReadAll(4 * ScriptStore::kMaxBytes);
    if (!body.ok()) co_return ErrorResponse(body.error(), req.request_id());
    const std::string text = std::move(body).value();
    co_return co_await RunBlocking(ctx_.blocking, [&] {
      return respond(http::status::created,
                     PushScriptJson(ctx_.blobs, ctx_.clock, text, ExecSandboxOptionsFrom(ctx_.config)));
    });
  }
  if (method == http::verb::get) {
    co_return co_await RunBlocking(ctx_.blocking, [&] {
      return respond(http::status::ok, name.empty() ? ListScriptsJson(ctx_.blobs, ctx_.clock)
                                                    : ShowScriptJson(ctx_.blobs, ctx_.clock, name));
    });
  }
  const std::string allow = name.empty() ? "GET, POST" : "GET";
  HttpResponse r = ErrorResponse(MakeError(ErrorKind::kInvalidArgument,
                                           std::string(req.header().method_string()) + " is not allowed here; use " +
                                               allow,
                                           "method_not_allowed"),
                                 req.request_id());
  r.status = http::status::method_not_allowed;
  r.SetHeader("Allow", allow);
  co_return r;
}

asio::awaitable<HttpResponse> Api::CreateKey(HttpRequest& req) {
  auto body = co_await req.ReadAll(8 * 1024);
  if (!body.ok()) co_return ErrorResponse(body.error(), req.request_id());
  json::error_code ec;
  json::value v = json::parse(*body, ec);
  Role role;
  if (ec || !v.is_object() || !v.as_object().contains("role") || !v.as_object().at("role").is_string() ||
      !ParseRole(v.as_object().at("role").as_string(), &role)) {
    co_return ErrorResponse(MakeError(ErrorKind::kInvalidArgument,
                                      "body must be {\"role\": \"admin\"|\"uploader\"|\"reader\"|\"analyst\", "
                                      "\"name\": \"...\"}"),
                            req.request_id());
  }
  std::string name;
  if (auto* n = v.as_object().if_contains("name"); n && n->is_string()) name = std::string(n->as_string());
  auto created = co_await RunBlocking(ctx_.blocking, [&] { return ctx_.keys.Create(role, name); });
  if (!created.ok()) co_return ErrorResponse(created.error(), req.request_id());
  LogInfo("api key created", {{"key_id", created->record.id}, {"role", RoleName(role)}});
  co_return JsonResponse(http::status::created,
                         json::object{{"id", created->record.id},
                                      {"key", created->secret},
                                      {"role", RoleName(role)},
                                      {"name", created->record.name},
                                      {"created_at", FormatRfc3339(created->record.created_at)}});
}

asio::awaitable<HttpResponse> Api::ListKeys(HttpRequest& req) {
  auto keys = co_await RunBlocking(ctx_.blocking, [&] { return ctx_.keys.List(); });
  if (!keys.ok()) co_return ErrorResponse(keys.error(), req.request_id());
  json::array items;
  for (const auto& k : *keys) {
    items.push_back(json::object{{"id", k.id},
                                 {"role", RoleName(k.role)},
                                 {"name", k.name},
                                 {"created_at", FormatRfc3339(k.created_at)},
                                 {"revoked_at", k.revoked_at ? json::value(FormatRfc3339(*k.revoked_at))
                                                             : json::value(nullptr)}});
  }
  co_return JsonResponse(http::status::ok, json::object{{"items", std::move(items)}});
}

asio::awaitable<HttpResponse> Api::RevokeKey(HttpRequest& req, const std::string& id) {
  auto revoked = co_await RunBlocking(ctx_.blocking, [&] { return ctx_.keys.Revoke(id); });
  if (!revoked.ok()) co_return ErrorResponse(revoked.error(), req.request_id());
  LogInfo("api key revoked", {{"key_id", id}});
  HttpResponse r;
  r.status = http::status::no_content;
  co_return r;
}

}  // namespace imgpipe
