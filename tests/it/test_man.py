"""The man page peerprep-init(8): every configuration key that
`peerprep-init --help` prints (from the same key table the parser reads) is
documented with its default and its environment names, and the page
renders without a warning. `make install-man` installs it."""
import os
import re
import subprocess

import pytest

import pi

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANPAGE = os.path.join(REPO, "doc", "peerprep-init.8")
KEY = re.compile(r"^  ([a-z_]+\.[a-z_]+) = (.*)$")
ENV = re.compile(r"^      env: (.*)$")


def help_keys():
    """[(key, default, [environment names])] from --help."""
    out = subprocess.run([pi.BIN, "--help"], capture_output=True, text=True, check=True,
                         timeout=10).stdout
    keys = []
    for line in out.splitlines():
        m = KEY.match(line)
        if m:
            keys.append((m.group(1), m.group(2), []))
        m = ENV.match(line)
        if m and keys:
            keys[-1][2].extend(n.strip() for n in m.group(1).split(","))
    assert len(keys) >= 19, out
    return keys


def rendered():
    """The page as plain ASCII text, one long line per paragraph."""
    p = subprocess.run(["groff", "-man", "-Tascii", "-P-cbou", "-rLL=1000n", MANPAGE],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return re.sub(r"[ \t]+", " ", p.stdout)


@pytest.fixture(scope="module")
def text():
    return rendered()


def test_every_key_with_its_default(text):
    missing = [(k, d) for k, d, _ in help_keys() if "%s = %s" % (k, d) not in text]
    assert not missing, "keys (with their --help default) missing from %s: %s" % (MANPAGE, missing)


def test_every_environment_name(text):
    names = {n for _, _, env in help_keys() for n in env if not n.startswith("PEERPREP_INIT_")}
    missing = sorted(n for n in names if n not in text)
    assert not missing, missing
    assert "PEERPREP_INIT_SECTION_KEY" in text


def test_a_missing_key_is_noticed(tmp_path):
    """The check above is not vacuous: a key dropped from the page fails it."""
    key, default, _ = help_keys()[0]
    with open(MANPAGE) as f:
        src = f.read()
    line = '.BR %s " = " %s\n' % (key, default)
    assert line in src
    assert "%s = %s" % (key, default) not in src.replace(line, "")


def test_sections_and_builtins(text):
    for heading in ("SYNOPSIS", "COMMANDS", "CONFIGURATION", "TEMPLATES", "BUILT-IN VARIABLES",
                    "UPSTREAM HOSTS", "SIGNALS", "HEALTH ENDPOINT", "EXIT STATUS", "ENVIRONMENT",
                    "FILES"):
        assert "\n%s\n" % heading in text, heading
    for name in ("NGINX_LOCAL_RESOLVERS", "NGINX_WORKER_PROCESSES", "NGINX_LISTEN_IPV6",
                 "NGINX_ENTRYPOINT_WORKER_PROCESSES_AUTOTUNE", "PEERPREP_INIT_ENTRYPOINT_DIR",
                 "/docker-entrypoint.d", "SIGUSR2", "application/health+json"):
        assert name in text, name
    for code in ("126", "127", "128+N"):
        assert code in text


def test_renders_without_warnings():
    p = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8", MANPAGE], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    p = subprocess.run(["man", "-l", MANPAGE], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH="80"))
    assert p.returncode == 0 and p.stderr == "" and "peerprep-init" in p.stdout, p.stderr


def test_make_install_man(tmp_path):
    p = subprocess.run(["make", "-s", "-C", REPO, "install-man", "DESTDIR=%s" % tmp_path,
                        "PREFIX=/usr"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    installed = tmp_path / "usr" / "share" / "man" / "man8" / "peerprep-init.8"
    with open(MANPAGE, "rb") as f:
        assert installed.read_bytes() == f.read()
    assert oct(installed.stat().st_mode & 0o777) == "0o644"
    p = subprocess.run(["make", "-n", "-C", REPO, "install", "DESTDIR=/x", "PREFIX=/usr"],
                       capture_output=True, text=True, timeout=60)
    assert "/x/usr/share/man/man8/peerprep-init.8" in p.stdout, p.stdout


def test_make_check_checks_the_page():
    with open(os.path.join(REPO, "Makefile")) as f:
        check = [line for line in f if line.startswith("check:")]
    assert len(check) == 1 and "check-man" in check[0].split(), check
