#include "init/signals.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The kernel's signal set on x86-64 and arm64: 64 signals, one bit each.
 * The C libraries refuse to put 32-34 into a sigset_t, so the kernel is
 * asked directly. */
typedef uint64_t kernel_sigset;
#define SIGBIT(s) ((kernel_sigset)1 << ((s)-1))

/* Faults a bug raises stay deliverable: blocked, the kernel would kill
 * the process without running a sanitizer's handler, and nobody forwards
 * them on purpose. */
static const kernel_sigset sig_faults =
    SIGBIT(SIGSEGV) | SIGBIT(SIGBUS) | SIGBIT(SIGFPE) | SIGBIT(SIGILL) | SIGBIT(SIGTRAP);

static kernel_sigset sig_before;

static void sig_nothing(int sig)
{
	(void)sig;
}

int pi_signals_block_all(void)
{
	struct sigaction nothing = {.sa_handler = sig_nothing}, before;

	/* musl unblocks its own signals (32-34) the first time a handler is
	 * installed in a process that has no thread yet, once. Were that the
	 * renderer's SIGBUS guard (a template of 1 MiB or more), 33 and 34
	 * would stay unblocked for good, and the kernel would drop them (PID 1,
	 * no handler) instead of queueing them for the signal reader. So a
	 * handler is installed and removed here, before the mask is set:
	 * SIGWINCH, which would be discarded anyway until the mask is set. */
	sigemptyset(&nothing.sa_mask);
	if (sigaction(SIGWINCH, &nothing, &before) == 0)
		sigaction(SIGWINCH, &before, NULL);
	/* A launcher that left SIGCHLD ignored would have the kernel reap our
	 * children itself and send no SIGCHLD: nginx's end, or a config
	 * test's, would never be seen. waitpid needs the default. */
	struct sigaction dfl = {.sa_handler = SIG_DFL};
	sigemptyset(&dfl.sa_mask);
	sigaction(SIGCHLD, &dfl, NULL);
	return pi_signals_thread_block(&sig_before);
}

int pi_signals_thread_block(uint64_t *old)
{
	kernel_sigset all = ~sig_faults;

	if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, old, sizeof(all)) < 0)
		return -errno;
	return 0;
}

void pi_signals_thread_restore(uint64_t old)
{
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, NULL, sizeof(old));
}

int pi_signals_pending(const int *sigs, size_t n)
{
	sigset_t set;

	if (sigpending(&set) < 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (sigismember(&set, sigs[i]) == 1)
			return 1;
	return 0;
}

void pi_signals_restore(void)
{
	pi_signals_thread_restore(sig_before);
}

static void on_signals_close(uv_handle_t *h)
{
	struct pi_signals *s = h->data;

	close(s->fd);
	s->fd = -1;
}

/* Hands over one batch read, SIGCHLD first (see pi_signals_cb). Returns 0,
 * or -1 when a callback closed the reader. */
static int signals_dispatch(struct pi_signals *s, const struct signalfd_siginfo *si, size_t n)
{
	for (int chld = 1; chld >= 0; chld--)
		for (size_t i = 0; i < n; i++) {
			if ((si[i].ssi_signo == SIGCHLD) != chld)
				continue;
			s->cb((int)si[i].ssi_signo, s->data);
			if (s->fd < 0 || uv_is_closing((uv_handle_t *)&s->poll))
				return -1;
		}
	return 0;
}

void pi_signals_read(struct pi_signals *s)
{
	struct signalfd_siginfo si[16];

	/* A bounded number per call, so that one sender of real-time signals
	 * cannot starve the loop; the poll is level triggered, so the rest
	 * comes on the next iteration. */
	for (int round = 0; round < 16 && s->fd >= 0; round++) {
		ssize_t n = read(s->fd, si, sizeof(si));
		if (n <= 0 || signals_dispatch(s, si, (size_t)n / sizeof(si[0])) < 0 ||
		    (size_t)n < sizeof(si))
			return;
	}
}

static void on_signals_readable(uv_poll_t *p, int status, int events)
{
	(void)events;
	if (status == 0)
		pi_signals_read(p->data);
}

/* A signalfd for what the reader reads: every blocked signal but SIGPIPE. */
static int signals_fd(void)
{
	kernel_sigset set = ~sig_faults & ~SIGBIT(SIGPIPE) & ~SIGBIT(SIGKILL) & ~SIGBIT(SIGSTOP);

	return (int)syscall(SYS_signalfd4, -1, &set, sizeof(set), SFD_NONBLOCK | SFD_CLOEXEC);
}

int pi_signals_wait(int ms)
{
	int fd = signals_fd();
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	int rc;

	if (fd < 0)
		return 1;
	do
		rc = poll(&pfd, 1, ms);
	while (rc < 0 && errno == EINTR);
	close(fd);
	return rc != 0;
}

int pi_signals_start(uv_loop_t *loop, struct pi_signals *s, pi_signals_cb cb, void *data)
{
	int rc;

	s->cb = cb;
	s->data = data;
	s->fd = signals_fd();
	if (s->fd < 0)
		return -errno;
	if ((rc = uv_poll_init(loop, &s->poll, s->fd)) < 0) {
		close(s->fd);
		s->fd = -1;
		return rc;
	}
	s->poll.data = s;
	if ((rc = uv_poll_start(&s->poll, UV_READABLE, on_signals_readable)) < 0) {
		uv_close((uv_handle_t *)&s->poll, on_signals_close);
		return rc;
	}
	return 0;
}

void pi_signals_close(struct pi_signals *s)
{
	if (s->fd >= 0 && !uv_is_closing((uv_handle_t *)&s->poll))
		uv_close((uv_handle_t *)&s->poll, on_signals_close);
}

static const char *const sig_names[32] = {
    [SIGHUP] = "HUP",	[SIGINT] = "INT",	[SIGQUIT] = "QUIT", [SIGILL] = "ILL",
    [SIGTRAP] = "TRAP", [SIGABRT] = "ABRT",	[SIGBUS] = "BUS",   [SIGFPE] = "FPE",
    [SIGKILL] = "KILL", [SIGUSR1] = "USR1",	[SIGSEGV] = "SEGV", [SIGUSR2] = "USR2",
    [SIGPIPE] = "PIPE", [SIGALRM] = "ALRM",	[SIGTERM] = "TERM", [SIGSTKFLT] = "STKFLT",
    [SIGCHLD] = "CHLD", [SIGCONT] = "CONT",	[SIGSTOP] = "STOP", [SIGTSTP] = "TSTP",
    [SIGTTIN] = "TTIN", [SIGTTOU] = "TTOU",	[SIGURG] = "URG",   [SIGXCPU] = "XCPU",
    [SIGXFSZ] = "XFSZ", [SIGVTALRM] = "VTALRM", [SIGPROF] = "PROF", [SIGWINCH] = "WINCH",
    [SIGIO] = "IO",	[SIGPWR] = "PWR",	[SIGSYS] = "SYS",
};

const char *pi_signals_name(int sig, char *buf, size_t len)
{
	if (sig > 0 && sig < 32 && sig_names[sig])
		snprintf(buf, len, "%s", sig_names[sig]);
	else
		snprintf(buf, len, "RT%d", sig);
	return buf;
}
