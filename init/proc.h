/* Child processes of PID 1 (SPEC §5): start, decode status, clean up. */
#ifndef PI_PROC_H
#define PI_PROC_H

#include <sys/types.h>

/* Starts argv[0] (searched in PATH) as a child with the default signal mask
 * and dispositions, in its own process group, with every descriptor above 2
 * closed and environment envp. When stderr_fd >= 0 it becomes the child's
 * standard error. All memory the child touches is prepared before fork, so
 * the call is safe while libuv's worker threads run.
 *
 * Returns the pid, or a negative errno when fork fails. When exec fails the
 * child exits 127 (not found) or 126 (not executable) and *exec_errno is
 * set to the reason; it is 0 when exec succeeded. */
pid_t pi_proc_spawn(char *const argv[], char *const envp[], int stderr_fd, int *exec_errno);

/* The exit code a shell would report: the code, or 128+N for signal N. */
int pi_proc_exit_code(int wstatus);

/* Sends sig to every process left that the init is responsible for: with
 * pid 1, every process in the namespace; otherwise the process group pgid
 * and every process whose parent is the init (reparented orphans). Returns
 * how many were signalled. */
int pi_proc_signal_leftovers(int sig, pid_t pgid);

#endif
