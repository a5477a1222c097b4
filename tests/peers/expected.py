"""What the peers' suites are held to: the tests left out of the run, the
tests run once per signal, and the documented differences, with the reason
for each.

A test is left out when it is about the peer's own flags, modes or
messages; everything else is a general test and must pass. A documented
difference must fail, and fail for its documented reason: its patterns
have to appear in the failure, so a test that fails for another
reason (a defect) is still a failure, and one that starts passing is a
failure too (the list is stale). The control run against the real peers
expects every general test to pass.
"""

# (test, reason): `test` is FILE::FUNCTION, or FILE for a whole file.
LEFT_OUT = {
    "dumb-init": [
        ("cli_test.py", "dumb-init's own command line (--help, --version, -c, -r, -v)"),
        ("child_processes_test.py::test_setsid_signals_entire_group",
         "dumb-init's setsid mode (DUMB_INIT_SETSID): signals go to the whole process group"),
        ("child_processes_test.py::test_no_setsid_doesnt_signal_entire_group",
         "dumb-init's no-setsid mode (DUMB_INIT_SETSID=0)"),
        ("child_processes_test.py::test_all_processes_receive_term_on_exit_if_setsid",
         "dumb-init's setsid mode (DUMB_INIT_SETSID)"),
        ("child_processes_test.py::test_processes_dont_receive_term_on_exit_if_no_setsid",
         "dumb-init's no-setsid mode (DUMB_INIT_SETSID=0)"),
        ("child_processes_test.py::test_fails_nonzero_with_bad_exec",
         "dumb-init's own error text ('[dumb-init] /doesnotexist: ...') and -c"),
        ("shell_background_test.py",
         "dumb-init's job control per setsid mode (suspends itself on SIGTSTP/TTIN/TTOU)"),
        ("proxies_signals_test.py::test_default_rewrites_can_be_overriden_with_setsid_enabled",
         "dumb-init's -r flag"),
        ("proxies_signals_test.py::test_ignored_signals_are_not_proxied", "dumb-init's -r flag"),
        ("tty_test.py::test_sighup_sigcont_ignored_if_was_session_leader",
         "dumb-init's -v flag and its debug messages"),
    ],
    "tini": [],
}

# Each general test runs once, in dumb-init's default configuration; the
# variants for its option settings are left out. (param, value) -> reason.
LEFT_OUT_VARIANTS = {
    "dumb-init": [
        ("both_debug_modes", "1", "DUMB_INIT_DEBUG=1: dumb-init's debug output"),
        ("both_setsid_modes", "0", "DUMB_INIT_SETSID=0: dumb-init's no-setsid mode"),
        ("rewrite_map", "non-empty", "dumb-init's -r flag"),
    ],
}

_USR2 = ("SIGUSR2 is refused (logged, not forwarded): for nginx it starts a binary "
         "upgrade, which in an immutable image would leave a new master orphaned")
_STOP = ("SIGINT and SIGTERM ask for a graceful stop: the child gets the stop signal, "
         "a second request moves on to SIGTERM, never SIGINT itself")
_PIPE = ("SIGPIPE is ignored: the init's own writes to a health client that hung up "
         "raise it, and it must mean nothing; it stays blocked and is never read, so "
         "one sent to the init is not forwarded (the child starts with SIGPIPE at its "
         "default action)")
_FAULT = ("the faults a bug raises (ILL, TRAP, BUS, FPE, SEGV) stay unblocked at their "
          "default action, so a fault in the init ends it at once; one sent to it is "
          "not forwarded: as PID 1 of a container the kernel drops it (the init lives, "
          "the child gets nothing), and here, where the init is not PID 1, it kills the "
          "init and the child waits in vain")

# Tests that send every signal of dumb-init's NORMAL_SIGNALS to one init and
# stop at the first failed assertion: each runs once per signal instead, with
# a fresh init, as FILE::NAME[SIGNAME] (peers_plugin.py).
ONE_SIGNAL_AT_A_TIME = {
    "dumb-init": ["proxies_signals_test.py::test_proxies_signals"],
}

# (test, patterns, reason); `test` as above, with the parameters in brackets
# where the function is parametrized. The failure (its traceback, captured
# output and the plugin's list of processes left) must contain the pattern,
# or every one of a tuple of patterns.
DIFFERENCES = {
    "tini": [
        ("tini_steps.py::test_inner_signal[proxy-SIGUSR2]", "TimeoutExpired", _USR2),
        ("tini_steps.py::test_inner_signal[subreaper-SIGUSR2]", "TimeoutExpired", _USR2),
        ("tini_steps.py::test_outer_signal[SIGUSR2]", "Test failed with timeout!", _USR2),
        ("tini_steps.py::test_inner_sigconf", "is missing in Sig",
         "the child starts with every signal unblocked and at its default action, "
         "whatever the init's parent left ignored or blocked: nginx must not inherit "
         "a blocked SIGHUP or an ignored SIGQUIT"),
    ],
    "dumb-init": [
        # test_proxies_signals, one signal and one init at a time: SIGTERM
        # passes only because generic.ini makes TERM the stop signal.
        ("proxies_signals_test.py::test_proxies_signals[SIGINT]", "assert b'15\\n' == b'2\\n'", _STOP),
        ("proxies_signals_test.py::test_proxies_signals[SIGUSR2]",
         ("Timeout >5.0s", "SIGUSR2 not forwarded"), _USR2),
        ("proxies_signals_test.py::test_proxies_signals[SIGPIPE]",
         ("Timeout >5.0s", "peerprep-init: running"), _PIPE),
    ] + [
        ("proxies_signals_test.py::test_proxies_signals[%s]" % sig,
         ("Timeout >5.0s", "peerprep-init: killed by %s" % sig), _FAULT)
        for sig in ("SIGILL", "SIGTRAP", "SIGBUS", "SIGFPE", "SIGSEGV")
    ] + [
        # TERM, QUIT, CONT pass; the INT after them, a second stop request,
        # arrives as SIGTERM (b'2\n' is expected at that step only).
        ("proxies_signals_test.py::test_proxies_signals_with_rewrite",
         "assert b'15\\n' == b'2\\n'", _STOP),
        ("cwd_test.py::test_working_directories", "assert b'/tmp\\n/tmp\\n' == b'/\\n/tmp\\n'",
         "the init keeps the working folder it was started in, as tini does: relative "
         "paths in the config are read again at every reload"),
    ],
}
