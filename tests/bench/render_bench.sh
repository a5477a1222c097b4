#!/bin/sh
# Template rendering benchmark: peerprep-init `render --stdout` against GNU
# envsubst on a ~37 MB template holding 400,000 references to NGINX_X among
# nginx-looking text. Checks both give identical output, then prints the
# median wall time of 5 runs each (the two taking turns), the speed ratio,
# and each one's peak RSS next to the output size. It only reports: the
# exit code is 0 unless the tools are missing or the outputs differ.
#
# usage: tests/bench/render_bench.sh [BINARY]   (default build/peerprep-init)
set -eu

BIN=${1:-build/peerprep-init}
RUNS=5
REFS=400000

for tool in "$BIN" envsubst /usr/bin/time awk; do
	command -v "$tool" >/dev/null 2>&1 || { echo "render_bench: $tool not found" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/pi-render-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT INT TERM
mkdir "$WORK/templates" "$WORK/out"
TPL="$WORK/templates/big.conf.template"

# Each line is ~97 bytes with one reference, alternating $NGINX_X and
# ${NGINX_X}, between nginx variables that both tools must leave alone.
awk -v n="$REFS" 'BEGIN {
	for (i = 0; i < n; i++) {
		ref = (i % 2) ? "${NGINX_X}" : "$NGINX_X";
		printf "location /svc-%06d/ { proxy_pass http://%s:3001$uri; proxy_set_header Host $host:80; }\n", i, ref;
	}
}' >"$TPL"

# A fixed, minimal environment: nothing else for either tool to expand.
set -- env -i PATH="$PATH" NGINX_X=user-service.peerprep-prod.internal \
	PEERPREP_INIT_CONFIG=/dev/null \
	PEERPREP_INIT_TEMPLATES_DIR="$WORK/templates" \
	PEERPREP_INIT_TEMPLATES_OUTPUT_DIR="$WORK/out" \
	PEERPREP_INIT_LOG_LEVEL=error

# Correctness first: the init's output minus its "# ==> PATH" header line.
"$@" "$BIN" render --stdout | tail -n +2 >"$WORK/ours.out"
"$@" envsubst '$NGINX_X' <"$TPL" >"$WORK/gnu.out"
if ! cmp -s "$WORK/ours.out" "$WORK/gnu.out"; then
	echo "render_bench: outputs differ:" >&2
	cmp "$WORK/ours.out" "$WORK/gnu.out" >&2 || true
	exit 1
fi
OUT_BYTES=$(wc -c <"$WORK/ours.out")
TPL_BYTES=$(wc -c <"$TPL")

# run_once NAME INPUT CMD...: runs CMD once, stdin from INPUT, stdout to
# /dev/null; appends its wall time in ms to NAME.times and its peak RSS in
# KiB to NAME.rss.
run_once() {
	name=$1 input=$2
	shift 2
	t0=$(date +%s%N)
	/usr/bin/time -f %M -o "$WORK/rss" "$@" <"$input" >/dev/null
	t1=$(date +%s%N)
	echo $(((t1 - t0) / 1000000)) >>"$WORK/$name.times"
	tail -n 1 "$WORK/rss" >>"$WORK/$name.rss"
}

# summary NAME: the median wall time in ms and the largest peak RSS in KiB.
summary() {
	median=$(sort -n "$WORK/$1.times" | sed -n "$(((RUNS + 1) / 2))p")
	rss=$(sort -n "$WORK/$1.rss" | tail -n 1)
	echo "$median $rss"
}

# The two tools take turns, so a burst of other work on the machine slows
# both medians alike instead of only the one being measured at the time.
: >"$WORK/ours.times"
: >"$WORK/ours.rss"
: >"$WORK/gnu.times"
: >"$WORK/gnu.rss"
i=0
while [ $i -lt $RUNS ]; do
	run_once ours /dev/null "$@" "$BIN" render --stdout
	run_once gnu "$TPL" "$@" envsubst '$NGINX_X'
	i=$((i + 1))
done
read -r OURS_MS OURS_KB <<EOT
$(summary ours)
EOT
read -r GNU_MS GNU_KB <<EOT
$(summary gnu)
EOT

awk -v tb="$TPL_BYTES" -v ob="$OUT_BYTES" -v refs="$REFS" -v runs="$RUNS" \
	-v om="$OURS_MS" -v ok="$OURS_KB" -v gm="$GNU_MS" -v gk="$GNU_KB" 'BEGIN {
	mb = 1024 * 1024;
	printf "template: %.1f MB, %d references; output %.1f MB; identical output: yes\n", tb / mb, refs, ob / mb;
	printf "%-28s %10s %14s %16s\n", "", "median ms", "peak RSS MB", "RSS / output";
	printf "%-28s %10d %14.1f %15.2fx\n", "peerprep-init render", om, ok / 1024, ok * 1024 / ob;
	printf "%-28s %10d %14.1f %15.2fx\n", "GNU envsubst", gm, gk / 1024, gk * 1024 / ob;
	printf "speed-up: %.1fx (target >= 5x); peak RSS %.2fx output (target < 3x); %d runs each\n",
		(om > 0 ? gm / om : 0), ok * 1024 / ob, runs;
}'
