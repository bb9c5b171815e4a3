#pragma once

#include <string_view>
#include <vector>

#include "core/clock.hpp"
#include "core/result.hpp"
#include "warehouse/sqlite/sqlite_database.hpp"

namespace imgpipe {

//! One schema change. Versions are 1, 2, 3... in order; a published migration is never edited, only followed by a
//! new one.
struct Migration {
  int version;
  std::string_view name;
  std::string_view sql;  //!< a script of one or more statements
};

//! Every migration this build knows, in order.
const std::vector<Migration>& SqliteMigrations();

//! Applies the migrations not yet recorded in schema_migrations (version, name, applied_at), each in its own write
//! transaction together with its schema_migrations row, so a crash leaves every migration applied or not at all and
//! two processes migrating at once apply each one once. Re-running is a no-op. kUnavailable if the database was
//! migrated by a newer imgpipe (its version is unknown here).
Status ApplySqliteMigrations(SqliteDatabase& db, const Clock& clock);

}  // namespace imgpipe
