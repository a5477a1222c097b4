/* The run mode (SPEC §1 run, §5): render → wait for upstream hosts →
 * config test → start the child → serve /health → supervise until the
 * child exits. And the check command, which shares the same steps. */
#ifndef PI_SUPERVISE_H
#define PI_SUPERVISE_H

#include "envsubst/templates.h"
#include "init/config.h"

#include <uv.h>

/* Fills o from cfg; o's strings point into cfg and envp. */
void pi_supervise_template_opts(const struct pi_config *cfg, char *const *envp,
				struct pi_templates_opts *o);

/* Logs (info) each output a committed set wrote, or that dir had none. */
void pi_supervise_log_rendered(const struct pi_templates *t, const char *dir);

/* The exit code for a failed render or commit (rc, a negative errno): 3,
 * or 2 when the process ran out of file descriptors (a limit, like
 * RLIMIT_NOFILE at the loop's start, not a template error). */
int pi_supervise_template_code(int rc);

/* uv_loop_init, except that too few free descriptors is UV_EMFILE instead
 * of libuv's abort (it cannot make its process-wide signal pipe). Returns
 * 0 or a negative libuv error. */
int pi_supervise_loop_init(uv_loop_t *loop);

/* Runs the container's main process. cmd is the child's argv, or NULL for
 * nginx.command. envp is the environment the child gets. Returns the exit
 * code of SPEC §7. */
int pi_supervise_run(const struct pi_config *cfg, char **cmd, char **envp);

/* The check command: one line per template, per host and for the config
 * test on standard output; returns the first failure's exit code. */
int pi_supervise_check(const struct pi_config *cfg, char **envp);

#endif
