#include "init/config.h"
#include "init/log.h"
#include "health/addr.h"
#include "health/duration.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

enum key_type {
	T_STRING,
	T_DURATION,
	T_WAIT, /* a duration above 0 */
	T_SIGNAL,
	T_LEVEL,
	T_FORMAT,
	T_COMMAND,  /* split like a shell would; must name a program */
	T_TEST,	    /* the same, or empty */
	T_ADDR,	    /* HOST:PORT or [IPv6]:PORT, or empty */
	T_URL_PATH, /* '/' then URL path characters */
	T_DIR,	    /* a folder: not empty */
	T_SUFFIX,   /* a file name ending: not empty, no '/' */
	T_PREFIX,   /* the start of a variable name: [A-Za-z_][A-Za-z0-9_]* */
};

struct key {
	const char *section;
	const char *name;
	enum key_type type;
	size_t offset;
	const char *def;
	const char *alias; /* an official-nginx-image variable that also sets it */
	const char *help;
};

#define F(field) offsetof(struct pi_config, field)

/* The one table of configuration keys: defaults, parsing, environment names
 * and --help all come from here. */
static const struct key keys[] = {
    {"templates", "dir", T_DIR, F(templates_dir), "/etc/nginx/templates",
     "NGINX_ENVSUBST_TEMPLATE_DIR", "rendered recursively; sub-folders are mirrored"},
    {"templates", "suffix", T_SUFFIX, F(templates_suffix), ".template",
     "NGINX_ENVSUBST_TEMPLATE_SUFFIX", "files with this suffix are rendered, suffix removed"},
    {"templates", "output_dir", T_DIR, F(templates_output_dir), "/etc/nginx/conf.d",
     "NGINX_ENVSUBST_OUTPUT_DIR", "where rendered files go"},
    {"templates", "stream_suffix", T_SUFFIX, F(templates_stream_suffix), ".stream-template",
     "NGINX_ENVSUBST_STREAM_TEMPLATE_SUFFIX", "rendered into stream_output_dir"},
    {"templates", "stream_output_dir", T_DIR, F(templates_stream_output_dir),
     "/etc/nginx/stream-conf.d", "NGINX_ENVSUBST_STREAM_OUTPUT_DIR",
     "where rendered stream templates go"},
    {"templates", "prefix", T_PREFIX, F(templates_prefix), "NGINX_", NULL,
     "only variables whose names start with this are substituted"},
    {"upstreams", "hosts", T_STRING, F(upstreams_hosts), "NGINX_*_HOST", NULL,
     "space-separated glob patterns over variable names; their values must resolve"},
    {"upstreams", "wait", T_WAIT, F(upstreams_wait_ms), "60s", NULL,
     "how long run waits for all hosts to resolve before giving up"},
    {"upstreams", "recheck", T_DURATION, F(upstreams_recheck_ms), "30s", NULL,
     "after start, re-resolve this often; 0 turns it off"},
    {"nginx", "command", T_COMMAND, F(nginx_command), "nginx -g 'daemon off;'", NULL,
     "the child, split like a shell splits words; -- COMMAND overrides"},
    {"nginx", "test", T_TEST, F(nginx_test), "nginx -t -q", NULL,
     "config test run before every reload and by check; empty skips it"},
    {"nginx", "test_timeout", T_DURATION, F(nginx_test_timeout_ms), "30s", NULL,
     "a config test still running after this is killed and the reload rejected; 0: no limit"},
    {"nginx", "stop_signal", T_SIGNAL, F(nginx_stop_signal), "QUIT", NULL,
     "sent to the child on SIGTERM or SIGINT (graceful stop)"},
    {"nginx", "stop_delay", T_DURATION, F(nginx_stop_delay_ms), "0s", NULL,
     "on SIGTERM/SIGINT, /health turns 503 at once and the stop signal waits this long"},
    {"nginx", "stop_timeout", T_DURATION, F(nginx_stop_timeout_ms), "25s", NULL,
     "then SIGTERM; 5 s later SIGKILL"},
    {"health", "listen", T_ADDR, F(health_listen), "127.0.0.1:8081", NULL,
     "HOST:PORT or [IPv6]:PORT of /health; empty turns it off"},
    {"health", "path", T_URL_PATH, F(health_path), "/health", NULL, "path of the endpoint"},
    {"health", "probe", T_ADDR, F(health_probe), "127.0.0.1:80", NULL,
     "TCP address nginx listens on, connected to by each check; empty skips it"},
    {"log", "format", T_FORMAT, F(log_format), "text", NULL, "text (logfmt) or json"},
    {"log", "level", T_LEVEL, F(log_level), "info", NULL, "debug, info, warn or error"},
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

/* The parser lives with the `health` client, which needs it without the
 * config (health/duration.h). */
int pi_config_duration(const char *s, uint64_t *ms)
{
	return pi_health_parse_duration(s, ms);
}

static const struct {
	const char *name;
	int sig;
} signals[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},	  {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
    {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"WINCH", SIGWINCH},
};

int pi_config_signal(const char *s)
{
	if (strncasecmp(s, "SIG", 3) == 0)
		s += 3;
	if (isdigit((unsigned char)*s)) {
		char *end;
		long n = strtol(s, &end, 10);
		if (*end || n < 1 || n >= NSIG)
			return -EINVAL;
		return (int)n;
	}
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
		if (strcasecmp(s, signals[i].name) == 0)
			return signals[i].sig;
	return -EINVAL;
}

const char *pi_config_signal_name(int sig)
{
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
		if (signals[i].sig == sig)
			return signals[i].name;
	if (sig == SIGCHLD)
		return "CHLD";
	return "?";
}

/* Sets one key from text; returns 0 or -EINVAL with a reason in why. */
static int set_string(char *base, const char *value, const char **why)
{
	char *copy = strdup(value);

	if (!copy) {
		*why = "out of memory";
		return -ENOMEM;
	}
	free(*(char **)base);
	*(char **)base = copy;
	return 0;
}

/* A command must split (quotes closed) into at least one word, the first
 * not empty (`''` names no program); a test may also be empty or blanks,
 * which turns it off. Returns 0 for a command, 1 for none where that is
 * allowed, or a negative errno with *why. */
static int check_command(const char *value, int may_be_empty, const char **why)
{
	char **argv = NULL;
	int rc = pi_config_split(value, &argv);

	if (rc == 0 && argv[0][0] == '\0')
		rc = -ENOENT;
	else if (rc == -ENOENT && may_be_empty)
		rc = 1;
	pi_config_argv_free(argv);
	*why = rc == -ENOENT ? "empty command" : rc == -ENOMEM ? "out of memory" : "unclosed quote";
	return rc == -ENOMEM ? rc : rc < 0 ? -EINVAL : rc;
}

/* The bytes a URL path may hold as they arrive in a request (RFC 3986
 * pchar and '/', '%' for escapes): a space, a control byte, '?', '#' or a
 * byte >= 0x80 in health.path could never match any request. */
static int url_path_ok(const char *s)
{
	static const char extra[] = "-._~!$&'()*+,;=:@/%";
	if (s[0] != '/')
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr(extra, *s))
			return 0;
	return 1;
}

/* Renders only see names [A-Za-z_][A-Za-z0-9_]*: a prefix with any other
 * byte matches nothing, an empty one takes every nginx $variable for an
 * environment variable. */
static int prefix_ok(const char *s)
{
	if (!isalpha((unsigned char)s[0]) && s[0] != '_')
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_')
			return 0;
	return 1;
}

/* The checks of the string types beyond "any text"; NULL when it passes. */
static const char *string_problem(enum key_type t, const char *value)
{
	switch (t) {
	case T_URL_PATH:
		return url_path_ok(value) ? NULL
					  : "not a URL path: '/' then letters, digits and "
					    "-._~!$&'()*+,;=:@/% (no space, control byte, ? or #)";
	case T_DIR:
		return *value ? NULL : "empty folder name";
	case T_SUFFIX:
		return !*value		    ? "empty suffix (it would match no file)"
		       : strchr(value, '/') ? "a file name suffix cannot hold /"
					    : NULL;
	case T_PREFIX:
		return prefix_ok(value)
			   ? NULL
			   : "not the start of a variable name ([A-Za-z_][A-Za-z0-9_]*, "
			     "not empty)";
	default:
		return NULL;
	}
}

static int set_key(struct pi_config *cfg, const struct key *k, const char *value, const char **why)
{
	char *base = (char *)cfg + k->offset;
	int n;

	switch (k->type) {
	case T_COMMAND:
	case T_TEST:
		if ((n = check_command(value, k->type == T_TEST, why)) < 0)
			return n;
		/* A test of blanks only is no test: "" is what the rest checks. */
		return set_string(base, n == 1 ? "" : value, why);
	case T_ADDR: {
		struct sockaddr_storage ss;
		*why = "not HOST:PORT or [IPv6]:PORT with an IP address";
		if (*value && pi_health_parse_addr(value, &ss) < 0)
			return -EINVAL;
		/* Port 0: a listener on a port nobody knows, or a probe that
		 * always fails. */
		*why = "port 0 (a port must be named)";
		if (*value && pi_health_addr_port(&ss) == 0)
			return -EINVAL;
		return set_string(base, value, why);
	}
	case T_URL_PATH:
	case T_DIR:
	case T_SUFFIX:
	case T_PREFIX:
		if ((*why = string_problem(k->type, value)) != NULL)
			return -EINVAL;
		return set_string(base, value, why);
	case T_STRING:
		return set_string(base, value, why);
	case T_DURATION:
		*why = "not a duration (seconds, or a number with ms, s or m)";
		return pi_config_duration(value, (uint64_t *)base);
	case T_WAIT:
		*why = "not a duration (seconds, or a number with ms, s or m)";
		if ((n = pi_config_duration(value, (uint64_t *)base)) < 0)
			return n;
		*why = "not a duration above 0 (0 would give up before the first answer)";
		return *(uint64_t *)base ? 0 : -EINVAL;
	case T_SIGNAL:
		n = pi_config_signal(value);
		*why = "not a signal name or number";
		if (n < 0)
			return n;
		*(int *)base = n;
		return 0;
	case T_LEVEL:
		n = pi_log_level_parse(value);
		*why = "not one of debug, info, warn, error";
		if (n < 0)
			return n;
		*(int *)base = n;
		return 0;
	case T_FORMAT:
		*why = "not one of text, json";
		if (strcmp(value, "text") == 0)
			*(int *)base = PI_LOG_TEXT;
		else if (strcmp(value, "json") == 0)
			*(int *)base = PI_LOG_JSON;
		else
			return -EINVAL;
		return 0;
	}
	return -EINVAL;
}

void pi_config_defaults(struct pi_config *cfg)
{
	const char *why;

	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < NKEYS; i++)
		if (set_key(cfg, &keys[i], keys[i].def, &why) < 0)
			abort(); /* a default that does not parse is a bug */
}

static int holds_string(enum key_type t)
{
	return t == T_STRING || t == T_COMMAND || t == T_TEST || t == T_ADDR || t == T_URL_PATH ||
	       t == T_DIR || t == T_SUFFIX || t == T_PREFIX;
}

void pi_config_free(struct pi_config *cfg)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (holds_string(keys[i].type)) {
			char **p = (char **)((char *)cfg + keys[i].offset);
			free(*p);
			*p = NULL;
		}
	free(cfg->file);
	cfg->file = NULL;
}

/* Where each key got its value, for errors that involve two keys. */
struct key_origin {
	int line;	 /* of the INI file, 0 when not from it */
	const char *var; /* the variable's name (may go on with =VALUE), or NULL */
};

/* A config file is read whole before anything else starts; a bigger one is
 * a mistake (a log or a disk image named by accident), not a config. */
#define CONFIG_FILE_MAX (1 << 20)

struct ini_ctx {
	struct pi_config *cfg;
	const char *path;
	char *section; /* the last section seen, for the error message */
	struct pi_config_error *err;
	struct key_origin *origins;
	FILE *f;
	int lines;	/* lines handed to inih so far, counted as inih counts */
	int mid_line;	/* the last chunk read did not end the line */
	int long_line;	/* the first line longer than inih's buffer */
	int err_line;	/* the line of the first error this handler found */
	int read_errno; /* a read that failed: the end inih saw was not the file's */
	size_t bytes;	/* read so far */
};

/* inih's reader: fgets, counting lines, so the handler knows its line even
 * when inih does not pass it (INI_HANDLER_LINENO=0, Alpine's default). A
 * failed read or a file over CONFIG_FILE_MAX ends the stream as EOF would,
 * so it is recorded here and turned into an error after parsing. */
static char *read_line(char *buf, int size, void *stream)
{
	struct ini_ctx *c = stream;
	char *r = fgets(buf, size, c->f);
	size_t n = r ? strlen(r) : 0;

	if (!r) {
		if (ferror(c->f))
			c->read_errno = errno ? errno : EIO;
		return NULL;
	}
	c->bytes += n;
	if (c->bytes > CONFIG_FILE_MAX) {
		c->read_errno = EFBIG;
		return NULL;
	}
	if (!c->mid_line)
		c->lines++;
	c->mid_line = n > 0 && r[n - 1] != '\n' && (int)n == size - 1;
	if (c->mid_line && !c->long_line)
		c->long_line = c->lines;
	return r;
}

/* inih calls this per key (and per section header, with name and value
 * NULL). Returning 0 makes ini_parse return that line's number; the reason
 * is kept in err for the caller to prefix with FILE:LINE. */
static int on_ini_key(void *user, const char *section, const char *name, const char *value)
{
	struct ini_ctx *c = user;
	int known_section = 0;
	const char *why;

	if (c->err_line)
		return 0; /* a system inih may go on after the first error: keep it */
	c->err_line = c->lines;
	for (size_t i = 0; i < NKEYS; i++) {
		if (strcmp(keys[i].section, section) != 0)
			continue;
		known_section = 1;
		if (!name || strcmp(keys[i].name, name) != 0)
			continue;
		int rc = set_key(c->cfg, &keys[i], value, &why);
		if (rc < 0) {
			snprintf(c->err->msg, sizeof(c->err->msg), "%s.%s: %s", section, name, why);
			return 0;
		}
		c->origins[i].line = c->lines;
		c->origins[i].var = NULL;
		c->err_line = 0;
		return 1;
	}
	if (!*section && !name)
		snprintf(c->err->msg, sizeof(c->err->msg), "empty section name []");
	else if (!*section)
		snprintf(c->err->msg, sizeof(c->err->msg), "key %s is outside any section", name);
	else if (!known_section)
		snprintf(c->err->msg, sizeof(c->err->msg), "unknown section [%s]", section);
	else if (name)
		snprintf(c->err->msg, sizeof(c->err->msg), "unknown key %s.%s", section, name);
	else
		c->err_line = 0;
	return !c->err_line;
}

/* "PATH: cannot read config file: REASON", the one wording for all of it. */
static int read_error(struct pi_config_error *err, const char *path, int e, const char *reason)
{
	if (!reason)
		reason = e == EFBIG ? "larger than 1 MiB" : strerror(e);
	snprintf(err->msg, sizeof(err->msg), "%.300s: cannot read config file: %s", path, reason);
	return -e;
}

static const char *file_kind(mode_t mode)
{
	return S_ISDIR(mode)	? "a directory"
	       : S_ISFIFO(mode) ? "a FIFO"
	       : S_ISCHR(mode)	? "a character device"
	       : S_ISBLK(mode)	? "a block device"
	       : S_ISSOCK(mode) ? "a socket"
				: "not a regular file";
}

/* Opens a regular file only: a directory reads as empty, a FIFO or a device
 * blocks or never ends, and all of that before any signal handling exists.
 * stat first, so a device is never opened; O_NONBLOCK so a FIFO swapped in
 * between cannot block the open; fstat decides. */
static FILE *open_config(const char *path, struct pi_config_error *err, int *rc)
{
	char kind[64];
	struct stat st;
	int fd = -1;

	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
		goto refuse;
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 || fstat(fd, &st) < 0) {
		*rc = read_error(err, path, errno, NULL);
		goto fail;
	}
	if (!S_ISREG(st.st_mode))
		goto refuse;
	if (st.st_size > CONFIG_FILE_MAX) {
		*rc = read_error(err, path, EFBIG, NULL);
		goto fail;
	}
	FILE *f = fdopen(fd, "r");
	if (f) {
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		return f;
	}
	*rc = read_error(err, path, errno, NULL);
	goto fail;
refuse:
	snprintf(kind, sizeof(kind), "%s, not a regular file", file_kind(st.st_mode));
	read_error(err, path, EINVAL, kind);
	*rc = -EINVAL;
fail:
	if (fd >= 0)
		close(fd);
	return NULL;
}

/* /dev/null (the device, under any name) is the one file that is not
 * regular and still welcome: the usual way to say "no config file". */
static int is_dev_null(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3);
}

static int load_file(struct pi_config *cfg, const char *path, struct key_origin *origins,
		     struct pi_config_error *err)
{
	struct ini_ctx c = {.cfg = cfg, .path = path, .err = err, .origins = origins};
	char reason[sizeof(err->msg)];
	int rc;

	if (is_dev_null(path)) {
		cfg->file = strdup(path);
		return cfg->file ? 0 : -ENOMEM;
	}
	if (!(c.f = open_config(path, err, &rc)))
		return rc;
	err->msg[0] = '\0';
	errno = 0;
	int line = ini_parse_stream(read_line, &c, on_ini_key, &c);
	fclose(c.f);
	if (c.read_errno)
		return read_error(err, path, c.read_errno, NULL);
	if (line == 0) {
		cfg->file = strdup(path);
		return cfg->file ? 0 : -ENOMEM;
	}
	if (line < 0)
		return read_error(err, path, ENOMEM, NULL);
	/* inih finds syntax errors (no '=', unclosed '[', an over-long line)
	 * without calling the handler; a system inih that goes on may have
	 * called it for a later line, so the reason is ours only if the
	 * lines agree. An over-long line's first 4 KiB do reach the handler,
	 * whose complaint about them (an unclosed quote) would mislead. */
	snprintf(reason, sizeof(reason), "%s",
		 c.long_line == line  ? "line too long" /* the handler saw it cut */
		 : c.err_line == line ? err->msg
				      : "not a [section] header or a key = value line");
	snprintf(err->msg, sizeof(err->msg), "%.200s:%d: %.280s", path, line, reason);
	return -EINVAL;
}

const char *pi_config_env_get(char *const *envp, const char *name)
{
	size_t n = strlen(name);
	for (; envp && *envp; envp++)
		if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
			return *envp + n + 1;
	return NULL;
}

#define ENV_PREFIX "PEERPREP_INIT_"

/* PEERPREP_INIT_<SECTION>_<KEY> of key k, into buf. */
static void env_name(const struct key *k, char *buf, size_t n)
{
	size_t len = (size_t)snprintf(buf, n, ENV_PREFIX "%s_%s", k->section, k->name);

	for (size_t j = 0; j < len && j + 1 < n; j++)
		buf[j] = (char)toupper((unsigned char)buf[j]);
}

/* Whether s (up to '=') is SECTION_KEY of k, in capitals. */
static int env_is_key(const char *s, const struct key *k)
{
	const char *parts[2] = {k->section, k->name};

	for (int p = 0; p < 2; p++) {
		for (const char *c = parts[p]; *c; c++, s++)
			if (*s != (char)toupper((unsigned char)*c))
				return 0;
		if (*s++ != (p == 0 ? '_' : '='))
			return 0;
	}
	return 1;
}

/* ours[i]: key i's NAME=VALUE entry, the first of duplicates as getenv
 * takes it; one pass over the environment. */
static void env_ours(char *const *envp, const char **ours)
{
	const size_t plen = sizeof(ENV_PREFIX) - 1;

	for (; envp && *envp; envp++) {
		if (strncmp(*envp, ENV_PREFIX, plen) != 0)
			continue;
		for (size_t i = 0; i < NKEYS; i++)
			if (!ours[i] && env_is_key(*envp + plen, &keys[i])) {
				ours[i] = *envp;
				break;
			}
	}
}

static int load_env(struct pi_config *cfg, char *const *envp, struct key_origin *origins,
		    struct pi_config_error *err)
{
	const char *why;

	const char *ours[NKEYS] = {0};
	env_ours(envp, ours);
	/* The nginx image's variables rank below ours: one is not even read
	 * when the peerprep-init name is set. Empty is unset, as the image's
	 * entrypoint reads them (`${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/...}`):
	 * compose passes an unset `${VAR}` on as an empty value. */
	for (size_t i = 0; i < NKEYS; i++) {
		const char *v = keys[i].alias && !ours[i] ? pi_config_env_get(envp, keys[i].alias)
							  : NULL;
		if (v && !*v)
			v = NULL;
		if (v && set_key(cfg, &keys[i], v, &why) < 0) {
			snprintf(err->msg, sizeof(err->msg), "%s: %s", keys[i].alias, why);
			return -EINVAL;
		}
		if (v)
			origins[i].var = keys[i].alias;
	}
	const char *quiet = pi_config_env_get(envp, "NGINX_ENTRYPOINT_QUIET_LOGS");
	if (quiet && *quiet)
		cfg->log_level = PI_WARN;

	for (size_t i = 0; i < NKEYS; i++) {
		const char *entry = ours[i];
		if (!entry)
			continue;
		const char *v = strchr(entry, '=') + 1;
		int len = (int)(v - 1 - entry);
		if (set_key(cfg, &keys[i], v, &why) < 0) {
			snprintf(err->msg, sizeof(err->msg), "%.*s: %s", len, entry, why);
			return -EINVAL;
		}
		origins[i].var = entry;
	}
	return 0;
}

static size_t key_index(const char *section, const char *name)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (!strcmp(keys[i].section, section) && !strcmp(keys[i].name, name))
			return i;
	abort(); /* a key this file names but its table lacks is a bug */
}

/* The environment outranks the file, a later line an earlier one, and the
 * file a default (line 0). */
static int origin_rank(const struct key_origin *o)
{
	return o->var ? INT_MAX : o->line;
}

/* Checks between keys, once every source is in. The error blames the key
 * set by the source that ranks higher (see origin_rank), stream_suffix on
 * a tie, and names that source:
 * "VARIABLE: reason" or "FILE:LINE: key: reason". */
static int check_keys(const struct pi_config *cfg, const struct key_origin *origins,
		      struct pi_config_error *err)
{
	size_t stream = key_index("templates", "stream_suffix");
	size_t plain = key_index("templates", "suffix");

	if (strcmp(cfg->templates_suffix, cfg->templates_stream_suffix) != 0)
		return 0;
	size_t k = origin_rank(&origins[stream]) >= origin_rank(&origins[plain]) ? stream : plain;
	const char *why = k == stream
			      ? "same as templates.suffix: no file could be a stream template"
			      : "same as templates.stream_suffix: no file could be a "
				"stream template";
	if (origins[k].var)
		snprintf(err->msg, sizeof(err->msg), "%.*s: %s", (int)strcspn(origins[k].var, "="),
			 origins[k].var, why);
	else if (origins[k].line && cfg->file)
		snprintf(err->msg, sizeof(err->msg), "%.300s:%d: templates.%s: %s", cfg->file,
			 origins[k].line, keys[k].name, why);
	else
		snprintf(err->msg, sizeof(err->msg), "templates.%s: %s", keys[k].name, why);
	return -EINVAL;
}

int pi_config_load(struct pi_config *cfg, const char *explicit_file, char *const *envp,
		   struct pi_config_error *err)
{
	struct key_origin origins[NKEYS];
	const char *path = explicit_file;
	int rc;

	memset(origins, 0, sizeof(origins));
	pi_config_defaults(cfg);
	err->msg[0] = '\0';
	if (path && !*path) {
		snprintf(err->msg, sizeof(err->msg), "-c: the config file name is empty");
		return -EINVAL;
	}
	/* An empty $PEERPREP_INIT_CONFIG counts as unset, as a shell's
	 * ${VAR:-default} would take it; an empty -c is a mistake. */
	if (!path) {
		path = pi_config_env_get(envp, "PEERPREP_INIT_CONFIG");
		if (path && !*path)
			path = NULL;
	}
	if (!path && access("/etc/peerprep-init.ini", F_OK) == 0)
		path = "/etc/peerprep-init.ini";
	if (path && (rc = load_file(cfg, path, origins, err)) < 0)
		return rc;
	if ((rc = load_env(cfg, envp, origins, err)) < 0)
		return rc;
	return check_keys(cfg, origins, err);
}

void pi_config_help(FILE *out)
{
	char env[96];

	for (size_t i = 0; i < NKEYS; i++) {
		env_name(&keys[i], env, sizeof(env));
		fprintf(out, "  %s.%s = %s\n      %s\n      env: %s%s%s\n", keys[i].section,
			keys[i].name, keys[i].def, keys[i].help, env, keys[i].alias ? ", " : "",
			keys[i].alias ? keys[i].alias : "");
	}
}

/* One allocation: the array, then the words. A word of source length L
 * takes at most L + 1 bytes and words are at least one blank apart, so
 * len + 1 bytes hold them all; there are at most len / 2 + 1 words. */
int pi_config_split(const char *s, char ***argv_out)
{
	size_t len = strlen(s), max_words = len / 2 + 1, argc = 0;
	char **argv = malloc((max_words + 1) * sizeof(*argv) + len + 1);
	char *word;

	if (!argv)
		return -ENOMEM;
	word = (char *)(argv + max_words + 1);
	const char *p = s;
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
		if (!*p)
			break;
		argv[argc++] = word;
		while (*p && *p != ' ' && *p != '\t' && *p != '\n') {
			if (*p == '\'') {
				const char *q = strchr(p + 1, '\'');
				if (!q)
					goto unclosed;
				memcpy(word, p + 1, (size_t)(q - p - 1));
				word += q - p - 1;
				p = q + 1;
			} else if (*p == '"') {
				p++;
				while (*p && *p != '"') {
					if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
						p++;
					*word++ = *p++;
				}
				if (*p != '"')
					goto unclosed;
				p++;
			} else if (*p == '\\' && p[1]) {
				*word++ = p[1];
				p += 2;
			} else {
				*word++ = *p++;
			}
		}
		*word++ = '\0';
	}
	argv[argc] = NULL;
	if (argc == 0) {
		free(argv);
		return -ENOENT;
	}
	*argv_out = argv;
	return 0;
unclosed:
	free(argv);
	return -EINVAL;
}

void pi_config_argv_free(char **argv)
{
	free(argv);
}
