#!/bin/sh
# The image, built by docker or podman, and local stand-ins for its base
# images where no registry is reachable.
#
#   sh mk/images.sh standins             make (or reuse) the stand-ins, print
#                                        one --build-arg per base image
#   sh mk/images.sh build TAG [TARGET [FRONTEND_DIR]]
#                                        build the Dockerfile's TARGET
#                                        (default production) as TAG
#
# Stand-ins are made from Debian's archive with mmdebstrap and imported into
# the engine as localhost/peerprep-standin-NAME:KEY, where KEY is a hash of
# their recipe below (and, for node, of the host's extra CA certificates):
# an existing image with that name is reused, so a second run costs nothing,
# and a change to the recipe makes new ones (and drops the old ones).
#
#   builder  bookworm minbase (apt works), for BUILDER_IMAGE
#   node     bookworm with Debian's nodejs and npm, for NODE_IMAGE
#   nginx    bookworm with nginx-light, laid out like the official nginx
#            image (stock nginx.conf including conf.d/*.conf, a default
#            server in conf.d, logs to stdout/stderr, /var/cache/nginx,
#            STOPSIGNAL SIGQUIT), for NGINX_IMAGE
#   python   bookworm with python3: the tests' stub backends
#
# Environment: ENGINE (docker or podman; default the one that works),
# STANDINS=0 (build with the Dockerfile's pinned upstream bases instead),
# BUILD_ARGS (more arguments for the build). With podman, CONTAINERS_CONF
# defaults to mk/containers.conf.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
: "${CONTAINERS_CONF:=$top/mk/containers.conf}"
export CONTAINERS_CONF
MIRROR=http://deb.debian.org/debian
SECURITY=http://deb.debian.org/debian-security

pick_engine() {
	if [ -n "${ENGINE:-}" ]; then
		echo "$ENGINE"
	elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
		echo docker
	elif command -v podman >/dev/null 2>&1; then
		echo podman
	else
		echo "images: neither docker nor podman is installed (apt-get install podman)" >&2
		exit 1
	fi
}
ENGINE=$(pick_engine)

# A stand-in's KEY hashes the recipe (the part of this file between the two
# "recipe" marks) and, for node, the CA certificates it copies in; the rest
# of the file can change without making new stand-ins.
key() { # $1 = stand-in name
	{
		sed -n '/^# --- recipe ---$/,/^# --- end of recipe ---$/p' "$top/mk/images.sh"
		if [ "$1" = node ]; then cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true; fi
	} | sha256sum | cut -c1-12
}

# --- recipe ---
# Debian without documentation, man pages or locales, as the -slim images.
SLIM="--dpkgopt=path-exclude=/usr/share/man/* --dpkgopt=path-exclude=/usr/share/doc/*
--dpkgopt=path-include=/usr/share/doc/*/copyright --dpkgopt=path-exclude=/usr/share/info/*
--dpkgopt=path-exclude=/usr/share/locale/* --dpkgopt=path-include=/usr/share/locale/locale.alias
--aptopt=APT::Install-Recommends=false"

# The official image's nginx.conf, with the temp paths the official build
# compiles in (Debian's nginx compiles in /var/lib/nginx instead).
nginx_conf() {
	cat <<'EOF'
user  nginx;
worker_processes  auto;

error_log  /var/log/nginx/error.log notice;
pid        /var/run/nginx.pid;

events {
    worker_connections  1024;
}

http {
    include       /etc/nginx/mime.types;
    default_type  application/octet-stream;

    log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                      '$status $body_bytes_sent "$http_referer" '
                      '"$http_user_agent" "$http_x_forwarded_for"';

    access_log  /var/log/nginx/access.log  main;

    client_body_temp_path /var/cache/nginx/client_temp;
    proxy_temp_path       /var/cache/nginx/proxy_temp;
    fastcgi_temp_path     /var/cache/nginx/fastcgi_temp;
    uwsgi_temp_path       /var/cache/nginx/uwsgi_temp;
    scgi_temp_path        /var/cache/nginx/scgi_temp;

    sendfile        on;
    keepalive_timeout  65;

    include /etc/nginx/conf.d/*.conf;
}
EOF
}

nginx_default_server() {
	cat <<'EOF'
server {
    listen       80;
    listen  [::]:80;
    server_name  localhost;

    location / {
        root   /usr/share/nginx/html;
        index  index.html index.htm;
    }
}
EOF
}

# mmdebstrap into a tarball, then import it with the image config given as
# --change arguments ($3...). $1 = stand-in name, $2 = packages (comma list).
make_standin() {
	name=$1 pkgs=$2
	shift 2
	ref=localhost/peerprep-standin-$name:$(key "$name")
	if $ENGINE image exists "$ref" 2>/dev/null || $ENGINE image inspect "$ref" >/dev/null 2>&1; then
		echo "$ref"
		return 0
	fi
	work=$(mktemp -d "${TMPDIR:-/tmp}/standin-$name.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	hooks=""
	case $name in
	node)
		mkdir -p "$work/ca"
		cp /usr/local/share/ca-certificates/*.crt "$work/ca/" 2>/dev/null || true
		hooks="--customize-hook=mkdir -p \"\$1/usr/local/share/ca-certificates\"
--customize-hook=cp $work/ca/. \"\$1/usr/local/share/ca-certificates/\" -R
--customize-hook=chroot \"\$1\" update-ca-certificates --fresh >/dev/null" ;;
	nginx)
		nginx_conf >"$work/nginx.conf"
		nginx_default_server >"$work/default.conf"
		hooks="--customize-hook=rm -f \"\$1\"/etc/nginx/sites-enabled/* \"\$1\"/etc/nginx/modules-enabled/*
--customize-hook=cp $work/nginx.conf \"\$1\"/etc/nginx/nginx.conf
--customize-hook=mkdir -p \"\$1\"/etc/nginx/conf.d \"\$1\"/var/cache/nginx \"\$1\"/usr/share/nginx/html
--customize-hook=cp $work/default.conf \"\$1\"/etc/nginx/conf.d/default.conf
--customize-hook=ln -sf /dev/stdout \"\$1\"/var/log/nginx/access.log
--customize-hook=ln -sf /dev/stderr \"\$1\"/var/log/nginx/error.log
--customize-hook=chroot \"\$1\" useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nginx
--customize-hook=test -f \"\$1\"/usr/share/nginx/html/index.html || echo '<h1>Welcome to nginx!</h1>' >\"\$1\"/usr/share/nginx/html/index.html" ;;
	esac
	echo "images: making stand-in $ref (mmdebstrap bookworm minbase${pkgs:+ + $pkgs})" >&2
	# Word splitting of $SLIM and $hooks is wanted: one option per line.
	IFS='
'
	# shellcheck disable=SC2086
	nice -n 10 mmdebstrap --quiet --variant=minbase --format=tar ${pkgs:+--include=$pkgs} \
		--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr $SLIM $hooks \
		"--customize-hook=rm -rf \"\$1\"/var/lib/apt/lists/* \"\$1\"/var/cache/apt/*.bin" \
		bookworm "$work/rootfs.tar" "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
		"deb $SECURITY bookworm-security main" >&2
	unset IFS
	$ENGINE import --quiet "$@" "$work/rootfs.tar" "$ref" >/dev/null
	rm -rf "$work"
	trap - EXIT
	# Stand-ins of this name made by an older script are not used again.
	$ENGINE images --format '{{.Repository}}:{{.Tag}}' | grep "^localhost/peerprep-standin-$name:" |
		grep -v -x -F "$ref" | while read -r old; do $ENGINE rmi "$old" >/dev/null 2>&1 || true; done
	echo "$ref"
}

PATHENV="ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

standins() {
	command -v mmdebstrap >/dev/null || { echo "images: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }
	mkdir -p "$top/build"
	# One maker at a time: a second caller waits and then reuses the images.
	exec 9>"$top/build/.standins.lock"
	flock 9
	b=$(make_standin builder "" --change "$PATHENV" --change 'CMD ["bash"]')
	n=$(make_standin node nodejs,npm,ca-certificates --change "$PATHENV" \
		--change "ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt" --change 'CMD ["node"]')
	g=$(make_standin nginx nginx-light --change "$PATHENV" --change "EXPOSE 80" \
		--change "STOPSIGNAL SIGQUIT" --change 'CMD ["nginx", "-g", "daemon off;"]')
	p=$(make_standin python python3 --change "$PATHENV" --change 'CMD ["python3"]')
	exec 9>&-
	printf '%s\n' "--build-arg=BUILDER_IMAGE=$b" "--build-arg=NODE_IMAGE=$n" "--build-arg=NGINX_IMAGE=$g"
	printf 'PYTHON_IMAGE=%s\n' "$p" >"$top/build/standins.env"
}
# --- end of recipe ---

build() { # $1 = tag, $2 = target, $3 = frontend folder
	tag=$1 target=${2:-production} frontend=${3:-}
	args=""
	if [ "${STANDINS:-1}" != 0 ]; then args=$(standins); fi
	fmt=""
	[ "$ENGINE" = podman ] && fmt="--format=docker" # keeps HEALTHCHECK
	ctx=""
	[ -n "$frontend" ] && ctx="--build-context=frontend=$frontend"
	start=$(date +%s.%N)
	# shellcheck disable=SC2086
	nice -n 10 $ENGINE build $fmt $args $ctx ${BUILD_ARGS:-} --target "$target" -t "$tag" -f "$top/Dockerfile" "$top"
	end=$(date +%s.%N)
	size=$($ENGINE image inspect --format '{{.Size}}' "$tag")
	printf 'images: built %s (target %s) in %.1f s, %s bytes\n' "$tag" "$target" \
		"$(awk "BEGIN { print $end - $start }")" "$size" >&2
}

case ${1:-} in
standins) standins ;;
build) shift; [ $# -ge 1 ] || { echo "usage: $0 build TAG [TARGET [FRONTEND_DIR]]" >&2; exit 2; }; build "$@" ;;
*) echo "usage: $0 standins | build TAG [TARGET [FRONTEND_DIR]]" >&2; exit 2 ;;
esac
