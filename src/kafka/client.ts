import { readFileSync } from 'node:fs';
import { Kafka, Partitioners, logLevel as KafkaLogLevel, type KafkaConfig, type LogEntry, type Producer, type ProducerConfig, type SASLOptions } from 'kafkajs';
import type { KafkaSettings } from '../config/config.js';
import type { Logger } from '../observability/logger.js';

/** kafkajs logs through pino, so its lines carry the same redaction and format as ours. */
/**
 * kafkajs logs every request a broker refuses at error level, a rebalance's "the group is
 * rebalancing" answers to heartbeats and fetches included: a routine scale-out or restart would
 * print a dozen error lines per member. Those are info here; a member that really fails says so
 * in our own lines (`consumer crashed`).
 */
const ROUTINE_REFUSALS = /The group is rebalancing, so a rejoin is needed/;

function kafkaLogCreator(logger: Logger) {
  return () =>
    ({ level, log }: LogEntry) => {
      const { message, ...rest } = log;
      const fields = { kafka: rest };
      if (level <= KafkaLogLevel.WARN && (ROUTINE_REFUSALS.test(message) || (typeof rest.error === 'string' && ROUTINE_REFUSALS.test(rest.error)))) logger.info(fields, message);
      else if (level <= KafkaLogLevel.ERROR) logger.error(fields, message);
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

/**
 * The partitioner every producer of the gateway uses, chosen explicitly (which is also what keeps
 * KafkaJS from warning that its default changed in v2). `DefaultPartitioner` hashes a message key
 * with murmur2 exactly as the Java client's default partitioner does, so a key lands on the same
 * partition whichever client wrote it: producers of `amplitude.events` (often Java or librdkafka
 * with `murmur2_random`) and the gateway's own writes keep each identity on one partition, which
 * is what per-key order and the in-memory per-device limits rest on. (`LegacyPartitioner` is
 * KafkaJS 1.x's, which does not match the Java client.)
 */
export const GATEWAY_PARTITIONER = Partitioners.DefaultPartitioner;

/** A kafkajs client whose producers use GATEWAY_PARTITIONER unless told otherwise. */
export class GatewayKafka extends Kafka {
  override producer(config: ProducerConfig = {}): Producer {
    return super.producer({ ...config, createPartitioner: config.createPartitioner ?? GATEWAY_PARTITIONER });
  }
}

export function createKafka(settings: KafkaSettings, logger: Logger, clientSuffix = ''): Kafka {
  return new GatewayKafka(kafkaConfig(settings, logger, clientSuffix));
}
