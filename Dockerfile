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
# /healthz answers while the process is alive (readiness is /readyz). No curl in the slim image:
# node's built-in fetch does the probe.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.HTTP_PORT || 8080) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "dist/src/cli.js"]
CMD ["run"]
