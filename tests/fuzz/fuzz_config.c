/* libFuzzer harness for the configuration loader (init/config.h).
 *
 * Input: an INI file, a NUL byte, then an environment of NAME=VALUE lines
 * (no NUL: all of it is the INI file and the environment is empty). The
 * INI text goes into a memfd that pi_config_load reads as /proc/self/fd/N.
 * An environment entry PEERPREP_INIT_CONFIG=... is rewritten to name that
 * same file and the explicit path is then left NULL, so both ways of naming
 * the file are exercised while an input can never open a path of its own
 * choosing (/dev/zero would hang inih, /dev/stdin would block).
 *
 * Properties checked, beyond "no crash" and "no leak":
 *   - an error is -EINVAL with a non-empty one-line message; a file error
 *     reads "PATH:LINE: reason" with LINE a non-blank, non-comment line of
 *     the text, an environment error "VARIABLE: reason" naming a present
 *     PEERPREP_INIT_* variable whose value does not parse; a file error
 *     does not depend on the environment, and an environment error means
 *     the file alone loads;
 *   - after a success every field is in range (strings set, durations at
 *     most a week, a real signal, a log level and format) and cfg->file is
 *     the path read;
 *   - the environment wins over the file (SPEC §2): a present
 *     PEERPREP_INIT_<SECTION>_<KEY> sets its key, else a non-empty
 *     NGINX_ENVSUBST_* alias does (not even read when the first is set),
 *     and NGINX_ENTRYPOINT_QUIET_LOGS means warn; a key named
 *     nowhere keeps its default;
 *   - for INI text simple enough to model here (no inline comments, no
 *     over-long lines or section names), the outcome is predicted exactly:
 *     the line and kind of the first error, else every field's value;
 *   - pi_config_split agrees with a reference splitter written as a state
 *     machine, and quoting its words back (single or double quotes) splits
 *     to the same words; pi_config_duration and pi_config_signal stay in
 *     range and round-trip, on every line of the input. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "init/config.h"
#include "init/log.h"
#include "health/addr.h"
#include "health/server.h"
#include "check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The oracle below is not what is being explored: without coverage of its
 * own, the corpus grows on the loader's branches only, and each run costs
 * a third of what it did. */
#pragma clang attribute push(__attribute__((no_sanitize("coverage"))), apply_to = function)

#define WEEK_MS (7ULL * 86400 * 1000)
/* Lines this long may reach inih's INI_MAX_LINE (4096 with the newline),
 * where it reports an error of its own; the model leaves them alone. */
#define MODEL_MAX_LINE 4000
/* inih keeps at most 49 bytes of a section name. */
#define MODEL_MAX_SECTION 49
/* load_file's reason for a line inih refuses without asking the handler. */
#define SYNTAX_REASON "not a [section] header or a key = value line"
/* How much of the input goes to the string functions, to bound the cost:
 * splitting allocates once per word, and each split is done four times. */
#define MAX_STRING_LINES 16
#define MAX_STRING_LEN	 512

/* T_CMD splits into words, the first not empty, T_TST too or is empty,
 * T_ADR is an IP address and port or empty, T_PTH is '/' and URL path
 * bytes, T_DIR is not empty, T_SFX is not empty and holds no '/', T_PFX
 * is the start of a variable name: all of these are strings. */
enum { T_STR, T_DUR, T_WAI, T_SIG, T_LVL, T_FMT, T_CMD, T_TST, T_ADR, T_PTH, T_DIR, T_SFX, T_PFX };

#define F(field) offsetof(struct pi_config, field)

/* SPEC §2's keys, written out again here as the oracle's own copy. */
static const struct hkey {
	const char *section;
	const char *name;
	int type;
	size_t off;
	const char *alias;
} hkeys[] = {
    {"templates", "dir", T_DIR, F(templates_dir), "NGINX_ENVSUBST_TEMPLATE_DIR"},
    {"templates", "suffix", T_SFX, F(templates_suffix), "NGINX_ENVSUBST_TEMPLATE_SUFFIX"},
    {"templates", "output_dir", T_DIR, F(templates_output_dir), "NGINX_ENVSUBST_OUTPUT_DIR"},
    {"templates", "stream_suffix", T_SFX, F(templates_stream_suffix),
     "NGINX_ENVSUBST_STREAM_TEMPLATE_SUFFIX"},
    {"templates", "stream_output_dir", T_DIR, F(templates_stream_output_dir),
     "NGINX_ENVSUBST_STREAM_OUTPUT_DIR"},
    {"templates", "prefix", T_PFX, F(templates_prefix), NULL},
    {"upstreams", "hosts", T_STR, F(upstreams_hosts), NULL},
    {"upstreams", "wait", T_WAI, F(upstreams_wait_ms), NULL},
    {"upstreams", "recheck", T_DUR, F(upstreams_recheck_ms), NULL},
    {"nginx", "command", T_CMD, F(nginx_command), NULL},
    {"nginx", "test", T_TST, F(nginx_test), NULL},
    {"nginx", "stop_signal", T_SIG, F(nginx_stop_signal), NULL},
    {"nginx", "stop_delay", T_DUR, F(nginx_stop_delay_ms), NULL},
    {"nginx", "stop_timeout", T_DUR, F(nginx_stop_timeout_ms), NULL},
    {"health", "listen", T_ADR, F(health_listen), NULL},
    {"health", "path", T_PTH, F(health_path), NULL},
    {"health", "probe", T_ADR, F(health_probe), NULL},
    {"log", "format", T_FMT, F(log_format), NULL},
    {"log", "level", T_LVL, F(log_level), NULL},
};

#define NKEYS	  (sizeof(hkeys) / sizeof(hkeys[0]))
#define LEVEL_KEY (NKEYS - 1)
#define SUFFIX_KEY 1
#define STREAM_KEY 3
/* The reason shared by both ways to word a suffix clash. */
#define CLASH_REASON ": no file could be a stream template"

static char env_names[NKEYS][64]; /* PEERPREP_INIT_<SECTION>_<KEY> */
static struct pi_config defaults;
static int ini_fd = -1;
static char ini_path[64];

static void setup(void)
{
	for (size_t i = 0; i < NKEYS; i++) {
		int n = snprintf(env_names[i], sizeof(env_names[i]), "PEERPREP_INIT_%s_%s",
				 hkeys[i].section, hkeys[i].name);
		CHECK(n > 0 && (size_t)n < sizeof(env_names[i]));
		for (char *p = env_names[i]; *p; p++)
			*p = (char)toupper((unsigned char)*p);
	}
	pi_config_defaults(&defaults);
	CHECK(strcmp(hkeys[LEVEL_KEY].name, "level") == 0);
	ini_fd = memfd_create("fuzz_config.ini", 0);
	CHECK(ini_fd >= 0);
	snprintf(ini_path, sizeof(ini_path), "/proc/self/fd/%d", ini_fd);
}

static void write_ini(const uint8_t *text, size_t len)
{
	CHECK(ftruncate(ini_fd, 0) == 0);
	for (size_t done = 0; done < len;) {
		ssize_t n = pwrite(ini_fd, text + done, len - done, (off_t)done);
		CHECK(n > 0);
		done += (size_t)n;
	}
}

/* ---- the string functions on their own ---- */

static int is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n';
}

/* The splitting the header describes, as a state machine: words go to out
 * one after another, each NUL-terminated. out holds 2 * strlen(s) + 2. */
static int ref_split(const char *s, char *out, size_t *argc)
{
	size_t n = 0;
	int in_word = 0;
	char quote = 0;

	for (const char *p = s;; p++) {
		char c = *p;
		if (quote == '\'') {
			if (!c)
				return -EINVAL;
			if (c == '\'')
				quote = 0;
			else
				*out++ = c;
		} else if (quote == '"') {
			if (!c)
				return -EINVAL;
			if (c == '"')
				quote = 0;
			else if (c == '\\' && (p[1] == '"' || p[1] == '\\'))
				*out++ = *++p;
			else
				*out++ = c;
		} else if (!c || is_blank(c)) {
			if (in_word) {
				*out++ = '\0';
				n++;
				in_word = 0;
			}
			if (!c)
				break;
		} else {
			in_word = 1;
			if (c == '\'' || c == '"')
				quote = c;
			else if (c == '\\' && p[1])
				*out++ = *++p;
			else
				*out++ = c;
		}
	}
	*argc = n;
	return n ? 0 : -ENOENT;
}

/* Quotes each word so that a shell-like splitter gives it back: inside
 * single quotes everything is literal, a quote itself is closed, escaped
 * and reopened; inside double quotes only " and \ need a backslash. */
static char *quote_words(char **argv, int dq)
{
	size_t cap = 1;
	for (size_t i = 0; argv[i]; i++)
		cap += 4 * strlen(argv[i]) + 3;
	char *q = malloc(cap), *o = q;
	CHECK(q);
	for (size_t i = 0; argv[i]; i++) {
		if (i)
			*o++ = ' ';
		*o++ = dq ? '"' : '\'';
		for (const char *p = argv[i]; *p; p++) {
			if (!dq && *p == '\'') {
				memcpy(o, "'\\''", 4);
				o += 4;
				continue;
			}
			if (dq && (*p == '"' || *p == '\\'))
				*o++ = '\\';
			*o++ = *p;
		}
		*o++ = dq ? '"' : '\'';
	}
	*o = '\0';
	CHECK((size_t)(o - q) < cap);
	return q;
}

static void check_same_words(char **argv, char **again)
{
	size_t i;
	for (i = 0; argv[i]; i++) {
		CHECK(again[i]);
		CHECK(strcmp(argv[i], again[i]) == 0);
	}
	CHECK(!again[i]);
}

static void check_split(const char *s)
{
	size_t len = strlen(s), ref_argc;
	char *ref = malloc(2 * len + 2);
	char **argv = NULL;

	CHECK(ref);
	int ref_rc = ref_split(s, ref, &ref_argc);
	int rc = pi_config_split(s, &argv);
	CHECK(rc == ref_rc);
	if (rc == 0) {
		const char *w = ref;
		size_t argc = 0, total = 0;
		CHECK(argv);
		for (; argv[argc]; argc++) {
			CHECK(argc < ref_argc);
			CHECK(strcmp(argv[argc], w) == 0);
			total += strlen(w);
			w += strlen(w) + 1;
		}
		CHECK(argc == ref_argc && argc >= 1);
		CHECK(total <= len); /* quoting only ever removes bytes */
		for (int dq = 0; dq <= 1; dq++) {
			char *q = quote_words(argv, dq);
			char **again = NULL;
			CHECK(pi_config_split(q, &again) == 0);
			check_same_words(argv, again);
			pi_config_argv_free(again);
			free(q);
		}
		pi_config_argv_free(argv);
	}
	free(ref);
}

static int duration(const char *s, uint64_t *ms)
{
	*ms = UINT64_MAX;
	int rc = pi_config_duration(s, ms);
	CHECK(rc == 0 || rc == -EINVAL);
	CHECK(rc < 0 || *ms <= WEEK_MS);
	return rc;
}

static void check_duration(const char *s)
{
	size_t len = strlen(s);
	char buf[64], *alt = malloc(len + 2);
	uint64_t ms, again;

	CHECK(alt);
	int rc = duration(s, &ms);
	/* Whole numbers with a unit or none, checked against SPEC §2 itself. */
	size_t digits = strspn(s, "0123456789");
	if (digits >= 1 && digits <= 9) {
		uint64_t n = strtoull(s, NULL, 10), want = UINT64_MAX;
		if (!s[digits] || strcmp(s + digits, "s") == 0)
			want = n * 1000;
		else if (strcmp(s + digits, "ms") == 0)
			want = n;
		else if (strcmp(s + digits, "m") == 0)
			want = n * 60000;
		if (want != UINT64_MAX)
			CHECK(want <= WEEK_MS ? rc == 0 && ms == want : rc == -EINVAL);
	}
	/* Leading blanks are skipped (the environment's values are not
	 * trimmed the way inih trims the file's). */
	alt[0] = ' ';
	memcpy(alt + 1, s, len + 1);
	CHECK(duration(alt, &again) == rc && (rc < 0 || again == ms));
	if (rc == 0) {
		const char *t = s;
		while (isspace((unsigned char)*t))
			t++;
		CHECK(isdigit((unsigned char)*t) || *t == '.');
		snprintf(buf, sizeof(buf), "%" PRIu64 "ms", ms);
		CHECK(duration(buf, &again) == 0 && again == ms);
		snprintf(buf, sizeof(buf), "%" PRIu64 ".%03u", ms / 1000, (unsigned)(ms % 1000));
		CHECK(duration(buf, &again) == 0 && again == ms);
		snprintf(buf, sizeof(buf), "%" PRIu64 ".%03us", ms / 1000, (unsigned)(ms % 1000));
		CHECK(duration(buf, &again) == 0 && again == ms);
		/* A bare number is seconds: naming the unit changes nothing. */
		if (len && (isdigit((unsigned char)s[len - 1]) || s[len - 1] == '.')) {
			memcpy(alt, s, len);
			memcpy(alt + len, "s", 2);
			CHECK(duration(alt, &again) == 0 && again == ms);
		}
	}
	free(alt);
}

static int signal_of(const char *s)
{
	int sig = pi_config_signal(s);
	CHECK(sig == -EINVAL || (sig >= 1 && sig < NSIG));
	return sig;
}

static void check_signal(const char *s)
{
	size_t len = strlen(s);
	char buf[32], *alt = malloc(len + 4);
	int sig = signal_of(s);

	CHECK(alt);
	if (strncasecmp(s, "SIG", 3) != 0) {
		memcpy(alt, "SIG", 3);
		memcpy(alt + 3, s, len + 1);
		CHECK(signal_of(alt) == sig);
	}
	for (size_t i = 0; i <= len; i++)
		alt[i] = (char)tolower((unsigned char)s[i]);
	CHECK(signal_of(alt) == sig);
	if (sig > 0) {
		snprintf(buf, sizeof(buf), "%d", sig);
		CHECK(signal_of(buf) == sig);
		const char *name = pi_config_signal_name(sig);
		/* CHLD is a name for the log only; it is never a stop signal. */
		if (strcmp(name, "?") != 0 && strcmp(name, "CHLD") != 0) {
			CHECK(signal_of(name) == sig);
			snprintf(buf, sizeof(buf), "SIG%s", name);
			CHECK(signal_of(buf) == sig);
		}
	}
	free(alt);
}

static void check_string(const char *s)
{
	check_split(s);
	check_duration(s);
	check_signal(s);
}

/* ---- the loader ---- */

static int value_ok(int type, const char *v)
{
	uint64_t ms;

	switch (type) {
	case T_DUR:
		return pi_config_duration(v, &ms) == 0;
	case T_WAI: /* a wait of 0 gives up before the first answer */
		return pi_config_duration(v, &ms) == 0 && ms > 0;
	case T_SIG:
		return pi_config_signal(v) > 0;
	case T_LVL:
		return pi_log_level_parse(v) >= 0;
	case T_FMT:
		return strcmp(v, "text") == 0 || strcmp(v, "json") == 0;
	case T_CMD:
	case T_TST: {
		char **argv = NULL;
		int rc = pi_config_split(v, &argv);
		int named = rc == 0 && argv[0][0] != '\0';
		pi_config_argv_free(argv);
		return named || (rc == -ENOENT && type == T_TST);
	}
	case T_ADR: { /* port 0 can never work */
		struct sockaddr_storage ss;
		return !*v || (pi_health_parse_addr(v, &ss) == 0 && pi_health_addr_port(&ss) != 0);
	}
	case T_PTH:
		if (v[0] != '/')
			return 0;
		for (; *v; v++)
			if (!((*v >= 'a' && *v <= 'z') || (*v >= 'A' && *v <= 'Z') ||
			      (*v >= '0' && *v <= '9') || (*v && strchr("-._~!$&'()*+,;=:@/%", *v))))
				return 0;
		return 1;
	case T_DIR:
		return *v != '\0';
	case T_SFX:
		return *v != '\0' && !strchr(v, '/');
	case T_PFX:
		if (!(*v == '_' || (*v >= 'a' && *v <= 'z') || (*v >= 'A' && *v <= 'Z')))
			return 0;
		for (; *v; v++)
			if (!(*v == '_' || (*v >= 'a' && *v <= 'z') || (*v >= 'A' && *v <= 'Z') ||
			      (*v >= '0' && *v <= '9')))
				return 0;
		return 1;
	}
	return 1;
}

/* Whether an error message is the suffix clash, in either wording. */
static int is_clash(const char *msg)
{
	size_t n = strlen(msg), k = strlen(CLASH_REASON);
	return n > k && strcmp(msg + n - k, CLASH_REASON) == 0;
}

static int is_string(int type)
{
	return type == T_STR || type >= T_CMD;
}

/* Whether the field holds what the text v sets it to (v NULL: default). */
static int field_is(const struct pi_config *cfg, const struct hkey *k, const char *v)
{
	const char *got = (const char *)cfg + k->off;
	const char *def = (const char *)&defaults + k->off;
	uint64_t ms;

	if (is_string(k->type))
		return strcmp(*(char *const *)got, v ? v : *(char *const *)def) == 0;
	switch (k->type) {
	case T_DUR:
	case T_WAI:
		if (!v)
			return *(const uint64_t *)got == *(const uint64_t *)def;
		return pi_config_duration(v, &ms) == 0 && *(const uint64_t *)got == ms;
	case T_SIG:
		return *(const int *)got == (v ? pi_config_signal(v) : *(const int *)def);
	case T_LVL:
		return *(const int *)got == (v ? pi_log_level_parse(v) : *(const int *)def);
	case T_FMT:
		if (!v)
			return *(const int *)got == *(const int *)def;
		return *(const int *)got == (strcmp(v, "json") == 0 ? PI_LOG_JSON : PI_LOG_TEXT);
	}
	return 0;
}

static void check_ranges(const struct pi_config *cfg)
{
	for (size_t i = 0; i < NKEYS; i++) {
		const char *base = (const char *)cfg + hkeys[i].off;
		if (is_string(hkeys[i].type))
			CHECK(*(char *const *)base);
		switch (hkeys[i].type) {
		case T_DUR:
			CHECK(*(const uint64_t *)base <= WEEK_MS);
			break;
		case T_WAI:
			CHECK(*(const uint64_t *)base > 0 && *(const uint64_t *)base <= WEEK_MS);
			break;
		case T_SIG:
			CHECK(*(const int *)base >= 1 && *(const int *)base < NSIG);
			break;
		case T_LVL:
			CHECK(*(const int *)base >= PI_DEBUG && *(const int *)base <= PI_ERROR);
			break;
		case T_FMT:
			CHECK(*(const int *)base == PI_LOG_TEXT ||
			      *(const int *)base == PI_LOG_JSON);
			break;
		}
	}
}

/* The first entry for name, as getenv would find it. */
static const char *env_get(char **envp, const char *name)
{
	size_t n = strlen(name);
	for (; *envp; envp++)
		if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
			return *envp + n + 1;
	return NULL;
}

static const char *lskip(const char *s)
{
	while (*s && isspace((unsigned char)*s))
		s++;
	return s;
}

static char *rstrip(char *s)
{
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static int known_section(const char *s)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (strcmp(hkeys[i].section, s) == 0)
			return 1;
	return 0;
}

enum file_error { E_NONE, E_ANY, E_SYNTAX, E_SECTION, E_OUTSIDE, E_KEY, E_VALUE };

struct model {
	int line;		 /* of the first error, 0 for none, -1: not modelled */
	int kind;		 /* enum file_error */
	char why[128];		 /* what the reason starts with (E_VALUE: then more) */
	const char *vals[NKEYS]; /* the last value of each key, into text */
	int lines[NKEYS];	 /* and its line */
};

/* Predicts what loading the file does, for text without inline comments
 * (any ';' after the start of a line), over-long lines or section names;
 * the rest is inih's business and only the generic checks apply. text is
 * a NUL-terminated copy, cut into lines in place. */
static void model_file(char *text, size_t len, struct model *m)
{
	const char *section = "";
	char *end = text + len;
	int lineno = 0;

	memset(m, 0, sizeof(*m));
	for (char *p = text; p < end;) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		char *line = p;
		if (!nl)
			nl = end;
		*nl = '\0';
		p = nl + 1;
		lineno++;
		if ((size_t)(nl - line) >= MODEL_MAX_LINE)
			goto unknown;
		if (lineno == 1 && nl - line >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0)
			line += 3;
		char *s = rstrip((char *)lskip(line));
		if (!*s || *s == ';' || *s == '#')
			continue;
		if (strchr(s, ';'))
			goto unknown;
		m->line = lineno;
		if (*s == '[') {
			char *close = strchr(s + 1, ']');
			if (!close) {
				m->kind = E_SYNTAX;
				return;
			}
			*close = '\0';
			section = s + 1;
			if (strlen(section) > MODEL_MAX_SECTION)
				goto unknown;
			if (!*section) {
				m->kind = E_ANY; /* an empty section name */
				return;
			}
			if (!known_section(section)) {
				m->kind = E_SECTION;
				snprintf(m->why, sizeof(m->why), "unknown section [%s]", section);
				return;
			}
			m->line = 0;
			continue;
		}
		char *sep = s + strcspn(s, "=:");
		if (!*sep) {
			m->kind = E_SYNTAX;
			return;
		}
		*sep = '\0';
		const char *name = rstrip(s), *value = lskip(sep + 1);
		if (strlen(name) > 64)
			goto unknown; /* longer than the reason this model spells out */
		if (!*section) {
			m->kind = E_OUTSIDE;
			snprintf(m->why, sizeof(m->why), "key %s is outside any section", name);
			return;
		}
		size_t i;
		for (i = 0; i < NKEYS; i++)
			if (strcmp(hkeys[i].section, section) == 0 &&
			    strcmp(hkeys[i].name, name) == 0)
				break;
		if (i == NKEYS) {
			m->kind = E_KEY;
			snprintf(m->why, sizeof(m->why), "unknown key %s.%s", section, name);
			return;
		}
		if (!value_ok(hkeys[i].type, value)) {
			m->kind = E_VALUE;
			snprintf(m->why, sizeof(m->why), "%s.%s: ", section, name);
			return;
		}
		m->vals[i] = value;
		m->lines[i] = lineno;
		m->line = 0;
	}
	return;
unknown:
	m->line = -1;
}

static int names_var(const char *msg, const char *name)
{
	size_t n = strlen(name);
	return strncmp(msg, name, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ';
}

/* Key i's nginx image alias's value, when it counts: set, not empty (the
 * image's entrypoint reads `${VAR:-default}`), and its PEERPREP_INIT_*
 * name unset (which outranks it, and then it is not read at all). */
static const char *alias_value(char **envp, size_t i)
{
	const char *a = hkeys[i].alias, *v = a ? env_get(envp, a) : NULL;

	return v && *v && !env_get(envp, env_names[i]) ? v : NULL;
}

/* The variable a load with this environment must fail on, else NULL: the
 * nginx image's aliases are applied first, then PEERPREP_INIT_*, each in
 * table order. */
static const char *first_bad_variable(char **envp)
{
	for (size_t i = 0; i < NKEYS; i++) {
		const char *v = alias_value(envp, i);
		if (v && !value_ok(hkeys[i].type, v))
			return hkeys[i].alias;
	}
	for (size_t i = 0; i < NKEYS; i++) {
		const char *v = env_get(envp, env_names[i]);
		if (v && !value_ok(hkeys[i].type, v))
			return env_names[i];
	}
	return NULL;
}

/* Where key i gets its value, ranked: INT_MAX a variable (named in *var),
 * else its line in the file (in *line too), 0 the default; the value in *v. */
static int model_origin(const struct model *m, char **envp, size_t i, const char **v,
			const char **var, int *line)
{
	*var = env_get(envp, env_names[i]) ? env_names[i]
	       : alias_value(envp, i)	  ? hkeys[i].alias
					  : NULL;
	*line = m->lines[i];
	if (*var) {
		*v = env_get(envp, *var);
		return INT_MAX;
	}
	*v = m->vals[i] ? m->vals[i] : *(char *const *)((const char *)&defaults + hkeys[i].off);
	return m->vals[i] ? m->lines[i] : 0;
}

/* The error a load must end with when suffix and stream_suffix end up the
 * same (want[0] == 0 when they do not), blaming the higher-ranked source. */
static void model_clash(const struct model *m, char **envp, char *want, size_t size)
{
	const char *vs, *vt, *var_s, *var_t, *var;
	int line_s, line_t;
	int rs = model_origin(m, envp, SUFFIX_KEY, &vs, &var_s, &line_s);
	int rt = model_origin(m, envp, STREAM_KEY, &vt, &var_t, &line_t);

	want[0] = '\0';
	if (strcmp(vs, vt) != 0)
		return;
	int stream = rt >= rs;
	const char *why = stream ? "same as templates.suffix" CLASH_REASON
				 : "same as templates.stream_suffix" CLASH_REASON;
	var = stream ? var_t : var_s;
	if (var)
		snprintf(want, size, "%s: %s", var, why);
	else
		snprintf(want, size, "%s:%d: templates.%s: %s", ini_path, stream ? line_t : line_s,
			 hkeys[stream ? STREAM_KEY : SUFFIX_KEY].name, why);
}

/* Where line n (from 1) of text starts, and how long it is. */
static const char *nth_line(const char *text, size_t len, int n, size_t *linelen)
{
	const char *p = text, *end = text + len;
	for (int i = 1; i < n && p < end; i++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		p = nl ? nl + 1 : end;
	}
	if (p >= end)
		return NULL;
	const char *nl = memchr(p, '\n', (size_t)(end - p));
	*linelen = (size_t)((nl ? nl : end) - p);
	return p;
}

/* Checks a "PATH:LINE: reason" message against the text. */
static void check_file_error(const char *msg, const char *text, size_t len)
{
	size_t plen = strlen(ini_path), linelen;
	char *end;

	CHECK(strncmp(msg, ini_path, plen) == 0 && msg[plen] == ':');
	CHECK(isdigit((unsigned char)msg[plen + 1]));
	long line = strtol(msg + plen + 1, &end, 10);
	CHECK(end[0] == ':' && end[1] == ' ' && end[2] != '\0');
	CHECK(line >= 1 && line <= INT32_MAX);
	const char *l = nth_line(text, len, (int)line, &linelen);
	CHECK(l);
	/* inih fails an over-long line whatever it holds; any other line that
	 * fails has something on it that is not a comment. */
	if (linelen < MODEL_MAX_LINE) {
		if (line == 1 && linelen >= 3 && memcmp(l, "\xEF\xBB\xBF", 3) == 0) {
			l += 3;
			linelen -= 3;
		}
		size_t k = 0;
		while (k < linelen && isspace((unsigned char)l[k]))
			k++;
		CHECK(k < linelen && l[k] != ';' && l[k] != '#');
	}
}

/* Splits the environment block into a NULL-terminated array in one
 * allocation; lines end at a newline or a NUL. */
static char **make_env(const uint8_t *block, size_t len, int *named_file)
{
	size_t n = 1;
	for (size_t i = 0; i < len; i++)
		n += block[i] == '\n' || block[i] == '\0';
	size_t extra = sizeof("PEERPREP_INIT_CONFIG=") + sizeof(ini_path);
	char **envp = malloc((n + 1) * sizeof(char *) + len + 1 + extra);
	CHECK(envp);
	char *text = (char *)(envp + n + 1), *own = text + len + 1;
	memcpy(text, block, len);
	text[len] = '\0';
	size_t k = 0;
	envp[k++] = text;
	for (size_t i = 0; i < len; i++)
		if (text[i] == '\n' || text[i] == '\0') {
			text[i] = '\0';
			envp[k++] = text + i + 1;
		}
	envp[k] = NULL;
	CHECK(k == n);
	*named_file = 0;
	for (k = 0; envp[k]; k++)
		if (strncmp(envp[k], "PEERPREP_INIT_CONFIG=", 21) == 0) {
			snprintf(own, extra, "PEERPREP_INIT_CONFIG=%s", ini_path);
			envp[k] = own;
			*named_file = 1;
			break;
		}
	return envp;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	const uint8_t *nul = memchr(data, '\0', size);
	size_t ini_len = nul ? (size_t)(nul - data) : size;
	size_t env_len = nul ? size - ini_len - 1 : 0;
	struct pi_config cfg, alone;
	struct pi_config_error err, alone_err;
	struct model m;
	int named_file;
	char *empty_env[] = {NULL};

	if (!ready) {
		setup();
		ready = 1;
	}
	write_ini(data, ini_len);
	char **envp = make_env(nul ? nul + 1 : data, env_len, &named_file);
	char *text = malloc(ini_len + 1);
	CHECK(text);
	memcpy(text, data, ini_len);
	text[ini_len] = '\0';

	int rc = pi_config_load(&cfg, named_file ? NULL : ini_path, envp, &err);
	CHECK(rc == 0 || rc == -EINVAL);
	CHECK(strnlen(err.msg, sizeof(err.msg)) < sizeof(err.msg));
	/* The same file with no environment: file errors do not depend on it. */
	int alone_rc = pi_config_load(&alone, ini_path, empty_env, &alone_err);
	CHECK(alone_rc == 0 || alone_rc == -EINVAL);

	if (rc < 0) {
		CHECK(err.msg[0] != '\0' && !strchr(err.msg, '\n'));
		if (strncmp(err.msg, ini_path, strlen(ini_path)) == 0) {
			check_file_error(err.msg, text, ini_len);
			CHECK(alone_rc == rc && strcmp(alone_err.msg, err.msg) == 0);
		} else {
			size_t i;
			const char *name = NULL;
			for (i = 0; i < NKEYS && !name; i++) {
				const char *a = hkeys[i].alias;
				if (names_var(err.msg, env_names[i]))
					name = env_names[i];
				else if (a && names_var(err.msg, a))
					name = a;
			}
			CHECK(name);
			i--;
			const char *v = env_get(envp, name);
			CHECK(v);
			CHECK(!value_ok(hkeys[i].type, v) ||
			      ((i == SUFFIX_KEY || i == STREAM_KEY) && is_clash(err.msg)));
			CHECK(alone_rc == 0 || is_clash(alone_err.msg));
		}
	} else {
		check_ranges(&cfg);
		CHECK(cfg.file && strcmp(cfg.file, ini_path) == 0);
		CHECK(strcmp(cfg.templates_suffix, cfg.templates_stream_suffix) != 0);
		CHECK(alone_rc == 0 || is_clash(alone_err.msg));
		const char *quiet = env_get(envp, "NGINX_ENTRYPOINT_QUIET_LOGS");
		for (size_t i = 0; i < NKEYS; i++) {
			const char *v = env_get(envp, env_names[i]);
			const char *a = alias_value(envp, i);
			if (v)
				CHECK(field_is(&cfg, &hkeys[i], v));
			else if (a)
				CHECK(field_is(&cfg, &hkeys[i], a));
			else if (i == LEVEL_KEY && quiet && *quiet)
				CHECK(cfg.log_level == PI_WARN);
			else if (!strstr(text, hkeys[i].name))
				CHECK(field_is(&cfg, &hkeys[i], NULL));
			/* Without the environment, the file's value stands. */
			if (!strstr(text, hkeys[i].name))
				CHECK(field_is(&alone, &hkeys[i], NULL));
		}
		check_split(cfg.nginx_command);
		check_split(cfg.nginx_test);
	}

	model_file(text, ini_len, &m); /* cuts text into lines */
	if (m.line > 0) {
		char prefix[96];
		int n = snprintf(prefix, sizeof(prefix), "%s:%d: ", ini_path, m.line);
		CHECK(rc < 0 && strncmp(err.msg, prefix, (size_t)n) == 0);
		const char *why = err.msg + n;
		if (m.kind == E_SYNTAX)
			CHECK(strcmp(why, SYNTAX_REASON) == 0);
		else if (m.kind == E_VALUE)
			CHECK(strncmp(why, m.why, strlen(m.why)) == 0 && why[strlen(m.why)]);
		else if (m.kind != E_ANY)
			CHECK(strcmp(why, m.why) == 0);
	} else if (m.line == 0) {
		/* The file loads; the first present PEERPREP_INIT_* variable, in
		 * table order, that does not parse is the error, else every
		 * field is predicted. */
		char want[512];
		const char *bad = first_bad_variable(envp);
		model_clash(&m, empty_env, want, sizeof(want));
		if (want[0])
			CHECK(alone_rc < 0 && strcmp(alone_err.msg, want) == 0);
		else
			CHECK(alone_rc == 0);
		model_clash(&m, envp, want, sizeof(want));
		if (bad) {
			size_t n = strlen(bad);
			CHECK(rc < 0 && strncmp(err.msg, bad, n) == 0);
			CHECK(err.msg[n] == ':' && err.msg[n + 1] == ' ' && err.msg[n + 2]);
		} else if (want[0]) {
			CHECK(rc < 0 && strcmp(err.msg, want) == 0);
		} else {
			CHECK(rc == 0);
			const char *quiet = env_get(envp, "NGINX_ENTRYPOINT_QUIET_LOGS");
			for (size_t i = 0; i < NKEYS; i++) {
				const char *v = env_get(envp, env_names[i]);
				if (!v)
					v = alias_value(envp, i);
				if (!v && i == LEVEL_KEY && quiet && *quiet)
					v = "warn";
				CHECK(field_is(&cfg, &hkeys[i], v ? v : m.vals[i]));
				CHECK(field_is(&alone, &hkeys[i], m.vals[i]));
			}
		}
	}

	pi_config_free(&cfg);
	pi_config_free(&alone);

	/* Every line of the input, and the start of the INI text whole (where
	 * a newline is one of the blanks), as plain strings. */
	memcpy(text, data, ini_len);
	if (ini_len > MAX_STRING_LEN)
		text[MAX_STRING_LEN] = '\0';
	check_split(text);
	memcpy(text, data, ini_len);
	int lines = 0;
	for (char *p = text; lines < MAX_STRING_LINES && *p; lines++) {
		char *nl = strchr(p, '\n');
		if (nl)
			*nl = '\0';
		if (strlen(p) > MAX_STRING_LEN)
			p[MAX_STRING_LEN] = '\0';
		check_string(p);
		const char *eq = strchr(p, '=');
		if (eq)
			check_string(lskip(eq + 1));
		if (!nl)
			break;
		p = nl + 1;
	}
	for (size_t k = 0; envp[k] && lines < MAX_STRING_LINES; k++, lines++) {
		char *eq = strchr(envp[k], '='), *v = eq ? eq + 1 : envp[k];
		if (strlen(v) > MAX_STRING_LEN)
			v[MAX_STRING_LEN] = '\0'; /* envp is not used after this */
		check_string(v);
	}
	free(text);
	free(envp);
	return 0;
}

#pragma clang attribute pop
