"""What the peers' suites are held to: the tests left out of the run, and
the documented differences, with the reason for each.

A test is left out when it is about the peer's own flags, modes or
messages; everything else is a general test and must pass. A documented
difference must fail, and fail for its documented reason: its `because`
pattern has to appear in the failure, so a test that fails for another
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

# (test, pattern that the failure must contain, reason); `test` as above,
# with the parameters in brackets where the function is parametrized.
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
        # The signals go out in order 1, 2, ...: SIGHUP (a reload) arrives,
        # SIGINT arrives as the stop signal, SIGTERM.
        ("proxies_signals_test.py::test_proxies_signals", "assert b'15\\n' == b'2\\n'", _STOP),
        # TERM, QUIT, CONT pass; the INT after them, a second stop request,
        # arrives as SIGTERM.
        ("proxies_signals_test.py::test_proxies_signals_with_rewrite",
         "assert b'15\\n' == b'2\\n'", _STOP),
        ("cwd_test.py::test_working_directories", "assert b'/tmp\\n/tmp\\n' == b'/\\n/tmp\\n'",
         "the init keeps the working folder it was started in, as tini does: relative "
         "paths in the config are read again at every reload"),
    ],
}
