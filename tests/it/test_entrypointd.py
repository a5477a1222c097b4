"""The official image's /docker-entrypoint.d/: peerprep-init runs nothing
from it, and says so in exactly one warning at start when it holds files
other than the image's four stock scripts (whose jobs are built in).
PEERPREP_INIT_ENTRYPOINT_DIR points the init at a test folder."""
import os
import subprocess

import pi

STOCK = ("10-listen-on-ipv6-by-default.sh", "15-local-resolvers.envsh",
         "20-envsubst-on-templates.sh", "30-tune-worker-processes.sh")


def start(tmp_path, folder, args=("--", "true")):
    env = pi.base_env(tmp_path, PEERPREP_INIT_ENTRYPOINT_DIR=folder)
    p = subprocess.run([pi.BIN] + list(args), env=env, capture_output=True, timeout=20)
    return p.returncode, p.stderr.decode(errors="replace")


def warnings(err):
    return [line for line in err.splitlines() if "does not run entrypoint scripts" in line]


def script(path, marker):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\ntouch %s\n" % marker)
    path.chmod(0o755)


def test_one_warning_names_the_scripts_and_runs_none(tmp_path):
    d = tmp_path / "entrypoint.d"
    marker = tmp_path / "ran"
    script(d / "40-custom.sh", marker)
    script(d / "sub" / "50-nested.sh", marker)
    (d / "45-env.envsh").write_text("export NGINX_X=1\n")
    for name in STOCK:
        script(d / name, marker)
    code, err = start(tmp_path, str(d))
    assert code == 0, err
    lines = warnings(err)
    assert len(lines) == 1, err
    assert "level=warn" in lines[0] and "count=3" in lines[0], lines
    assert 'files="40-custom.sh 45-env.envsh sub/50-nested.sh"' in lines[0], lines
    assert "dir=%s" % d in lines[0], lines
    assert not marker.exists()


def test_stock_scripts_and_hidden_files_alone_are_quiet(tmp_path):
    d = tmp_path / "entrypoint.d"
    for name in STOCK:
        script(d / name, tmp_path / "ran")
    (d / ".gitkeep").write_text("")
    code, err = start(tmp_path, str(d))
    assert code == 0 and not warnings(err), err


def test_missing_or_empty_folder_is_quiet(tmp_path):
    code, err = start(tmp_path, str(tmp_path / "none"))
    assert code == 0 and not warnings(err) and "entrypoint" not in err, err
    (tmp_path / "empty").mkdir()
    code, err = start(tmp_path, str(tmp_path / "empty"))
    assert code == 0 and not warnings(err), err


def test_many_files_one_bounded_line(tmp_path):
    d = tmp_path / "entrypoint.d"
    d.mkdir()
    for i in range(10050):
        (d / ("%05d-x.sh" % i)).write_text("")
    code, err = start(tmp_path, str(d))
    assert code == 0, err
    lines = warnings(err)
    assert len(lines) == 1 and "count=10000+" in lines[0], err
    assert ' files="0' in lines[0] and '-x.sh ..."' in lines[0], lines
    assert lines[0].count("-x.sh") == 5, lines


def test_the_first_names_in_order(tmp_path):
    d = tmp_path / "entrypoint.d"
    d.mkdir()
    for i in range(300):
        (d / ("%04d-x.sh" % ((i * 7919) % 300))).write_text("")
    code, err = start(tmp_path, str(d))
    lines = warnings(err)
    assert len(lines) == 1 and "count=300 " in lines[0], err
    assert 'files="0000-x.sh 0001-x.sh 0002-x.sh 0003-x.sh 0004-x.sh ..."' in lines[0], lines
    assert len(lines[0]) < 1024


def test_unreadable_folder_is_a_warning(tmp_path):
    f = tmp_path / "not-a-folder"
    f.write_text("")
    code, err = start(tmp_path, str(f))
    assert code == 0, err
    assert "cannot read the folder of entrypoint scripts" in err, err


def test_check_warns_too_render_does_not(tmp_path):
    d = tmp_path / "entrypoint.d"
    script(d / "40-custom.sh", tmp_path / "ran")
    code, err = start(tmp_path, str(d), ["check"])
    assert len(warnings(err)) == 1, err
    code, err = start(tmp_path, str(d), ["render", "--stdout"])
    assert code == 0 and not warnings(err), err


def test_folders_linking_to_themselves_stay_bounded(tmp_path):
    """Ten links back to the folder at every level would be 10^8 folders
    before the depth limit; the walk stops at its budget instead."""
    d = tmp_path / "entrypoint.d"
    d.mkdir()
    (d / "40-custom.sh").write_text("")
    for i in range(10):
        os.symlink(".", str(d / ("loop%d" % i)))
    code, err = start(tmp_path, str(d))
    assert code == 0, err
    lines = warnings(err)
    assert len(lines) == 1 and "+ files=" in lines[0], err


def test_envsubst_filter_is_named_once_in_every_mode(tmp_path):
    """The official image substitutes what NGINX_ENVSUBST_FILTER matches;
    the init reads only templates.prefix names, and says so (once, in
    run, check and render alike) instead of dropping the filter in
    silence. An empty filter is no filter: nothing said."""
    tpl = tmp_path / "templates"
    tpl.mkdir(exist_ok=True)
    (tpl / "a.conf.template").write_text("listen ${PORT};\n")
    out = tmp_path / "out"
    for args in (("--", "true"), ("render", "--stdout"), ("render",)):
        env = pi.base_env(tmp_path, NGINX_ENVSUBST_FILTER="^PORT$", PORT="8080",
                          PEERPREP_INIT_TEMPLATES_DIR=str(tpl),
                          PEERPREP_INIT_TEMPLATES_OUTPUT_DIR=str(out))
        p = subprocess.run([pi.BIN] + list(args), env=env, capture_output=True, timeout=20)
        err = p.stderr.decode(errors="replace")
        lines = [l for l in err.splitlines() if "NGINX_ENVSUBST_FILTER is not read" in l]
        assert p.returncode == 0 and len(lines) == 1 and "level=warn" in lines[0], (args, err)
        assert "^PORT$" not in err, err
        env["NGINX_ENVSUBST_FILTER"] = ""
        p = subprocess.run([pi.BIN] + list(args), env=env, capture_output=True, timeout=20)
        assert p.returncode == 0 and b"ENVSUBST_FILTER" not in p.stderr, (args, p.stderr)
