#pragma once

#include <string>
#include <string_view>

#include "core/result.hpp"

namespace imgpipe {

//! Small files that hold key material (the local keyring, the warehouse's wrapped key). `what` names the file in
//! errors ("keyring /data/keyring.json").

//! The whole file, at most 1 MiB (these files are a few KB; junk is cut short). kNotFound if it does not exist,
//! kUnavailable (naming errno) if it cannot be read.
Result<std::string> ReadSecretFile(const std::string& path, std::string_view what);

//! Replaces `path` with `text` so that a crash leaves the old or the new file whole, never a mix: a temp file with
//! mode 0600 beside it, fsync, rename, fsync of the folder. kUnavailable naming errno.
Status WriteSecretFile(const std::string& path, const std::string& text, std::string_view what);

//! Lowercase hex to bytes; false if `hex` is not that.
bool HexDecode(std::string_view hex, std::string* out);

}  // namespace imgpipe
