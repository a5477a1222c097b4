#!/bin/sh
# Template rendering benchmark: the render rows of `make bench` alone.
# Two ~37 MB templates in the shapes deploy templates have (every
# reference an NGINX_*_HOST variable; half the '$' nginx's own $host, or
# every '$' a host variable), rendered by the init (output absent, then
# present), GNU envsubst writing a file and `cat T > out` (the floor), in
# turns; medians, ratios from the same run, peak RSS. See bench.py.
#
# usage: tests/bench/render_bench.sh [BINARY]   (default build/peerprep-init)
set -eu
exec /usr/bin/python3 "$(dirname "$0")/bench.py" "${1:-build/peerprep-init}" render
