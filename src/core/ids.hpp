#pragma once

#include <string>
#include <string_view>

#include "core/clock.hpp"
#include "core/strong_type.hpp"

namespace imgpipe {

//! An image id: 26 characters of Crockford base32, a 48-bit millisecond timestamp then 80 random bits (the ULID
//! layout), so ids sort by receive time and cursor pagination can use them directly.
using ImageId = StrongType<std::string, struct ImageIdTag>;

ImageId NewImageId(TimePoint now);
//! True if `text` has the shape of an image id (used to refuse path traversal and junk early).
bool IsValidImageId(std::string_view text);
//! The millisecond timestamp encoded in a valid id.
TimePoint ImageIdTime(const ImageId& id);
//! An id derived deterministically from `seed` (e.g. a stream record's source id) and a time: the same seed and time
//! always give the same id.
ImageId DeterministicImageId(TimePoint time, std::string_view seed);

//! A request id for logs and error bodies: 16 random hex characters.
std::string NewRequestId();

//! Cryptographically random bytes from OpenSSL's RNG; throws std::runtime_error if the RNG fails.
std::string RandomBytes(size_t n);

std::string HexEncode(std::string_view bytes);
std::string Base64UrlEncode(std::string_view bytes);  //!< no padding
std::string Sha256(std::string_view bytes);            //!< raw 32 bytes
std::string Sha256Hex(std::string_view bytes);

}  // namespace imgpipe
