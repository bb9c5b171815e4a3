#include "crypto/mapped_file.hpp"

#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <utility>

namespace imgpipe {

namespace {

struct Guard {
  const char* begin;
  const char* end;
  sigjmp_buf env;
};

// The guard of the calling thread while it runs MappedFile::Guarded, else null. Read by the signal handler, which
// runs on the faulting thread: SIGBUS from a memory access is delivered to the thread that made it.
thread_local Guard* t_guard = nullptr;

struct sigaction g_previous {};

void OnBus(int sig, siginfo_t* info, void* context) {
  Guard* guard = t_guard;
  const auto* addr = static_cast<const char*>(info->si_addr);
  if (guard != nullptr && addr >= guard->begin && addr < guard->end) {
    t_guard = nullptr;
    siglongjmp(guard->env, 1);
  }
  // Not a mapping of ours: do what would have happened without this handler.
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(sig, info, context);
    return;
  }
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN && g_previous.sa_handler != nullptr) {
    g_previous.sa_handler(sig);
    return;
  }
  // Returning re-runs the faulting access, which now gets the default action (a core dump), as without us.
  ::signal(SIGBUS, SIG_DFL);
}

void InstallHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action {};
    action.sa_sigaction = OnBus;
    // SA_NODEFER: SIGBUS stays unblocked after siglongjmp leaves the handler, without saving and restoring the signal
    // mask on every guarded call (sigsetjmp with a mask costs a system call).
    action.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGBUS, &action, &g_previous);
  });
}

}  // namespace

Result<MappedFile> MappedFile::Map(int fd, uint64_t offset, size_t length, const std::string& what) {
  InstallHandler();
  const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t base_offset = offset - offset % page;
  const size_t base_size = static_cast<size_t>(offset - base_offset) + length;
  // MAP_POPULATE: the pages are in the page cache already for a hot object; one call sets up every page table entry
  // instead of a fault per 16 pages.
  void* base = ::mmap(nullptr, base_size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, static_cast<off_t>(base_offset));
  if (base == MAP_FAILED) {
    return MakeError(ErrorKind::kInternal, "cannot map " + what + ": " + std::strerror(errno));
  }
  return MappedFile(base, base_size, static_cast<const char*>(base) + (offset - base_offset), length);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)), base_size_(std::exchange(other.base_size_, 0)),
      data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (base_ != nullptr) ::munmap(base_, base_size_);
    base_ = std::exchange(other.base_, nullptr);
    base_size_ = std::exchange(other.base_size_, 0);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (base_ != nullptr) ::munmap(base_, base_size_);
}

bool MappedFile::Guarded(void (*fn)(void*), void* arg) const {
  Guard guard;
  guard.begin = static_cast<const char*>(base_);
  guard.end = guard.begin + base_size_;
  if (sigsetjmp(guard.env, 0) != 0) return false;  // t_guard was cleared by the handler
  t_guard = &guard;
  fn(arg);
  t_guard = nullptr;
  return true;
}

}  // namespace imgpipe
