#include "scripts/exec_sandbox.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/landlock.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

namespace imgpipe {
namespace {

// Landlock access bits newer than Debian 12's kernel headers; the kernel ignores what its ABI does not have because
// HandledFs() masks them by ABI version.
constexpr uint64_t kFsTruncate = 1ULL << 14;
constexpr uint64_t kFsIoctlDev = 1ULL << 15;
constexpr uint64_t kNetBindTcp = 1ULL << 0;
constexpr uint64_t kNetConnectTcp = 1ULL << 1;

// The kernel's struct landlock_ruleset_attr with the network field (ABI 4); Debian 12's header has only the first.
struct RulesetAttr {
  uint64_t handled_access_fs;
  uint64_t handled_access_net;
};

constexpr uint64_t kFsRead =
    LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
// Rights that make sense on a file (not a directory) in a path-beneath rule; the kernel refuses others.
constexpr uint64_t kFsFileRights =
    LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE | kFsTruncate | kFsIoctlDev;

uint64_t HandledFs(int abi) {
  uint64_t all = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1;  // ABI 1: bits 0..12
  if (abi >= 2) all |= LANDLOCK_ACCESS_FS_REFER;
  if (abi >= 3) all |= kFsTruncate;
  if (abi >= 5) all |= kFsIoctlDev;
  return all;
}

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      Close();
      fd = o.fd;
      o.fd = -1;
    }
    return *this;
  }
  ~Fd() { Close(); }
  void Close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

Error System(const std::string& what) {
  return MakeError(ErrorKind::kInternal, "exec step: " + what + ": " + std::strerror(errno));
}

struct RunAs {
  bool switch_user = false;
  uid_t uid = 0;
  gid_t gid = 0;
};

Result<RunAs> ResolveRunAs(const ExecSandboxOptions& options) {
  RunAs run_as;
  if (::geteuid() != 0) return run_as;
  std::vector<char> buffer(16384);
  passwd entry{};
  passwd* found = nullptr;
  const int rc = ::getpwnam_r(options.user.c_str(), &entry, buffer.data(), buffer.size(), &found);
  if (rc != 0 || found == nullptr) {
    return MakeError(ErrorKind::kUnavailable,
                     "exec steps run as user '" + options.user +
                         "' when imgpipe runs as root, and that user does not exist (processing.exec_user)");
  }
  if (found->pw_uid == 0) {
    return MakeError(ErrorKind::kUnavailable,
                     "processing.exec_user '" + options.user + "' is root; exec steps need an unprivileged user");
  }
  run_as.switch_user = true;
  run_as.uid = found->pw_uid;
  run_as.gid = found->pw_gid;
  return run_as;
}

std::string TempRoot(const ExecSandboxOptions& options) {
  if (!options.temp_dir.empty()) return options.temp_dir;
  const char* tmp = std::getenv("TMPDIR");
  return tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
}

// The program's path, found the way a shell would but without inheriting imgpipe's PATH.
Result<std::string> FindProgram(const ExecProcess& process) {
  const std::string& name = process.argv[0];
  if (name.find('/') != std::string::npos) return name[0] == '/' ? name : process.folder + "/" + name;
  auto path_var = process.env.find("PATH");
  const std::string path = path_var != process.env.end() ? path_var->second : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    const std::string dir = path.substr(start, end - start);
    if (!dir.empty()) {
      const std::string candidate = dir + "/" + name;
      struct stat st {};
      if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111) != 0) return candidate;
    }
    start = end + 1;
  }
  return MakeError(ErrorKind::kInvalidArgument,
                   "exec step: program '" + name + "' is not in PATH (" + path + "); declare PATH in the step's env "
                   "or name the program by its path",
                   "script_error");
}

// A Landlock ruleset allowing reads under `read_paths`, everything under `folder`, and nothing else; -1 when the
// kernel has no Landlock.
Result<Fd> BuildRuleset(const ExecSandboxOptions& options, const std::string& folder) {
  const int abi = LandlockAbi();
  if (abi <= 0) return Fd();
  RulesetAttr attr{HandledFs(abi), abi >= 4 ? (kNetBindTcp | kNetConnectTcp) : 0};
  const size_t attr_size = abi >= 4 ? sizeof attr : sizeof attr.handled_access_fs;
  Fd ruleset(static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0)));
  if (ruleset.fd < 0) return System("creating the Landlock ruleset");
  auto allow = [&](const std::string& path, uint64_t access) -> Status {
    Fd target(::open(path.c_str(), O_PATH | O_CLOEXEC));
    if (target.fd < 0) return Ok();  // a read path this machine does not have
    struct stat st {};
    if (::fstat(target.fd, &st) != 0) return System("stat " + path);
    if (!S_ISDIR(st.st_mode)) access &= kFsFileRights;
    landlock_path_beneath_attr rule{};
    rule.allowed_access = access & attr.handled_access_fs;
    rule.parent_fd = target.fd;
    if (::syscall(SYS_landlock_add_rule, ruleset.fd, LANDLOCK_RULE_PATH_BENEATH, &rule, 0) != 0) {
      return System("adding the Landlock rule for " + path);
    }
    return Ok();
  };
  for (const std::string& path : options.read_paths) {
    // Programs write to /dev/null as a matter of course; it is the one writable path outside the folder.
    const uint64_t extra = path == "/dev/null" ? LANDLOCK_ACCESS_FS_WRITE_FILE | kFsTruncate : 0;
    IMGPIPE_TRY(allow(path, kFsRead | extra));
  }
  IMGPIPE_TRY(allow(folder, attr.handled_access_fs));
  return ruleset;
}

// What the child reports through its close-on-exec pipe when it fails before exec.
struct ChildFailure {
  int stage;
  int error;
};
constexpr const char* kStages[] = {
    "setting up",
    "entering its folder (processing.exec_temp_dir must be searchable by processing.exec_user)",
    "setting limits",
    "switching user",
    "entering the Landlock sandbox",
    "starting the program"};

[[noreturn]] void ChildFail(int fd, int stage) {
  const ChildFailure failure{stage, errno};
  [[maybe_unused]] auto n = ::write(fd, &failure, sizeof failure);
  ::_exit(127);
}

// Runs in the forked child of a multi-threaded process: async-signal-safe calls only (no allocation, no locks).
[[noreturn]] void Child(const ExecProcess& process, const ExecSandboxOptions& options, const RunAs& run_as,
                        const char* program, char* const* argv, char* const* envp, int null_fd, int output_fd,
                        int failure_fd, int ruleset_fd, pid_t parent) {
  ::setpgid(0, 0);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; ++s) {
    if (s != SIGKILL && s != SIGSTOP) ::sigaction(s, &dfl, nullptr);
  }
  if (::dup2(null_fd, 0) < 0 || ::dup2(output_fd, 1) < 0 || ::dup2(output_fd, 2) < 0) ChildFail(failure_fd, 0);
  if (::chdir(process.folder.c_str()) != 0) ChildFail(failure_fd, 1);
  auto limit = [&](int resource, rlim_t soft, rlim_t hard) {
    const rlimit value{soft, hard};
    if (::setrlimit(resource, &value) != 0) ChildFail(failure_fd, 2);
  };
  // SIGXCPU at the soft CPU limit, SIGKILL a second later for a program that catches it.
  limit(RLIMIT_CPU, static_cast<rlim_t>(process.cpu_seconds), static_cast<rlim_t>(process.cpu_seconds) + 1);
  limit(RLIMIT_AS, process.memory_bytes, process.memory_bytes);
  limit(RLIMIT_FSIZE, options.max_file_bytes, options.max_file_bytes);
  limit(RLIMIT_CORE, 0, 0);
  limit(RLIMIT_NOFILE, 256, 256);
  if (run_as.switch_user) {
    // Counted per user: a fork bomb stops here instead of filling the machine's process table.
    limit(RLIMIT_NPROC, 256, 256);
    if (::setgroups(0, nullptr) != 0 || ::setgid(run_as.gid) != 0 || ::setuid(run_as.uid) != 0) {
      ChildFail(failure_fd, 3);
    }
  }
  // Only imgpipe enforces the step's timeout: if it dies (kill -9, the OOM killer) the program must not outlive it.
  // Set after the user switch, which clears it; a parent gone before this line is caught by the getppid check.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) ChildFail(failure_fd, 2);
  if (::getppid() != parent) ::_exit(127);
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) ChildFail(failure_fd, 4);
  if (ruleset_fd >= 0 && ::syscall(SYS_landlock_restrict_self, ruleset_fd, 0) != 0) ChildFail(failure_fd, 4);
  // Only 0, 1, 2 (and the failure pipe, closed by exec) reach the program.
  if (::dup2(failure_fd, 3) < 0 || ::fcntl(3, F_SETFD, FD_CLOEXEC) != 0) ChildFail(failure_fd, 0);
  if (::syscall(SYS_close_range, 4U, ~0U, 0) != 0) {
    for (int fd = 4; fd < 65536; ++fd) ::close(fd);
  }
  ::execve(program, argv, envp);
  ChildFail(3, 5);
}

void KeepTail(std::string& tail, const char* data, size_t n) {
  constexpr size_t kTail = 2048;
  tail.append(data, n);
  if (tail.size() > kTail) tail.erase(0, tail.size() - kTail);
}

}  // namespace

ExecSandboxOptions ExecSandboxOptionsFrom(const Config& config) {
  ExecSandboxOptions options;
  options.user = config.exec_user;
  options.temp_dir = config.exec_temp_dir;
  if (!config.exec_read_paths.empty()) options.read_paths = config.exec_read_paths;
  return options;
}

int LandlockAbi() {
  const long abi = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  return abi > 0 ? static_cast<int>(abi) : 0;
}

Result<ExecExit> RunSandboxed(const ExecProcess& process, const ExecSandboxOptions& options) {
  if (process.argv.empty()) return MakeError(ErrorKind::kInvalidArgument, "exec step: no command", "script_error");
  IMGPIPE_ASSIGN_OR_RETURN(const RunAs run_as, ResolveRunAs(options));
  IMGPIPE_ASSIGN_OR_RETURN(const std::string program, FindProgram(process));
  IMGPIPE_ASSIGN_OR_RETURN(Fd ruleset, BuildRuleset(options, process.folder));

  // Everything the child needs is built here: after fork it may not allocate.
  std::vector<std::string> env_text;
  for (const auto& [key, value] : process.env) env_text.push_back(key + "=" + value);
  std::vector<char*> argv;
  for (const std::string& a : process.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const std::string& e : env_text) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  Fd null_fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (null_fd.fd < 0) return System("opening /dev/null");
  int output[2];
  int failure[2];
  if (::pipe2(output, O_CLOEXEC) != 0) return System("creating the output pipe");
  Fd output_read(output[0]), output_write(output[1]);
  if (::pipe2(failure, O_CLOEXEC) != 0) return System("creating the status pipe");
  Fd failure_read(failure[0]), failure_write(failure[1]);

  const auto started = std::chrono::steady_clock::now();
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return System("fork");
  if (pid == 0) {
    Child(process, options, run_as, program.c_str(), argv.data(), envp.data(), null_fd.fd, output_write.fd,
          failure_write.fd, ruleset.fd, parent);
  }
  // Also here, so a kill of the group right away cannot miss a child that has not run setpgid yet.
  ::setpgid(pid, pid);
  output_write.Close();
  failure_write.Close();
  ExecExit exit;
  exit.landlocked = ruleset.fd >= 0;
  exit.switched_user = run_as.switch_user;
  ruleset.Close();

  // pidfd (Linux 5.3) wakes the wait at the child's exit; without it the loop polls every 50 ms.
  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  ::fcntl(output_read.fd, F_SETFL, O_NONBLOCK);
  auto drain = [&]() -> bool {  // false at end of output
    char buffer[4096];
    while (true) {
      const ssize_t n = ::read(output_read.fd, buffer, sizeof buffer);
      if (n > 0) {
        KeepTail(exit.output_tail, buffer, static_cast<size_t>(n));
        continue;
      }
      return n < 0 && (errno == EAGAIN || errno == EINTR);
    }
  };
  const auto deadline = started + process.timeout;
  bool output_open = true;
  int status = 0;
  while (true) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (done < 0 && errno != EINTR) {
      const Error error = System("waiting for the program");
      ::kill(-pid, SIGKILL);
      return error;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      exit.timed_out = true;
      ::kill(-pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1;
    if (pidfd.fd < 0) wait = std::min<long long>(wait, 50);
    pollfd fds[2];
    nfds_t count = 0;
    if (output_open) fds[count++] = {output_read.fd, POLLIN, 0};
    if (pidfd.fd >= 0) fds[count++] = {pidfd.fd, POLLIN, 0};
    ::poll(fds, count, static_cast<int>(std::min<long long>(wait, 60'000)));
    if (output_open) output_open = drain();
  }
  // Whatever it left running in its group dies with it.
  ::kill(-pid, SIGKILL);
  drain();

  ChildFailure failure_report{};
  const ssize_t got = ::read(failure_read.fd, &failure_report, sizeof failure_report);
  if (got == static_cast<ssize_t>(sizeof failure_report)) {
    const int stage = failure_report.stage >= 0 && failure_report.stage < 6 ? failure_report.stage : 0;
    errno = failure_report.error;
    if (stage == 5) {
      return MakeError(ErrorKind::kInvalidArgument,
                       "exec step: cannot start '" + program + "': " + std::strerror(failure_report.error),
                       "script_error");
    }
    return System(std::string(kStages[stage]) + " for '" + program + "'");
  }
  if (WIFEXITED(status)) exit.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) exit.signal = WTERMSIG(status);
  return exit;
}

namespace {

// Makes every folder under `path` writable and searchable by its owner, so a program that chmod'ed parts of its
// folder cannot make the removal fail (root does not need this; anyone else does).
void MakeRemovable(const std::filesystem::path& path) {
  std::error_code ec;
  std::filesystem::permissions(path, std::filesystem::perms::owner_all, std::filesystem::perm_options::add, ec);
  for (auto it = std::filesystem::directory_iterator(path, ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec)) MakeRemovable(it->path());
  }
}

}  // namespace

Result<ExecFolder> ExecFolder::Create(const ExecSandboxOptions& options) {
  IMGPIPE_ASSIGN_OR_RETURN(const RunAs run_as, ResolveRunAs(options));
  std::string pattern = TempRoot(options) + "/imgpipe-exec-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    return MakeError(ErrorKind::kUnavailable, "exec step: cannot create a folder under " + TempRoot(options) + ": " +
                                                  std::strerror(errno) + " (processing.exec_temp_dir)");
  }
  ExecFolder folder(pattern);
  if (run_as.switch_user && ::chown(pattern.c_str(), run_as.uid, run_as.gid) != 0) {
    return System("handing " + pattern + " to user '" + options.user + "'");
  }
  return folder;
}

ExecFolder::~ExecFolder() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
  if (ec) {
    MakeRemovable(path_);
    std::filesystem::remove_all(path_, ec);
  }
}

Status ExecFolder::Write(const std::string& name, std::string_view content) const {
  const std::string path = path_ + "/" + name;
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (fd.fd < 0) return System("creating " + path);
  while (!content.empty()) {
    const ssize_t n = ::write(fd.fd, content.data(), content.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return System("writing " + path);
    content.remove_prefix(static_cast<size_t>(n));
  }
  return Ok();
}

Result<std::string> ExecFolder::Read(const std::string& name, uint64_t max_bytes) const {
  auto refuse = [&](const std::string& what) {
    return MakeError(ErrorKind::kInvalidArgument, "exec step: output file '" + name + "' " + what, "script_error");
  };
  Fd dir(::open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.fd < 0) return System("opening " + path_);
  // O_NOFOLLOW: a symlink to a file outside the folder is refused; O_NONBLOCK: a FIFO cannot block the worker.
  Fd fd(::openat(dir.fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (fd.fd < 0) return refuse(errno == ENOENT ? "is missing" : errno == ELOOP ? "is a symlink" : std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) return System("stat " + name);
  if (!S_ISREG(st.st_mode)) return refuse("is not a regular file");
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return refuse("is larger than " + std::to_string(max_bytes) + " bytes");
  }
  std::string content(static_cast<size_t>(st.st_size), '\0');
  size_t have = 0;
  while (have < content.size()) {
    const ssize_t n = ::read(fd.fd, content.data() + have, content.size() - have);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return System("reading " + name);
    if (n == 0) break;
    have += static_cast<size_t>(n);
  }
  content.resize(have);
  return content;
}

}  // namespace imgpipe
