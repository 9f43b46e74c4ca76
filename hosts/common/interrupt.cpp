#include "interrupt.h"

#include <signal.h>

#include <atomic>

namespace kvc::hosts {
namespace {

std::atomic<int> g_signal{0};

void on_signal(int signal_number) {
  if (g_signal.exchange(signal_number) != 0) {
    // The second signal: the user insists. Take the default action (terminate).
    ::signal(signal_number, SIG_DFL);
    ::raise(signal_number);
  }
}

}  // namespace

void install_interrupt_handlers() {
  struct sigaction action = {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // blocking reads and writes resume; the work polls the flag
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

bool interrupted() { return g_signal.load(std::memory_order_relaxed) != 0; }
int interrupt_signal() { return g_signal.load(std::memory_order_relaxed); }
int interrupted_exit_status() { return 128 + interrupt_signal(); }
void reset_interrupt() { g_signal.store(0); }

}  // namespace kvc::hosts
