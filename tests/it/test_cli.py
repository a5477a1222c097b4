"""Command-line forms (SPEC §1): the sub-command may come before or after
`-c FILE`, and anything else is a usage error (exit 2)."""

import json
import os
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


def load_error(tmp_path, args=(), **env_over):
    """Runs `render` with a config that must be refused at load; the
    deadline catches a loader that blocks on a FIFO or a device."""
    env = base_env(tmp_path, **env_over)
    return subprocess.run([BIN, "render", *args], env=env, capture_output=True,
                          text=True, timeout=10)


def test_config_file_must_be_a_regular_file(tmp_path):
    """A folder once loaded as an empty file, an empty -c was ignored, and a
    FIFO or /dev/zero hung the init before any signal handling: each is now
    exit 2 naming the path and the reason, as is a read error."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "a.conf.template").write_text("x\n")
    fifo = tmp_path / "pi.fifo"
    os.mkfifo(fifo)
    cases = [
        (["-c", str(tmp_path)], {}, f"{tmp_path}: cannot read config file: a directory, "
                                    "not a regular file"),
        (["-c", ""], {}, "-c: the config file name is empty"),
        (["-c", str(fifo)], {}, f"{fifo}: cannot read config file: a FIFO, not a regular file"),
        (["-c", "/dev/zero"], {}, "/dev/zero: cannot read config file: a character device, "
                                  "not a regular file"),
        # A regular file whose first read fails (EIO): musl and glibc word it
        # differently.
        (["-c", "/proc/self/mem"], {}, "/proc/self/mem: cannot read config file: I"),
        ([], {"PEERPREP_INIT_CONFIG": str(fifo)},
         f"{fifo}: cannot read config file: a FIFO, not a regular file"),
        ([], {"PEERPREP_INIT_CONFIG": str(tmp_path)},
         f"{tmp_path}: cannot read config file: a directory, not a regular file"),
    ]
    for args, env, want in cases:
        p = load_error(tmp_path, args, **env)
        assert p.returncode == 2, (args, env, p.stderr)
        assert want in p.stderr, (args, env, p.stderr)
        assert "rendered" not in p.stderr, p.stderr
    assert not (tmp_path / "conf.d").exists()


def test_dev_null_is_no_config_file(tmp_path):
    (tmp_path / "templates").mkdir()
    p = load_error(tmp_path, ["-c", "/dev/null"])
    assert p.returncode == 0, p.stderr


def test_values_that_can_never_work_are_load_errors(tmp_path):
    ini = tmp_path / "pi.ini"
    cases = [
        ("[health]\npath = /he alth\n", {}, f"{ini}:2: health.path: not a URL path"),
        ("[health]\npath = /h\x01\n", {}, f"{ini}:2: health.path: not a URL path"),
        ("[nginx]\n\ncommand = ''\n", {}, f"{ini}:3: nginx.command: empty command"),
        ("[templates]\nsuffix =\n", {}, f"{ini}:2: templates.suffix: empty suffix"),
        ("[templates]\nprefix =\n", {}, f"{ini}:2: templates.prefix: not the start of a "
                                        "variable name"),
        ("[templates]\nstream_suffix = .template\n", {},
         f"{ini}:2: templates.stream_suffix: same as templates.suffix"),
        ("", {"PEERPREP_INIT_TEMPLATES_SUFFIX": ""},
         "PEERPREP_INIT_TEMPLATES_SUFFIX: empty suffix"),
        ("", {"NGINX_ENVSUBST_STREAM_TEMPLATE_SUFFIX": ".template"},
         "NGINX_ENVSUBST_STREAM_TEMPLATE_SUFFIX: same as templates.suffix"),
        ("", {"PEERPREP_INIT_HEALTH_PATH": "/health "},
         "PEERPREP_INIT_HEALTH_PATH: not a URL path"),
    ]
    for text, env, want in cases:
        ini.write_text(text)
        p = load_error(tmp_path, ["-c", str(ini)], **env)
        assert p.returncode == 2, (text, env, p.stderr)
        assert want in p.stderr, (text, env, p.stderr)


def json_lines(raw):
    """Every line of raw standard error as a JSON object; the bytes must be
    strict UTF-8 and each line one object."""
    assert raw.endswith(b"\n"), raw[-200:]
    objs = []
    for line in raw.split(b"\n")[:-1]:
        obj = json.loads(line.decode("utf-8"))
        assert isinstance(obj, dict), line
        objs.append(obj)
    return objs


def test_log_lines_cannot_be_forged_and_stay_valid_json(tmp_path):
    """Template names once forged fields and lines through the 0x1F field
    separator, a line over 4088 bytes lost its newline, a folder named 007
    logged "dir":007 (not JSON) and raw bytes >= 0x80 made invalid UTF-8."""
    tdir = tmp_path / "templates"
    tdir.mkdir()
    evil = b"a\x1fmsg=forged\x1f\nts=1 level=error \"},{\"x\xff\".conf.template"
    with open(os.path.join(bytes(tdir), evil), "wb") as f:
        f.write(b"x\n")
    deep = bytes(tdir)
    for _ in range(18):
        deep = os.path.join(deep, b"d" * 200)
    os.makedirs(deep)
    with open(os.path.join(deep, b"b.conf.template"), "wb") as f:
        f.write(b"y\n")
    env = base_env(tmp_path, PEERPREP_INIT_LOG_FORMAT="json")
    p = subprocess.run([BIN, "render"], env=env, capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    objs = json_lines(p.stderr)
    rendered = [o for o in objs if o["msg"] == "rendered"]
    others = [o["msg"] for o in objs if o["msg"] != "rendered"]
    # Neither template uses a built-in variable: none is computed or logged.
    assert len(rendered) == 2 and others == [], objs
    # The byte 0xff that is not UTF-8 comes back as the code point U+00FF.
    want = (bytes(tdir) + b"/" + evil).decode("latin-1")
    assert want in [o["template"] for o in rendered], rendered
    assert all(set(o) <= {"ts", "level", "msg", "template", "output", "truncated"}
               for o in rendered), rendered
    # The deep template's line (two paths of ~3700 bytes) is cut, marked,
    # and still one line.
    assert all(len(line) < 4096 for line in p.stderr.split(b"\n")), p.stderr
    assert [o.get("truncated") for o in rendered].count(True) == 1, rendered

    (tmp_path / "007").mkdir()
    env = base_env(tmp_path, PEERPREP_INIT_LOG_FORMAT="json", PEERPREP_INIT_TEMPLATES_DIR="007")
    p = subprocess.run([BIN, "render"], env=env, capture_output=True, timeout=10,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    [line] = [o for o in json_lines(p.stderr) if o["msg"] == "no templates to render"]
    assert line["dir"] == "007", p.stderr


def test_render_twice_leaves_an_unchanged_output_untouched(tmp_path):
    """`render` (no --stdout) run twice and then after a template change:
    exit 0 each time, the exact outputs (sub-folders mirrored, a stream
    template in its own folder), no hidden temporary file left in any
    output folder, an operator's file never touched. An output whose
    contents would not change is not touched at all (README "Templates"):
    the second run leaves each file the very same (inode) and unwritten
    (mtime, set far in the past after the first run, so that any write
    shows whatever the clock's granularity); a changed template's output is
    replaced by a new file renamed over it, and only that one."""
    tdir = tmp_path / "templates"
    (tdir / "sub").mkdir(parents=True)
    (tdir / "a.conf.template").write_text("x ${NGINX_A} $host;\n")
    (tdir / "sub" / "b.conf.template").write_text("y ${NGINX_B:-dflt} ${uri};\n")
    (tdir / "s.conf.stream-template").write_text("s ${NGINX_A};\n")
    conf_d, stream_d = tmp_path / "conf.d", tmp_path / "stream-conf.d"
    conf_d.mkdir()
    notes = conf_d / "notes.txt"
    notes.write_text("an operator's file\n")
    env = base_env(tmp_path, NGINX_A="one")
    outs = {"a": conf_d / "a.conf", "b": conf_d / "sub" / "b.conf", "s": stream_d / "s.conf"}
    old = 1_000_000_000 * 10**9  # 2001, in ns

    def render():
        p = subprocess.run([BIN, "render"], env=env, capture_output=True, text=True, timeout=10)
        assert p.returncode == 0, p.stderr
        hidden = [os.path.join(d, f) for top in (conf_d, stream_d)
                  for d, dirs, files in os.walk(top) for f in dirs + files if f.startswith(".")]
        assert hidden == [], "left behind: %r" % hidden
        assert notes.read_text() == "an operator's file\n"
        assert sorted(os.listdir(conf_d)) == ["a.conf", "notes.txt", "sub"]
        assert os.listdir(conf_d / "sub") == ["b.conf"] and os.listdir(stream_d) == ["s.conf"]
        return {k: f.read_text() for k, f in outs.items()}

    def stamp():
        st = {k: os.stat(f) for k, f in outs.items()}
        return {k: (s.st_ino, s.st_mtime_ns) for k, s in st.items()}

    want = {"a": "x one $host;\n", "b": "y dflt ${uri};\n", "s": "s one;\n"}
    assert render() == want
    for f in outs.values():
        os.utime(f, ns=(old, old))
    first = stamp()
    assert all(m == old for _, m in first.values())

    assert render() == want
    assert stamp() == first, "an unchanged output was written"

    (tdir / "a.conf.template").write_text("x ${NGINX_A} v2;\n")
    assert render() == dict(want, a="x one v2;\n")
    third = stamp()
    assert third["a"][0] != first["a"][0], "not replaced by a new file"
    assert third["a"][1] != old, "mtime not updated"
    assert {k: third[k] for k in "bs"} == {k: first[k] for k in "bs"}, "others touched"
