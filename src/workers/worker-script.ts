/**
 * Where a worker's entry script is. In the compiled build it is the `.js` file next to the module
 * that starts the worker. Run from TypeScript sources (vitest), Node cannot start a `.ts` file as a
 * worker thread or a child process, so the entry is bundled once per process with esbuild (which
 * vitest installs) into node_modules/.cache/gateway-workers, its packages left as imports.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/**
 * Every worker entry, by name, under the package root: a bundle (below) no longer sits next to the
 * sources, so an entry started from inside one (a consumer process starting its producer thread)
 * is found here.
 */
const ENTRIES: Record<string, string> = {
  'producer-worker-thread': 'src/kafka/producer-worker-thread.ts',
  'consumer-worker-main': 'src/workers/consumer-worker-main.ts',
};

/** the entry `name` (without extension) in the directory of the module whose URL is `moduleUrl` */
export function workerScript(moduleUrl: string, name: string): URL {
  const here = fileURLToPath(moduleUrl);
  const js = join(dirname(here), `${name}.js`);
  if (existsSync(js)) return pathToFileURL(js);
  const ts = join(dirname(here), `${name}.ts`);
  if (existsSync(ts)) return bundledFromSource(ts, name);
  const known = ENTRIES[name];
  const fromRoot = known === undefined ? undefined : join(packageRoot(dirname(here)), known);
  if (fromRoot === undefined || !existsSync(fromRoot)) throw new Error(`worker script ${name} not found next to ${here}`);
  return bundledFromSource(fromRoot, name);
}

function packageRoot(from: string): string {
  let dir = from;
  // a bundle lives in node_modules/.cache/gateway-workers: the package is above node_modules
  const nm = dir.lastIndexOf(`${join('node_modules', '.cache')}`);
  if (nm >= 0) dir = dir.slice(0, nm);
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

const bundled = new Map<string, URL>();

function bundledFromSource(entry: string, name: string): URL {
  const done = bundled.get(entry);
  if (done) return done;
  const dir = packageRoot(dirname(entry));
  const outDir = join(dir, 'node_modules', '.cache', 'gateway-workers');
  mkdirSync(outDir, { recursive: true });
  // one file per process: test forks bundling at the same time do not race
  const outfile = join(outDir, `${name}-${process.pid}.mjs`);
  // esbuild is CommonJS; a synchronous require keeps workerScript() synchronous.
  const esbuild = requireEsbuild(dir);
  esbuild.buildSync({ entryPoints: [entry], bundle: true, platform: 'node', format: 'esm', target: 'node20', packages: 'external', outfile, logLevel: 'silent' });
  const url = pathToFileURL(outfile);
  bundled.set(entry, url);
  return url;
}

interface Esbuild {
  buildSync(o: Record<string, unknown>): unknown;
}

function requireEsbuild(root: string): Esbuild {
  const path = join(root, 'node_modules', 'esbuild', 'lib', 'main.js');
  if (!existsSync(path)) throw new Error('running from TypeScript sources needs esbuild (installed with vitest) to start a worker; run the compiled build instead');
  return createRequire(import.meta.url)(path) as Esbuild;
}
