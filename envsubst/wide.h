/* Inline compare and copy for the renderer's hot paths. musl's memcmp goes
 * a byte at a time and its memcpy pays a call and a setup for every short
 * run; a template render is millions of short copies (the text between two
 * references, a value) and compares (a name against the last one, a piece
 * of output against the previous file). These use 8- and 16-byte loads
 * instead. Internal to envsubst/. */
#ifndef PI_WIDE_H
#define PI_WIDE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* 1 when a[0..n) and b[0..n) hold the same bytes. */
static inline int pi_wide_equal(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;
	uint64_t u, v;

#ifdef __SSE2__
	for (; n >= 16; n -= 16, x += 16, y += 16) {
		__m128i p = _mm_loadu_si128((const __m128i *)(const void *)x);
		__m128i q = _mm_loadu_si128((const __m128i *)(const void *)y);

		if (_mm_movemask_epi8(_mm_cmpeq_epi8(p, q)) != 0xffff)
			return 0;
	}
#endif
	for (; n >= 8; n -= 8, x += 8, y += 8) {
		__builtin_memcpy(&u, x, 8);
		__builtin_memcpy(&v, y, 8);
		if (u != v)
			return 0;
	}
	for (; n > 0; n--)
		if (*x++ != *y++)
			return 0;
	return 1;
}

/* Copies n bytes; the ranges must not overlap. Short runs are moved with
 * two overlapping loads and stores; long ones go to memcpy, whose fixed
 * cost no longer matters there. */
static inline void pi_wide_copy(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;
	uint64_t a, b;

	if (n > 32) {
		memcpy(d, s, n);
	} else if (n >= 16) {
		uint64_t c, e;

		__builtin_memcpy(&a, s, 8);
		__builtin_memcpy(&b, s + 8, 8);
		__builtin_memcpy(&c, s + n - 16, 8);
		__builtin_memcpy(&e, s + n - 8, 8);
		__builtin_memcpy(d, &a, 8);
		__builtin_memcpy(d + 8, &b, 8);
		__builtin_memcpy(d + n - 16, &c, 8);
		__builtin_memcpy(d + n - 8, &e, 8);
	} else if (n >= 8) {
		__builtin_memcpy(&a, s, 8);
		__builtin_memcpy(&b, s + n - 8, 8);
		__builtin_memcpy(d, &a, 8);
		__builtin_memcpy(d + n - 8, &b, 8);
	} else {
		for (size_t i = 0; i < n; i++)
			d[i] = s[i];
	}
}

#endif
