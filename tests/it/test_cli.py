"""Command-line forms (SPEC §1): the sub-command may come before or after
`-c FILE`, and anything else is a usage error (exit 2)."""

import subprocess

from pi import BIN, base_env


def run(tmp_path, *args):
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / "templates" / "a.conf.template").write_text("x ${NGINX_A};\n")
    ini = tmp_path / "pi.ini"
    ini.write_text("[log]\nlevel = error\n")
    args = [str(ini) if a == "INI" else a for a in args]
    env = base_env(tmp_path, NGINX_A="one")
    return subprocess.run([BIN] + args, env=env, capture_output=True, text=True, timeout=10)


def test_config_option_before_or_after_the_command(tmp_path):
    after = run(tmp_path, "render", "-c", "INI", "--stdout")
    before = run(tmp_path, "-c", "INI", "render", "--stdout")
    assert after.returncode == before.returncode == 0, after.stderr + before.stderr
    assert after.stdout == before.stdout
    assert "x one;" in before.stdout
    assert not (tmp_path / "conf.d" / "a.conf").exists(), "--stdout wrote a file"


def test_unknown_command_or_argument_is_exit_2(tmp_path):
    for args in (["deploy"], ["-c", "INI", "render", "check"], ["render", "--bogus"]):
        p = run(tmp_path, *args)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.startswith("peerprep-init: "), p.stderr


def test_bad_command_is_refused_at_load_naming_the_variable(tmp_path):
    """A command that cannot be split is a configuration error (exit 2)
    found when the config is read, before anything is rendered or run."""
    env = base_env(tmp_path, PEERPREP_INIT_NGINX_COMMAND="nginx -g 'daemon off;",
                   PEERPREP_INIT_TEMPLATES_DIR=str(tmp_path / "absent"))
    p = subprocess.run([BIN], env=env, capture_output=True, text=True, timeout=10)
    assert p.returncode == 2, p.stderr
    assert "PEERPREP_INIT_NGINX_COMMAND: unclosed quote" in p.stderr, p.stderr
    assert "rendered" not in p.stderr and "started" not in p.stderr, p.stderr
