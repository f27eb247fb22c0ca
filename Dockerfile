# syntax=docker/dockerfile:1
# amplitude-braze-gateway: build with `docker build -t amplitude-braze-gateway .`
# or `docker compose up --build` (see docker-compose.yml).

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: compile TypeScript to dist/ ----------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
# Dependencies first, so a source-only change reuses the cached `npm ci` layer.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
# Everything tsconfig.build.json compiles (src, bench and whatever they import); .dockerignore
# keeps node_modules, dist, secrets and the ops files out of the context.
COPY . .
RUN npm run build

# ---- runtime: production dependencies and the compiled output only -------------------------
FROM ${NODE_IMAGE} AS runtime
# HTTP_PORT is deliberately not set here: an image default would override a GATEWAY_CONFIG file.
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY schemas ./schemas
# Nothing in /app needs to be writable at run time; the files stay root-owned and read-only for `node`.
USER node
EXPOSE 8080
# the admin port, when ADMIN_HTTP_PORT=8081 (docker-compose.yml sets it)
EXPOSE 8081
# /healthz answers while the process is alive (readiness is /readyz). No curl in the slim image:
# node does the probe, on the admin port when ADMIN_HTTP_PORT is set (ADMIN_HTTP_HOST must then be
# 127.0.0.1 or 0.0.0.0), else on HTTP_PORT, over HTTPS when HTTPS_CERT_FILE is set (the probe
# trusts its own certificate: it only talks to 127.0.0.1).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "const e = process.env, tls = !e.ADMIN_HTTP_PORT && !!e.HTTPS_CERT_FILE; require(tls ? 'node:https' : 'node:http').get({ host: '127.0.0.1', port: e.ADMIN_HTTP_PORT || e.HTTP_PORT || 8080, path: '/healthz', rejectUnauthorized: false, timeout: 4000 }, (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1)).on('timeout', () => process.exit(1))"]
ENTRYPOINT ["node", "dist/src/cli.js"]
CMD ["run"]
