import { readFileSync } from 'node:fs';
import { Kafka, logLevel as KafkaLogLevel, type KafkaConfig, type LogEntry, type SASLOptions } from 'kafkajs';
import type { KafkaSettings } from '../config/config.js';
import type { Logger } from '../observability/logger.js';

/** kafkajs logs through pino, so its lines carry the same redaction and format as ours. */
function kafkaLogCreator(logger: Logger) {
  return () =>
    ({ level, log }: LogEntry) => {
      const { message, ...rest } = log;
      const fields = { kafka: rest };
      if (level <= KafkaLogLevel.ERROR) logger.error(fields, message);
      else if (level === KafkaLogLevel.WARN) logger.warn(fields, message);
      else logger.debug(fields, message);
    };
}

export function kafkaConfig(settings: KafkaSettings, logger: Logger, clientSuffix = ''): KafkaConfig {
  const ssl = settings.ssl
    ? { rejectUnauthorized: settings.sslRejectUnauthorized, ...(settings.sslCaFile ? { ca: [readFileSync(settings.sslCaFile, 'utf8')] } : {}) }
    : false;
  let sasl: SASLOptions | undefined;
  if (settings.sasl) {
    const { mechanism, username, password } = settings.sasl;
    sasl = mechanism === 'plain' ? { mechanism, username, password } : mechanism === 'scram-sha-256' ? { mechanism, username, password } : { mechanism, username, password };
  }
  return {
    clientId: settings.clientId + clientSuffix,
    brokers: settings.brokers,
    ssl,
    ...(sasl ? { sasl } : {}),
    // KafkaJS's WARN-level chatter (rebalances, retries) is useful; its INFO is noise at our scale.
    logLevel: KafkaLogLevel.WARN,
    logCreator: kafkaLogCreator(logger),
    retry: { initialRetryTime: 300, retries: 8, maxRetryTime: 10_000 },
    connectionTimeout: 5_000,
  };
}

export function createKafka(settings: KafkaSettings, logger: Logger, clientSuffix = ''): Kafka {
  return new Kafka(kafkaConfig(settings, logger, clientSuffix));
}
