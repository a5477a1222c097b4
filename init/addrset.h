/* Address sets of upstream hosts (SPEC §4): the whole set of addresses a
 * lookup gave, as text, sorted and without duplicates, so that two answers
 * holding the same addresses in any order compare equal however many there
 * are. Pure: no I/O, no globals, usable from any thread. */
#ifndef PI_ADDRSET_H
#define PI_ADDRSET_H

#include <stddef.h>

struct addrinfo;

#define PI_ADDR_TEXT   48   /* an IPv6 address with scope fits */
#define PI_ADDRSET_MAX 4096 /* more is treated as out of memory */

/* The set owns `a` (malloc'd, n entries); an empty set has a == NULL. */
struct pi_addrset {
	size_t n;
	char (*a)[PI_ADDR_TEXT];
};

/* Adds one address given as bytes of `family` (AF_INET: 4, AF_INET6: 16).
 * The set is unsorted until pi_addrset_finish. Returns 0, -EAFNOSUPPORT
 * or -ENOMEM (the set is unchanged then). */
int pi_addrset_add(struct pi_addrset *s, int family, const void *bytes);

/* Sorts and drops duplicates; call once after the last add. */
void pi_addrset_finish(struct pi_addrset *s);

/* Every IPv4/IPv6 address of res, finished. Returns 0 or -ENOMEM (s is
 * empty then). */
int pi_addrset_from_addrinfo(struct pi_addrset *s, const struct addrinfo *res);

/* 1 when both finished sets hold the same addresses, else 0. */
int pi_addrset_equal(const struct pi_addrset *x, const struct pi_addrset *y);

/* 1 when every address of the finished set x is in the finished set y. */
int pi_addrset_subset(const struct pi_addrset *x, const struct pi_addrset *y);

/* Makes dst a copy of src (dst's old content freed). Returns 0 or -ENOMEM
 * (dst unchanged then). */
int pi_addrset_copy(struct pi_addrset *dst, const struct pi_addrset *src);

/* Adds src's addresses of family (AF_INET or AF_INET6) to dst and
 * finishes dst. Returns 0 or -ENOMEM (dst may then hold some of them,
 * unfinished). */
int pi_addrset_add_family(struct pi_addrset *dst, const struct pi_addrset *src, int family);

/* Moves src into dst (dst's old content freed); src is left empty. */
void pi_addrset_move(struct pi_addrset *dst, struct pi_addrset *src);

void pi_addrset_free(struct pi_addrset *s);

/* Writes at most `shown` addresses separated by spaces into out (always
 * NUL-terminated), then " (+N more)" if some were left out; "none" for an
 * empty set. An address that would not fit whole is left out too and
 * counted in N. Returns out. */
char *pi_addrset_join(const struct pi_addrset *s, size_t shown, char *out, size_t len);

#endif
