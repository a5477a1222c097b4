"""Built-in template variables computed from the system (SPEC §3):
NGINX_WORKER_PROCESSES from the cgroup CPU quota and the affinity mask, and
NGINX_LISTEN_IPV6 from the network namespace.

The cgroup tests give the init a fake cgroup tree: in a private mount
namespace (unshare --mount) every cgroup mount under /sys/fs/cgroup is
dropped and a folder prepared by the test is bind-mounted there, so the
init finds no cgroup file system in /proc/self/mountinfo and reads the
usual mount points, which now hold the test's numbers. One test uses the
machine's real cgroup-v1 cpu controller with a child cgroup of its own.
Every result is checked in the output of `peerprep-init render --stdout`."""
import math
import os
import shlex
import subprocess
import uuid

import pytest

import pi

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY_NGINX = os.path.join(REPO, "deploy", "nginx")
AFFINITY = len(os.sched_getaffinity(0))
TEMPLATE = "workers ${NGINX_WORKER_PROCESSES};\nlisten ${NGINX_LISTEN_IPV6}:80;\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts)")


def setup_templates(tmp_path, text=TEMPLATE):
    tdir = tmp_path / "templates"
    tdir.mkdir(exist_ok=True)
    (tdir / "a.conf.template").write_text(text)
    return pi.base_env(tmp_path)


def run(argv, env, timeout=20):
    p = subprocess.run(argv, env=env, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def render_with_fake_cgroups(tmp_path, files, env=None, cpus=None):
    """Renders TEMPLATE with the fake tree `files` ({relative path: text})
    mounted at /sys/fs/cgroup; `cpus` restricts the affinity (taskset -c)."""
    fake = tmp_path / "fake-cgroup"
    for rel, text in files.items():
        path = fake / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    fake.mkdir(exist_ok=True)
    env = env or setup_templates(tmp_path)
    cmd = [pi.BIN, "render", "--stdout"]
    if cpus is not None:
        cmd = ["taskset", "-c", cpus] + cmd
    script = ("umount -R /sys/fs/cgroup 2>/dev/null; mount --bind %s /sys/fs/cgroup && exec %s"
              % (shlex.quote(str(fake)), " ".join(shlex.quote(c) for c in cmd)))
    code, out, err = run(["unshare", "--mount", "sh", "-c", script], env)
    assert code == 0, err
    return out, err


def workers(out):
    lines = [line for line in out.splitlines() if line.startswith("workers ")]
    assert len(lines) == 1, out
    return int(lines[0][len("workers "):-1])


def expect(quota, period):
    return min(AFFINITY, max(1, math.ceil(quota / period)))


V1 = "cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us"


@pytest.mark.parametrize("quota,period", [(150000, 100000), (50000, 100000), (100000, 100000),
                                          (250000, 100000), (1000, 100000), (300000, 200000)])
def test_v1_quota_rounded_up_and_capped(tmp_path, quota, period):
    out, err = render_with_fake_cgroups(tmp_path, {V1[0]: "%d\n" % quota, V1[1]: "%d\n" % period})
    assert workers(out) == expect(quota, period), err
    assert "cpu_quota=%d" % math.ceil(quota / period) in err, err


def test_v1_cpu_cpuacct_mount_point(tmp_path):
    out, err = render_with_fake_cgroups(tmp_path, {"cpu,cpuacct/cpu.cfs_quota_us": "50000\n",
                                                   "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert workers(out) == 1, err


def test_v1_no_quota_is_the_affinity_count(tmp_path):
    out, err = render_with_fake_cgroups(tmp_path, {V1[0]: "-1\n", V1[1]: "100000\n"})
    assert workers(out) == AFFINITY, err
    assert "cpu_quota=none" in err, err


@pytest.mark.parametrize("cpu_max,want", [("150000 100000", 2), ("50000 100000", 1),
                                          ("max 100000", None), ("250000 100000", 3),
                                          ("1 1000000", 1), ("max", None)])
def test_v2_cpu_max(tmp_path, cpu_max, want):
    out, err = render_with_fake_cgroups(tmp_path, {"cgroup.controllers": "cpu memory\n",
                                                   "cpu.max": cpu_max + "\n"})
    assert workers(out) == (AFFINITY if want is None else min(want, AFFINITY)), err


def test_v2_wins_when_smaller_than_v1(tmp_path):
    """Both hierarchies (a hybrid machine): the smaller quota binds."""
    out, err = render_with_fake_cgroups(tmp_path, {"cgroup.controllers": "cpu\n",
                                                   "cpu.max": "50000 100000\n",
                                                   V1[0]: "400000\n", V1[1]: "100000\n"})
    assert workers(out) == 1, err


def test_small_affinity_mask_caps_the_quota(tmp_path):
    out, err = render_with_fake_cgroups(tmp_path, {V1[0]: "400000\n", V1[1]: "100000\n"},
                                        cpus="0")
    assert workers(out) == 1, err
    assert "affinity_cpus=1" in err, err


def test_small_affinity_mask_without_quota(tmp_path):
    out, err = render_with_fake_cgroups(tmp_path, {}, cpus="0")
    assert workers(out) == 1, err


def test_unreadable_and_garbage_files_count_as_no_quota(tmp_path):
    out, err = render_with_fake_cgroups(tmp_path, {"cgroup.controllers": "cpu\n",
                                                   "cpu.max": "-5 100000\n",
                                                   V1[0]: "lots\n", V1[1]: "0\n"})
    assert workers(out) == AFFINITY, err


def test_environment_wins(tmp_path):
    env = setup_templates(tmp_path)
    env["NGINX_WORKER_PROCESSES"] = "auto"
    env["NGINX_LISTEN_IPV6"] = "[::1]"
    out, err = render_with_fake_cgroups(tmp_path, {V1[0]: "50000\n", V1[1]: "100000\n"},
                                        env=env)
    assert "workers auto;\nlisten [::1]:80;\n" in out, out


def test_builtins_do_not_reach_the_child(tmp_path):
    """The child (and the config test) get the plain environment."""
    env = setup_templates(tmp_path)
    code, out, err = run([pi.BIN, "--", "sh", "-c",
                          "echo W=${NGINX_WORKER_PROCESSES-unset} V=${NGINX_LISTEN_IPV6-unset}"],
                         env)
    assert code == 0, err
    assert "W=unset V=unset" in out, out
    assert "built-in template variables" in err, err


def test_unsafe_value_from_the_environment_is_still_refused(tmp_path):
    env = setup_templates(tmp_path)
    env["NGINX_WORKER_PROCESSES"] = "2; user root"
    code, out, err = run([pi.BIN, "render", "--stdout"], env)
    assert code == 3, err
    assert "NGINX_WORKER_PROCESSES has an unsafe character at position 2" in err, err


def real_cpu_cgroup():
    """(mount point, controllers) of the machine's cgroup-v1 cpu hierarchy
    at /sys/fs/cgroup/cpu, or None."""
    root = "/sys/fs/cgroup/cpu"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, super_ = left.split(), right.split()
            opts = [o for o in super_[2].split(",") if o not in ("rw", "ro")]
            if fields[4] == root and super_[0] == "cgroup" and "cpu" in opts:
                return root, ",".join(opts)
    return None


@pytest.fixture
def real_cgroup():
    """A child cgroup of the real cpu hierarchy with a quota of 1.5 CPUs and,
    inside it, `inner` without one. Yields (hierarchy, name of the child)."""
    found = real_cpu_cgroup()
    if not found:
        pytest.skip("no cgroup-v1 cpu controller at /sys/fs/cgroup/cpu")
    name = "pi-test-" + uuid.uuid4().hex[:8]
    outer = os.path.join(found[0], name)
    inner = os.path.join(outer, "inner")
    os.mkdir(outer)
    try:
        os.mkdir(inner)
        with open(os.path.join(outer, "cpu.cfs_period_us"), "w") as f:
            f.write("100000")
        with open(os.path.join(outer, "cpu.cfs_quota_us"), "w") as f:
            f.write("150000")
        yield found, name
    finally:
        # The processes put there have exited: run() waits for them.
        for d in (inner, outer):
            if os.path.isdir(d):
                os.rmdir(d)


def test_real_v1_cgroup_parent_quota(tmp_path, real_cgroup):
    """The machine's own cgroup v1, the init in `inner`: the parent's limit
    binds."""
    (point, _), name = real_cgroup
    env = setup_templates(tmp_path)
    script = "echo $$ > %s/%s/inner/cgroup.procs && exec %s render --stdout" % (
        point, name, shlex.quote(pi.BIN))
    code, out, err = run(["sh", "-c", script], env)
    assert code == 0, err
    assert workers(out) == min(2, AFFINITY), err
    assert "quota_file=%s/%s/cpu.cfs_quota_us" % (point, name) in err, err


def test_real_v1_cgroup_mounted_at_its_own_root(tmp_path, real_cgroup):
    """As a container without a cgroup namespace sees it: only its own cgroup
    is mounted at /sys/fs/cgroup/cpu (mountinfo's root field is /NAME) while
    /proc/self/cgroup says /NAME/inner. The init maps one onto the other."""
    (point, controllers), name = real_cgroup
    env = setup_templates(tmp_path)
    h = tmp_path / "hierarchy"
    h.mkdir()
    script = " && ".join([
        "mount -t cgroup -o %s cgroup %s" % (controllers, h),
        "umount %s" % point,
        "mount --bind %s/%s %s" % (h, name, point),
        "umount %s" % h,
        "echo $$ > %s/inner/cgroup.procs" % point,
        "exec %s render --stdout" % shlex.quote(pi.BIN)])
    code, out, err = run(["unshare", "--mount", "sh", "-c", script], env)
    assert code == 0, err
    assert workers(out) == min(2, AFFINITY), err
    assert "quota_file=%s/cpu.cfs_quota_us" % point in err, err


# ---- IPv6 --------------------------------------------------------------------

NETNS_SETUPS = {
    # A fresh network namespace: lo is down, so no IPv6 address at all.
    "fresh": ("", "255.255.255.255"),
    "lo up": ("ip link set lo up", "[::]"),
    "disabled": ("ip link set lo up && sysctl -qw net.ipv6.conf.all.disable_ipv6=1 "
                 "&& sysctl -qw net.ipv6.conf.lo.disable_ipv6=1", "255.255.255.255"),
}


@pytest.mark.parametrize("case", sorted(NETNS_SETUPS))
def test_listen_ipv6_follows_the_namespace(tmp_path, case):
    setup, want = NETNS_SETUPS[case]
    env = setup_templates(tmp_path)
    script = "%s exec %s render --stdout" % (setup + " &&" if setup else "", shlex.quote(pi.BIN))
    code, out, err = run(["unshare", "--net", "sh", "-c", script], env)
    assert code == 0, err
    assert "listen %s:80;" % want in out, out


DEPLOY_HOSTS = {"NGINX_%s_SERVICE_HOST" % s.upper(): "127.0.0.1"
                for s in ("user", "question", "matching", "history", "collaboration", "chat")}


@pytest.mark.parametrize("case", sorted(NETNS_SETUPS))
def test_deploy_template_serves_on_both_kernels(tmp_path, case):
    """The deploy template rendered in each namespace passes nginx -t, and
    nginx really starts on it: [::]:80 is bound only where IPv6 is on, and
    port 80 on IPv4 always."""
    setup, want = NETNS_SETUPS[case]
    tdir = tmp_path / "templates"
    tdir.mkdir()
    with open(os.path.join(DEPLOY_NGINX, "default.conf.template")) as f:
        (tdir / "default.conf.template").write_text(f.read())
    env = pi.base_env(tmp_path, **DEPLOY_HOSTS)
    command, test = pi.nginx_prefix(tmp_path, None, tmp_path / "conf.d", pi.IMAGE_HTTP)
    start = command.replace(" -g 'daemon off;'", "")  # daemonise: bound once it returns
    script = " && ".join(filter(None, [
        setup,
        "%s render" % shlex.quote(pi.BIN),
        test,
        start,
        "cat /proc/net/tcp /proc/net/tcp6",
    ]))
    # PID 1 of its own pid namespace: nginx dies with the shell.
    code, out, err = run(["unshare", "--net", "--pid", "--fork", "--mount-proc",
                          "sh", "-c", script], env)
    assert code == 0, err
    rendered = (tmp_path / "conf.d" / "default.conf").read_text()
    assert "    listen %s:80;\n" % want in rendered
    listening = [line.split() for line in out.splitlines()[1:] if line.split()[3:4] == ["0A"]]
    local = {entry[1] for entry in listening}
    assert "00000000:0050" in local, out  # 0.0.0.0:80
    v6_any = "00000000000000000000000000000000:0050"
    assert (v6_any in local) == (want == "[::]"), out


def test_main_nginx_conf_template(tmp_path):
    """The image's nginx.conf includes conf.d/main/*.conf in the main
    context, where main/workers.conf.template renders worker_processes from
    the built-in: nginx accepts the pair (paths moved under tmp_path), and
    the same nginx.conf without the rendered file (a templates folder
    mounted without main/) is still valid."""
    tdir = tmp_path / "templates" / "main"
    tdir.mkdir(parents=True)
    with open(os.path.join(DEPLOY_NGINX, "main", "workers.conf.template")) as f:
        (tdir / "workers.conf.template").write_text(f.read())
    out, err = render_with_fake_cgroups(tmp_path, {V1[0]: "50000\n", V1[1]: "100000\n"},
                                        env=pi.base_env(tmp_path))
    assert "\nworker_processes 1;\n" in out, out
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    main_d = tmp_path / "conf.d" / "main"
    main_d.mkdir(parents=True)
    with open(os.path.join(DEPLOY_NGINX, "nginx.conf")) as f:
        conf_text = f.read()
    conf_text = (conf_text.replace("user  nginx;", "")
                 .replace("/var/log/nginx", str(prefix / "logs"))
                 .replace("/var/run/nginx.pid", str(prefix / "nginx.pid"))
                 .replace("/var/cache/nginx", str(prefix))
                 .replace("/etc/nginx/mime.types", "/etc/nginx/mime.types")
                 .replace("/etc/nginx/conf.d", str(tmp_path / "conf.d")))
    conf = prefix / "nginx.conf"
    conf.write_text(conf_text)
    code, _, err = run([pi.NGINX, "-p", str(prefix), "-c", str(conf), "-t", "-q"], os.environ)
    assert code == 0, err  # no workers.conf: nginx's default
    (main_d / "workers.conf").write_text(out.split("\n", 1)[1])
    code, _, err = run([pi.NGINX, "-p", str(prefix), "-c", str(conf), "-t", "-q"], os.environ)
    assert code == 0, err
    (main_d / "workers.conf").write_text("worker_processes 1;\nworker_processes 2;\n")
    code, _, err = run([pi.NGINX, "-p", str(prefix), "-c", str(conf), "-t", "-q"], os.environ)
    assert code != 0 and "duplicate" in err, err  # the include is really read


def test_computed_only_when_a_template_refers_to_one(tmp_path):
    """A start whose templates use no built-in reads no cgroup or /proc
    file for them (it is on the way to nginx's first answer): the one log
    line that says what was computed is absent; a template that refers to
    one computes both, once, whatever the number of references."""
    env = setup_templates(tmp_path, "server_name ${NGINX_NAME};\n")
    env["NGINX_NAME"] = "example.org"
    code, out, err = run([pi.BIN, "render", "--stdout"], env)
    assert code == 0, err
    assert "server_name example.org;" in out, out
    assert "built-in template variables" not in err, err
    (tmp_path / "templates" / "b.conf.template").write_text(
        "listen ${NGINX_LISTEN_IPV6}:80;\n" * 3 + TEMPLATE)
    code, out, err = run([pi.BIN, "render", "--stdout"], env)
    assert code == 0, err
    assert err.count("built-in template variables") == 1, err
    assert "workers %d;" % workers(out) in out, out
