# imgpipe_fetched_dir(VAR SCRIPT MARKER DOC): VAR (a cache path) names a folder holding MARKER, a file inside it. When
# the user sets VAR to a folder of their own, it is used as it is. Otherwise scripts/SCRIPT runs at every configure
# and prints the folder: it fills the user's cache once (pinned, checksummed) and answers at once after that, and it
# rebuilds a cached copy made from another pin or with other options, which a check for MARKER alone would miss.
function(imgpipe_fetched_dir var script marker doc)
  set(${var} "" CACHE PATH "${doc}")
  if(${var} AND NOT ${var}_FETCHED AND EXISTS "${${var}}/${marker}")
    return()
  endif()
  execute_process(
    COMMAND "${CMAKE_SOURCE_DIR}/scripts/${script}"
    OUTPUT_VARIABLE dir
    OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0 OR NOT EXISTS "${dir}/${marker}")
    message(FATAL_ERROR "scripts/${script} failed (it needs cargo and cmake, which scripts/install-deps installs). "
                        "Or set ${var} to a folder with ${marker}.")
  endif()
  set(${var} "${dir}" CACHE PATH "${doc}" FORCE)
  set(${var}_FETCHED ON CACHE INTERNAL "the folder came from scripts/${script}")
endfunction()
