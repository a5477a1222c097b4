#include "init/addrset.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int pi_addrset_add(struct pi_addrset *s, int family, const void *bytes)
{
	char text[PI_ADDR_TEXT] = {0}; /* zero-padded: sets compare with memcmp */

	if ((family != AF_INET && family != AF_INET6) ||
	    !inet_ntop(family, bytes, text, sizeof(text)))
		return -EAFNOSUPPORT;
	if (s->n >= PI_ADDRSET_MAX)
		return -ENOMEM;
	/* Grows by doubling from 4; the count stays small (PI_ADDRSET_MAX). */
	if ((s->n & (s->n - 1)) == 0 && s->n >= 4) {
		void *p = realloc(s->a, 2 * s->n * sizeof(*s->a));
		if (!p)
			return -ENOMEM;
		s->a = p;
	} else if (!s->a) {
		s->a = malloc(4 * sizeof(*s->a));
		if (!s->a)
			return -ENOMEM;
	}
	memcpy(s->a[s->n++], text, sizeof(text));
	return 0;
}

static int addrset_cmp(const void *x, const void *y)
{
	return strcmp(x, y);
}

void pi_addrset_finish(struct pi_addrset *s)
{
	size_t k = 0;

	if (s->n == 0)
		return;
	qsort(s->a, s->n, sizeof(*s->a), addrset_cmp);
	for (size_t i = 1; i < s->n; i++)
		if (strcmp(s->a[i], s->a[k]) != 0)
			memcpy(s->a[++k], s->a[i], sizeof(*s->a));
	s->n = k + 1;
}

int pi_addrset_from_addrinfo(struct pi_addrset *s, const struct addrinfo *res)
{
	memset(s, 0, sizeof(*s));
	for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		const void *bytes;
		if (ai->ai_family == AF_INET)
			bytes = &((const struct sockaddr_in *)ai->ai_addr)->sin_addr;
		else if (ai->ai_family == AF_INET6)
			bytes = &((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
		else
			continue;
		if (pi_addrset_add(s, ai->ai_family, bytes) == -ENOMEM) {
			pi_addrset_free(s);
			return -ENOMEM;
		}
	}
	pi_addrset_finish(s);
	return 0;
}

int pi_addrset_add_family(struct pi_addrset *dst, const struct pi_addrset *src, int family)
{
	unsigned char bytes[16];

	for (size_t i = 0; i < src->n; i++) {
		int f = strchr(src->a[i], ':') ? AF_INET6 : AF_INET;
		if (f != family || inet_pton(f, src->a[i], bytes) != 1)
			continue;
		if (pi_addrset_add(dst, f, bytes) == -ENOMEM)
			return -ENOMEM;
	}
	pi_addrset_finish(dst);
	return 0;
}

int pi_addrset_equal(const struct pi_addrset *x, const struct pi_addrset *y)
{
	if (x->n != y->n)
		return 0;
	return x->n == 0 || memcmp(x->a, y->a, x->n * sizeof(*x->a)) == 0;
}

int pi_addrset_subset(const struct pi_addrset *x, const struct pi_addrset *y)
{
	size_t j = 0;

	for (size_t i = 0; i < x->n; i++) {
		int c = 1;
		while (j < y->n && (c = strcmp(y->a[j], x->a[i])) < 0)
			j++;
		if (c != 0)
			return 0;
	}
	return 1;
}

int pi_addrset_copy(struct pi_addrset *dst, const struct pi_addrset *src)
{
	struct pi_addrset c = {0};

	if (src->n) {
		c.a = malloc(src->n * sizeof(*src->a));
		if (!c.a)
			return -ENOMEM;
		memcpy(c.a, src->a, src->n * sizeof(*src->a));
		c.n = src->n;
	}
	pi_addrset_move(dst, &c);
	return 0;
}

void pi_addrset_move(struct pi_addrset *dst, struct pi_addrset *src)
{
	if (dst == src)
		return;
	free(dst->a);
	*dst = *src;
	src->a = NULL;
	src->n = 0;
}

void pi_addrset_free(struct pi_addrset *s)
{
	free(s->a);
	s->a = NULL;
	s->n = 0;
}

char *pi_addrset_join(const struct pi_addrset *s, size_t shown, char *out, size_t len)
{
	size_t used = 0, i = 0;
	char more[40];

	if (len == 0)
		return out;
	out[0] = '\0';
	if (s->n == 0) {
		snprintf(out, len, "none");
		return out;
	}
	for (; i < s->n && i < shown; i++) {
		size_t need = strlen(s->a[i]) + (i ? 1 : 0);
		/* Room is kept for the " (+N more)" that would follow. */
		if (used + need + (i + 1 < s->n ? sizeof(more) : 0) >= len)
			break;
		used += (size_t)snprintf(out + used, len - used, "%s%s", i ? " " : "", s->a[i]);
	}
	if (i < s->n) {
		snprintf(more, sizeof(more), "%s(+%zu more)", i ? " " : "", s->n - i);
		if (used + strlen(more) < len)
			memcpy(out + used, more, strlen(more) + 1);
	}
	return out;
}
