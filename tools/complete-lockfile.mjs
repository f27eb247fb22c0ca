// Some registry mirrors serve only the platform packages of the machine at hand, so npm writes a
// lock file without the other platforms' optional packages, and `npm ci` then refuses it as out of
// sync. This adds the missing entries (version, platform and `optional` only: they are never
// installed on a machine they don't fit, so nothing is fetched for them). Run after `npm install`.
import { readFileSync, writeFileSync } from 'node:fs';

const file = new URL('../package-lock.json', import.meta.url);
const lock = JSON.parse(readFileSync(file, 'utf8'));
const pkgs = lock.packages;
const CPUS = ['arm64', 'x64', 'ia32', 'arm', 'loong64', 'ppc64', 'riscv64', 's390x'];
let added = 0;
for (const [path, meta] of Object.entries(pkgs)) {
  for (const [name, range] of Object.entries(meta.optionalDependencies ?? {})) {
    const where = `${path ? `${path}/` : ''}node_modules/${name}`;
    if (pkgs[where] || pkgs[`node_modules/${name}`]) continue;
    const m = /^@rollup\/rollup-([a-z0-9]+)-([a-z0-9]+)(?:-(gnu|musl|gnueabihf|musleabihf|msvc|eabi))?$/.exec(name);
    if (!m) continue;
    const [, os, cpuRaw, abi] = m;
    const cpu = CPUS.includes(cpuRaw) ? cpuRaw : cpuRaw === 'arm' ? 'arm' : cpuRaw;
    const entry = { version: range.replace(/^[~^]/, ''), cpu: [cpu], dev: meta.dev ?? undefined, license: 'MIT', optional: true, os: [os] };
    if (os === 'linux' && abi) entry.libc = [abi.startsWith('musl') ? 'musl' : 'glibc'];
    pkgs[`node_modules/${name}`] = entry;
    added++;
  }
}
writeFileSync(file, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`complete-lockfile: added ${added} platform entries`);
