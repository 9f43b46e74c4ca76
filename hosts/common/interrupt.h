// Ctrl-C and SIGTERM end a long run cleanly: the first signal asks the running work to stop at
// its next safe point (between scoring calls, between timed repetitions), so the program can
// print the summary so far and write its results marked "interrupted"; a second signal ends
// the process at once (the default action).
#pragma once

namespace kvc::hosts {

// Installs the handlers for SIGINT and SIGTERM (idempotent).
void install_interrupt_handlers();

// Whether a signal asked the work to stop; the signal's number, or 0.
bool interrupted();
int interrupt_signal();

// The exit status of a program that stopped on the signal: 128 + its number, as a shell shows.
int interrupted_exit_status();

// Tests: clears the flag.
void reset_interrupt();

}  // namespace kvc::hosts
