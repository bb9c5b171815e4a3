#include "api/query_format.hpp"

#include <gtest/gtest.h>

namespace imgpipe {
namespace {

TEST(QueryFormatTest, CellsLoseTheirJsonQuotingAndNullsAreEmpty) {
  EXPECT_EQ(QueryCellText("\"a\\\"b\""), "a\"b");
  EXPECT_EQ(QueryCellText("null"), "");
  EXPECT_EQ(QueryCellText("42"), "42");
  EXPECT_EQ(QueryCellText("2.5"), "2.5");
}

TEST(QueryFormatTest, CsvQuotesOnlyWhatNeedsItAndEndsLinesAsAsked) {
  QueryResult r;
  r.columns = {"name", "note"};
  r.rows_json = {{"\"plain\"", "\"has, comma\""}, {"\"say \\\"hi\\\"\"", "null"}, {"7", "\"two\\nlines\""}};
  EXPECT_EQ(QueryResultCsv(r, "\r\n"),
            "name,note\r\nplain,\"has, comma\"\r\n\"say \"\"hi\"\"\",\r\n7,\"two\nlines\"\r\n");
  EXPECT_EQ(QueryResultCsv(r, "\n").substr(0, 10), "name,note\n");
}

}  // namespace
}  // namespace imgpipe
