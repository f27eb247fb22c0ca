import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

/**
 * Paths pino blanks before a line is written. Keys and tokens can reach a log line through a
 * config dump, an HTTP request's headers, or an error that carries its request options, so all
 * of those shapes are covered, not only the config object.
 */
export const REDACT_PATHS = [
  '*.apiKey',
  '*.api_key',
  '*.secretKey',
  '*.password',
  '*.token',
  '*.currentsToken',
  '*.webhookToken',
  '*.dataImportKey',
  '*.smtpUrl',
  '*.webhookUrl',
  'config.cohorts.partner.apiKey',
  'config.cohorts.partner.dataImportKey',
  'config.cohorts.webhookToken',
  'config.notify.smtpUrl',
  'config.notify.webhookUrl',
  '*.authorization',
  '*.Authorization',
  'config.braze.apiKey',
  'config.amplitude.apiKey',
  'config.amplitude.secretKey',
  'config.kafka.sasl.password',
  'config.currents.token',
  'currents.token',
  'config.amplitude.apiKey',
  'req.headers.authorization',
  'headers.authorization',
  'headers.Authorization',
  'braze.apiKey',
  'amplitude.apiKey',
  'amplitude.secretKey',
  'kafka.sasl.password',
];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'amplitude-braze-gateway' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}

/**
 * Destinations echo credentials back (Braze answers a bad key with "Invalid API key: <key>"),
 * so any text that came from a destination is scrubbed of our secrets before it is logged or
 * written to a dead-letter header.
 */
export function scrubSecrets(text: string, secrets: ReadonlyArray<string | undefined>): string {
  let out = text;
  for (const s of secrets) if (s && s.length >= 4) out = out.split(s).join('[redacted]');
  return out;
}
