/* Inline compare and copy for the renderer's hot paths. musl's memcmp goes
 * a byte at a time and its memcpy pays a call and a setup for every short
 * run; a template render is millions of short copies (the text between two
 * references, a value) and compares (a name against the ones met before, a
 * piece of output against the previous file). These use 8- and 16-byte
 * loads instead, and are always inlined (-Os would otherwise call them).
 * Internal to envsubst/. */
#ifndef PI_WIDE_H
#define PI_WIDE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* 1 when a[0..n) and b[0..n) hold the same bytes. */
__attribute__((always_inline)) static inline int pi_wide_equal(const void *a, const void *b,
							       size_t n)
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
	if (n >= 8) {
		/* 8 bytes at a time, the last 8 overlapping what went before. */
		for (size_t i = 0;; i += 8) {
			if (i + 8 > n)
				i = n - 8;
			__builtin_memcpy(&u, x + i, 8);
			__builtin_memcpy(&v, y + i, 8);
			if (u != v)
				return 0;
			if (i + 8 == n)
				return 1;
		}
	}
	if (n >= 4) {
		uint32_t p, q, r, t;

		__builtin_memcpy(&p, x, 4);
		__builtin_memcpy(&q, y, 4);
		__builtin_memcpy(&r, x + n - 4, 4);
		__builtin_memcpy(&t, y + n - 4, 4);
		return p == q && r == t;
	}
	for (; n > 0; n--)
		if (*x++ != *y++)
			return 0;
	return 1;
}

/* Copies n bytes; the ranges must not overlap. Runs of 16 bytes or more
 * go 16 at a time with a last, overlapping 16-byte move for the tail;
 * shorter ones with two overlapping loads and stores; long ones (where a
 * call's fixed cost no longer matters) to memcpy. */
__attribute__((always_inline)) static inline void pi_wide_copy(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;
	uint64_t a, b;

	if (n > 256) {
		memcpy(d, s, n);
	} else if (n >= 16) {
#ifdef __SSE2__
		__m128i last = _mm_loadu_si128((const __m128i *)(const void *)(s + n - 16));

		for (size_t i = 0; i + 16 <= n; i += 16)
			_mm_storeu_si128((__m128i *)(void *)(d + i),
					 _mm_loadu_si128((const __m128i *)(const void *)(s + i)));
		_mm_storeu_si128((__m128i *)(void *)(d + n - 16), last);
#else
		memcpy(d, s, n);
#endif
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
