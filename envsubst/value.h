/* Safe values (SPEC §3): what a substituted value may contain so that it
 * stays one nginx word, and what a host variable's value may be. Pure
 * functions over caller bytes; nothing is allocated or kept. The template
 * renderer and the upstream checker both use these, so a value is judged
 * the same way everywhere. */
#ifndef PI_VALUE_H
#define PI_VALUE_H

#include <stddef.h>

/* The longest host name accepted, not counting an optional final dot. */
#define PI_VALUE_HOST_MAX 253
/* The longest label of a host name. */
#define PI_VALUE_LABEL_MAX 63

/* Checks that v[0..n) is one nginx word that cannot change a config's
 * structure: no byte below 0x20, no 0x7F, no space and none of
 * ; { } # " ' \ $. Bytes 0x80 and above are allowed (nginx passes them
 * through). The empty value is a word.
 *
 * Returns 0, or -EINVAL with *bad set to the 0-based position of the first
 * offending byte. bad may be NULL. */
int pi_value_check_word(const char *v, size_t n, size_t *bad);

/* Checks that v[0..n) is a host nginx can proxy to:
 *   - a DNS name: dot-separated labels of 1 to 63 letters, digits and
 *     hyphens, no label starting or ending with a hyphen, at most 253 bytes
 *     not counting an optional final dot (underscores are refused, so
 *     "user_service" is not a host);
 *   - an IPv4 address in dotted-quad form (a value of only digits and dots
 *     is always taken as one, so "1.2.3" is refused);
 *   - an IPv6 address in brackets, "[2001:db8::1]" (no zone index).
 *
 * Returns 0, or -EINVAL with *bad set to the 0-based position of the first
 * offending byte: 0 for an empty value, 253 for a name that is too long,
 * the label's 64th byte for a label that is too long, the position of the
 * second dot for an empty label, and the first byte of the address for an
 * IP literal that does not parse (n for a missing closing bracket). bad may
 * be NULL. */
int pi_value_check_host(const char *v, size_t n, size_t *bad);

#endif
