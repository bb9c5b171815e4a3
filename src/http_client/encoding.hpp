#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace imgpipe {
// A namespace of their own: src/scripts has same-named base64 helpers with another error contract.
namespace encoding {

//! Standard base64 with padding (RFC 4648 section 4), as request signatures use it.
std::string Base64Encode(std::string_view bytes);
//! Decodes standard base64 with padding; nullopt if `text` is not valid base64.
std::optional<std::string> Base64Decode(std::string_view text);
//! Raw 32-byte HMAC-SHA256 of `data` under `key`.
std::string HmacSha256(std::string_view key, std::string_view data);

}  // namespace encoding
}  // namespace imgpipe
