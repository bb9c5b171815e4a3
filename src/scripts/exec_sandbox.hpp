#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "core/result.hpp"

namespace imgpipe {

//! How this installation runs exec steps (config [processing], docs/OPERATIONS.md). The same for every script.
struct ExecSandboxOptions {
  //! Parent of the per-run folders; empty: $TMPDIR, else /tmp. It must be traversable by `user`.
  std::string temp_dir;
  //! When imgpipe runs as root, programs run as this user (and its group, no supplementary groups). Ignored when
  //! imgpipe is not root: the program then runs as imgpipe's own user.
  std::string user = "nobody";
  //! Folders (and files) the program may read and execute from when Landlock is available; everything else but its
  //! own folder is invisible to it. Its own folder is always readable and writable.
  std::vector<std::string> read_paths = {"/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/opt",
                                         "/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"};
  //! Largest file the program may write (RLIMIT_FSIZE), and so the largest output file imgpipe reads back.
  uint64_t max_file_bytes = 256ull << 20;
};

//! One process to run, with its limits.
struct ExecProcess {
  std::vector<std::string> argv;            //!< argv[0] without '/' is searched in env PATH, else /usr/local/bin,
                                            //!< /usr/bin, /bin; with '/', relative to `folder`
  std::map<std::string, std::string> env;   //!< the whole environment; nothing is inherited
  std::string folder;                       //!< working directory, the only place it may write
  std::chrono::milliseconds timeout{30000};  //!< wall clock; then the whole process group is killed
  int cpu_seconds = 30;                     //!< RLIMIT_CPU
  uint64_t memory_bytes = 1ull << 30;       //!< RLIMIT_AS
};

struct ExecExit {
  bool timed_out = false;
  int exit_code = -1;        //!< when it exited
  int signal = 0;            //!< when a signal ended it (SIGXCPU / SIGKILL for the CPU limit)
  std::string output_tail;   //!< the last bytes of its stdout and stderr together, for error messages
  bool landlocked = false;   //!< whether the Landlock file-system view was applied
  bool switched_user = false;
};

//! Runs the process to its end or its timeout, then kills its process group (children it left behind that stayed
//! in the group die with it). The child gets: a new process group, an empty environment plus `env`, the cwd
//! `folder`, stdin /dev/null, no other inherited file descriptors, RLIMIT_CPU/AS/FSIZE/CORE/NOFILE (and NPROC when
//! running as another user), no new privileges, and when the kernel has Landlock a file-system view where it may
//! read and execute only `read_paths` and write only under `folder`. Errors: kInvalidArgument (code "script_error")
//! when the program cannot be started (not found, not executable), kInternal/kUnavailable for system failures. A
//! process that ran and failed is not an error here: the caller reads ExecExit. Thread-safe; blocks the caller.
Result<ExecExit> RunSandboxed(const ExecProcess& process, const ExecSandboxOptions& options);

//! A fresh private folder under options.temp_dir (mode 0700, owned by the user the program runs as), removed with
//! everything in it when this is destroyed, even if the program made parts of it unreadable.
class ExecFolder {
 public:
  static Result<ExecFolder> Create(const ExecSandboxOptions& options);
  ExecFolder(ExecFolder&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  ExecFolder& operator=(ExecFolder&&) = delete;
  ~ExecFolder();
  const std::string& path() const { return path_; }
  //! Writes a file readable by the program (0644).
  Status Write(const std::string& name, std::string_view content) const;
  //! Reads a regular file the program left (never following a symlink), at most `max_bytes`. kInvalidArgument
  //! (code "script_error") if it is missing, not a regular file, or larger.
  Result<std::string> Read(const std::string& name, uint64_t max_bytes) const;

 private:
  explicit ExecFolder(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

//! The options of the config's [processing] exec_* keys.
ExecSandboxOptions ExecSandboxOptionsFrom(const Config& config);

//! Whether this kernel has Landlock (ABI version, 0 if not). For docs and tests.
int LandlockAbi();

}  // namespace imgpipe
