#include "core/records.hpp"

namespace imgpipe {

std::string_view ImageStatusName(ImageStatus s) {
  switch (s) {
    case ImageStatus::kQueued: return "queued";
    case ImageStatus::kProcessing: return "processing";
    case ImageStatus::kProcessed: return "processed";
    case ImageStatus::kFailed: return "failed";
    case ImageStatus::kExpired: return "expired";
    case ImageStatus::kDeleted: return "deleted";
  }
  return "queued";
}

bool ParseImageStatus(std::string_view text, ImageStatus* out) {
  for (ImageStatus s : {ImageStatus::kQueued, ImageStatus::kProcessing, ImageStatus::kProcessed, ImageStatus::kFailed,
                        ImageStatus::kExpired, ImageStatus::kDeleted}) {
    if (ImageStatusName(s) == text) {
      *out = s;
      return true;
    }
  }
  return false;
}

std::string_view RoleName(Role r) {
  switch (r) {
    case Role::kAdmin: return "admin";
    case Role::kUploader: return "uploader";
    case Role::kReader: return "reader";
    case Role::kAnalyst: return "analyst";
  }
  return "reader";
}

bool ParseRole(std::string_view text, Role* out) {
  for (Role r : {Role::kAdmin, Role::kUploader, Role::kReader, Role::kAnalyst}) {
    if (RoleName(r) == text) {
      *out = r;
      return true;
    }
  }
  return false;
}

}  // namespace imgpipe
