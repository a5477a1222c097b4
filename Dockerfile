# syntax=docker/dockerfile:1.7
#
# PeerPrep frontend image: nginx serving the SPA, with peerprep-init as PID 1.
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#       --build-context frontend=../frontend -t peerprep-frontend .
#
# Targets: `production` (the default, last stage) and `development` (Vite dev
# server). The SPA comes from the named build context `frontend`; without it
# the production image ships the placeholder in deploy/site. See
# README.md, "Deploying", for what each stage does.

ARG ALPINE_VERSION=3.20
ARG NODE_VERSION=22

# ---------------------------------------------------------------------------
# builder: the static peerprep-init binary, against Alpine's musl and its
# packaged static libuv and inih (the Makefile's DEPS=system mode). Runs on
# the target platform, so one Dockerfile gives amd64 and arm64 images.
# ---------------------------------------------------------------------------
FROM alpine:${ALPINE_VERSION} AS builder
RUN apk add --no-cache build-base linux-headers libuv-dev libuv-static inih-dev inih-static
WORKDIR /src
COPY Makefile ./
COPY init/ init/
COPY envsubst/ envsubst/
COPY health/ health/
RUN make DEPS=system \
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
FROM node:${NODE_VERSION}-slim AS spa
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
# development: the Vite dev server (compose's default target). It ships
# /peerprep-init only so compose's one health check command works for both
# targets: here it probes the dev server's / instead of nginx's /health.
# ---------------------------------------------------------------------------
FROM node:${NODE_VERSION}-slim AS development
WORKDIR /app
COPY --from=frontend / /app/
RUN --mount=type=cache,target=/root/.npm \
    test -f package.json || { echo "the development target needs --build-context frontend=DIR" >&2; exit 1; }; \
    npm ci --no-audit --no-fund
COPY --from=builder /src/build/peerprep-init /peerprep-init
ENV PEERPREP_INIT_HEALTH_LISTEN=127.0.0.1:5173 \
    PEERPREP_INIT_HEALTH_PATH=/
EXPOSE 5173
CMD ["npm", "run", "dev", "--", "--host", "0.0.0.0"]

# ---------------------------------------------------------------------------
# production: stock nginx:alpine, with peerprep-init in place of the image's
# shell entrypoint (ENTRYPOINT [] drops /docker-entrypoint.sh and its
# envsubst scripts). nginx:alpine stops with SIGQUIT by default; the init
# wants SIGTERM (what ECS sends anyway) and turns it into nginx's graceful
# QUIT itself, with the escalation described in the README.
# ---------------------------------------------------------------------------
FROM nginx:alpine AS production
# The stock server (replaced by the rendered template) and welcome page go.
RUN rm -f /etc/nginx/conf.d/default.conf \
 && rm -rf /usr/share/nginx/html/*
COPY --from=builder /src/build/peerprep-init /peerprep-init
COPY deploy/nginx/default.conf.template /etc/nginx/templates/default.conf.template
COPY deploy/peerprep-init.ini /etc/peerprep-init.ini
COPY --from=spa /app/dist/ /usr/share/nginx/html/
EXPOSE 80
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["/peerprep-init", "health"]
ENTRYPOINT []
CMD ["/peerprep-init"]
