#!/bin/sh
# Stands in for tini or dumb-init in their own test suites: runs the command
# under peerprep-init with the generic config. mk/peers.sh fills in the
# paths. A flag of the peer's own is refused: the tests that pass one are
# left out of the run, so one reaching here is a harness error.
case ${1-} in
--) shift ;;
-*)
	echo "${0##*/} (peerprep-init stand-in): $1: the peer's own flag; this test should have been left out" >&2
	exit 2
	;;
esac
exec @INIT@ -c @INI@ -- "$@"
