#include "ingest/intake.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "core/blob_keys.hpp"
#include "core/ids.hpp"
#include "core/log.hpp"
#include "core/metrics.hpp"
#include "ingest/routing.hpp"

namespace imgpipe {

namespace {

constexpr size_t kHeadBytes = 64;

double SecondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

Spool::Spool(std::string path, const ImageLimits& limits)
    : path_(std::move(path)), limits_(limits), sha_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(sha_, EVP_sha256(), nullptr);
}

Spool::~Spool() {
  if (fd_ >= 0) ::close(fd_);
  if (file_created_ && !moved_) ::unlink(path_.c_str());
  EVP_MD_CTX_free(sha_);
}

Status Spool::CheckHead() {
  head_checked_ = true;
  return CheckFormatAllowed(head_, limits_);
}

Status Spool::Append(std::string_view data) {
  if (bytes_ + data.size() > limits_.max_bytes) {
    return MakeError(ErrorKind::kTooLarge,
                     "upload is larger than " + std::to_string(limits_.max_bytes) + " bytes (limits.max_bytes)",
                     "too_large");
  }
  if (!head_checked_) {
    head_.append(data.substr(0, std::min(data.size(), kHeadBytes - head_.size())));
    if (head_.size() >= kHeadBytes) IMGPIPE_TRY(CheckHead());
  }
  EVP_DigestUpdate(sha_, data.data(), data.size());
  pending_.append(data);
  bytes_ += data.size();
  return Ok();
}

Status Spool::Flush() {
  if (fd_ < 0) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd_ < 0) {
      return MakeError(ErrorKind::kUnavailable, "cannot create a spool file " + path_ + ": " + std::strerror(errno) +
                                                    " (storage.data_dir)");
    }
    file_created_ = true;
  }
  const char* p = pending_.data();
  size_t left = pending_.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return MakeError(ErrorKind::kUnavailable, std::string("cannot write the upload spool file: ") +
                                                    std::strerror(errno) + "; is the data folder's disk full?");
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  pending_.clear();
  return Ok();
}

Status Spool::Finish() {
  if (!sha256_.empty()) return Ok();  // finished already
  if (bytes_ == 0) return MakeError(ErrorKind::kInvalidArgument, "the upload is empty; send the image bytes as the body");
  if (!head_checked_) IMGPIPE_TRY(CheckHead());
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!file_created_) {
    // Never flushed: at most kMemoryBytes plus one chunk, kept in memory for validation and storing.
    EVP_DigestFinal_ex(sha_, md, &len);
    sha256_ = HexEncode(std::string_view(reinterpret_cast<char*>(md), len));
    return Ok();
  }
  IMGPIPE_TRY(Flush());
  std::string().swap(pending_);
  EVP_DigestFinal_ex(sha_, md, &len);
  sha256_ = HexEncode(std::string_view(reinterpret_cast<char*>(md), len));
  if (::close(fd_) != 0) {
    fd_ = -1;
    return MakeError(ErrorKind::kUnavailable, std::string("cannot close the spool file: ") + std::strerror(errno));
  }
  fd_ = -1;
  return Ok();
}

Intake::Intake(IntakeOptions options, BlobStore& blobs, MetadataStore& store, JobQueue& queue, const Clock& clock,
               Metrics* metrics, ResponseRenderer renderer)
    : options_(std::move(options)), blobs_(blobs), store_(store), queue_(queue), clock_(clock), metrics_(metrics),
      renderer_(std::move(renderer)) {
  std::error_code ec;
  std::filesystem::create_directories(options_.spool_dir, ec);
}

std::unique_ptr<Spool> Intake::BeginSpool() {
  return std::unique_ptr<Spool>(new Spool(options_.spool_dir + "/upload-" + HexEncode(RandomBytes(12)),
                                          options_.limits));
}

Result<IntakeResult> Intake::ReplayOrConflict(const IdempotencyRecord& rec, const IntakeRequest& request) {
  if (rec.request_hash != request.request_hash) {
    return MakeError(ErrorKind::kConflict,
                     "Idempotency-Key \"" + rec.key + "\" was already used for a different request; use a new key "
                     "for a new upload");
  }
  IMGPIPE_ASSIGN_OR_RETURN(ImageRecord image, store_.GetImage(rec.image_id));
  IntakeResult out;
  out.image = std::move(image);
  out.replayed = true;
  out.status_code = rec.status_code;
  out.response_json = rec.response_json;
  return out;
}

Result<std::optional<IntakeResult>> Intake::FindReplay(const IntakeRequest& request) {
  if (!request.idempotency_key) return std::optional<IntakeResult>();
  IMGPIPE_ASSIGN_OR_RETURN(auto rec, store_.FindIdempotency(request.uploader_key_id, *request.idempotency_key));
  if (!rec) return std::optional<IntakeResult>();
  IMGPIPE_ASSIGN_OR_RETURN(IntakeResult replay, ReplayOrConflict(*rec, request));
  return std::optional<IntakeResult>(std::move(replay));
}

Result<ImageRecord> Intake::Validate(Spool& spool, const IntakeRequest& request) {
  IMGPIPE_TRY(spool.Finish());
  auto t0 = std::chrono::steady_clock::now();
  auto facts = spool.in_memory() ? ValidateImageBuffer(spool.memory(), options_.limits)
                                 : ValidateImageFile(spool.path(), options_.limits);
  if (metrics_) metrics_->Observe("imgpipe_stage_duration_seconds", {{"stage", "validate"}}, SecondsSince(t0));
  if (!facts.ok()) return facts.error();

  TimePoint now = clock_.Now();
  ImageRecord image;
  image.id = request.id ? *request.id : NewImageId(now);
  image.sha256 = spool.sha256();
  image.source = request.source;
  image.source_ref = request.source_ref;
  image.uploader_key_id = request.uploader_key_id;
  image.received_at = now;
  image.bytes = spool.bytes();
  image.format = std::string(FormatName(facts->format));
  image.content_type = std::string(FormatContentType(facts->format));
  image.width = facts->width;
  image.height = facts->height;
  image.frames = facts->frames;
  image.has_alpha = facts->has_alpha;
  image.colour_space = facts->colour_space;
  image.has_icc = facts->has_icc;
  image.exif = facts->exif;
  image.user_metadata_json = request.metadata_json;
  if (request.pipeline.empty()) {
    const RouteFacts facts{image.source, request.topic, image.format, image.bytes,
                           static_cast<uint64_t>(image.width) * static_cast<uint64_t>(image.height),
                           image.user_metadata_json};
    image.pipeline = RouteScript(options_.routes, facts, options_.default_pipeline);
  } else {
    image.pipeline = request.pipeline;
  }
  image.original_key = OriginalBlobKey(image.id);
  image.status = ImageStatus::kQueued;
  image.expires_at = options_.retention_originals.count() > 0
                         ? request.retention_start.value_or(now) + options_.retention_originals
                         : TimePoint::max() - std::chrono::hours(24 * 365 * 100);
  return image;
}

Status Intake::WriteJournal(const Spool& spool, const std::string& journal) {
  // A spool file gets a second name (no data written); an image in memory, an empty file. Either way only the name
  // matters to RecoverSpool().
  int rc = 0;
  if (spool.in_memory()) {
    int fd = ::open(journal.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) ::close(fd);
    rc = fd >= 0 ? 0 : -1;
  } else {
    rc = ::link(spool.path().c_str(), journal.c_str());
  }
  if (rc != 0) {
    return MakeError(ErrorKind::kUnavailable, "cannot stage the image in " + options_.spool_dir + ": " +
                                                  std::strerror(errno) + " (storage.data_dir)");
  }
  return Ok();
}

Status Intake::StoreOriginal(Spool& spool, const std::string& key, DeferredSync* deferred) {
  if (spool.in_memory()) {
    IMGPIPE_TRY(blobs_.Put(kOriginals, key, spool.memory(), deferred));
    return Ok();
  }
  IMGPIPE_TRY(deferred ? blobs_.PutFileDeferred(kOriginals, key, spool.path(), *deferred)
                       : blobs_.PutFile(kOriginals, key, spool.path()));
  // The local store renames the spool file into place, so it belongs to the store now; a remote or encrypting store
  // copied it, and the spool removes its file as for any other upload.
  if (blobs_.LocalPath(kOriginals, key)) spool.moved_ = true;
  return Ok();
}

Result<StagedImage> Intake::Stage(Spool& spool, const IntakeRequest& request) {
  if (!request.id || request.idempotency_key) {
    return MakeError(ErrorKind::kInternal, "Intake::Stage needs a deterministic id and no idempotency key");
  }
  IMGPIPE_ASSIGN_OR_RETURN(ImageRecord image, Validate(spool, request));
  auto t0 = std::chrono::steady_clock::now();
  StagedImage staged;
  staged.journal_ = options_.spool_dir + "/" + image.id.value() + ".staged";
  if (Status journal = WriteJournal(spool, staged.journal_); !journal.ok()) {
    staged.journal_.clear();  // not ours (another delivery of the same record holds it), or never made
    return journal.error();
  }
  // The same object for every delivery of the record (the id is deterministic): never deleted here.
  IMGPIPE_TRY(StoreOriginal(spool, image.original_key, &staged.sync_));
  if (metrics_) metrics_->Observe("imgpipe_stage_duration_seconds", {{"stage", "store"}}, SecondsSince(t0));
  staged.image = std::move(image);
  return staged;
}

Result<std::vector<bool>> Intake::CommitStaged(const std::vector<StagedImage*>& staged) {
  std::vector<ImageRecord> images;
  images.reserve(staged.size());
  DeferredSync folders;
  for (const StagedImage* s : staged) {
    images.push_back(s->image);
    folders.Merge(s->sync_);
  }
  auto t0 = std::chrono::steady_clock::now();
  IMGPIPE_TRY(folders.Sync());
  IMGPIPE_ASSIGN_OR_RETURN(std::vector<bool> fresh, store_.InsertImagesIfAbsent(images));
  if (metrics_) metrics_->Observe("imgpipe_stage_duration_seconds", {{"stage", "commit"}}, SecondsSince(t0));
  bool any = false;
  for (size_t i = 0; i < fresh.size(); ++i) {
    if (!fresh[i]) continue;
    any = true;
    if (metrics_) metrics_->Add("imgpipe_upload_bytes_total", {}, static_cast<double>(images[i].bytes));
  }
  if (any) queue_.Wake();
  return fresh;
}

StagedImage::~StagedImage() {
  if (!journal_.empty()) ::unlink(journal_.c_str());
}

StagedImage::StagedImage(StagedImage&& other) noexcept
    : image(std::move(other.image)),
      journal_(std::exchange(other.journal_, std::string())),
      sync_(std::move(other.sync_)) {}

StagedImage& StagedImage::operator=(StagedImage&& other) noexcept {
  if (this != &other) {
    if (!journal_.empty()) ::unlink(journal_.c_str());
    image = std::move(other.image);
    journal_ = std::exchange(other.journal_, std::string());
    sync_ = std::move(other.sync_);
  }
  return *this;
}

Result<IntakeResult> Intake::Accept(Spool& spool, const IntakeRequest& request) {
  IMGPIPE_ASSIGN_OR_RETURN(ImageRecord image, Validate(spool, request));
  // A retry that raced its first attempt: answer from the first one.
  if (request.idempotency_key) {
    IMGPIPE_ASSIGN_OR_RETURN(auto replay, FindReplay(request));
    if (replay) return std::move(*replay);
  }
  const TimePoint now = image.received_at;

  auto t1 = std::chrono::steady_clock::now();
  // The intent journal: a second name for the spool file, by image id, that lives until the row is committed. If the
  // process dies in between, RecoverSpool() finds it and removes the original that never got its row.
  const std::string staged = options_.spool_dir + "/" + image.id.value() + ".staged";
  IMGPIPE_TRY(WriteJournal(spool, staged));
  struct StagedName {
    const std::string& path;
    ~StagedName() { ::unlink(path.c_str()); }
  } staged_guard{staged};
  IMGPIPE_TRY(StoreOriginal(spool, image.original_key));

  std::optional<IdempotencyRecord> idem;
  IntakeResult out;
  out.response_json = renderer_ ? renderer_(image) : std::string();
  if (request.idempotency_key) {
    IdempotencyRecord rec;
    rec.api_key_id = request.uploader_key_id;
    rec.key = *request.idempotency_key;
    rec.request_hash = request.request_hash;
    rec.status_code = 201;
    rec.response_json = out.response_json;
    rec.image_id = image.id;
    rec.created_at = now;
    idem = std::move(rec);
  }
  if (request.id && !request.idempotency_key) {
    // A deterministic id (a redelivered stream record): the object just written is the same one, so never delete
    // it here; a row that exists already means this delivery is a duplicate.
    IMGPIPE_ASSIGN_OR_RETURN(bool fresh, store_.InsertImageIfAbsent(image));
    if (metrics_) metrics_->Observe("imgpipe_stage_duration_seconds", {{"stage", "store"}}, SecondsSince(t1));
    if (!fresh) {
      IMGPIPE_ASSIGN_OR_RETURN(ImageRecord existing, store_.GetImage(image.id));
      out.image = std::move(existing);
      out.replayed = true;
      return out;
    }
    queue_.Wake();
    out.image = std::move(image);
    return out;
  }
  Status inserted = store_.InsertImage(image, idem);
  if (metrics_) metrics_->Observe("imgpipe_stage_duration_seconds", {{"stage", "store"}}, SecondsSince(t1));
  if (!inserted.ok()) {
    // Nothing acknowledged: take the blob back so a refused request leaves nothing stored.
    Status removed = blobs_.Delete(kOriginals, image.original_key);
    if (!removed.ok()) {
      LogWarn("could not remove the original of a failed insert",
              {{"image_id", image.id.value()}, {"error", removed.error().message}});
    }
    if (inserted.error().kind == ErrorKind::kConflict && request.idempotency_key) {
      IMGPIPE_ASSIGN_OR_RETURN(auto replay, FindReplay(request));
      if (replay) return std::move(*replay);
    }
    return inserted.error();
  }
  queue_.Wake();
  if (metrics_) metrics_->Add("imgpipe_upload_bytes_total", {}, static_cast<double>(image.bytes));
  out.image = std::move(image);
  return out;
}

Result<int> Intake::RecoverSpool() {
  int removed = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(options_.spool_dir, ec)) {
    const std::string name = entry.path().filename().string();
    constexpr std::string_view kStaged = ".staged";
    if (name.size() > kStaged.size() && name.ends_with(kStaged)) {
      std::string id = name.substr(0, name.size() - kStaged.size());
      if (IsValidImageId(id)) {
        auto row = store_.GetImage(ImageId(id));
        if (!row.ok() && row.error().kind != ErrorKind::kNotFound) return row.error();
        if (!row.ok()) {
          // Stored but never committed, so never acknowledged: take the original back.
          IMGPIPE_TRY(blobs_.Delete(kOriginals, OriginalBlobKey(ImageId(id))));
          ++removed;
          LogInfo("removed the original of an upload interrupted before its commit", {{"image_id", id}});
        }
      }
    }
    // Everything else in the spool belonged to requests of a process that is gone.
    std::filesystem::remove(entry.path(), ec);
  }
  return removed;
}

}  // namespace imgpipe
