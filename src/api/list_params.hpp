#pragma once

#include <string_view>

#include "audit/audit_log.hpp"
#include "core/records.hpp"
#include "core/result.hpp"

namespace imgpipe {

//! GET /v1/images's filter from its query string (as received, after '?'): `from`, `to` (RFC 3339), `source`,
//! `status` (an image status), `limit` (1..500), `cursor` (an image id). Unknown parameters are ignored.
//! kInvalidArgument naming the parameter and what it must be; any bytes are safe input.
Result<ImageFilter> ParseImageListQuery(std::string_view query);

//! GET /v1/audit's filter: `since` (RFC 3339), `action`, `actor`, `limit` (1..10000, default 100).
Result<AuditFilter> ParseAuditQuery(std::string_view query);

}  // namespace imgpipe
