# The librdkafka imgpipe links: a pinned release built once into the user's cache by scripts/fetch-librdkafka, as a
# static library, because Debian 12's librdkafka (2.0.2) cannot authenticate with SASL/SCRAM to Kafka 4 brokers (the
# script says why). CMake runs the script when IMGPIPE_LIBRDKAFKA_DIR has no librdkafka.a yet. Defines the target
# Rdkafka::rdkafka.

set(IMGPIPE_LIBRDKAFKA_DIR "" CACHE PATH "folder with lib/librdkafka.a and include/librdkafka (empty: build into the cache)")
if(NOT IMGPIPE_LIBRDKAFKA_DIR OR NOT EXISTS "${IMGPIPE_LIBRDKAFKA_DIR}/lib/librdkafka.a")
  execute_process(
    COMMAND "${CMAKE_SOURCE_DIR}/scripts/fetch-librdkafka"
    OUTPUT_VARIABLE _rdkafka_dir
    OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _rdkafka_rc)
  if(NOT _rdkafka_rc EQUAL 0 OR NOT EXISTS "${_rdkafka_dir}/lib/librdkafka.a")
    message(FATAL_ERROR "could not build librdkafka (scripts/fetch-librdkafka failed; it needs cargo and cmake, which "
                        "scripts/install-deps installs). Or set IMGPIPE_LIBRDKAFKA_DIR to a folder with "
                        "lib/librdkafka.a and include/librdkafka/rdkafka.h.")
  endif()
  set(IMGPIPE_LIBRDKAFKA_DIR "${_rdkafka_dir}" CACHE PATH
      "folder with lib/librdkafka.a and include/librdkafka (empty: build into the cache)" FORCE)
endif()

find_package(ZLIB REQUIRED)
pkg_check_modules(ZSTD REQUIRED IMPORTED_TARGET libzstd)
add_library(Rdkafka::rdkafka STATIC IMPORTED GLOBAL)
set_target_properties(Rdkafka::rdkafka PROPERTIES
  IMPORTED_LOCATION "${IMGPIPE_LIBRDKAFKA_DIR}/lib/librdkafka.a"
  # SYSTEM and first: Debian's older rdkafka.h may be installed too and must not be the one found.
  INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${IMGPIPE_LIBRDKAFKA_DIR}/include"
  INTERFACE_INCLUDE_DIRECTORIES "${IMGPIPE_LIBRDKAFKA_DIR}/include"
  INTERFACE_LINK_LIBRARIES "OpenSSL::SSL;OpenSSL::Crypto;ZLIB::ZLIB;PkgConfig::ZSTD;Threads::Threads;${CMAKE_DL_LIBS};m;rt")
