#include "api/query_format.hpp"

#include <boost/json/parse.hpp>

namespace imgpipe {

namespace {

std::string CsvField(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) {
    if (c == '"') quoted += "\"\"";
    else quoted.push_back(c);
  }
  return quoted + "\"";
}

}  // namespace

std::string QueryCellText(std::string_view cell_json) {
  boost::json::error_code ec;
  boost::json::value v = boost::json::parse(cell_json, ec);
  if (ec || v.is_null()) return "";
  if (v.is_string()) return std::string(v.as_string());
  // Numbers and booleans as the store wrote them: re-serializing would turn 2.5 into 2.5E0.
  return std::string(cell_json);
}

std::string QueryResultCsv(const QueryResult& result, std::string_view eol) {
  std::string out;
  for (size_t i = 0; i < result.columns.size(); ++i) {
    if (i) out += ",";
    out += CsvField(result.columns[i]);
  }
  out += eol;
  for (const auto& row : result.rows_json) {
    for (size_t i = 0; i < row.size(); ++i) {
      if (i) out += ",";
      out += CsvField(QueryCellText(row[i]));
    }
    out += eol;
  }
  return out;
}

}  // namespace imgpipe
