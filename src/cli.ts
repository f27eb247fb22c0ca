#!/usr/bin/env node
import { ConfigError, loadConfig, settingsReference } from './config/config.js';
import { Gateway } from './gateway.js';

const USAGE = `usage: amplitude-braze-gateway <command>

commands:
  run                 run the gateway from the environment (and GATEWAY_CONFIG)
  demo                run both legs on an embedded default: local broker, stand-ins, sample traffic
  backfill FILE...    load Currents Avro files from a storage export through the inbound leg
  replay [--reason R] [--connector C] [--leg L] [--from ISO] [--to ISO] [--dry-run] [--limit N]   send dead letters back through their leg
  check-config        validate the configuration and print it with secrets redacted
  check-config --reference   print every setting as a Markdown table
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'run':
      return run();
    case 'demo': {
      const { runDemo } = await import('./demo/demo.js');
      return runDemo(rest);
    }
    case 'backfill':
      return runBackfill(rest);
    case 'replay': {
      const { runReplayCli } = await import('./replay/replay-cli.js');
      return runReplayCli(rest);
    }
    case 'check-config':
      return checkConfig(rest);
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

async function run(): Promise<number> {
  const config = loadConfig(process.env);
  const gateway = new Gateway({ config });
  installSignalHandlers(gateway);
  await gateway.start();
  return new Promise<number>(() => undefined); // runs until a signal stops it
}

export function installSignalHandlers(gateway: Gateway): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      gateway.logger.warn({ signal }, 'second signal: exiting without waiting for the drain');
      process.exit(1);
    }
    stopping = true;
    gateway.logger.info({ signal }, 'signal received');
    gateway.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        gateway.logger.error({ err: (err as Error).message }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
}

async function runBackfill(files: string[]): Promise<number> {
  if (files.length === 0 || files.includes('--help')) {
    process.stdout.write('usage: amplitude-braze-gateway backfill FILE.avro...\n');
    return files.length === 0 ? 2 : 0;
  }
  const config = loadConfig(process.env);
  const { backfill } = await import('./currents-ingest/backfill.js');
  const { createLogger } = await import('./observability/logger.js');
  const report = await backfill(files, config, createLogger(config.logLevel));
  process.stdout.write(`backfill: ${report.events} events from ${report.files} file(s): ${report.stored} stored in ${config.topics.brazeCurrents}, ${report.deadLettered} dead-lettered\n${JSON.stringify(report)}\n`);
  return report.failedFiles.length > 0 ? 1 : 0;
}

function checkConfig(args: string[]): number {
  if (args.includes('--reference')) {
    const rows = settingsReference();
    process.stdout.write('| Environment | YAML path | Type | Default | Description |\n|---|---|---|---|---|\n');
    for (const r of rows) {
      const def = r.default === '' ? '' : `\`${r.default}\``;
      process.stdout.write(`| \`${r.env}\`${r.secret ? ' (secret)' : ''} | \`${r.path}\` | ${r.type} | ${def} | ${r.doc} |\n`);
    }
    return 0;
  }
  const config = loadConfig(process.env);
  const redacted = JSON.parse(
    JSON.stringify(config, (k, v: unknown) => (/(apiKey|secretKey|password|token|dataImportKey|smtpUrl|webhookUrl)$/i.test(k) && v ? '[redacted]' : v)),
  ) as unknown;
  process.stdout.write(`configuration is valid:\n${JSON.stringify(redacted, null, 2)}\n`);
  if (!config.braze) process.stdout.write('note: outbound leg off (BRAZE_REST_ENDPOINT/BRAZE_API_KEY not set)\n');
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== undefined) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    process.stderr.write(`fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
