/* Child processes of PID 1 (SPEC §5): start, decode status, clean up. */
#ifndef PI_PROC_H
#define PI_PROC_H

#include <sys/types.h>

/* Starts argv[0] (searched in PATH) as a child in its own process group,
 * with every descriptor above 2 closed and environment envp. The caller
 * has every signal blocked (pi_signals_block_all), so nothing can reach the
 * child before it is ready: the child sets every disposition to the
 * default, then the empty mask, then execs. When stderr_fd >= 0 it becomes
 * the child's standard error. When tty_fd >= 0 the child's process group
 * becomes the foreground of that terminal before exec. All memory the child
 * touches is prepared before fork, so the call is safe while libuv's worker
 * threads run. It waits for the exec; a child stopped before it (a stop
 * signal aimed at the init's group landed in the new process) is
 * continued, so the wait ends.
 *
 * Returns the pid (also the child's process group), or a negative errno
 * when the report pipe or fork fails. When exec fails the child exits 127
 * (not found) or 126 (not executable) and *exec_errno is set to the
 * reason; it is 0 when exec succeeded.
 *
 * PI_SPAWN_VFORK (ignored with a tty_fd): vfork instead of fork, for the
 * first start, when no other thread runs and nothing is mapped that the
 * child must not share: the kernel copies no page tables and the parent
 * sleeps until the exec, which saves about a tenth of a millisecond on the
 * way to nginx. A stop signal sent to the child's own pid in the
 * microseconds between its unblocking and its exec would keep the init
 * asleep (nothing else in the namespace knows that pid yet). On both
 * paths, job-control stops aimed at the init's group before the child
 * left it are dropped.
 *
 * PI_SPAWN_NO_STOPS: the job-control stops (TSTP, TTIN, TTOU) stay
 * ignored across the exec, for config tests: a short check in a process
 * group of its own, which no terminal ever stops. Without it a stream of
 * such stops aimed at the new pid could stop the child again and again
 * before its exec, and the init, which waits for the exec, with it. */
#define PI_SPAWN_VFORK 1
#define PI_SPAWN_NO_STOPS 2
pid_t pi_proc_spawn(char *const argv[], char *const envp[], int stderr_fd, int tty_fd,
		    int *exec_errno, int flags);

/* The terminal the child should get: 0 when standard input is the init's
 * controlling terminal and the init's process group has its foreground
 * (docker run -it, a shell), else -1. */
int pi_proc_tty(void);

/* Gives the foreground of tty_fd back to the init's process group; the
 * init's SIGTTOU is blocked, so it works from the background. */
void pi_proc_tty_reclaim(int tty_fd);

/* The exit code a shell would report: the code, or 128+N for signal N. */
int pi_proc_exit_code(int wstatus);

/* Sends sig to every process left that the init is responsible for: with
 * pid 1, every process in the namespace; otherwise the process group pgid
 * and every process whose parent is the init (reparented orphans). Returns
 * how many were signalled. */
int pi_proc_signal_leftovers(int sig, pid_t pgid);

/* The live processes whose parent is parent (from /proc): up to max pids
 * into out; returns how many there are (more than max: some left out). */
size_t pi_proc_children(pid_t parent, pid_t *out, size_t max);

#endif
