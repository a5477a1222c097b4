#!/bin/sh
# Installs the Debian packages the build, tests and benchmarks use, then
# fetches libuv and inih from Debian's source archive, checks each tarball
# against mk/deps.sha256 and builds two static copies of each: one with
# musl-gcc for the shipped binary, one with gcc for sanitizer builds and
# unit tests (ASan cannot run on musl). It also fetches the source of tini
# and dumb-init, whose own test suites `make check-peers` runs (unbuilt).
# Idempotent: each step is skipped when its result is already there.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/build/deps}
src=$out/src

UV_VER=1.50.0
UV_DEB=1.50.0-2
INIH_VER=59
INIH_DEB=59-1
TINI_VER=0.19.0
TINI_DEB=0.19.0-1
DUMB_INIT_VER=1.2.5
DUMB_INIT_DEB=1.2.5-2
# inih's compile-time options, pinned once for both builds (and in the
# Makefile's INIH_DEFS). HANDLER_LINENO stays 0 so the handler signature
# matches a distribution's libinih. No inline comments: a ';' in a value
# (`command = sh -c "exec nginx ; true"`) is part of it; comments take
# lines of their own. A change here rebuilds the libraries (inih.defs).
INIH_DEFS="-DINI_ALLOW_MULTILINE=0 -DINI_ALLOW_INLINE_COMMENTS=0 -DINI_STOP_ON_FIRST_ERROR=1 -DINI_MAX_LINE=4096 -DINI_CALL_HANDLER_ON_NEW_SECTION=1 -DINI_HANDLER_LINENO=0"

# DEPS_PKGS replaces the package list (empty: install nothing) and
# DEPS_LIBCS names the copies to build ("musl glibc"): the image's builder
# stage installs its compilers itself and needs only the musl copies.
PKGS=${DEPS_PKGS-"python3-yaml musl-tools nginx-light dnsmasq-base python3 python3-pytest iproute2 wrk tini gettext-base curl clang libclang-rt-14-dev hyperfine dumb-init catatonit util-linux procps file make gcc dpkg-dev podman netavark aardvark-dns iptables mmdebstrap runc fuse-overlayfs slirp4netns uidmap podman-compose python3-botocore man-db groff-base python3-pexpect python3-psutil python3-prctl python3-pytest-timeout time"}

need=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "ok installed" || need="$need $p"
done
if [ -n "$need" ]; then
	echo "deps: installing$need"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends $need >/dev/null
fi

mkdir -p "$src"
if [ ! -f "$src/libuv1_$UV_VER.orig.tar.gz" ] || [ ! -f "$src/libinih_$INIH_VER.orig.tar.gz" ] ||
   [ ! -f "$src/tini_$TINI_VER.orig.tar.gz" ] || [ ! -f "$src/dumb-init_$DUMB_INIT_VER.orig.tar.gz" ]; then
	list=/etc/apt/sources.list.d/peerprep-init-src.sources
	if ! apt-get source --help >/dev/null 2>&1 || ! grep -rqs "trixie" /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null ||
	   ! grep -rqs "deb-src" /etc/apt/sources.list.d/ /etc/apt/sources.list 2>/dev/null; then
		cat >"$list" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
		apt-get update -qq
	fi
	(cd "$src" && apt-get source -qq --download-only "libuv1=$UV_DEB" "libinih=$INIH_DEB" 2>&1 | grep -v "^W: Download is performed unsandboxed" || true)
	(cd "$src" && apt-get source -qq --download-only --tar-only "tini=$TINI_DEB" "dumb-init=$DUMB_INIT_DEB" 2>&1 | grep -v "^W: Download is performed unsandboxed" || true)
fi
(cd "$src" && sha256sum -c --quiet "$top/mk/deps.sha256")

build_one() { # $1 = compiler, $2 = output folder, $3 = extra flags
	cc=$1 dst=$2 extra=$3
	[ -f "$dst/lib/libuv.a" ] && [ -f "$dst/lib/libinih.a" ] &&
		[ "$(cat "$dst/inih.defs" 2>/dev/null)" = "$INIH_DEFS" ] && return 0
	rm -rf "$dst.tmp" && mkdir -p "$dst.tmp/obj/uv" "$dst.tmp/obj/inih" "$dst.tmp/lib" "$dst.tmp/include"
	tar -xzf "$src/libuv1_$UV_VER.orig.tar.gz" -C "$dst.tmp"
	tar -xzf "$src/libinih_$INIH_VER.orig.tar.gz" -C "$dst.tmp"
	uv=$dst.tmp/libuv1-$UV_VER
	inc=""
	if [ "$cc" = musl-gcc ]; then
		# musl-gcc sees no kernel headers; libuv needs linux/, asm/, asm-generic/.
		mkdir -p "$dst.tmp/kinc"
		ln -s /usr/include/linux "$dst.tmp/kinc/linux"
		ln -s "/usr/include/$(gcc -print-multiarch)/asm" "$dst.tmp/kinc/asm"
		ln -s /usr/include/asm-generic "$dst.tmp/kinc/asm-generic"
		inc="-isystem $dst.tmp/kinc"
	fi
	for f in fs-poll idna inet random strscpy strtok thread-common threadpool timer uv-common \
		uv-data-getter-setters version unix/async unix/core unix/dl unix/fs unix/getaddrinfo \
		unix/getnameinfo unix/loop-watcher unix/loop unix/pipe unix/poll unix/process \
		unix/random-devurandom unix/signal unix/stream unix/tcp unix/thread unix/tty unix/udp \
		unix/linux unix/procfs-exepath unix/random-getrandom unix/random-sysctl-linux unix/proctitle; do
		$cc $extra -fno-strict-aliasing -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -D_LARGEFILE_SOURCE \
			-I"$uv/include" -I"$uv/src" $inc -c "$uv/src/$f.c" -o "$dst.tmp/obj/uv/$(echo "$f" | tr / _).o"
	done
	ar rcs "$dst.tmp/lib/libuv.a" "$dst.tmp"/obj/uv/*.o
	$cc $extra $INIH_DEFS -c "$dst.tmp/inih-r$INIH_VER/ini.c" -o "$dst.tmp/obj/inih/ini.o"
	ar rcs "$dst.tmp/lib/libinih.a" "$dst.tmp/obj/inih/ini.o"
	cp -r "$uv/include/." "$dst.tmp/include/"
	cp "$dst.tmp/inih-r$INIH_VER/ini.h" "$dst.tmp/include/"
	[ -n "$inc" ] && cp -P "$dst.tmp/kinc/"* "$dst.tmp/include/"
	echo "$INIH_DEFS" >"$dst.tmp/inih.defs"
	rm -rf "$dst.tmp/obj" "$uv" "$dst.tmp/inih-r$INIH_VER" "$dst.tmp/kinc" "$dst"
	mv "$dst.tmp" "$dst"
	echo "deps: built $dst"
}

case " ${DEPS_LIBCS:-musl glibc} " in *" musl "*) build_one musl-gcc "$out/musl" "-Os -ffunction-sections -fdata-sections" ;; esac
case " ${DEPS_LIBCS:-musl glibc} " in *" glibc "*) build_one gcc "$out/glibc" "-O1 -g -fPIC" ;; esac
