import { readFile } from 'node:fs/promises';
import type { GatewayConfig } from '../config/config.js';
import { createKafka } from '../kafka/client.js';
import { BatchingProducer } from '../kafka/batching-producer.js';
import { DeadLetterWriter } from '../kafka/dead-letter.js';
import type { Logger } from '../observability/logger.js';
import { Metrics } from '../observability/metrics.js';
import { systemClock } from '../clock.js';
import { decodeAvroContainer } from './currents-avro.js';
import { storeCurrentsEvents } from './currents-route.js';

export interface BackfillReport {
  files: number;
  events: number;
  stored: number;
  deadLettered: number;
  failedFiles: Array<{ file: string; error: string }>;
}

/**
 * Loads Currents Avro container files from a storage export (Currents has no replay, so this is how
 * history is recovered) and sends their events down the same path as `POST /currents`: validated,
 * keyed by identity, written to the Currents topic, bad ones dead-lettered. Amplitude deduplicates
 * by insert_id (the Currents event id), so loading a file twice is harmless.
 */
export async function backfill(files: string[], config: GatewayConfig, logger: Logger, chunk = 1_000): Promise<BackfillReport> {
  const kafka = createKafka(config.kafka, logger, '-backfill');
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  const batching = new BatchingProducer(producer, logger, { name: 'backfill', lingerMs: 5, maxBatch: 2_000, maxInFlight: 4, maxAttempts: 5, ...config.kafka.writes });
  const metrics = new Metrics({ defaultMetrics: false });
  const deadLetters = new DeadLetterWriter(batching, config.topics.deadLetter, logger, metrics);
  const report: BackfillReport = { files: 0, events: 0, stored: 0, deadLettered: 0, failedFiles: [] };
  const settings = config.currents ?? { token: '', maxBodyBytes: 0, maxEventsPerBatch: chunk, maxDepth: 64, maxStringLength: 65_536, maxPendingEvents: 0, ackTimeoutMs: 30_000 };
  try {
    for (const file of files) {
      try {
        const decoded = await decodeAvroContainer(await readFile(file));
        for (let i = 0; i < decoded.events.length; i += chunk) {
          const r = await storeCurrentsEvents(decoded.events.slice(i, i + chunk), {
            settings,
            topic: config.topics.brazeCurrents,
            producer: batching,
            deadLetters,
            minIdLength: config.inbound.mapping.minIdLength,
            clock: systemClock,
          });
          report.stored += r.stored;
          report.deadLettered += r.deadLettered;
        }
        report.files++;
        report.events += decoded.events.length;
        logger.info({ file, events: decoded.events.length, eventType: decoded.eventType }, 'backfilled');
      } catch (err) {
        report.failedFiles.push({ file, error: (err as Error).message });
        logger.error({ file, err: (err as Error).message }, 'file not loaded');
      }
    }
  } finally {
    await producer.disconnect();
  }
  return report;
}
