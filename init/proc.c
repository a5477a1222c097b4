#include "init/proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* The kernel's struct sigaction (x86-64 and arm64 alike). */
struct kernel_sigaction {
	void (*handler)(int);
	unsigned long flags;
	void (*restorer)(void);
	unsigned long mask;
};

/* Sets signal s to SIG_DFL. musl refuses the signals it keeps for itself
 * (32-34), but one of them ignored by our own parent (GNU make ignores 32
 * and 33) would stay ignored across exec: the kernel is asked directly. */
static void default_disposition(int s)
{
	struct sigaction dfl;
	struct kernel_sigaction k = {SIG_DFL, 0, NULL, 0};

	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	if (sigaction(s, &dfl, NULL) < 0 && errno == EINVAL)
		syscall(SYS_rt_sigaction, s, &k, NULL, sizeof(k.mask));
}

/* Only async-signal-safe calls from here to exec: libuv's resolver threads
 * may hold allocator locks at the moment of fork. After vfork (shared):
 * the same, and nothing written but this function's own locals. */
static void child_exec(char *const argv[], char *const envp[], int stderr_fd, int tty_fd,
		       int report_fd, int flags)
{
	sigset_t none;

	/* Everything is still blocked (the parent's mask): a signal sent to
	 * the new process group now waits until the dispositions are the
	 * defaults, and then reaches the child, never the init. */
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			default_disposition(s);
	setpgid(0, 0);
	/* From the background this raises SIGTTOU, which is blocked here. */
	if (tty_fd >= 0)
		tcsetpgrp(tty_fd, getpid());
	/* Job-control stops that reached the child while it was still in the
	 * init's group are dropped (ignoring a pending signal discards it): a
	 * vforked parent could not continue a child they stopped before exec.
	 * A config test keeps them ignored (PI_SPAWN_NO_STOPS). */
	static const int stops[] = {SIGTSTP, SIGTTIN, SIGTTOU};
	struct sigaction ign;

	memset(&ign, 0, sizeof(ign));
	ign.sa_handler = SIG_IGN;
	for (size_t i = 0; i < sizeof(stops) / sizeof(stops[0]); i++) {
		sigaction(stops[i], &ign, NULL);
		if (!(flags & PI_SPAWN_NO_STOPS))
			default_disposition(stops[i]);
	}
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (stderr_fd >= 0 && stderr_fd != STDERR_FILENO)
		dup2(stderr_fd, STDERR_FILENO);

	/* Keep 0-2 and the report pipe (close-on-exec, so exec closes it):
	 * two close_range calls, or a loop on kernels older than 5.9. */
	int closed = -1;
#ifdef SYS_close_range
	if (report_fd >= 3)
		closed =
		    (report_fd == 3 ? 0 : (int)syscall(SYS_close_range, 3U, report_fd - 1U, 0U)) |
		    (int)syscall(SYS_close_range, report_fd + 1U, ~0U, 0U);
#endif
	if (closed != 0)
		for (int fd = 3; fd < 1024; fd++)
			if (fd != report_fd)
				close(fd);
	execvpe(argv[0], argv, envp);
	int e = errno;
	ssize_t w;
	do
		w = write(report_fd, &e, sizeof(e));
	while (w < 0 && errno == EINTR);
	_exit(e == ENOENT || e == ENOTDIR ? 127 : 126);
}

/* Waits until exec succeeds (end of file) or fails (its errno arrives).
 * A stop signal that reached the child before exec (Ctrl-Z to the init's
 * group, TSTP to its pid) stops it there, and this wait would stop PID 1
 * with it: a child found stopped is continued. Returns what read gave. */
static ssize_t spawn_report(pid_t pid, int fd, int *e)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	ssize_t n;

	for (;;) {
		int r = poll(&pfd, 1, 10);
		if (r > 0 || (r < 0 && errno != EINTR))
			break; /* a failed poll: the plain read still ends */
		siginfo_t si;
		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, (id_t)pid, &si, WSTOPPED | WNOHANG | WNOWAIT) == 0 &&
		    si.si_pid == pid && si.si_code == CLD_STOPPED)
			kill(pid, SIGCONT);
	}
	do
		n = read(fd, e, sizeof(*e));
	while (n < 0 && errno == EINTR);
	return n;
}

pid_t pi_proc_spawn(char *const argv[], char *const envp[], int stderr_fd, int tty_fd,
		    int *exec_errno, int flags)
{
	int shared = (flags & PI_SPAWN_VFORK) && tty_fd < 0;
	int p[2];
	int e = 0;

	*exec_errno = 0;
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	/* main keeps 0-2 open and stderr_fd is open: the report pipe is
	 * none of them, so the child's dup2 cannot close it. */
	pid_t pid = shared ? vfork() : fork();
	if (pid < 0) {
		e = errno;
		close(p[0]);
		close(p[1]);
		return -e;
	}
	if (pid == 0)
		child_exec(argv, envp, stderr_fd, tty_fd, p[1], flags);
	close(p[1]);
	ssize_t n = spawn_report(pid, p[0], &e);
	close(p[0]);
	if (n == (ssize_t)sizeof(e))
		*exec_errno = e;
	return pid;
}

int pi_proc_tty(void)
{
	pid_t fg;

	if (!isatty(STDIN_FILENO))
		return -1;
	/* 0 for both: the group is in a parent pid namespace (unshare
	 * --fork leads it), and it is still ours. */
	fg = tcgetpgrp(STDIN_FILENO);
	return fg >= 0 && fg == getpgrp() ? STDIN_FILENO : -1;
}

void pi_proc_tty_reclaim(int tty_fd)
{
	pid_t own = getpgrp();

	if (tty_fd >= 0 && own > 0)
		tcsetpgrp(tty_fd, own);
}

int pi_proc_exit_code(int wstatus)
{
	if (WIFEXITED(wstatus))
		return WEXITSTATUS(wstatus);
	if (WIFSIGNALED(wstatus))
		return 128 + WTERMSIG(wstatus);
	return 1;
}

/* Calls fn for every live (not zombie) process whose parent is parent,
 * read from /proc; returns how many there were. */
static size_t proc_each_child(pid_t parent, void (*fn)(pid_t pid, size_t i, void *arg), void *arg)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	size_t n = 0;

	if (!d)
		return 0;
	while ((de = readdir(d)) != NULL) {
		char path[64], buf[512];
		char *end;
		long pid = strtol(de->d_name, &end, 10);
		if (*end || pid <= 0 || pid == parent)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t len = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (len <= 0)
			continue;
		buf[len] = '\0';
		/* "pid (comm) state ppid ...": comm may hold spaces and ')'. */
		char *rp = strrchr(buf, ')');
		long ppid = 0;
		char state;
		if (rp && sscanf(rp + 1, " %c %ld", &state, &ppid) == 2 && ppid == parent &&
		    state != 'Z')
			fn((pid_t)pid, n++, arg);
	}
	closedir(d);
	return n;
}

struct proc_into {
	pid_t *out;
	size_t max;
};

static void proc_keep(pid_t pid, size_t i, void *arg)
{
	struct proc_into *into = arg;

	if (i < into->max)
		into->out[i] = pid;
}

size_t pi_proc_children(pid_t parent, pid_t *out, size_t max)
{
	struct proc_into into = {out, max};

	return proc_each_child(parent, proc_keep, &into);
}

struct proc_kill {
	int sig;
	int n;
};

static void proc_kill_one(pid_t pid, size_t i, void *arg)
{
	struct proc_kill *k = arg;

	(void)i;
	if (kill(pid, k->sig) == 0)
		k->n++;
}

int pi_proc_signal_leftovers(int sig, pid_t pgid)
{
	int n = 0;

	if (getpid() == 1)
		return kill(-1, sig) == 0 ? 1 : 0;
	if (pgid > 0 && kill(-pgid, sig) == 0)
		n++;
	/* As a subreaper, orphans of ours are the processes whose parent we
	 * now are; /proc is the only place that says so. */
	struct proc_kill k = {sig, 0};
	proc_each_child(getpid(), proc_kill_one, &k);
	return n + k.n;
}
