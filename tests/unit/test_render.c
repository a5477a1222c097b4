/* Unit tests of envsubst/render.c and envsubst/value.c: every form of
 * reference, everything that must pass through untouched, every way a value
 * can be refused, with the exact error text. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envsubst/render.h"
#include "envsubst/value.h"
#include "tap.h"

/* The environment: "NAME=VALUE" strings, NULL-terminated. */
static const char *lookup(void *ctx, const char *name, size_t len, size_t *vlen)
{
	for (char **e = ctx; *e; e++)
		if (strncmp(*e, name, len) == 0 && (*e)[len] == '=') {
			*vlen = strlen(*e + len + 1);
			return *e + len + 1;
		}
	return NULL;
}

static int ends(const char *name, size_t len, const char *s)
{
	size_t k = strlen(s);
	return len >= k && memcmp(name + len - k, s, k) == 0;
}

static unsigned classify(void *ctx, const char *name, size_t len)
{
	(void)ctx;
	if (len >= 15 && memcmp(name, "NGINX_ENVSUBST_", 15) == 0)
		return PI_RENDER_CONFIG;
	if (len == 21 && memcmp(name, "NGINX_LOCAL_RESOLVERS", 21) == 0)
		return PI_RENDER_WORDS;
	return ends(name, len, "_HOST") ? PI_RENDER_HOST : 0;
}

static char hosts_seen[512];
static int host_fail;

static int on_host(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen)
{
	size_t n = strlen(hosts_seen);
	(void)ctx;
	if (host_fail)
		return -ENOMEM;
	snprintf(hosts_seen + n, sizeof(hosts_seen) - n, "%.*s=%.*s;", (int)nlen, name, (int)vlen,
		 value);
	return 0;
}

static char result[4096];
static int last_rc;
static struct pi_render_error last_err;

/* Renders tpl[0..len) with prefix NGINX_ and env; returns the output, or
 * "ERR LINE:COL: MSG" on error, in a static buffer. */
static const char *render_n(const char *tpl, size_t len, char **env)
{
	struct pi_render_opts o = {"NGINX_", lookup, classify, on_host, env, 0};
	struct pi_buf out = {0};

	memset(&last_err, 0, sizeof(last_err));
	last_rc = pi_render(tpl, len, &o, &out, &last_err);
	if (last_rc < 0)
		snprintf(result, sizeof(result), "ERR %u:%u: %s", last_err.line, last_err.col,
			 last_err.msg);
	else
		snprintf(result, sizeof(result), "%.*s", (int)out.len, out.data);
	free(out.data);
	return result;
}

static const char *render(const char *tpl, char **env)
{
	return render_n(tpl, strlen(tpl), env);
}

static char *env_x[] = {"NGINX_X=val", "NGINX_EMPTY=", "OTHER=no", NULL};

static void test_forms(void)
{
	is_str(render("a ${NGINX_X} b", env_x), "a val b", "${NAME}");
	is_str(render("a $NGINX_X b", env_x), "a val b", "$NAME");
	is_str(render("$NGINX_X", env_x), "val", "$NAME alone");
	is_str(render("${NGINX_X}${NGINX_X}$NGINX_X", env_x), "valvalval", "adjacent references");
	is_str(render("${NGINX_X:-dflt}", env_x), "val", ":- with the variable set");
	is_str(render("${NGINX_U:-dflt}", env_x), "dflt", ":- with the variable unset");
	is_str(render("${NGINX_EMPTY:-dflt}", env_x), "dflt", ":- with the variable empty");
	is_str(render("[${NGINX_U:-}]", env_x), "[]", "empty default");
	is_str(render("${NGINX_U:-a:-b?c}", env_x), "a:-b?c", "default is literal up to }");
	is_str(render("${NGINX_X:?needed}", env_x), "val", ":? with the variable set");
	is_str(render("${NGINX_X:-bad;default}", env_x), "val", "an unused default is not checked");
	is_str(render("${NGINX_X}}", env_x), "val}", "a brace after the reference is text");
	is_str(render("$NGINX_X}", env_x), "val}", "$NAME then }");
	is_str(render("$$NGINX_X", env_x), "$val", "$$NAME: a dollar then the value");
}

static void test_passthrough(void)
{
	static const char conf[] = "location / { proxy_pass http://$host$uri${uri}; return 301 $1; "
				   "set $a $$; x $ y $ {} ${} $9 ${ $$$ ${other} $OTHER $nginx_x "
				   "$NGINX ${NGINX} $NGINX$ }$";

	is_str(render(conf, env_x), conf, "nginx variables and stray dollars pass through");
	is_str(render("a\r\n${NGINX_X}\r\nb", env_x), "a\r\nval\r\nb", "CRLF kept");
	is_str(render("\xff\xfe$NGINX_X\x80\xc3", env_x), "\xff\xfeval\x80\xc3",
	       "invalid UTF-8 kept");
	is_str(render("no newline $NGINX_X", env_x), "no newline val", "no final newline");
	is_str(render("", env_x), "", "empty template");
	is_str(render("$", env_x), "$", "a lone $ at the end");
	is_str(render("${", env_x), "${", "${ at the end");
	is_str(render("$NGINX_X.conf $NGINX_X-1 $NGINX_X/x", env_x), "val.conf val-1 val/x",
	       "the name ends at the first non-name byte");

	{
		static const char tpl[] = "a\0b$NGINX_X\0c";
		static const char want[] = "a\0bval\0c";
		struct pi_render_opts o = {"NGINX_", lookup, classify, NULL, env_x, 0};
		struct pi_buf out = {0};
		struct pi_render_error err;

		ok(pi_render(tpl, sizeof(tpl) - 1, &o, &out, &err) == 0 &&
		       out.len == sizeof(want) - 1 && memcmp(out.data, want, out.len) == 0,
		   "NUL bytes kept");
		free(out.data);
	}
}

static void test_names(void)
{
	is_str(render("$NGINX_XY", env_x), "ERR 1:1: NGINX_XY is not set",
	       "longest name: $NGINX_XY is not $NGINX_X followed by Y");
	is_str(render("${NGINX_X_1}", env_x), "ERR 1:1: NGINX_X_1 is not set", "digits in names");
	is_str(render("x $NGINX_ y", env_x), "ERR 1:3: NGINX_ is not set",
	       "the prefix alone is a name");

	{
		char *env[] = {"APP_X=1", "NGINX_X=2", NULL};
		struct pi_render_opts o = {"APP_", lookup, NULL, NULL, env, 0};
		struct pi_buf out = {0};
		struct pi_render_error err;
		const char *tpl = "$APP_X $NGINX_X";

		ok(pi_render(tpl, strlen(tpl), &o, &out, &err) == 0 && out.len == 10 &&
		       memcmp(out.data, "1 $NGINX_X", 10) == 0,
		   "another prefix");
		free(out.data);
		o.prefix = "";
		out = (struct pi_buf){0};
		is_int(pi_render("$host", 5, &o, &out, &err), -EINVAL,
		       "the empty prefix takes every name");
		is_str(err.msg, "host is not set", "... and $host is then unset");
		free(out.data);
	}
}

static void test_unset(void)
{
	is_str(render("a\nbc ${NGINX_U}", env_x), "ERR 2:4: NGINX_U is not set", "unset ${NAME}");
	is_str(render("a\r\n\r\n  $NGINX_U", env_x), "ERR 3:3: NGINX_U is not set",
	       "unset $NAME, CRLF lines");
	is_str(render("${NGINX_EMPTY}", env_x), "ERR 1:1: NGINX_EMPTY is not set",
	       "empty counts as unset");
	is_str(render("x ${NGINX_U:?set it to the user service}", env_x),
	       "ERR 1:3: NGINX_U: set it to the user service", ":? message");
	is_str(render("${NGINX_U:?}", env_x), "ERR 1:1: NGINX_U is not set", "empty :? message");
	is_str(render("${NGINX_U:?a\tb\nc}", env_x), "ERR 1:1: NGINX_U: a?b?c",
	       ":? message kept on one line");
	is_str(render("${NGINX_ENVSUBST_OUTPUT_DIR:-x}", env_x),
	       "ERR 1:1: NGINX_ENVSUBST_OUTPUT_DIR is configuration, not a template variable",
	       "configuration variables are never rendered");

	{
		char tpl[300];
		memset(tpl, 'A', sizeof(tpl));
		memcpy(tpl, "$NGINX_", 7);
		render_n(tpl, sizeof(tpl), env_x);
		ok(strlen(last_err.var) == 123 && strcmp(last_err.var + 120, "...") == 0 &&
		       strncmp(last_err.var, "NGINX_AAA", 9) == 0,
		   "a long name is cut in the error: %s", last_err.var);
	}
}

static void test_malformed(void)
{
	is_str(render("${NGINX_X-d}", env_x), "ERR 1:1: malformed reference to NGINX_X",
	       "${NAME-default}");
	is_str(render("ab\n${NGINX_X", env_x), "ERR 2:1: malformed reference to NGINX_X",
	       "${NAME at the end");
	is_str(render("${NGINX_X:+y}", env_x), "ERR 1:1: malformed reference to NGINX_X",
	       "${NAME:+y}");
	is_str(render("${NGINX_X:}", env_x), "ERR 1:1: malformed reference to NGINX_X", "${NAME:}");
	is_str(render("${NGINX_X:", env_x), "ERR 1:1: malformed reference to NGINX_X",
	       "${NAME: at the end");
	is_str(render("${NGINX_X:-abc", env_x), "ERR 1:1: malformed reference to NGINX_X",
	       "unclosed default");
	is_str(render("${NGINX_X ", env_x), "ERR 1:1: malformed reference to NGINX_X",
	       "${NAME followed by a space");
	is_str(render("${NGINX_X.y}", env_x), "ERR 1:1: malformed reference to NGINX_X",
	       "${NAME.y}");
	is_str(render("${other-x} ${uri:+y}", env_x), "${other-x} ${uri:+y}",
	       "unprefixed odd forms pass through");
}

/* Each unsafe byte, as the value and as a default. */
static void test_injection(void)
{
	static const char bad[] = "\n;{}#\"'$\\\t\r\x7f \x01";

	for (const char *b = bad; *b; b++) {
		char envbuf[32], tpl[64], want[160], name[64];
		char *env[] = {envbuf, NULL};

		snprintf(envbuf, sizeof(envbuf), "NGINX_V=ab%cc", *b);
		snprintf(want, sizeof(want),
			 "ERR 1:4: NGINX_V has an unsafe character at position 3 of its value");
		snprintf(name, sizeof(name), "value with byte 0x%02x refused", (unsigned char)*b);
		is_str(render("x: $NGINX_V;", env), want, name);
		if (*b == '}')
			continue;
		snprintf(tpl, sizeof(tpl), "${NGINX_U:-a%cb}", *b);
		snprintf(want, sizeof(want),
			 "ERR 1:1: NGINX_U has an unsafe character at position 2 of its default");
		snprintf(name, sizeof(name), "default with byte 0x%02x refused", (unsigned char)*b);
		is_str(render(tpl, env), want, name);
	}
	{
		char *env[] = {"NGINX_V=\xc3\xa9t\xc3\xa9", NULL};
		is_str(render("$NGINX_V", env), "\xc3\xa9t\xc3\xa9", "UTF-8 values are fine");
	}
	{
		char *env[] = {"NGINX_LOCAL_RESOLVERS=10.0.0.2 [fd00::53]", NULL};
		is_str(render("resolver ${NGINX_LOCAL_RESOLVERS};", env),
		       "resolver 10.0.0.2 [fd00::53];", "NGINX_LOCAL_RESOLVERS may hold spaces");
	}
	{
		char *env[] = {"NGINX_LOCAL_RESOLVERS=10.0.0.2 ;x", NULL};
		is_str(render("$NGINX_LOCAL_RESOLVERS", env),
		       "ERR 1:1: NGINX_LOCAL_RESOLVERS has an unsafe character at position 10 of "
		       "its value",
		       "... but each word must be safe");
	}
}

static void test_hosts(void)
{
	char long_name[300], env_buf[400];
	char *env[] = {env_buf, NULL};
	size_t i;

	{
		char *e[] = {"NGINX_USER_HOST=user_service", NULL};
		is_str(render("$NGINX_USER_HOST", e),
		       "ERR 1:1: NGINX_USER_HOST is not a valid host name or IP address (position "
		       "5 of its value)",
		       "user_service refused as a host");
	}
	is_str(render("${NGINX_Q_HOST:-bad_host}", env_x),
	       "ERR 1:1: NGINX_Q_HOST is not a valid host name or IP address (position 4 of its "
	       "default)",
	       "host defaults are checked");

	hosts_seen[0] = '\0';
	{
		char *e[] = {"NGINX_A_HOST=user-service.peerprep-prod.internal",
			     "NGINX_B_HOST=10.0.1.23", "NGINX_C_HOST=[2001:db8::1]",
			     "NGINX_D_HOST=localhost.", NULL};
		is_str(render("$NGINX_A_HOST $NGINX_B_HOST $NGINX_C_HOST $NGINX_D_HOST "
			      "${NGINX_E_HOST:-e.internal} $NGINX_B_HOST",
			      e),
		       "user-service.peerprep-prod.internal 10.0.1.23 [2001:db8::1] localhost. "
		       "e.internal 10.0.1.23",
		       "DNS name, IPv4, [IPv6], final dot, default");
	}
	is_str(hosts_seen,
	       "NGINX_A_HOST=user-service.peerprep-prod.internal;NGINX_B_HOST=10.0.1.23;"
	       "NGINX_C_HOST=[2001:db8::1];NGINX_D_HOST=localhost.;NGINX_E_HOST=e.internal;",
	       "on_host told about every substituted host, once");
	host_fail = 1;
	{
		char *e[] = {"NGINX_A_HOST=a", NULL};
		render("x $NGINX_A_HOST", e);
		is_int(last_rc, -ENOMEM, "an on_host error stops rendering");
		is_str(result, "ERR 1:3: host callback failed: Cannot allocate memory",
		       "... and says so");
	}
	host_fail = 0;

	/* 253 bytes: 3 labels of 63 and one of 61 (+ 3 dots). */
	for (i = 0; i < 253; i++)
		long_name[i] = (i % 64 == 63) ? '.' : 'a';
	long_name[253] = '\0';
	snprintf(env_buf, sizeof(env_buf), "NGINX_L_HOST=%s", long_name);
	is_str(render("$NGINX_L_HOST", env), long_name, "a 253-byte name is a host");
	snprintf(env_buf, sizeof(env_buf), "NGINX_L_HOST=%s.", long_name);
	ok(strncmp(render("$NGINX_L_HOST", env), long_name, 253) == 0, "... also with a final dot");
	snprintf(env_buf, sizeof(env_buf), "NGINX_L_HOST=%sa", long_name);
	is_str(render("$NGINX_L_HOST", env),
	       "ERR 1:1: NGINX_L_HOST is not a valid host name or IP address (position 254 of its "
	       "value)",
	       "a 254-byte name is not");
}

static void check_host(const char *v, int want_ok, size_t want_bad)
{
	size_t bad = 999;
	int rc = pi_value_check_host(v, strlen(v), &bad);

	if (want_ok)
		is_int(rc, 0, v);
	else
		ok(rc == -EINVAL && bad == want_bad, "'%.80s' refused at %zu (got rc %d at %zu)", v,
		   want_bad, rc, bad);
}

static void test_value(void)
{
	char label[80];
	size_t bad = 99;

	is_int(pi_value_check_word("abc", 3, &bad), 0, "word: plain");
	is_int(pi_value_check_word("", 0, &bad), 0, "word: empty");
	ok(pi_value_check_word("ab c", 4, &bad) == -EINVAL && bad == 2, "word: space at 2");
	ok(pi_value_check_word("a\0b", 3, &bad) == -EINVAL && bad == 1, "word: NUL at 1");
	is_int(pi_value_check_word("/a:b@c[d]e,f=g(h)*?%", 20, NULL), 0,
	       "word: punctuation nginx treats as text");

	check_host("user-service", 1, 0);
	check_host("a", 1, 0);
	check_host("1a.example.com", 1, 0);
	check_host("10.0.1.23", 1, 0);
	check_host("[::1]", 1, 0);
	check_host("[2001:db8::10.0.0.1]", 1, 0);
	check_host("user_service", 0, 4);
	check_host("", 0, 0);
	check_host(".", 0, 0);
	check_host(".a", 0, 0);
	check_host("a..b", 0, 2);
	check_host("-a", 0, 0);
	check_host("a-.b", 0, 1);
	check_host("a.b-", 0, 3);
	check_host("a b", 0, 1);
	check_host("a;b", 0, 1);
	check_host("256.1.1.1", 0, 0);
	check_host("1.2.3", 0, 0);
	check_host("01.2.3.4", 0, 0);
	check_host("::1", 0, 0);
	check_host("[::1", 0, 4);
	check_host("[::1]x", 0, 5);
	check_host("[]", 0, 1);
	check_host("[fe80::1%eth0]", 0, 1);
	check_host("[10.0.0.1]", 0, 1);
	check_host("[", 0, 1);

	memset(label, 'b', 63);
	memcpy(label + 63, ".com", 5);
	check_host(label, 1, 0);
	memset(label, 'b', 64);
	memcpy(label + 64, ".com", 5);
	check_host(label, 0, 63);
}

static void test_buffer(void)
{
	struct pi_render_opts o = {"NGINX_", lookup, classify, NULL, env_x, 0};
	struct pi_buf out = {0};
	struct pi_render_error err;

	pi_buf_append(&out, "KEEP", 4);
	is_int(pi_render("1 $NGINX_X", 10, &o, &out, &err), 0, "render appends");
	ok(out.len == 9 && memcmp(out.data, "KEEP1 val", 9) == 0, "... after what was there");
	is_int(pi_render("x\n$NGINX_U", 10, &o, &out, &err), -EINVAL, "an error");
	ok(out.len == 9, "... leaves the buffer as it was");
	ok(err.line == 2 && err.col == 1 && strcmp(err.var, "NGINX_U") == 0,
	   "... and fills line, col and var");
	free(out.data);
}

static int host_calls;

static int count_host(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen)
{
	(void)ctx, (void)name, (void)nlen, (void)value, (void)vlen;
	host_calls++;
	return 0;
}

/* The host callback is told of a change, not of every reference. */
static void test_host_calls(void)
{
	char *env[] = {"NGINX_A_HOST=a.internal", "NGINX_B_HOST=b.internal", NULL};
	struct pi_render_opts o = {"NGINX_", lookup, classify, count_host, env, 0};
	struct pi_buf out = {0};
	struct pi_render_error err;

	host_calls = 0;
	is_int(pi_render("$NGINX_A_HOST $host ${NGINX_A_HOST} $uri $NGINX_A_HOST",
			 strlen("$NGINX_A_HOST $host ${NGINX_A_HOST} $uri $NGINX_A_HOST"), &o, &out,
			 &err),
	       0, "one host three times");
	is_int(host_calls, 1, "... is reported once");
	host_calls = 0;
	out.len = 0;
	is_int(pi_render("$NGINX_A_HOST $NGINX_A_HOST $NGINX_B_HOST $NGINX_B_HOST $NGINX_A_HOST "
			 "${NGINX_C_HOST:-c} ${NGINX_C_HOST:-c} ${NGINX_C_HOST:-d}",
			 strlen("$NGINX_A_HOST $NGINX_A_HOST $NGINX_B_HOST $NGINX_B_HOST "
				"$NGINX_A_HOST ${NGINX_C_HOST:-c} ${NGINX_C_HOST:-c} "
				"${NGINX_C_HOST:-d}"),
			 &o, &out, &err),
	       0, "changes of variable and of default");
	is_int(host_calls, 4, "... each variable once per value: A, B, C=c, C=d");
	free(out.data);
}

/* With out_limit, a piece stops once that much output is made, even the
 * last piece; going on from *used gives the same output. */
static void test_out_limit(void)
{
	char *env[] = {"NGINX_X=0123456789", NULL};
	struct pi_render_opts o = {"NGINX_", lookup, classify, NULL, env, 25};
	const char *tpl = "$NGINX_X-$NGINX_X-$NGINX_X-$NGINX_X-$NGINX_X-tail";
	size_t len = strlen(tpl), done = 0, used = 0;
	struct pi_buf out = {0}, all = {0};
	struct pi_render_error err;
	int calls = 0, rc = 0;

	while (done < len && calls < 100 && rc == 0) {
		out.len = 0;
		rc = pi_render_piece(tpl + done, len - done, 1, &o, &out, &used, &err);
		ok(out.len <= 25 + 10 + 1, "call %d: at most the limit plus one value", calls);
		pi_buf_append(&all, out.data, out.len);
		done += used;
		calls++;
	}
	is_int(rc, 0, "rendered in pieces by the output limit");
	ok(calls == 2, "... in 2 calls (got %d)", calls);
	ok(all.len == 59 &&
	       memcmp(all.data, "0123456789-0123456789-0123456789-0123456789-0123456789-tail",
		      59) == 0,
	   "... giving the whole output");
	free(out.data);
	free(all.data);
}

/* Random templates made of tokens whose output is known, rendered whole
 * and in random pieces with a random output limit: the scanner's fast path
 * meets references cut at a piece's end, a '$' as a piece's last byte,
 * names of 16, 17, 32 and 40 bytes, names that begin another name or
 * differ from another only in their last byte, and
 * values with bytes >= 0x80; each output must be the tokens' outputs. */
static const char *tok[][2] = {
    {" a", " a"},
    {"/x;", "/x;"},
    {"\x80\xfe", "\x80\xfe"},
    {"\n", "\n"},
    {"$host", "$host"},
    {"${uri}", "${uri}"},
    {"$ ", "$ "},
    {"$1", "$1"},
    {"$$", "$$"},
    {"${", "${"},
    {"$NGINX_X", "x1"},
    {"${NGINX_X}", "x1"},
    {"$NGINX_XY", "xy"},
    {"${NGINX_XY}", "xy"},
    {"$NGINX_A_HOST", "a.internal"},
    {"${NGINX_A_HOST}", "a.internal"},
    {"$NGINX_SIXTEEN_CH", "16"},
    {"${NGINX_SEVENTEEN_C}", "17"},
    {"$NGINX_SEVENTEEN_D", "17d"},
    {"$NGINX_A_FORTY_BYTES_LONG_VARIABLE_NAME_Y", "40y"},
    {"$NGINX_THIRTY_TWO_BYTES_NAME_XXXX", "32"},
    {"${NGINX_A_FORTY_BYTES_LONG_VARIABLE_NAME_X}", "40"},
    {"$NGINX_HI", "h\xc3\xa9\xff-long-value-of-more-than-16-bytes"},
    {"${NGINX_UNSET:-dflt}", "dflt"},
    {"${NGINX_X:-dflt}", "x1"},
    {"${NGINX_B_HOST:-b.internal}", "b.internal"},
};
static char *env_tok[] = {"NGINX_X=x1",
			  "NGINX_XY=xy",
			  "NGINX_A_HOST=a.internal",
			  "NGINX_SIXTEEN_CH=16",
			  "NGINX_SEVENTEEN_C=17",
			  "NGINX_SEVENTEEN_D=17d",
			  "NGINX_A_FORTY_BYTES_LONG_VARIABLE_NAME_Y=40y",
			  "NGINX_THIRTY_TWO_BYTES_NAME_XXXX=32",
			  "NGINX_A_FORTY_BYTES_LONG_VARIABLE_NAME_X=40",
			  "NGINX_HI=h\xc3\xa9\xff-long-value-of-more-than-16-bytes",
			  NULL};

static void test_random_tokens(void)
{
	struct pi_render_opts o = {"NGINX_", lookup, classify, count_host, env_tok, 0};
	unsigned seed = 12345, bad_whole = 0, bad_pieces = 0;
	struct pi_buf tpl = {0}, want = {0}, out = {0}, buf = {0};
	struct pi_render_error err;

	ok(strlen("NGINX_SIXTEEN_CH") == 16 && strlen("NGINX_SEVENTEEN_C") == 17 &&
	       strlen("NGINX_THIRTY_TWO_BYTES_NAME_XXXX") == 32 &&
	       strlen("NGINX_A_FORTY_BYTES_LONG_VARIABLE_NAME_X") == 40,
	   "the long names have the lengths meant");
	for (int round = 0; round < 400; round++) {
		size_t done = 0, have = 0;
		int rc = 0, last = 0;

		tpl.len = want.len = out.len = 0;
		seed = seed * 1103515245u + 12345u;
		for (unsigned n = (seed >> 16) % 300; n > 0; n--) {
			seed = seed * 1103515245u + 12345u;
			const char **t = tok[(seed >> 16) % (sizeof(tok) / sizeof(tok[0]))];

			pi_buf_append(&tpl, t[0], strlen(t[0]));
			pi_buf_append(&want, t[1], strlen(t[1]));
		}
		o.out_limit = 0;
		if (pi_render(tpl.data, tpl.len, &o, &out, &err) != 0 || out.len != want.len ||
		    (want.len && memcmp(out.data, want.data, want.len) != 0))
			bad_whole++;
		/* In pieces of 1 to 64 new bytes, with an output limit of 0 to 99. */
		out.len = buf.len = 0;
		o.out_limit = (seed >> 8) % 100;
		while (rc == 0 && !(last && have == 0)) {
			size_t n, used = 0;

			seed = seed * 1103515245u + 12345u;
			n = 1 + (seed >> 16) % 64;
			if (n > tpl.len - done)
				n = tpl.len - done;
			pi_buf_append(&buf, tpl.data + done, n);
			done += n;
			have += n;
			last = done == tpl.len;
			rc = pi_render_piece(buf.data, have, last, &o, &out, &used, &err);
			memmove(buf.data, buf.data + used, have - used);
			have -= used;
			buf.len = have;
		}
		if (rc != 0 || out.len != want.len ||
		    (want.len && memcmp(out.data, want.data, want.len) != 0))
			bad_pieces++;
	}
	is_int(bad_whole, 0, "400 random templates render whole as expected");
	is_int(bad_pieces, 0, "... and in random pieces with an output limit");
	free(tpl.data);
	free(want.data);
	free(out.data);
	free(buf.data);
}

int main(void)
{
	test_random_tokens();
	test_host_calls();
	test_out_limit();
	test_forms();
	test_passthrough();
	test_names();
	test_unset();
	test_malformed();
	test_injection();
	test_hosts();
	test_value();
	test_buffer();
	return done_testing();
}
