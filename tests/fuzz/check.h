/* Shared by the libFuzzer harnesses: a property that must hold. On failure
 * it names the property and line, then aborts so libFuzzer saves the input. */
#ifndef PI_FUZZ_CHECK_H
#define PI_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "property failed: %s (line %d)\n", #cond, __LINE__);       \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#endif
