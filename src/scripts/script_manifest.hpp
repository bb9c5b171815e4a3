#pragma once

#include <map>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/result.hpp"

namespace imgpipe {

//! The file every script folder holds; it names the steps and the renditions.
inline constexpr std::string_view kScriptManifestFile = "pipeline.toml";

//! One step of a script, as pipeline.toml writes it. Only the fields its `op` uses are meaningful; the parser refuses
//! keys an op does not take, so a typo never silently falls back to a default.
struct ScriptStep {
  std::string op;            //!< one of KnownScriptOps()
  int line = 0;              //!< where the step starts in pipeline.toml (1-based), for messages at run time
  int width = 0;             //!< thumbnail/resize/crop: box; a missing side means "as large as the other"
  int height = 0;
  std::string fit = "inside";    //!< thumbnail/resize: "inside" | "cover" | "fill"
  std::string mode = "centre";   //!< crop: "centre" | "attention" | "entropy"
  std::string format;            //!< convert: one of RenditionFormatList()
  int quality = 82;              //!< convert: 1..100
  int effort = 4;                //!< convert: webp 0..6, avif 0..9 (clamped for avif)
  double sigma = 1.0;            //!< blur/sharpen: Gaussian sigma, 0.1..100
  std::string file;              //!< lua: the Lua file of the script folder to run
  // watermark: exactly one of `text` and `image`
  std::string text;                          //!< rendered with the system's sans font
  std::string image;                         //!< an image file of the script folder
  std::string position = "bottom-right";     //!< top-left | top | top-right | left | centre | right | bottom-*
  double opacity = 0.5;                      //!< 0..1
  double size = 0;                           //!< the mark's height (text) or width (image) as a fraction of the
                                             //!< image's; 0 = 5% for text, the image's own size for an image
  int margin = 16;                           //!< pixels between the mark and the edges
  std::string colour = "#ffffff";            //!< text colour
  // extract-metadata:
  std::vector<std::string> fields;           //!< libvips field names; empty = the common camera fields
  // exec (docs/SCRIPTS.md, "exec steps"):
  std::vector<std::string> command;          //!< argv; argv[0] is found in the step's PATH or the folder
  int timeout = 30;                          //!< wall-clock seconds, then the process group is killed
  int cpu = 0;                               //!< CPU seconds (RLIMIT_CPU); 0 = as `timeout`
  int memory = 1024;                         //!< MiB of address space (RLIMIT_AS)
  std::map<std::string, std::string> env;    //!< the program's whole environment
  std::string input = "png";                 //!< how the current image is written: png | jpeg | tiff | pnm
};

//! A rendition: the steps after the script's main steps that make it, then its encoding.
struct ScriptRendition {
  std::string name;          //!< [a-z0-9-]+, unique within the script; used in blob keys and URLs
  //! Encoding. Left out in pipeline.toml, they come from the last main `convert` step, else jpeg, 82, 4.
  std::string format;
  int quality = 0;
  int effort = -1;
  int line = 0;
  std::vector<ScriptStep> steps;
};

struct ScriptManifest {
  std::string description;
  std::string example;                      //!< an image file of the folder that push runs the script over
  int example_line = 0;
  std::vector<ScriptStep> steps;            //!< run in order on the decoded image
  std::vector<ScriptRendition> renditions;  //!< each made from the image after `steps`
};

//! A setting of a step given from code (a Lua table) rather than from pipeline.toml.
using StepSetting = std::variant<int64_t, double, std::string>;

//! Builds one step from `op` and its settings with the same checks ParseScriptManifest applies to a [[steps]] entry
//! (`lua` and `exec` steps excluded). kInvalidArgument naming the problem.
Result<ScriptStep> MakeScriptStep(const std::string& op, const std::map<std::string, StepSetting>& settings);

//! The renditions' default encoding (format, quality, effort): the last main `convert` step, else jpeg, 82, 4.
ScriptStep DefaultEncoding(const ScriptManifest& manifest);

//! True for the formats a rendition (or a convert step) may use.
bool IsRenditionFormat(std::string_view format);
//! "avif, heif, jpeg, png, webp", for messages.
std::string RenditionFormatList();

//! The step names pipeline.toml may use.
const std::vector<std::string_view>& KnownScriptOps();

//! Parses pipeline.toml. `files` holds every file of the script folder (path -> content) so `lua` steps can be checked
//! to name an existing file; pass an empty map to skip that check. Errors are kInvalidArgument with a message naming
//! the file, line and problem ("pipeline.toml:12: step 'blurr' is unknown; known steps: ..."). Never throws.
Result<ScriptManifest> ParseScriptManifest(std::string_view text,
                                           const std::map<std::string, std::string>& files = {});

}  // namespace imgpipe
