#!/usr/bin/python3
"""Start-up of one or more init binaries against bare nginx, taking turns.

    N=60 /usr/bin/python3 tests/bench/starts.py BIN [BIN...]

Each round starts bare nginx and every BIN (as PID 1 of a fresh pid
namespace, the bench's own Site, Pid1 and first_200), in an order that
rotates each round; the first round is dropped. Prints, per variant, the
quartiles and mean of exec -> first 200 in ms, the ratio of medians to
bare nginx and the median of each round's ratio (bench.paired_ratio):
for comparing two builds under the same conditions, where one
`make bench` row is too noisy to tell 0.1 ms apart.
"""
import os
import statistics
import sys

import bench


def main(argv):
    bins = [os.path.abspath(b) for b in argv[1:]]
    if not bins:
        print(__doc__)
        return 2
    n = int(os.environ.get("N", "40"))
    names = ["bare nginx"] + bins
    variants = {"bare nginx": bench.bare_nginx}
    variants.update({b: (lambda b: lambda site: [b])(b) for b in bins})
    res = bench.start_rounds(variants, n)  # name -> {round: ms}
    base = statistics.median(res["bare nginx"].values())
    for k in names:
        v = sorted(res[k].values())
        q = statistics.quantiles(v, n=4)
        print("%-40s p25 %.3f median %.3f p75 %.3f mean %.3f ms  ratio %.3f paired %.3f" % (
            k[-40:], q[0], q[1], q[2], statistics.mean(v), q[1] / base,
            bench.paired_ratio(res[k], res["bare nginx"])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
