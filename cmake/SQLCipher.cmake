# The one SQLite library imgpipe links: SQLCipher's amalgamation, compiled here with OpenSSL as its crypto provider,
# so the embedded warehouse can be encrypted (docs/ENCRYPTION.md, "The warehouse"). Debian's libsqlite3 is not
# linked: two SQLite libraries in one process would fight over the same symbols.
# The source is fetched once into the user's cache by scripts/fetch-sqlcipher (pinned and checksummed); see
# cmake/FetchedDir.cmake for when CMake runs it. Defines the target SQLite::SQLite3.

imgpipe_fetched_dir(IMGPIPE_SQLCIPHER_DIR fetch-sqlcipher sqlite3.c
                    "folder with SQLCipher's sqlite3.c and sqlite3.h (empty: fetch into the cache)")

add_library(imgpipe_sqlite STATIC "${IMGPIPE_SQLCIPHER_DIR}/sqlite3.c")
target_include_directories(imgpipe_sqlite SYSTEM PUBLIC "${IMGPIPE_SQLCIPHER_DIR}")
# SQLITE_HAS_CODEC is PUBLIC so callers see sqlite3_key() and friends in sqlite3.h.
target_compile_definitions(imgpipe_sqlite
  PUBLIC SQLITE_HAS_CODEC
  PRIVATE
    SQLCIPHER_CRYPTO_OPENSSL
    # Errors reach us as SQLite result codes (mapped with a message in sqlite_database.cpp); its own log would
    # print stray lines on stderr beside our JSON logs.
    SQLCIPHER_OMIT_LOG
    # Temporary tables and indexes stay in memory: SQLCipher cannot encrypt temp files.
    SQLITE_TEMP_STORE=2
    SQLITE_THREADSAFE=1
    # The options of Debian's libsqlite3 that imgpipe's SQL or its analysts' SQL can notice, so moving from it
    # changes nothing: math functions in /v1/query, recursive triggers (the rollups' triggers were written and tested
    # with them on), secure delete, the same limits.
    SQLITE_ENABLE_MATH_FUNCTIONS
    SQLITE_DEFAULT_RECURSIVE_TRIGGERS
    SQLITE_SECURE_DELETE
    SQLITE_LIKE_DOESNT_MATCH_BLOBS
    SQLITE_ENABLE_DBSTAT_VTAB
    SQLITE_ENABLE_FTS5
    SQLITE_ENABLE_RTREE
    SQLITE_MAX_VARIABLE_NUMBER=250000
    SQLITE_MAX_EXPR_DEPTH=1000
    SQLITE_DEFAULT_WAL_SYNCHRONOUS=2
    HAVE_USLEEP=1
    HAVE_ISNAN=1)
# The amalgamation is third-party code: its warnings are not ours to fix, and -O2 keeps it fast in every preset.
# No sanitizer or fuzzer instrumentation either (the asan and fuzz presets): it is not the code under test.
target_compile_options(imgpipe_sqlite PRIVATE -w -O2 -fno-sanitize=all)
set_target_properties(imgpipe_sqlite PROPERTIES POSITION_INDEPENDENT_CODE ON)
target_link_libraries(imgpipe_sqlite PUBLIC OpenSSL::Crypto Threads::Threads ${CMAKE_DL_LIBS} m)
add_library(SQLite::SQLite3 ALIAS imgpipe_sqlite)
