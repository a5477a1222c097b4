/* Configuration: defaults, INI errors naming file, line and key, the
 * environment over the file, durations, signals, command splitting. */
#include "init/config.h"
#include "init/log.h"
#include "tap.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#define URL_PATH_WHY                                                                               \
	"not a URL path: '/' then letters, digits and -._~!$&'()*+,;=:@/% (no space, control "     \
	"byte, ? or #)"
#define PREFIX_WHY "not the start of a variable name ([A-Za-z_][A-Za-z0-9_]*, not empty)"
#define CLASH	   ": no file could be a stream template"

static char path[64];

static const char *ini(const char *text)
{
	snprintf(path, sizeof(path), "/tmp/pi-config-test-%d.ini", (int)getpid());
	FILE *f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	return path;
}

static int load(const char *text, char **envp, struct pi_config *cfg, struct pi_config_error *err)
{
	int rc = pi_config_load(cfg, text ? ini(text) : NULL, envp, err);
	return rc;
}

static void expect_error(const char *text, const char *want_suffix, const char *name)
{
	struct pi_config cfg;
	struct pi_config_error err;
	char want[700];
	char *env[] = {NULL};

	int rc = load(text, env, &cfg, &err);
	is_int(rc, -EINVAL, name);
	snprintf(want, sizeof(want), "%s:%s", path, want_suffix);
	is_str(err.msg, want, name);
	pi_config_free(&cfg);
}

int main(void)
{
	struct pi_config cfg;
	struct pi_config_error err;
	uint64_t ms;
	char *none[] = {NULL};

	/* Defaults come from the table. */
	pi_config_defaults(&cfg);
	is_str(cfg.templates_dir, "/etc/nginx/templates", "default templates.dir");
	is_str(cfg.upstreams_hosts, "NGINX_*_HOST", "default upstreams.hosts");
	is_int((long)cfg.upstreams_wait_ms, 60000, "default upstreams.wait");
	is_int((long)cfg.upstreams_recheck_ms, 30000, "default upstreams.recheck");
	is_int(cfg.nginx_stop_signal, SIGQUIT, "default stop signal QUIT");
	is_int((long)cfg.nginx_stop_timeout_ms, 25000, "default stop_timeout");
	is_str(cfg.health_listen, "127.0.0.1:8081", "default health.listen");
	is_str(cfg.nginx_command, "nginx -g 'daemon off;'", "default command");
	is_int(cfg.log_level, PI_INFO, "default level");
	pi_config_free(&cfg);

	/* Durations. */
	ok(pi_config_duration("1.5", &ms) == 0 && ms == 1500, "1.5 is 1500 ms");
	ok(pi_config_duration("250ms", &ms) == 0 && ms == 250, "250ms");
	ok(pi_config_duration("2s", &ms) == 0 && ms == 2000, "2s");
	ok(pi_config_duration("1m", &ms) == 0 && ms == 60000, "1m");
	ok(pi_config_duration("0", &ms) == 0 && ms == 0, "0");
	is_int(pi_config_duration("-1s", &ms), -EINVAL, "negative refused");
	is_int(pi_config_duration("5 minutes", &ms), -EINVAL, "unknown unit refused");
	is_int(pi_config_duration("", &ms), -EINVAL, "empty refused");
	is_int(pi_config_duration("nan", &ms), -EINVAL, "nan refused");
	is_int(pi_config_duration("1e300", &ms), -EINVAL, "huge refused");
	is_int(pi_config_duration("1e3", &ms), -EINVAL, "exponent refused");
	is_int(pi_config_duration("0x10", &ms), -EINVAL, "hex refused");
	is_int(pi_config_duration("+5", &ms), -EINVAL, "sign refused");
	is_int(pi_config_duration(".", &ms), -EINVAL, "a lone dot refused");
	ok(pi_config_duration(" 5s ", &ms) == 0 && ms == 5000, "blanks around allowed");
	ok(pi_config_duration(".5m", &ms) == 0 && ms == 30000, ".5m is 30000 ms");
	ok(pi_config_duration("1.25ms", &ms) == 0 && ms == 1, "1.25ms rounds to 1");
	ok(pi_config_duration("0.4ms", &ms) == 0 && ms == 1,
	   "0.4ms is 1, not 0 (which means off or no limit)");
	ok(pi_config_duration("0.0000s", &ms) == 0 && ms == 0, "a zero written long is 0");

	/* Signals. */
	is_int(pi_config_signal("QUIT"), SIGQUIT, "QUIT");
	is_int(pi_config_signal("SIGTERM"), SIGTERM, "SIGTERM");
	is_int(pi_config_signal("9"), 9, "a number");
	is_int(pi_config_signal("SIGBOGUS"), -EINVAL, "unknown refused");
	is_int(pi_config_signal("0"), -EINVAL, "0 refused");

	/* Splitting like a shell, without expansion. */
	char **argv = NULL;
	ok(pi_config_split("nginx -g 'daemon off;'", &argv) == 0, "split default command");
	ok(argv && argv[2] && !argv[3], "three words");
	if (argv) {
		is_str(argv[1], "-g", "word 2");
		is_str(argv[2], "daemon off;", "single quotes group");
	}
	pi_config_argv_free(argv);
	ok(pi_config_split("a \"b \\\"c\" d\\ e $HOME", &argv) == 0, "double quotes, escapes");
	if (argv) {
		is_str(argv[1], "b \"c", "escaped quote inside double quotes");
		is_str(argv[2], "d e", "backslash-space joins");
		is_str(argv[3], "$HOME", "no expansion");
	}
	pi_config_argv_free(argv);
	is_int(pi_config_split("a 'b", &argv), -EINVAL, "unterminated quote");
	/* One block holds the array and the words: the densest inputs fill it
	 * to the last byte (ASan would see one more). */
	ok(pi_config_split("a b c", &argv) == 0 && argv[2] && !argv[3], "one-letter words");
	if (argv)
		is_str(argv[2], "c", "last one-letter word");
	pi_config_argv_free(argv);
	ok(pi_config_split("'' '' ''", &argv) == 0 && argv[2] && !argv[3], "empty quoted words");
	if (argv)
		is_str(argv[1], "", "an empty word");
	pi_config_argv_free(argv);
	ok(pi_config_split("x\\", &argv) == 0 && argv[0] && !argv[1], "trailing backslash");
	if (argv)
		is_str(argv[0], "x\\", "a backslash at the end stays");
	pi_config_argv_free(argv);
	char many[401];
	for (int i = 0; i < 200; i++) {
		many[2 * i] = (char)('a' + i % 26);
		many[2 * i + 1] = ' ';
	}
	many[399] = '\0';
	ok(pi_config_split(many, &argv) == 0 && argv[199] && !argv[200], "200 words");
	if (argv)
		is_str(argv[199], "r", "the 200th word");
	pi_config_argv_free(argv);
	is_int(pi_config_split("   ", &argv), -ENOENT, "empty command");

	/* The file, then the environment. */
	char *env1[] = {"PEERPREP_INIT_HEALTH_LISTEN=0.0.0.0:9000", NULL};
	ok(load("[health]\nlisten = 127.0.0.1:7000\npath=/hc\n[upstreams]\nwait = 2s\n", env1, &cfg,
		&err) == 0,
	   "valid file loads");
	is_str(cfg.health_listen, "0.0.0.0:9000", "environment beats the file");
	is_str(cfg.health_path, "/hc", "file beats the default");
	is_int((long)cfg.upstreams_wait_ms, 2000, "duration from the file");
	is_str(cfg.file, path, "the file read is remembered");
	pi_config_free(&cfg);

	char *env2[] = {"NGINX_ENVSUBST_OUTPUT_DIR=/out", "NGINX_ENTRYPOINT_QUIET_LOGS=1",
			"NGINX_ENVSUBST_TEMPLATE_SUFFIX=.tpl", "PEERPREP_INIT_TEMPLATES_SUFFIX=.t2",
			NULL};
	ok(load(NULL, env2, &cfg, &err) == 0, "aliases load");
	is_str(cfg.templates_output_dir, "/out", "NGINX_ENVSUBST_OUTPUT_DIR sets output_dir");
	is_str(cfg.templates_suffix, ".t2", "PEERPREP_INIT_* wins over the nginx image's alias");
	is_int(cfg.log_level, PI_WARN, "NGINX_ENTRYPOINT_QUIET_LOGS sets warn");
	pi_config_free(&cfg);

	char *env3[] = {"PEERPREP_INIT_UPSTREAMS_WAIT=soon", NULL};
	is_int(load(NULL, env3, &cfg, &err), -EINVAL, "bad env value refused");
	is_str(
	    err.msg,
	    "PEERPREP_INIT_UPSTREAMS_WAIT: not a duration (seconds, or a number with ms, s or m)",
	    "env error names the variable");
	pi_config_free(&cfg);

	char *env4[] = {"PEERPREP_INIT_NGINX_TEST= \t\n", NULL};
	is_int(load(NULL, env4, &cfg, &err), 0, "a config test of blanks only loads");
	is_str(cfg.nginx_test, "", "and is no test (stored empty)");
	pi_config_free(&cfg);
	char *env5[] = {"PEERPREP_INIT_NGINX_COMMAND= \t", NULL};
	is_int(load(NULL, env5, &cfg, &err), -EINVAL, "a command of blanks only is refused");
	is_str(err.msg, "PEERPREP_INIT_NGINX_COMMAND: empty command", "and named");
	pi_config_free(&cfg);

	/* Every file error names file, line and key. */
	expect_error("[health]\nlisten = 127.0.0.1:1\nbogus = 1\n", "3: unknown key health.bogus",
		     "unknown key");
	expect_error("; c\n[nope]\nx = 1\n", "2: unknown section [nope]", "unknown section");
	/* A ';' in a value is part of it (no inline comments): comments take
	 * lines of their own, ';' or '#' first. */
	ok(load("# c\n[nginx]\n; c\ncommand = sh -c \"exec nginx ; true\"\ntest = x ;y\n", NULL, &cfg,
		&err) == 0,
	   "a value holding ' ;' loads");
	is_str(cfg.nginx_command, "sh -c \"exec nginx ; true\"", "... the ';' and what follows kept");
	is_str(cfg.nginx_test, "x ;y", "... also outside quotes");
	pi_config_free(&cfg);
	expect_error("[upstreams]\n\nwait = forever\n",
		     "3: upstreams.wait: not a duration (seconds, or a number with ms, s or m)",
		     "bad duration");
	expect_error("[nginx]\nstop_signal = BOGUS\n",
		     "2: nginx.stop_signal: not a signal name or number", "bad signal");
	expect_error("[log]\nlevel = loud\n", "2: log.level: not one of debug, info, warn, error",
		     "bad level");
	expect_error("[log]\nformat = xml\n", "2: log.format: not one of text, json", "bad format");
	expect_error("listen = 1\n", "1: key listen is outside any section", "key before section");
	expect_error("[health]\nthis line has no equals\n",
		     "2: not a [section] header or a key = value line", "syntax error");
	expect_error("[health\n", "1: not a [section] header or a key = value line",
		     "unclosed section");
	expect_error("[]\nlisten = 1\n", "1: empty section name []", "empty section name");
	expect_error("[nginx]\ncommand = nginx -g 'daemon off;\n",
		     "2: nginx.command: unclosed quote", "command with an unclosed quote");
	expect_error("[nginx]\ncommand =\n", "2: nginx.command: empty command", "empty command");
	expect_error("[nginx]\ntest = \"nginx -t\n", "2: nginx.test: unclosed quote",
		     "test with an unclosed quote");
	expect_error("[health]\nlisten = health.local:8081\n",
		     "2: health.listen: not HOST:PORT or [IPv6]:PORT with an IP address",
		     "listen on a name");
	expect_error("[health]\nprobe = 127.0.0.1\n",
		     "2: health.probe: not HOST:PORT or [IPv6]:PORT with an IP address",
		     "probe without a port");
	expect_error("[health]\npath = health\n", "2: health.path: " URL_PATH_WHY,
		     "path without a slash");
	expect_error("[health]\npath = /a b\n", "2: health.path: " URL_PATH_WHY,
		     "path with a space");
	expect_error("[health]\npath = /a\x01\n", "2: health.path: " URL_PATH_WHY,
		     "path with a control byte");
	expect_error("[health]\npath = /health?x=1\n", "2: health.path: " URL_PATH_WHY,
		     "path with a query");
	expect_error("[health]\npath = /h\xc3\xa9\n", "2: health.path: " URL_PATH_WHY,
		     "path with a raw non-ASCII byte");
	expect_error("[nginx]\ncommand = ''\n", "2: nginx.command: empty command",
		     "command whose program is an empty word");
	expect_error("[nginx]\ntest = \"\" -t\n", "2: nginx.test: empty command",
		     "test whose program is an empty word");
	expect_error("[templates]\nsuffix =\n",
		     "2: templates.suffix: empty suffix (it would match no file)", "empty suffix");
	expect_error("[templates]\nstream_suffix =\n",
		     "2: templates.stream_suffix: empty suffix (it would match no file)",
		     "empty stream suffix");
	expect_error("[templates]\nsuffix = a/b\n",
		     "2: templates.suffix: a file name suffix cannot hold /",
		     "suffix with a slash");
	expect_error("[templates]\nprefix =\n", "2: templates.prefix: " PREFIX_WHY, "empty prefix");
	expect_error("[templates]\nprefix = NGINX-\n", "2: templates.prefix: " PREFIX_WHY,
		     "prefix no variable name can start with");
	expect_error("[templates]\noutput_dir =\n", "2: templates.output_dir: empty folder name",
		     "empty output folder");
	expect_error("[templates]\n\nstream_suffix = .template\n",
		     "3: templates.stream_suffix: same as templates.suffix" CLASH,
		     "stream suffix equal to the default suffix");
	expect_error("[templates]\nsuffix = .x\nstream_suffix = .y\nsuffix = .y\n",
		     "4: templates.suffix: same as templates.stream_suffix" CLASH,
		     "suffix set last in the file is blamed");
	{
		char *env[] = {"PEERPREP_INIT_TEMPLATES_SUFFIX=.s", NULL};
		is_int(load("[templates]\nstream_suffix = .s\n", env, &cfg, &err), -EINVAL,
		       "suffix clash through the environment");
		is_str(err.msg,
		       "PEERPREP_INIT_TEMPLATES_SUFFIX: same as templates.stream_suffix" CLASH,
		       "the environment outranks the file: the variable is named");
		pi_config_free(&cfg);
	}
	{
		/* As the image's entrypoint reads them (`${VAR:-default}`): an
		 * empty alias is unset; compose passes an unset ${VAR} on empty. */
		char *env[] = {"NGINX_ENVSUBST_TEMPLATE_SUFFIX=", "NGINX_ENVSUBST_OUTPUT_DIR=", NULL};
		is_int(load(NULL, env, &cfg, &err), 0, "empty nginx image names are unset");
		is_str(cfg.templates_suffix, ".template", "... the default suffix");
		is_str(cfg.templates_output_dir, "/etc/nginx/conf.d", "... the default output folder");
		pi_config_free(&cfg);
	}
	{
		char *env[] = {"NGINX_ENVSUBST_TEMPLATE_SUFFIX=a/b", "PEERPREP_INIT_TEMPLATES_SUFFIX=.t",
			       NULL};
		is_int(load(NULL, env, &cfg, &err), 0,
		       "an alias the peerprep-init name overrides is not even read");
		is_str(cfg.templates_suffix, ".t", "... the peerprep-init name wins");
		pi_config_free(&cfg);
	}
	{
		char *env[] = {"NGINX_ENVSUBST_TEMPLATE_SUFFIX=a/b", NULL};
		is_int(load(NULL, env, &cfg, &err), -EINVAL, "a bad alias alone is still refused");
		ok(strncmp(err.msg, "NGINX_ENVSUBST_", 15) == 0, "... naming it: %s", err.msg);
		pi_config_free(&cfg);
	}
	{
		/* Values that can never work: a health port nobody can find or
		 * reach, a wait that gives up before the first answer. */
		static const char *const bad[][2] = {
		    {"PEERPREP_INIT_HEALTH_LISTEN=127.0.0.1:0", "port 0 (a port must be named)"},
		    {"PEERPREP_INIT_HEALTH_PROBE=[::1]:0", "port 0 (a port must be named)"},
		    {"PEERPREP_INIT_UPSTREAMS_WAIT=0", "not a duration above 0"},
		    {"PEERPREP_INIT_UPSTREAMS_WAIT=0.0s", "not a duration above 0"},
		};
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			char *env[] = {(char *)bad[i][0], NULL};
			ok(load(NULL, env, &cfg, &err) == -EINVAL, "refused: %s", bad[i][0]);
			ok(strstr(err.msg, bad[i][1]) != NULL, "... saying why: %s", err.msg);
			pi_config_free(&cfg);
		}
		char *fine[] = {"PEERPREP_INIT_UPSTREAMS_WAIT=1ms", "PEERPREP_INIT_HEALTH_PROBE=",
				NULL};
		is_int(load(NULL, fine, &cfg, &err), 0, "a 1 ms wait and an empty probe are fine");
		pi_config_free(&cfg);
	}
	{
		char *env[] = {"PEERPREP_INIT_HEALTH_PATH=/ok-._~!$&'()*+,;=:@/%41", NULL};
		ok(load(NULL, env, &cfg, &err) == 0, "every URL path byte class is accepted");
		pi_config_free(&cfg);
	}
	{
		/* A comment longer than inih's 4096-byte line, then a bad key. */
		static char text[6000];
		size_t n = (size_t)snprintf(text, sizeof(text), "[log]\n;");
		memset(text + n, 'x', 5000);
		snprintf(text + n + 5000, sizeof(text) - n - 5000, "\nlevel = loud\n");
		expect_error(text, "2: line too long", "over-long line named");
	}
	{
		/* An over-long key line whose first 4 KiB open a quote: inih
		 * hands the cut line to the handler, but the line's length is
		 * what is wrong. */
		static char text[6000];
		size_t n = (size_t)snprintf(text, sizeof(text), "[nginx]\ncommand = sh -c '");
		memset(text + n, 'x', 5000);
		snprintf(text + n + 5000, sizeof(text) - n - 5000, "'\n");
		expect_error(text, "2: line too long", "an over-long value line is too long, not unclosed");
	}

	/* Only regular files: a folder once read as empty, /proc/self/mem
	 * (a regular file whose first read fails with EIO) as an empty file. */
	is_int(pi_config_load(&cfg, "/tmp", none, &err), -EINVAL, "a folder is refused");
	is_str(err.msg, "/tmp: cannot read config file: a directory, not a regular file",
	       "folder named with the reason");
	pi_config_free(&cfg);
	is_int(pi_config_load(&cfg, "/dev/zero", none, &err), -EINVAL, "a device is refused");
	is_str(err.msg,
	       "/dev/zero: cannot read config file: a character device, not a regular file",
	       "device named with the reason");
	pi_config_free(&cfg);
	ok(pi_config_load(&cfg, "/dev/null", none, &err) == 0 && cfg.file &&
	       !strcmp(cfg.file, "/dev/null"),
	   "/dev/null is the one device allowed: no file");
	pi_config_free(&cfg);
	is_int(pi_config_load(&cfg, "/proc/self/mem", none, &err), -EIO,
	       "a read error is an error");
	is_str(err.msg, "/proc/self/mem: cannot read config file: Input/output error",
	       "read error named");
	pi_config_free(&cfg);
	is_int(pi_config_load(&cfg, "", none, &err), -EINVAL, "-c '' is refused");
	is_str(err.msg, "-c: the config file name is empty", "empty name said");
	pi_config_free(&cfg);
	{
		char *env[] = {"PEERPREP_INIT_CONFIG=/tmp", NULL};
		is_int(pi_config_load(&cfg, NULL, env, &err), -EINVAL,
		       "$PEERPREP_INIT_CONFIG naming a folder is refused");
		is_str(err.msg, "/tmp: cannot read config file: a directory, not a regular file",
		       "folder from the environment named");
		pi_config_free(&cfg);
	}
	{
		/* Over 1 MiB of comments: a mistake, not a config. */
		FILE *f = fopen(ini("; big\n"), "a");
		for (int i = 0; f && i < 20000; i++)
			fputs("; a comment line that is about sixty bytes long, padding...\n", f);
		if (f)
			fclose(f);
		is_int(pi_config_load(&cfg, path, none, &err), -EFBIG,
		       "a file over 1 MiB is refused");
		char want[128];
		snprintf(want, sizeof(want), "%s: cannot read config file: larger than 1 MiB",
			 path);
		is_str(err.msg, want, "size named");
		pi_config_free(&cfg);
	}

	/* A file named explicitly must exist. */
	ok(pi_config_load(&cfg, "/nonexistent/pi.ini", none, &err) == -ENOENT,
	   "missing explicit file is an error");
	is_str(err.msg, "/nonexistent/pi.ini: cannot read config file: No such file or directory",
	       "missing file named");
	pi_config_free(&cfg);

	unlink(path);
	return done_testing();
}
