// `imgpipe query "SQL"`: read-only SQL on the warehouse, printed as a table, CSV or JSON.
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <iostream>

#include "api/query_format.hpp"
#include "cli/common.hpp"

namespace imgpipe {


int RunQuery(int argc, char** argv) {
  auto args = ParseArgs(argc, argv, 2, {"config", "data-dir", "format", "max-rows"});
  if (!args) return kExitUsage;
  if (args->positional.size() != 1) {
    std::cerr << "usage: imgpipe query [--data-dir DIR] [--format table|csv|json] \"SQL\"\n";
    return kExitUsage;
  }
  std::string format = args->Get("format").value_or("table");
  if (format != "table" && format != "csv" && format != "json") {
    std::cerr << "imgpipe: --format must be table, csv or json\n";
    return kExitUsage;
  }
  size_t max_rows = 100000;
  if (auto m = args->Get("max-rows")) max_rows = std::strtoull(m->c_str(), nullptr, 10);
  auto config = LoadConfigFromArgs(*args);
  if (!config) return kExitUsage;
  SystemClock clock;
  auto wh = OpenWarehouse(*config, clock);
  if (!wh.ok()) {
    std::cerr << "imgpipe: cannot open the warehouse: " << wh.error().message << "\n";
    return kExitFailure;
  }
  auto result = wh->store->Query(args->positional[0], {}, max_rows, std::chrono::milliseconds(60000));
  if (!result.ok()) {
    std::cerr << "imgpipe: query refused: " << result.error().message << "\n";
    return kExitFailure;
  }
  const auto& cols = result->columns;
  if (format == "csv") {
    std::cout << QueryResultCsv(*result, "\n");
  } else if (format == "json") {
    std::cout << "[";
    for (size_t r = 0; r < result->rows_json.size(); ++r) {
      std::cout << (r ? ",\n " : "") << "{";
      for (size_t i = 0; i < cols.size(); ++i) {
        std::cout << (i ? "," : "") << boost::json::serialize(boost::json::value(cols[i])) << ":"
                  << result->rows_json[r][i];
      }
      std::cout << "}";
    }
    std::cout << "]\n";
  } else {
    std::vector<size_t> widths(cols.size());
    std::vector<std::vector<std::string>> cells;
    for (size_t i = 0; i < cols.size(); ++i) widths[i] = cols[i].size();
    for (const auto& row : result->rows_json) {
      std::vector<std::string> line;
      for (size_t i = 0; i < row.size(); ++i) {
        line.push_back(QueryCellText(row[i]));
        widths[i] = std::max(widths[i], std::min<size_t>(line.back().size(), 60));
      }
      cells.push_back(std::move(line));
    }
    auto print_row = [&](const std::vector<std::string>& line) {
      for (size_t i = 0; i < line.size(); ++i) {
        std::string t = line[i].size() > 60 ? line[i].substr(0, 57) + "..." : line[i];
        std::cout << (i ? " | " : "") << t << std::string(widths[i] - std::min(widths[i], t.size()), ' ');
      }
      std::cout << "\n";
    };
    print_row(cols);
    for (size_t i = 0; i < cols.size(); ++i) std::cout << (i ? "-+-" : "") << std::string(widths[i], '-');
    std::cout << "\n";
    for (const auto& line : cells) print_row(line);
    std::cout << "(" << cells.size() << " row" << (cells.size() == 1 ? "" : "s") << ")\n";
  }
  if (result->truncated) std::cerr << "imgpipe: output truncated at " << max_rows << " rows (--max-rows)\n";
  return kExitOk;
}

}  // namespace imgpipe
