#pragma once

#include <string>
#include <string_view>

#include "core/result.hpp"

namespace imgpipe {

//! Encrypts `plaintext` (the keyring) under a key derived from `passphrase` with scrypt (N = 2^15, r = 8, p = 1, a
//! random salt) and AES-256-GCM; returns a small JSON document holding the parameters, salt and sealed bytes.
//! kInvalidArgument if the passphrase is shorter than kMinPassphrase characters.
Result<std::string> SealWithPassphrase(std::string_view plaintext, std::string_view passphrase);

//! Opens what SealWithPassphrase returned. kPermissionDenied when it does not authenticate (a wrong passphrase, or
//! the file was altered: GCM cannot tell them apart); kIntegrity naming the problem for a malformed document, whose
//! scrypt parameters are bounded before any work (a hostile file cannot ask for gigabytes). Any bytes are safe input.
Result<std::string> OpenWithPassphrase(std::string_view sealed, std::string_view passphrase);

inline constexpr size_t kMinPassphrase = 8;

}  // namespace imgpipe
