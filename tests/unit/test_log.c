/* Unit tests for the log encoder (init/log.h): exact lines for the common
 * cases, and for hostile values that a line is one line and (JSON) one
 * valid object whose fields decode to what was given, checked with the
 * independent parser that the fuzz harness uses. */
#include "tap.h"

#include "init/log.h"
#include "tests/fuzz/log_check.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#define TS "2026-12-01T21:35:19.123Z"

static char line[PI_LOG_LINE_MAX + 1];
static struct lc_line parsed;

static const char *enc(int format, int level, const char *msg, const struct pi_log_field *f,
		       size_t n)
{
	size_t len = pi_log_encode(line, PI_LOG_LINE_MAX, format, TS, level, msg, f, n);
	line[len] = '\0';
	return line;
}

static size_t field_index(const char *key)
{
	for (size_t i = 0; i < parsed.n; i++)
		if (parsed.f[i].klen == strlen(key) && !memcmp(parsed.f[i].key, key, parsed.f[i].klen))
			return i;
	return (size_t)-1;
}

/* The line parses as one line of its format with exactly `fields` fields. */
static int one_line(int json, size_t fields, const char *name)
{
	size_t len = strlen(line);
	int good = lc_parse(line, len, json, &parsed);
	if (!ok(good && parsed.n == fields, "%s: one %s line, %zu fields", name,
		json ? "JSON" : "logfmt", fields))
		diag("line: %s (parsed %d, %zu fields)", line, good, good ? parsed.n : 0);
	return good;
}

static void test_exact_lines(void)
{
	const struct pi_log_field f[] = {PI_STR("command", "nginx"), PI_INT("pid", 7),
					 PI_UINT("wait_ms", 60000), PI_STR("error", "no such file")};
	is_str(enc(PI_LOG_TEXT, PI_INFO, "started", f, 4),
	       "ts=" TS " level=info msg=started command=nginx pid=7 wait_ms=60000 "
	       "error=\"no such file\"\n",
	       "logfmt line");
	is_str(enc(PI_LOG_JSON, PI_INFO, "started", f, 4),
	       "{\"ts\":\"" TS "\",\"level\":\"info\",\"msg\":\"started\",\"command\":\"nginx\","
	       "\"pid\":7,\"wait_ms\":60000,\"error\":\"no such file\"}\n",
	       "JSON line");
	is_str(enc(PI_LOG_TEXT, PI_WARN, "reloaded nginx", NULL, 0),
	       "ts=" TS " level=warn msg=\"reloaded nginx\"\n", "no fields");
	is_str(enc(PI_LOG_TEXT, 9, NULL, NULL, 0), "ts=" TS " level=error msg=\"\"\n",
	       "a level out of range logs as error; NULL message is empty");
	const struct pi_log_field null_value[] = {PI_STR("k", NULL), PI_INT("neg", -12)};
	is_str(enc(PI_LOG_JSON, PI_DEBUG, "m", null_value, 2),
	       "{\"ts\":\"" TS "\",\"level\":\"debug\",\"msg\":\"m\",\"k\":\"\",\"neg\":-12}\n",
	       "NULL string value is empty; negative integer");
}

/* Values that once forged fields and lines: the 0x1F separator, newlines,
 * quotes and a JSON fragment inside a template name. */
static void test_no_forging(void)
{
	const char *evil = "a\x1fmsg=forged\nts=1 level=error \"},{\"x\":1\x1f";
	const struct pi_log_field f[] = {PI_STR("template", evil), PI_STR("output", "o")};
	char want[256];
	size_t wlen;

	for (int json = 0; json < 2; json++) {
		enc(json ? PI_LOG_JSON : PI_LOG_TEXT, PI_INFO, evil, f, 2);
		if (!one_line(json, 5, "forging value"))
			continue;
		size_t t = field_index("template");
		wlen = lc_expected(evil, json, want, sizeof(want));
		ok(t == 3 && parsed.f[t].vlen == wlen && !memcmp(parsed.f[t].val, want, wlen),
		   "%s: the value decodes to itself", json ? "JSON" : "logfmt");
		ok(parsed.f[2].vlen == wlen && !memcmp(parsed.f[2].val, want, wlen),
		   "%s: the message decodes to itself", json ? "JSON" : "logfmt");
		ok(field_index("truncated") == (size_t)-1, "not truncated");
	}
	is_str(enc(PI_LOG_TEXT, PI_INFO, "m", f, 1),
	       "ts=" TS " level=info msg=m template=\"a\\u001fmsg=forged\\nts=1 level=error "
	       "\\\"},{\\\"x\\\":1\\u001f\"\n",
	       "logfmt escapes");
}

static void test_numbers_are_json(void)
{
	const struct pi_log_field f[] = {PI_STR("value", "007"), PI_STR("n", "12"),
					 PI_INT("min", -9223372036854775807LL - 1),
					 PI_UINT("max", 18446744073709551615ULL)};
	enc(PI_LOG_JSON, PI_INFO, "m", f, 4);
	ok(strstr(line, "\"value\":\"007\"") != NULL, "a string of digits stays a string");
	ok(strstr(line, "\"n\":\"12\"") != NULL, "even a valid one");
	ok(strstr(line, "\"min\":-9223372036854775808,\"max\":18446744073709551615}") != NULL,
	   "integer fields are numbers");
	one_line(1, 7, "numbers");
}

static void test_utf8_and_controls(void)
{
	/* é and € pass; 0xff, a lone continuation, an overlong '/', a UTF-16
	 * surrogate, U+110000, a cut sequence; C1 NEL, U+2028, DEL, 0x01. */
	const char *v = "\xc3\xa9\xe2\x82\xac|\xff|\x80|\xc0\xaf|\xed\xa0\x80|\xf4\x90\x80\x80|"
			"\xe2\x82|\xc2\x85|\xe2\x80\xa8|\x7f|\x01";
	const struct pi_log_field f[] = {PI_STR("v", v)};
	enc(PI_LOG_JSON, PI_INFO, "m", f, 1);
	ok(strstr(line, "\"v\":\"\xc3\xa9\xe2\x82\xac|\\u00ff|\\u0080|\\u00c0\\u00af|"
			"\\u00ed\\u00a0\\u0080|\\u00f4\\u0090\\u0080\\u0080|\\u00e2\\u0082|"
			"\\u0085|\\u2028|\\u007f|\\u0001\"}") != NULL,
	   "JSON: valid UTF-8 passes, invalid bytes and controls are \\u escapes");
	one_line(1, 4, "utf8 json");
	enc(PI_LOG_TEXT, PI_INFO, "m", f, 1);
	ok(strstr(line, "v=\"\xc3\xa9\xe2\x82\xac|\\xff|\\x80|\\xc0\\xaf|\\xed\\xa0\\x80|"
			"\\xf4\\x90\\x80\\x80|\\xe2\\x82|\\u0085|\\u2028|\\u007f|\\u0001\"\n") != NULL,
	   "logfmt: invalid bytes are \\x escapes, controls \\u");
	one_line(0, 4, "utf8 text");
}

static void test_keys(void)
{
	const struct pi_log_field f[] = {PI_STR("msg", "a"), PI_STR("truncated", "b"),
					 PI_STR("a b=c\"", "d"), PI_STR("", "e")};
	is_str(enc(PI_LOG_TEXT, PI_INFO, "m", f, 4),
	       "ts=" TS " level=info msg=m _msg=a _truncated=b a_b_c_=d _=e\n",
	       "logfmt keys: reserved ones renamed, other bytes become _");
	is_str(enc(PI_LOG_JSON, PI_INFO, "m", f, 4),
	       "{\"ts\":\"" TS "\",\"level\":\"info\",\"msg\":\"m\",\"_msg\":\"a\","
	       "\"_truncated\":\"b\",\"a b=c\\\"\":\"d\",\"\":\"e\"}\n",
	       "JSON keys: reserved ones renamed, others escaped");
}

/* A line over the limit: cut, marked, and still one line. */
static void test_long_lines(void)
{
	static char big[3 * PI_LOG_LINE_MAX];
	memset(big, 'x', sizeof(big) - 1);
	const struct pi_log_field f[] = {PI_STR("a", big), PI_STR("b", big), PI_STR("c", big),
					 PI_STR("d", big), PI_STR("e", big)};
	for (int json = 0; json < 2; json++) {
		size_t len = pi_log_encode(line, PI_LOG_LINE_MAX, json, TS, PI_INFO, big, f, 5);
		line[len] = '\0';
		ok(len <= PI_LOG_LINE_MAX && len > PI_LOG_LINE_MAX - 100, "%s: %zu bytes, at most %d",
		   json ? "JSON" : "logfmt", len, PI_LOG_LINE_MAX);
		int good = lc_parse(line, len, json, &parsed);
		ok(good, "%s: one line", json ? "JSON" : "logfmt");
		ok(good && field_index("truncated") == parsed.n - 1 && parsed.n >= 5 &&
			   field_index("a") == 3,
		   "truncated=true comes last, after the fields that fit");
		size_t a = field_index("a");
		ok(a != (size_t)-1 && parsed.f[a].vlen <= PI_LOG_VALUE_MAX,
		   "one value is cut at %d bytes", PI_LOG_VALUE_MAX);
	}
	/* Escapes are never cut in half: 2000 quotes (each \") in JSON. */
	memset(big, '"', 2000);
	big[2000] = '\0';
	const struct pi_log_field q[] = {PI_STR("q", big)};
	enc(PI_LOG_JSON, PI_INFO, "m", q, 1);
	one_line(1, 5, "cut escapes");
	size_t k = field_index("q");
	ok(k != (size_t)-1 && parsed.f[k].vlen == (PI_LOG_VALUE_MAX - 2) / 2,
	   "cut at a whole escape");
	/* A small buffer still gets ts, level, msg and its newline. */
	size_t len = pi_log_encode(line, 256, PI_LOG_JSON, big, PI_ERROR, big, q, 1);
	line[len] = '\0';
	ok(len <= 256, "256-byte buffer: %zu bytes", len);
	one_line(1, 4, "small buffer");
	is_int((long)pi_log_encode(line, 255, PI_LOG_JSON, TS, PI_INFO, "m", NULL, 0), 0,
	       "a buffer under 256 bytes gets nothing");
}

/* pi_log_emit: one write of one line to standard error, errno kept. */
static void test_emit(void)
{
	int fds[2], saved = dup(STDERR_FILENO);
	char buf[PI_LOG_LINE_MAX * 2];

	if (!ok(pipe(fds) == 0 && saved >= 0, "pipe"))
		return;
	fcntl(fds[0], F_SETFL, O_NONBLOCK);
	dup2(fds[1], STDERR_FILENO);
	pi_log_setup(PI_INFO, PI_LOG_JSON);
	errno = ENOSPC;
	PI_LOG(PI_DEBUG, "hidden");
	PI_LOG(PI_WARN, "shown\n", PI_STR("k", "v\x1f"), PI_INT("n", 3));
	int e = errno;
	dup2(saved, STDERR_FILENO);
	pi_log_setup(PI_INFO, PI_LOG_TEXT);
	ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = '\0';
	is_int(e, ENOSPC, "errno unchanged");
	memcpy(line, buf, strlen(buf) + 1);
	one_line(1, 5, "emitted line");
	ok(strstr(buf, "\"level\":\"warn\",\"msg\":\"shown\\n\",\"k\":\"v\\u001f\",\"n\":3}\n") !=
		   NULL,
	   "the debug line is filtered, the warn line written");
	close(fds[0]);
	close(fds[1]);
	close(saved);
}

int main(void)
{
	test_exact_lines();
	test_no_forging();
	test_numbers_are_json();
	test_utf8_and_controls();
	test_keys();
	test_long_lines();
	test_emit();
	return done_testing();
}
