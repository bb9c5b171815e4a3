#pragma once

#include <string>
#include <string_view>

#include "core/records.hpp"

namespace imgpipe {

//! The text of one result cell (cells arrive JSON-serialized): strings without quotes, null as empty, numbers and
//! booleans as written.
std::string QueryCellText(std::string_view cell_json);
//! A query result as CSV (RFC 4180 quoting), the header row first, every line ended by `eol`. Shared by
//! POST /v1/query (format csv) and `imgpipe query --format csv`.
std::string QueryResultCsv(const QueryResult& result, std::string_view eol);

}  // namespace imgpipe
