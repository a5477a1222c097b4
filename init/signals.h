/* Signals of PID 1 (SPEC §5), taken synchronously as tini and catatonit
 * take them: every signal is blocked from the first line of main, so none
 * is lost before the loop runs and none runs a handler; the loop reads them
 * from a signalfd. The kernel keeps one pending instance of each standard
 * signal, so a flood of one signal can never push out a pending SIGTERM or
 * SIGCHLD. */
#ifndef PI_SIGNALS_H
#define PI_SIGNALS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Blocks every signal but the faults a bug raises (SEGV, BUS, FPE, ILL,
 * TRAP), the signals musl and glibc keep for themselves (32-34) included,
 * in the calling thread; threads created later inherit the mask. Call it
 * first in main, before anything can start a thread. Returns 0 or a
 * negative errno. */
int pi_signals_block_all(void);

/* Puts back the mask the init had before pi_signals_block_all: for the
 * commands that are not PID 1 (render, check, health), which Ctrl-C
 * should end as it ends any tool. */
void pi_signals_restore(void);

/* Whether one of the n standard signals sigs (blocked, as all are) is
 * pending, in one system call: for a decision taken before the reader
 * exists. */
int pi_signals_pending(const int *sigs, size_t n);

/* The same block for the calling thread alone, around a pthread_create:
 * *old gets the mask it had, as the kernel's 64-bit set, and
 * pi_signals_thread_restore puts it back. (pthread_sigmask would not do:
 * musl leaves 32-34 out of the mask it saves, so its restore would unblock
 * them for good, and the kernel drops a signal PID 1 has not blocked and
 * has no handler for instead of queueing it for the signal reader.) */
int pi_signals_thread_block(uint64_t *old);
void pi_signals_thread_restore(uint64_t old);

/* Called once per signal read, in the order the kernel hands them over
 * (by number), except that a SIGCHLD read in the same batch comes first:
 * a child that has ended is known before a TERM or a HUP that came with
 * it is acted on (an nginx that failed at start is not a stop). */
typedef void (*pi_signals_cb)(int sig, void *data);

/* The reader. The caller owns the memory; it must stay valid until the
 * close callback of pi_signals_close has run (one loop iteration). */
struct pi_signals {
	uv_poll_t poll;
	int fd;
	pi_signals_cb cb;
	void *data;
};

/* Opens a signalfd for every blocked signal except SIGPIPE (the init
 * ignores it: a health client hanging up must not matter) and watches it
 * on loop. Returns 0 or a negative errno; on failure nothing is left open
 * and cb is never called. */
int pi_signals_start(uv_loop_t *loop, struct pi_signals *s, pi_signals_cb cb, void *data);

/* Waits until one of the signals the reader reads is pending, or ms
 * milliseconds: 1 when one is (or when no descriptor could be made), 0
 * after ms. Reads nothing: the signal stays pending for the reader. */
int pi_signals_wait(int ms);

/* Reads and hands over what is pending now, as the loop does when the
 * descriptor is readable: for a decision that cannot wait for the next
 * loop turn. */
void pi_signals_read(struct pi_signals *s);

/* Stops reading; the descriptor is closed when the handle is. */
void pi_signals_close(struct pi_signals *s);

/* Writes "TERM", "ALRM", ...; real-time signals as "RT<n>" with n the
 * signal number, into buf (at least 8 bytes) and returns buf. */
const char *pi_signals_name(int sig, char *buf, size_t len);

#endif
