/* A native backtrace when a process dies of SIGSEGV, SIGBUS or SIGABRT, for the sanitizer runs
 * (the machine has no gdb): LD_PRELOAD it, and each frame is printed as
 * "fastdet-backtrace: <object> +0x<offset> <symbol>", which addr2line resolves against the
 * unstripped object. Python's faulthandler runs first and then re-raises into this handler. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void report(int signal_number) {
  void* frames[64];
  const int count = backtrace(frames, 64);
  fprintf(stderr, "fastdet-backtrace: signal %d, %d frames\n", signal_number, count);
  for (int i = 0; i < count; ++i) {
    Dl_info info;
    memset(&info, 0, sizeof info);
    if (dladdr(frames[i], &info) && info.dli_fname) {
      fprintf(stderr, "fastdet-backtrace: %s +0x%lx %s\n", info.dli_fname,
              (unsigned long)((char*)frames[i] - (char*)info.dli_fbase),
              info.dli_sname ? info.dli_sname : "?");
    } else {
      fprintf(stderr, "fastdet-backtrace: ? %p\n", frames[i]);
    }
  }
  fflush(stderr);
  signal(signal_number, SIG_DFL);
  raise(signal_number);
}

__attribute__((constructor)) static void install(void) {
  signal(SIGSEGV, report);
  signal(SIGBUS, report);
  signal(SIGABRT, report);
}
