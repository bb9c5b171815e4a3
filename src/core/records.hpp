#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.hpp"
#include "core/ids.hpp"

namespace imgpipe {

//! Lifecycle of an image row. Stored as the lowercase name (ImageStatusName).
enum class ImageStatus { kQueued, kProcessing, kProcessed, kFailed, kExpired, kDeleted };
std::string_view ImageStatusName(ImageStatus s);
bool ParseImageStatus(std::string_view text, ImageStatus* out);

//! Camera metadata read from EXIF. Every field is optional: most images carry only some.
struct ExifInfo {
  std::optional<std::string> make;
  std::optional<std::string> model;
  //! DateTimeOriginal (or DateTime) as written by the camera, "YYYY-MM-DDTHH:MM:SS" (no zone: EXIF 2.2 has none),
  //! with the offset appended ("+02:00") when OffsetTimeOriginal is present.
  std::optional<std::string> taken_at;
  std::optional<double> gps_lat;   //!< degrees, south negative
  std::optional<double> gps_lon;   //!< degrees, west negative
  std::optional<double> gps_alt;   //!< metres above sea level
  std::optional<int> orientation;  //!< 1..8 as in EXIF
  std::optional<std::string> lens_model;
  std::optional<std::string> software;
};

struct ImageRecord {
  ImageId id;
  std::string sha256;           //!< hex of the original's bytes
  std::string source = "upload";  //!< "upload" or a stream name
  std::string source_ref;       //!< the client's or stream's reference, e.g. "topic/partition/offset"
  std::string uploader_key_id;  //!< id of the API key that uploaded it
  TimePoint received_at;
  uint64_t bytes = 0;
  std::string format;           //!< "jpeg", "png", "webp", "gif", "tiff", "heic", "avif", ...
  std::string content_type;     //!< media type served for the original, from the format
  int width = 0;
  int height = 0;
  int frames = 1;
  bool has_alpha = false;
  std::string colour_space;     //!< libvips interpretation, e.g. "srgb", "cmyk", "b-w"
  bool has_icc = false;
  ExifInfo exif;
  std::string user_metadata_json = "{}";  //!< the client's key/values, a JSON object
  std::string pipeline = "default";
  std::string original_key;     //!< key in the originals container
  ImageStatus status = ImageStatus::kQueued;
  std::optional<TimePoint> processed_at;
  TimePoint expires_at;
  std::optional<TimePoint> expired_at;
  std::optional<std::string> error;        //!< last processing error, for failed images
  std::optional<uint64_t> phash;           //!< 64-bit perceptual hash of the upright image
  std::optional<std::string> dominant_colour;  //!< "#rrggbb"
  //! Processing attempts started since the image was (re)queued (MetadataStore::MarkProcessing); read-only here:
  //! InsertImage ignores it.
  int processing_starts = 0;
};

struct RenditionRecord {
  ImageId image_id;
  std::string name;      //!< from the pipeline config, e.g. "thumb-256"
  std::string key;       //!< key in the renditions container
  std::string format;    //!< "jpeg", "webp", "png", "avif"
  std::string content_type;
  int width = 0;
  int height = 0;
  uint64_t bytes = 0;
  TimePoint created_at;
};

//! One attempt at processing one image.
struct ProcessingRun {
  ImageId image_id;
  std::string pipeline;
  int attempt = 1;
  TimePoint started_at;
  TimePoint finished_at;
  std::string status;    //!< "processed" | "failed" | "retrying"
  std::optional<std::string> error;
  double decode_seconds = 0;   //!< time to load and shrink
  double encode_seconds = 0;   //!< time to write all renditions
  double total_seconds = 0;
  std::string script_name;     //!< the processing script that ran; empty for the built-in default pipeline
  std::string script_version;  //!< its version (SHA-256 hex); empty for the built-in default pipeline
};

//! A fact a processing script stated about an image (docs/SCRIPTS.md); analysts query them in the image_labels table.
struct ImageLabel {
  std::string key;
  std::string value;
  std::optional<double> number;
};

//! An image kept past its retention for a legal reason: retention and DELETE leave it alone until it is released.
struct LegalHold {
  ImageId image_id;
  std::string reason;
  std::string held_by;     //!< API key id, or "cli"
  TimePoint held_at;
};

//! One deletion of blobs, for audit: what went, when and why. Recorded before the blobs are deleted (started_at) and
//! completed after (finished_at, objects); an unfinished one is a purge in progress, or one a crash interrupted that
//! the next sweep redoes.
struct PurgeRecord {
  int64_t id = 0;
  std::optional<ImageId> image_id;  //!< empty for leftovers without a row (a day folder past retention)
  std::string what;                 //!< "image" (its original and renditions), or "container/prefix" of leftovers
  std::string reason;               //!< "retention", "deleted", "leftovers past retention"
  std::string actor;                //!< "retention", or the API key id that deleted it
  TimePoint started_at;
  std::optional<TimePoint> finished_at;
  int64_t objects = 0;
};

//! A stored answer for an Idempotency-Key, replayed on retries with the same key by the same API key.
struct IdempotencyRecord {
  std::string api_key_id;
  std::string key;              //!< the client's Idempotency-Key header
  std::string request_hash;     //!< hex sha256 of the body, so a reuse with a different body is a conflict
  int status_code = 201;
  std::string response_json;
  ImageId image_id;
  TimePoint created_at;
};

enum class Role { kAdmin, kUploader, kReader, kAnalyst };
std::string_view RoleName(Role r);
bool ParseRole(std::string_view text, Role* out);

struct ApiKeyRecord {
  std::string id;           //!< public id, e.g. "k_01HX..."; shown in lists and audit, not secret
  std::string secret_hash;  //!< hex sha256 of the secret; the secret itself is never stored
  Role role = Role::kReader;
  std::string name;
  TimePoint created_at;
  std::optional<TimePoint> revoked_at;
};

struct ImageFilter {
  std::optional<TimePoint> received_from;   //!< inclusive
  std::optional<TimePoint> received_to;     //!< exclusive
  std::optional<std::string> source;
  std::optional<ImageStatus> status;
  std::string after_id;                     //!< cursor: ids strictly greater (older first) or smaller
  bool newest_first = true;
  size_t limit = 50;
};

struct ImagePage {
  std::vector<ImageRecord> items;
  std::string next_cursor;  //!< empty on the last page
};

//! A job in the queue: process `image_id` with `pipeline`.
struct Job {
  int64_t id = 0;
  ImageId image_id;
  std::string pipeline;
  int attempts = 0;          //!< attempts made before this lease
  TimePoint enqueued_at;
};

//! The result of an analyst query: column names and rows of JSON scalars (null, int64, double, string; blobs as
//! base64 strings).
struct QueryResult {
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows_json;  //!< each cell serialized as JSON
  bool truncated = false;                           //!< more rows than the cap
};

}  // namespace imgpipe
