/* The child (SPEC §5): start it, forward signals to it, stop it step by
 * step, and judge how it ended. */
#include "init/log.h"
#include "init/proc.h"
#include "init/sup.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#define SUP_KILL_AFTER_TERM_MS 5000 /* stop_timeout's SIGTERM, then SIGKILL */

int sup_child_spawn(struct sup *s, int flags)
{
	int exec_errno;

	s->tty_fd = pi_proc_tty();
	pid_t pid = pi_proc_spawn(s->cmd, s->envp, -1, s->tty_fd, &exec_errno, flags);
	if (pid < 0) {
		PI_LOG(PI_ERROR, "cannot start the command", PI_STR("command", s->cmd[0]),
		       PI_STR("error", strerror((int)-pid)));
		s->tty_fd = -1;
		/* No process, descriptor or memory for it: a limit (2), not a
		 * command that could not be executed (126/127). */
		return 2;
	}
	if (exec_errno) {
		/* The child exits 127/126 and is reaped like any other. */
		PI_LOG(PI_ERROR, "cannot execute the command", PI_STR("command", s->cmd[0]),
		       PI_STR("error", strerror(exec_errno)));
	} else {
		PI_LOG(PI_INFO, "started", PI_STR("command", s->cmd[0]), PI_INT("pid", (int)pid));
	}
	s->child_start_ms = uv_hrtime() / 1000000;
	s->child_exec_failed = exec_errno != 0;
	s->child = pid;
	s->child_pgid = pid;
	s->view.child_pid = pid;
	return 0;
}

void sup_child_start(struct sup *s)
{
	int code = sup_child_spawn(s, 0);

	if (code) {
		sup_begin_exit(s, code);
		return;
	}
	s->state = SUP_RUN;
}

void sup_child_signal(struct sup *s, int sig)
{
	char name[16];

	if (s->child > 0 && kill(s->child, sig) < 0 && errno != ESRCH)
		PI_LOG(PI_WARN, "cannot signal the child",
		       PI_STR("signal", pi_signals_name(sig, name, sizeof(name))),
		       PI_STR("error", strerror(errno)));
}

void sup_child_forward(struct sup *s, int sig)
{
	char name[16];

	if (s->child > 0) {
		PI_LOG(PI_INFO, "forwarding a signal",
		       PI_STR("signal", pi_signals_name(sig, name, sizeof(name))));
		sup_child_signal(s, sig);
	} else {
		PI_LOG(PI_WARN, "signal dropped: no child",
		       PI_STR("signal", pi_signals_name(sig, name, sizeof(name))));
	}
}

static void on_sup_stop_timer(uv_timer_t *t)
{
	sup_child_stop_step(t->data);
}

static void sup_stop_after(struct sup *s, uint64_t ms)
{
	if (uv_timer_start(&s->stop_timer, on_sup_stop_timer, ms, 0) < 0)
		sup_child_stop_step(s); /* cannot fail on an initialised timer */
}

/* Moves the graceful stop one step on: delay → stop signal → SIGTERM →
 * SIGKILL. A timer or a second SIGTERM/SIGINT calls it. */
void sup_child_stop_step(struct sup *s)
{
	const struct pi_config *c = s->cfg;

	uv_timer_stop(&s->stop_timer);
	switch (s->stop_step) {
	case 0: {
		/* The delay is stop_delay, and for nginx at least the rest of its
		 * first second: it takes its stop signal only once its config is
		 * parsed (sup.h), and sooner QUIT's default action ends it with
		 * a core and exit 131 instead of a graceful stop. A second
		 * SIGTERM/SIGINT ends the delay, whichever it was. */
		uint64_t delay = c->nginx_stop_delay_ms, first = 0;

		if (s->cmd_is_nginx && uv_is_active((uv_handle_t *)&s->settle_timer))
			first = uv_timer_get_due_in(&s->settle_timer);
		s->stop_step = 1;
		if (first > delay) {
			PI_LOG(PI_INFO, "stop waits until nginx has run 1 s",
			       PI_UINT("delay_ms", (unsigned long long)first));
			delay = first;
		} else if (delay > 0) {
			PI_LOG(PI_INFO, "draining before stop",
			       PI_UINT("delay_ms", (unsigned long long)delay));
		}
		if (delay > 0) {
			sup_stop_after(s, delay);
			return;
		}
	}
		/* fall through */
	case 1:
		s->stop_step = 2;
		PI_LOG(PI_INFO, "stopping the child",
		       PI_STR("signal", pi_config_signal_name(c->nginx_stop_signal)));
		sup_child_signal(s, c->nginx_stop_signal);
		sup_stop_after(s, c->nginx_stop_timeout_ms);
		return;
	case 2:
		s->stop_step = 3;
		PI_LOG(PI_WARN, "the child did not stop in time; sending SIGTERM");
		sup_child_signal(s, SIGTERM);
		sup_stop_after(s, SUP_KILL_AFTER_TERM_MS);
		return;
	default:
		s->stop_step = 4;
		PI_LOG(PI_WARN, "the child did not stop; sending SIGKILL");
		sup_child_signal(s, SIGKILL);
		if (s->child_pgid > 0)
			kill(-s->child_pgid, SIGKILL);
		return;
	}
}

/* nginx (nginx.command, with a config test configured) that exits with a
 * non-zero code of its own (not by a signal) in its first SUP_SERVED_MS
 * (the settle timer still runs) has never served: it failed the start
 * config test its own start-up stands for. A -- COMMAND is not nginx: its
 * status always passes through. */
static int sup_child_failed_start(struct sup *s, int wstatus)
{
	return s->cmd_is_nginx && s->test_argv && !s->child_exec_failed && WIFEXITED(wstatus) &&
	       WEXITSTATUS(wstatus) != 0 && uv_is_active((uv_handle_t *)&s->settle_timer);
}

void sup_child_exited(struct sup *s, int wstatus)
{
	struct pi_templates_error err;
	int code = pi_proc_exit_code(wstatus);
	uint64_t ran_ms;

	ran_ms = uv_hrtime() / 1000000 - s->child_start_ms;
	s->child = 0;
	s->view.child_pid = 0;
	pi_proc_tty_reclaim(s->tty_fd);
	s->tty_fd = -1;
	if (s->state == SUP_STOPPING || s->state == SUP_EXITING) {
		/* Asked to stop, or stopped by the init's own exit (health.listen
		 * that cannot be bound, say): the exit code is already chosen. */
		PI_LOG(PI_INFO, "the child stopped", PI_INT("status", code));
	} else if (sup_child_failed_start(s, wstatus)) {
		PI_LOG(PI_ERROR, "config test failed: nginx exited before it served",
		       PI_INT("status", code), PI_UINT("ran_ms", (unsigned long long)ran_ms));
		/* Undone in reverse: a reload committed on top of the start's
		 * files first (its kept files are the start's), then the start. */
		sup_reload_close(s);
		if (s->tpl && pi_templates_rollback(s->tpl, &err) < 0)
			PI_LOG(PI_ERROR, "cannot restore the previous output files",
			       PI_STR("error", err.msg));
		code = 5;
	} else if (code == 0 && !s->cmd_is_nginx) {
		/* A -- COMMAND that ran to completion (a one-shot job) did
		 * what it was for; nginx ending by itself never is. */
		PI_LOG(PI_INFO, "the child exited", PI_STR("status", "0"));
	} else {
		PI_LOG(PI_ERROR, "the child exited unexpectedly", PI_INT("status", code));
	}
	sup_begin_exit(s, code);
}
