# PeerPrep frontend image: nginx serving the SPA, with peerprep-init as PID 1.
#
#   docker build --build-context frontend=../frontend -t peerprep-frontend .
#   podman build --format docker --build-context frontend=../frontend -t peerprep-frontend .
#
# Targets: `production` (the default, last stage) and `development` (the
# Vite dev server behind the init). The SPA comes from the named build
# context `frontend`; without it the production image ships the placeholder
# in deploy/site. podman needs `--format docker` to keep the HEALTHCHECK.
# Named build contexts and RUN --mount need BuildKit's own Dockerfile
# syntax (Docker 23 or later, or podman): no `# syntax=` line, so a build
# never pulls a frontend image from a registry.
# See README.md, "Deploying", for what each stage does.
#
# The three base images are build arguments, so a mirror, a digest or a
# local stand-in (mk/images.sh, which the image tests use) can be given.
ARG BUILDER_IMAGE=debian:12.8-slim
ARG NODE_IMAGE=node:22.12.0-bookworm-slim
ARG NGINX_IMAGE=nginx:1.27.3-bookworm

# ---------------------------------------------------------------------------
# builder: the static musl binary, built as CI builds it. apt-get installs
# the compilers; mk/deps.sh (what `make deps` runs) fetches libuv and inih
# from Debian's source archive, checks them against mk/deps.sha256 and
# builds the musl copies only. That layer depends on those two files alone,
# so a change to the sources or the Makefile rebuilds only the last step.
# ---------------------------------------------------------------------------
FROM ${BUILDER_IMAGE} AS builder
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        make gcc libc6-dev musl-tools linux-libc-dev >/dev/null \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY mk/deps.sh mk/deps.sh
COPY mk/deps.sha256 mk/deps.sha256
RUN DEPS_PKGS= DEPS_LIBCS=musl sh mk/deps.sh \
 && rm -rf build/deps/src /var/lib/apt/lists/*
COPY Makefile ./
COPY init/ init/
COPY envsubst/ envsubst/
COPY health/ health/
RUN make \
 && ./build/peerprep-init --version

# ---------------------------------------------------------------------------
# frontend: the default for the named context of the same name. A
# `--build-context frontend=DIR` replaces this stage with DIR (the frontend
# checkout); without one, it holds a ready-made dist/ and no package.json.
# ---------------------------------------------------------------------------
FROM scratch AS frontend
COPY deploy/site/ /dist/

# ---------------------------------------------------------------------------
# spa: `npm ci` (all dependencies: vite and its plugins are devDependencies)
# and `npm run build` when the context is a Node project; the placeholder
# dist/ otherwise. The VITE_* values are compiled into the bundle, so they
# are build arguments, not run-time environment.
# ---------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS spa
ARG VITE_USER_SERVICE_URL=/user-service-api
ARG VITE_QUESTION_SERVICE_URL=/question-service-api
ARG VITE_MATCHING_SERVICE_URL=/matching-service-api
ARG VITE_HISTORY_SERVICE_URL=/history-service-api
ARG VITE_COLLABORATION_SERVICE_URL=/collaboration-service-api
ARG VITE_CHAT_SERVICE_URL=/chat-service-api
ENV NODE_ENV=production
WORKDIR /app
COPY --from=frontend / /app/
RUN --mount=type=cache,target=/root/.npm \
    if [ -f package.json ]; then \
        npm ci --include=dev --no-audit --no-fund && npm run build; \
    else \
        echo "no frontend build context: shipping the placeholder site"; \
    fi \
 && test -f dist/index.html

# ---------------------------------------------------------------------------
# development: the Vite dev server, with the init as PID 1 in front of it
# so that esbuild's and Vite's children are reaped and a stop is quick.
# No templates and no upstream hosts here (Vite proxies nothing); the
# health check proves the dev server accepts connections on 5173.
# ---------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS development
WORKDIR /app
COPY --from=frontend / /app/
RUN --mount=type=cache,target=/root/.npm \
    test -f package.json || { echo "the development target needs --build-context frontend=DIR" >&2; exit 1; }; \
    npm ci --no-audit --no-fund
COPY --from=builder /src/build/peerprep-init /peerprep-init
# templates.dir that does not exist renders nothing; an empty hosts pattern
# matches no variable; no config test (there is no nginx). npm forwards
# SIGTERM to the dev server, which has no graceful QUIT.
ENV PEERPREP_INIT_TEMPLATES_DIR=/nonexistent \
    PEERPREP_INIT_UPSTREAMS_HOSTS= \
    PEERPREP_INIT_NGINX_TEST= \
    PEERPREP_INIT_NGINX_STOP_SIGNAL=TERM \
    PEERPREP_INIT_NGINX_STOP_TIMEOUT=5s \
    PEERPREP_INIT_HEALTH_PROBE=127.0.0.1:5173
EXPOSE 5173
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/peerprep-init", "health"]
CMD ["/peerprep-init", "--", "npm", "run", "dev", "--", "--host", "0.0.0.0", "--port", "5173", "--strictPort"]

# ---------------------------------------------------------------------------
# production: stock nginx with peerprep-init in place of the image's shell
# entrypoint (ENTRYPOINT [] drops /docker-entrypoint.sh and its envsubst
# scripts). The official image stops with SIGQUIT; the init wants SIGTERM
# (what ECS sends anyway) and turns it into nginx's graceful QUIT itself,
# with the escalation described in the README.
# ---------------------------------------------------------------------------
FROM ${NGINX_IMAGE} AS production
# The stock server (replaced by the rendered template) and welcome page go.
RUN rm -f /etc/nginx/conf.d/default.conf \
 && rm -rf /usr/share/nginx/html/*
COPY --from=builder /src/build/peerprep-init /peerprep-init
COPY deploy/nginx/default.conf.template /etc/nginx/templates/default.conf.template
# worker_processes from the container's CPU quota: nginx.conf includes
# conf.d/main/*.conf, rendered from templates/main/ (see deploy/nginx/nginx.conf).
COPY deploy/nginx/nginx.conf /etc/nginx/nginx.conf
COPY deploy/nginx/main/workers.conf.template /etc/nginx/templates/main/workers.conf.template
COPY deploy/peerprep-init.ini /etc/peerprep-init.ini
COPY --from=spa /app/dist/ /usr/share/nginx/html/
EXPOSE 80
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["/peerprep-init", "health"]
ENTRYPOINT []
CMD ["/peerprep-init"]
