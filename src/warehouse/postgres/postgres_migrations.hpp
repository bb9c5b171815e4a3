#pragma once

#include <string_view>
#include <vector>

#include "core/clock.hpp"
#include "core/result.hpp"
#include "warehouse/postgres/postgres_database.hpp"

namespace imgpipe {

//! The read-only role analyst SQL runs under (SET LOCAL ROLE inside a READ ONLY transaction). Created NOLOGIN by
//! migration 1; BI tools log in as a role that is a member of it (docs/WAREHOUSE.md).
inline constexpr std::string_view kPostgresAnalystRole = "imgpipe_analyst";

//! One schema change in PostgreSQL's dialect. Version numbers follow SQLite's list (src/warehouse/sqlite/
//! migrations.cpp): the same number is the same logical change. A published migration is never edited.
struct PostgresMigration {
  int version;
  std::string_view name;
  std::string_view sql;  //!< a script of one or more statements, run in one transaction
};

//! Every migration this build knows, in order.
const std::vector<PostgresMigration>& PostgresMigrations();

//! Applies the migrations not yet recorded in schema_migrations (version, name, applied_at) of the current schema,
//! each in one transaction together with its schema_migrations row and under a transaction-level advisory lock, so a
//! crash leaves every migration applied or not at all and processes migrating at once apply each one once.
//! Re-running is a no-op. kUnavailable if the database was migrated by a newer imgpipe. The connecting user needs
//! CREATEROLE (or imgpipe_analyst must exist and be granted to it) and should own the schema; run as a superuser (or
//! the owner of pg_catalog's functions) it also revokes set_config() from PUBLIC, which analyst queries require.
Status ApplyPostgresMigrations(PostgresDatabase& db, const Clock& clock);

}  // namespace imgpipe
