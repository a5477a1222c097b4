#!/bin/sh
# make check-peers: the general tests of tini's and dumb-init's own test
# suites, run against peerprep-init in place of the peer, and first against
# the real peers (Debian's tini and dumb-init) to prove the harness.
#
# The peers' sources are the checksummed tarballs mk/deps.sh fetched from
# Debian's source archive (named in mk/deps.sha256); they are unpacked under
# build/peers, never into the repository. dumb-init's pytest suite runs
# unchanged, with its own pytest.ini (5 s per test); tini's drivers are
# replayed step by step by tests/peers/tini_steps.py. tests/peers/expected.py
# says which tests are left out and which differences are documented.
#
# Usage: mk/peers.sh PEERPREP_INIT [PYTHON]
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
init=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
python=${2:-/usr/bin/python3}
src=$top/build/deps/src
out=$top/build/peers

tarball() { # $1 = source package name: the pinned tarball in deps.sha256
	f=$(awk -v p="$1_" 'index($2, p) == 1 && $2 ~ /\.orig\.tar\.gz$/ { print $2 }' "$top/mk/deps.sha256")
	[ -n "$f" ] || { echo "peers: $1: no tarball in mk/deps.sha256" >&2; exit 1; }
	(cd "$src" && grep -F "  $f" "$top/mk/deps.sha256" | sha256sum -c --quiet -) ||
		{ echo "peers: $src/$f: missing or checksum mismatch (run make deps)" >&2; exit 1; }
	echo "$src/$f"
}

[ -x "$init" ] || { echo "peers: $init: not built" >&2; exit 1; }
# One run at a time: each starts by emptying build/peers.
mkdir -p "$top/build"
exec 9>"$top/build/peers.lock"
flock 9
tini_tar=$(tarball tini)
dumb_tar=$(tarball dumb-init)

rm -rf "$out"
mkdir -p "$out/templates" "$out/conf.d" "$out/stream-conf.d" "$out/bin-control" "$out/bin-pi"
tar -xzf "$tini_tar" -C "$out"
tar -xzf "$dumb_tar" -C "$out"
tini_src=$(echo "$out"/tini-*/)
dumb_src=$(echo "$out"/dumb-init-*/)
gcc -o "$out/sigconf-test" "$tini_src/test/sigconf/sigconf-test.c"
sed "s#@PEERS@#$out#g" "$top/tests/peers/generic.ini" >"$out/generic.ini"

# The peers' test programs start with `#!/usr/bin/env python[3]`: both
# names mean the Python that has the test modules. The stand-in goes first
# in PATH under each peer's name.
for b in bin-control bin-pi; do
	ln -s "$python" "$out/$b/python3"
	ln -s "$python" "$out/$b/python"
done
sed -e "s#@INIT@#$init#" -e "s#@INI@#$out/generic.ini#" "$top/tests/peers/standin.sh" >"$out/bin-pi/standin"
chmod +x "$out/bin-pi/standin"
ln -s standin "$out/bin-pi/tini"
ln -s standin "$out/bin-pi/dumb-init"
for peer in tini dumb-init; do
	command -v "/usr/bin/$peer" >/dev/null || { echo "peers: /usr/bin/$peer: not installed (run make deps)" >&2; exit 1; }
done

# One pytest per peer and target; a run that fails or writes no counts fails.
status=0
run() { # $1 = peer, $2 = peerprep-init or control
	peer=$1 against=$2 bin=$out/bin-pi
	[ "$against" = control ] && bin=$out/bin-control
	res=$out/result-$peer-$against
	log=$out/$peer-$against.log
	# dumb-init's own pytest.ini (5 s a test) applies in its folder; tini's
	# steps have their own deadlines, and 60 s more as a last resort.
	if [ "$peer" = tini ]; then
		dir=$top/tests/peers
		set -- "$top/tests/peers/tini_steps.py" -o timeout=60
	else
		dir=$dumb_src
		set -- tests
	fi
	if ! (cd "$dir" && env PATH="$bin:$PATH" PYTHONPATH="$top/tests/peers:$dumb_src" \
		PYTHONDONTWRITEBYTECODE=1 PEERS_PEER=$peer PEERS_AGAINST=$against PEERS_RESULT=$res \
		PEERS_TINI_SRC=$tini_src PEERS_SIGCONF=$out/sigconf-test \
		timeout -k 5 170 "$python" -m pytest -q -p no:cacheprovider -p peers_plugin -rfE "$@" \
		>"$log" 2>&1); then
		status=1
		# The failures in full, up to the plugin's own section.
		sed -n '/= FAILURES =/,/^=* [a-z-]* against [a-z-]* =*$/p' "$log" | head -n 150 >&2
	fi
	if [ -f "$res" ]; then
		echo "peers: $(sed -n 2p "$res")"
	else
		status=1
		tail -n 20 "$log" >&2
		echo "peers: $peer against $against: no result (log: $log)" >&2
	fi
	grep -E '^(expected difference:|FAILED |ERROR )' "$log" | sed 's/^/  /' || true
	[ "$against" = control ] || grep -E '^left out ' "$log" | sed 's/^/  /' || true
}
for against in control peerprep-init; do
	for peer in tini dumb-init; do
		run "$peer" "$against"
	done
done

# How many general tests each suite has: tini's replayed steps; dumb-init's
# tests, test_proxies_signals counted once per signal (25). Fewer in a run
# means some were skipped or not collected, which would lower the coverage
# without failing anything.
general() { # $1 = peer
	case $1 in
	tini) echo 21 ;;
	dumb-init) echo 41 ;;
	esac
}

# Only the runs against peerprep-init count; the control runs prove the harness.
passed=0 failed=0
for peer in tini dumb-init; do
	for against in control peerprep-init; do
		f=$out/result-$peer-$against
		[ -f "$f" ] || { failed=$((failed + 1)); continue; }
		read -r p fl d _ <"$f"
		if [ $((p + fl + d)) -lt "$(general "$peer")" ]; then
			echo "peers: $peer against $against: $((p + fl + d)) general tests ran, not $(general "$peer")" >&2
			failed=$((failed + 1))
		fi
		[ "$against" = control ] && { [ "$fl" -eq 0 ] || failed=$((failed + fl)); continue; }
		passed=$((passed + p)) failed=$((failed + fl))
	done
done
[ "$failed" -eq 0 ] || status=1
echo "$passed passed, $failed failed"
exit $status
