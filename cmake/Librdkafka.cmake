# The librdkafka imgpipe links: a pinned release built once into the user's cache by scripts/fetch-librdkafka, as a
# static library, because Debian 12's librdkafka (2.0.2) cannot authenticate with SASL/SCRAM to Kafka 4 brokers (the
# script says why). See cmake/FetchedDir.cmake for when CMake runs the script. Defines the target
# Rdkafka::rdkafka.

imgpipe_fetched_dir(IMGPIPE_LIBRDKAFKA_DIR fetch-librdkafka lib/librdkafka.a
                    "folder with lib/librdkafka.a and include/librdkafka (empty: build into the cache)")

find_package(ZLIB REQUIRED)
pkg_check_modules(ZSTD REQUIRED IMPORTED_TARGET libzstd)
add_library(Rdkafka::rdkafka STATIC IMPORTED GLOBAL)
set_target_properties(Rdkafka::rdkafka PROPERTIES
  IMPORTED_LOCATION "${IMGPIPE_LIBRDKAFKA_DIR}/lib/librdkafka.a"
  # SYSTEM and first: Debian's older rdkafka.h may be installed too and must not be the one found.
  INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${IMGPIPE_LIBRDKAFKA_DIR}/include"
  INTERFACE_INCLUDE_DIRECTORIES "${IMGPIPE_LIBRDKAFKA_DIR}/include"
  INTERFACE_LINK_LIBRARIES "OpenSSL::SSL;OpenSSL::Crypto;ZLIB::ZLIB;PkgConfig::ZSTD;Threads::Threads;${CMAKE_DL_LIBS};m;rt")
