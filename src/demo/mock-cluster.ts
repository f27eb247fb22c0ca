/**
 * A Kafka-protocol broker for tests and the demo: librdkafka's mock cluster, run by the small C
 * program in `tools/mock-kafka/mock-kafka.c` and driven over its stdin/stdout.
 *
 * The program is compiled on first use (not at `npm install`) into
 * `<projectRoot>/node_modules/.cache/mock-kafka/`, keyed by a hash of its source, and reused after
 * that. It needs a C compiler and librdkafka's headers (`librdkafka-dev`); when they are missing,
 * `MockClusterUnavailableError` says what to install.
 *
 * Production and docker-compose use Apache Kafka; nothing in the gateway itself depends on this.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { access, chmod, constants as fsConstants, mkdir, readFile, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface, type Interface as ReadlineInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const PACKAGE_NAME = 'amplitude-braze-gateway';
const INSTALL_HINT = 'Debian/Ubuntu: apt-get install -y librdkafka-dev; macOS: brew install librdkafka';
const STDERR_KEEP_BYTES = 8 * 1024;
const STARTUP_TIMEOUT_MS = 15_000;
const COMMAND_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
/** Kafka's own rule for topic names (and it keeps them free of whitespace for the line protocol). */
const TOPIC_NAME = /^[A-Za-z0-9._-]{1,249}$/;

/** The mock broker cannot be built or started here: a compiler or librdkafka's headers are missing. */
export class MockClusterUnavailableError extends Error {
  constructor(detail: string, options?: { cause?: unknown }) {
    super(
      `The mock Kafka cluster (librdkafka's mock brokers) is not available: install librdkafka's ` +
        `development headers and a C compiler (${INSTALL_HINT}).\n${detail}`,
      options,
    );
    this.name = 'MockClusterUnavailableError';
  }
}

export interface MockCluster {
  /** "127.0.0.1:PORT", comma-separated when there are several brokers */
  readonly bootstrap: string;
  /** `bootstrap` split into one "host:port" per broker; broker ids are 1..brokers.length */
  readonly brokers: string[];
  /** Creates a topic on the mock side (KafkaJS `admin.createTopics` does not work against the mock). */
  createTopic(name: string, partitions: number, replication?: number): Promise<void>;
  /** Disconnects the broker and refuses new connections (no leader change). */
  brokerDown(id: number): Promise<void>;
  brokerUp(id: number): Promise<void>;
  /** The next `errorCodes.length` requests with this API key fail with these Kafka error codes, in order. */
  pushRequestErrors(apiKey: number, errorCodes: number[]): Promise<void>;
  /** Idempotent; kills the process and waits for it to exit. */
  stop(): Promise<void>;
}

export interface StartMockClusterOptions {
  /** number of brokers (default 1) */
  brokers?: number;
  /** topics to create before returning */
  topics?: Array<{ name: string; partitions: number }>;
}

// ---------------------------------------------------------------------------------------------
// Locating and building the program

let projectRootCache: string | undefined;

/** The directory of this project's package.json, found upward from this module (src/ or dist/src/). */
function projectRoot(): string {
  if (projectRootCache !== undefined) return projectRootCache;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        const parsed: unknown = JSON.parse(readFileSync(pkg, 'utf8'));
        if (typeof parsed === 'object' && parsed !== null && (parsed as { name?: unknown }).name === PACKAGE_NAME) {
          projectRootCache = dir;
          return dir;
        }
      } catch {
        // not a readable package.json: keep looking upward
      }
    }
    const parent = dirname(dir);
    if (parent === dir) {
      throw new Error(`mock-kafka: cannot find the ${PACKAGE_NAME} package.json above ${fileURLToPath(import.meta.url)}`);
    }
    dir = parent;
  }
}

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
  spawnError?: NodeJS.ErrnoException;
}

function run(command: string, args: string[]): Promise<RunResult> {
  return new Promise((resolvePromise) => {
    let output = '';
    let child;
    try {
      child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      resolvePromise({ code: null, signal: null, output: '', spawnError: err as NodeJS.ErrnoException });
      return;
    }
    const collect = (chunk: Buffer): void => {
      output += chunk.toString('utf8');
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('error', (err: NodeJS.ErrnoException) => resolvePromise({ code: null, signal: null, output, spawnError: err }));
    child.on('close', (code, signal) => resolvePromise({ code, signal, output }));
  });
}

/** Compiler and linker flags for librdkafka: pkg-config when it knows the library, else the usual places. */
async function rdkafkaFlags(): Promise<{ cflags: string[]; libs: string[]; version: string }> {
  const pc = await run('pkg-config', ['--cflags', '--libs', 'rdkafka']);
  if (!pc.spawnError && pc.code === 0) {
    const flags = pc.output.trim().split(/\s+/).filter((f) => f.length > 0);
    if (flags.some((f) => f === '-lrdkafka')) {
      // the mock API is outside librdkafka's ABI promise: rebuild when the library changes
      const mv = await run('pkg-config', ['--modversion', 'rdkafka']);
      const version = !mv.spawnError && mv.code === 0 ? mv.output.trim() : '';
      return { cflags: flags.filter((f) => !f.startsWith('-l')), libs: flags.filter((f) => f.startsWith('-l')), version };
    }
  }
  const cflags: string[] = [];
  if (process.platform === 'darwin') {
    for (const prefix of ['/opt/homebrew', '/usr/local']) {
      if (existsSync(join(prefix, 'include', 'librdkafka', 'rdkafka_mock.h'))) {
        cflags.push(`-I${prefix}/include`, `-L${prefix}/lib`);
      }
    }
  }
  return { cflags, libs: ['-lrdkafka'], version: '' };
}

function lastChars(text: string, max: number): string {
  return text.length <= max ? text : `[...]${text.slice(-max)}`;
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** `<root>/node_modules/.cache/mock-kafka`, or a per-user temp directory when that is not writable. */
async function cacheDir(root: string): Promise<string> {
  const preferred = join(root, 'node_modules', '.cache', 'mock-kafka');
  try {
    await mkdir(preferred, { recursive: true });
    await access(preferred, fsConstants.W_OK);
    return preferred;
  } catch {
    const uid = typeof process.getuid === 'function' ? String(process.getuid()) : 'user';
    const fallback = join(tmpdir(), `mock-kafka-${uid}`);
    await mkdir(fallback, { recursive: true });
    return fallback;
  }
}

let buildPromise: Promise<string> | undefined;

/**
 * Compiles `tools/mock-kafka/mock-kafka.c` (once per source version) and returns the binary's path.
 * Safe when several processes build at once: each compiles to its own temporary name and renames.
 */
export async function buildMockKafka(): Promise<string> {
  if (!buildPromise) {
    buildPromise = buildMockKafkaUncached();
    buildPromise.catch(() => {
      buildPromise = undefined; // let a later call try again (e.g. after installing the headers)
    });
  }
  return buildPromise;
}

async function buildMockKafkaUncached(): Promise<string> {
  const root = projectRoot();
  const source = resolve(root, 'tools', 'mock-kafka', 'mock-kafka.c');
  let code: Buffer;
  try {
    code = await readFile(source);
  } catch (err) {
    throw new Error(`mock-kafka: cannot read ${source}: ${(err as Error).message}`, { cause: err });
  }

  const compilers = process.env.CC ? [process.env.CC] : ['cc', 'gcc', 'clang'];
  const { cflags, libs, version } = await rdkafkaFlags();
  const baseFlags = ['-O2', '-Wall', ...cflags];
  const tailFlags = [...libs, '-lpthread'];

  const hash = createHash('sha256')
    .update(code)
    .update('\0')
    .update([process.platform, process.arch, version, ...baseFlags, ...tailFlags].join(' '))
    .digest('hex')
    .slice(0, 16);
  const dir = await cacheDir(root);
  const binary = join(dir, `mock-kafka-${hash}`);
  if (await isExecutable(binary)) return binary;

  const tmp = `${binary}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const failures: string[] = [];
  try {
    for (const compiler of compilers) {
      const result = await run(compiler, [...baseFlags, '-o', tmp, source, ...tailFlags]);
      if (result.spawnError) {
        failures.push(`$ ${compiler}: ${result.spawnError.code === 'ENOENT' ? 'not found' : result.spawnError.message}`);
        continue;
      }
      if (result.code === 0) {
        await chmod(tmp, 0o755);
        await rename(tmp, binary); // atomic: a concurrent builder's identical binary is simply replaced
        return binary;
      }
      failures.push(
        `$ ${compiler} ${[...baseFlags, '-o', tmp, source, ...tailFlags].join(' ')}\n` +
          `(exit ${result.code ?? result.signal})\n${lastChars(result.output.trim(), 6000)}`,
      );
      // A compiler that ran and failed has told us what is wrong (usually missing headers);
      // another compiler will not find the headers either.
      break;
    }
  } finally {
    await rm(tmp, { force: true });
  }
  const noCompiler = failures.every((f) => f.endsWith('not found'));
  throw new MockClusterUnavailableError(
    (noCompiler ? 'No C compiler found (install gcc, e.g. apt-get install -y gcc).\n' : 'Compiling the mock broker failed:\n') +
      failures.join('\n'),
  );
}

// ---------------------------------------------------------------------------------------------
// Running it

interface PendingCommand {
  line: string;
  resolve: () => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

class MockClusterProcess implements MockCluster {
  readonly brokers: string[];
  private queue: Promise<void> = Promise.resolve();
  private pending: PendingCommand | undefined;
  /** answers still to come for commands that timed out; they are skipped */
  private staleAnswers = 0;
  private exited = false;
  private exitInfo = '';
  private readonly exitPromise: Promise<void>;
  private stopPromise: Promise<void> | undefined;

  constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    readonly bootstrap: string,
    private readonly stderrTail: () => string,
    lines: ReadlineInterface,
    exitPromise: Promise<string>,
  ) {
    this.brokers = bootstrap.split(',').filter((b) => b.length > 0);
    lines.on('line', (line) => this.onLine(line));
    this.exitPromise = exitPromise.then((info) => {
      this.exited = true;
      this.exitInfo = info;
      const p = this.pending;
      this.pending = undefined;
      if (p) {
        clearTimeout(p.timer);
        p.reject(this.error(`"${p.line}" got no answer: the mock broker ${info}`));
      }
    });
  }

  private error(message: string, withStderr = true): Error {
    const tail = withStderr ? this.stderrTail().trim() : '';
    return new Error(`mock-kafka: ${message}${tail ? `\n--- mock-kafka stderr ---\n${tail}` : ''}`);
  }

  private onLine(line: string): void {
    if (this.staleAnswers > 0) {
      this.staleAnswers--;
      return;
    }
    const p = this.pending;
    if (!p) return; // nothing asked: ignore (should not happen)
    this.pending = undefined;
    clearTimeout(p.timer);
    if (line === 'OK') p.resolve();
    else if (line.startsWith('ERR')) p.reject(this.error(`"${p.line}" failed: ${line.slice(3).trim()}`, false));
    else p.reject(this.error(`"${p.line}": unexpected answer ${JSON.stringify(line)}`));
  }

  /** Sends one command; commands are serialized (one in flight at a time). */
  command(line: string): Promise<void> {
    const runOne = (): Promise<void> =>
      new Promise<void>((resolvePromise, reject) => {
        if (this.exited || this.stopPromise) {
          reject(this.error(`"${line}": the mock broker is ${this.exited ? this.exitInfo : 'stopping'}`));
          return;
        }
        const timer = setTimeout(() => {
          if (this.pending?.timer === timer) {
            this.pending = undefined;
            this.staleAnswers++;
            reject(this.error(`"${line}" got no answer within ${COMMAND_TIMEOUT_MS} ms`));
          }
        }, COMMAND_TIMEOUT_MS);
        this.pending = { line, resolve: resolvePromise, reject, timer };
        this.child.stdin.write(`${line}\n`, (err) => {
          if (err && this.pending?.timer === timer) {
            this.pending = undefined;
            clearTimeout(timer);
            reject(this.error(`"${line}": cannot write to the mock broker: ${err.message}`));
          }
        });
      });
    const result = this.queue.then(runOne, runOne);
    this.queue = result.catch(() => undefined);
    return result;
  }

  createTopic(name: string, partitions: number, replication = 1): Promise<void> {
    if (!TOPIC_NAME.test(name)) return Promise.reject(new Error(`mock-kafka: invalid topic name ${JSON.stringify(name)}`));
    if (!Number.isInteger(partitions) || partitions < 1) {
      return Promise.reject(new Error(`mock-kafka: partitions must be a positive integer, not ${partitions}`));
    }
    if (!Number.isInteger(replication) || replication < 1) {
      return Promise.reject(new Error(`mock-kafka: replication must be a positive integer, not ${replication}`));
    }
    return this.command(`create_topic ${name} ${partitions} ${replication}`);
  }

  brokerDown(id: number): Promise<void> {
    return this.brokerCommand('broker_down', id);
  }

  brokerUp(id: number): Promise<void> {
    return this.brokerCommand('broker_up', id);
  }

  private brokerCommand(cmd: string, id: number): Promise<void> {
    if (!Number.isInteger(id) || id < -1) return Promise.reject(new Error(`mock-kafka: bad broker id ${id}`));
    return this.command(`${cmd} ${id}`);
  }

  pushRequestErrors(apiKey: number, errorCodes: number[]): Promise<void> {
    if (!Number.isInteger(apiKey) || apiKey < 0 || apiKey > 32767) {
      return Promise.reject(new Error(`mock-kafka: bad API key ${apiKey}`));
    }
    if (errorCodes.length === 0) return Promise.resolve();
    if (!errorCodes.every((c) => Number.isInteger(c))) {
      return Promise.reject(new Error(`mock-kafka: error codes must be integers: ${errorCodes.join(',')}`));
    }
    if (errorCodes.length > 250) return Promise.reject(new Error('mock-kafka: at most 250 error codes per call'));
    return this.command(`push_errors ${apiKey} ${errorCodes.join(' ')}`);
  }

  stop(): Promise<void> {
    if (!this.stopPromise) this.stopPromise = this.stopNow();
    return this.stopPromise;
  }

  private async stopNow(): Promise<void> {
    if (this.exited) return;
    // Closing stdin is the program's normal way out; SIGTERM covers a blocked pipe.
    this.child.stdin.end();
    this.child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.exitPromise.then(() => false),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(true), STOP_TIMEOUT_MS);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      this.child.kill('SIGKILL');
      await this.exitPromise;
    }
  }
}

/**
 * Starts a mock Kafka cluster (builds the program first if needed) and creates `opts.topics`.
 * Topics that are not created explicitly are auto-created with 4 partitions on first use.
 */
export async function startMockCluster(opts: StartMockClusterOptions = {}): Promise<MockCluster> {
  const brokerCount = opts.brokers ?? 1;
  if (!Number.isInteger(brokerCount) || brokerCount < 1 || brokerCount > 64) {
    throw new Error(`mock-kafka: brokers must be an integer in 1..64, not ${brokerCount}`);
  }
  const binary = await buildMockKafka();

  let child: ChildProcessWithoutNullStreams;
  try {
    child = spawn(binary, ['--brokers', String(brokerCount)], { stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (err) {
    throw new MockClusterUnavailableError(`Cannot run ${binary}: ${(err as Error).message}`, { cause: err });
  }

  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderr += chunk;
    if (stderr.length > STDERR_KEEP_BYTES * 2) stderr = stderr.slice(-STDERR_KEEP_BYTES);
  });
  const stderrTail = (): string => stderr.slice(-STDERR_KEEP_BYTES);
  // Writing to a dead child must not crash the process: errors surface through the command promises.
  child.stdin.on('error', () => undefined);

  let spawnError: Error | undefined;
  const exitPromise = new Promise<string>((resolveExit) => {
    child.on('error', (err) => {
      spawnError = err;
      // 'close' may never follow a spawn failure
      if (child.pid === undefined) resolveExit(`could not be started: ${err.message}`);
    });
    child.on('close', (code, signal) => resolveExit(signal ? `was killed by ${signal}` : `exited with status ${code}`));
  });

  const rl = createInterface({ input: child.stdout, crlfDelay: Infinity });

  const bootstrap = await new Promise<string>((resolveBoot, rejectBoot) => {
    let settled = false;
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      rl.off('line', onFirstLine);
      clearTimeout(timer);
      child.kill('SIGKILL');
      const tail = stderrTail().trim();
      const msg = `mock-kafka: ${why}${tail ? `\n--- mock-kafka stderr ---\n${tail}` : ''}`;
      // a binary built against a librdkafka that has since been removed
      const libraryMissing = /error while loading shared libraries|Library not loaded|image not found/.test(tail);
      rejectBoot(
        (spawnError && child.pid === undefined) || libraryMissing
          ? new MockClusterUnavailableError(msg, spawnError ? { cause: spawnError } : undefined)
          : new Error(msg),
      );
    };
    const onFirstLine = (line: string): void => {
      const m = /^BOOTSTRAP (\S+)$/.exec(line);
      if (!m?.[1]) {
        fail(`unexpected first line ${JSON.stringify(line)}`);
        return;
      }
      settled = true;
      rl.off('line', onFirstLine);
      clearTimeout(timer);
      resolveBoot(m[1]);
    };
    const timer = setTimeout(() => fail(`no BOOTSTRAP line within ${STARTUP_TIMEOUT_MS} ms`), STARTUP_TIMEOUT_MS);
    rl.on('line', onFirstLine);
    void exitPromise.then((info) => fail(`the mock broker ${info} before it was ready`));
  });

  const cluster = new MockClusterProcess(child, bootstrap, stderrTail, rl, exitPromise);
  try {
    for (const topic of opts.topics ?? []) {
      await cluster.createTopic(topic.name, topic.partitions);
    }
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}
