#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"

namespace imgpipe {

//! The files of the exec protocol (docs/SCRIPTS.md, "exec steps"), inside the step's own temp folder.
inline constexpr std::string_view kExecInputJson = "input.json";
inline constexpr std::string_view kExecResultJson = "result.json";
//! result.json may be at most this large; the program's other output files are bounded by ExecLimits.
inline constexpr size_t kExecMaxResultBytes = 1 << 20;

struct ExecLabel {
  std::string key;
  std::string value;
  std::optional<double> number;
};

//! A rendition the program made: a file of its folder, re-encoded by imgpipe as `format` (empty: the script's
//! default encoding).
struct ExecRendition {
  std::string name;
  std::string file;
  std::string format;
  int quality = 0;   //!< 0: the default
  int effort = -1;   //!< -1: the default
};

//! What the program said in result.json. Every field is optional; an empty object means "nothing to add".
struct ExecResult {
  std::vector<ExecLabel> labels;
  std::vector<ExecRendition> renditions;
  std::optional<std::string> image;   //!< a file of the folder that becomes the current image for the next steps
  std::optional<std::string> reject;  //!< the program refuses the image, with this reason
};

//! Parses result.json strictly: a JSON object with only the keys labels, renditions, image and reject, each of the
//! documented type; file names are plain names inside the folder (letters, digits, '.', '_', '-'; no '/', no
//! leading '.'). Anything else is kInvalidArgument (code "script_error") naming the key and what was expected, e.g.
//! "result.json: labels[2].number must be a finite number". The text is outside data: never throws, bounded work.
Result<ExecResult> ParseExecResult(std::string_view text);

//! True for a name ParseExecResult accepts as a file of the folder.
bool IsPlainFileName(std::string_view name);

}  // namespace imgpipe
