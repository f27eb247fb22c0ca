/**
 * Braze Currents storage-connector files (Avro object container files, one event type per file,
 * writer schema in the header) → events in the Custom HTTP connector shape, so the rest of the
 * inbound leg handles a single shape. Also the reverse (encoding), for tests, the demo and backfills.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deflateRaw, inflateRaw } from 'node:zlib';
import avsc from 'avsc';
import { FORBIDDEN_KEYS, isPlainObject, safeJsonParse } from './currents-body.js';
import { CUSTOM_EVENT_TYPE, PURCHASE_EVENT_TYPE, roundFloat32 } from '../braze-to-amplitude/currents-to-amplitude.js';
import type { CurrentsEvent } from './currents-types.js';

export const PACKAGE_NAME = 'amplitude-braze-gateway';

type AvroSchema = Parameters<typeof avsc.Type.forSchema>[0];
type AvroCodec = (buf: Buffer, cb: (err: Error | null, out?: Buffer) => void) => void;

export interface AvroDecodeOptions {
  /**
   * Most records accepted from one file. Default 100,000: Braze writes a file every 15,000 events
   * and up to 100,000 under heavy load.
   */
  maxRecords?: number;
  /** Largest decompressed block accepted, in bytes, so a deflate bomb can't exhaust memory. Default 64 MiB. */
  maxBlockBytes?: number;
  /** Deepest value nesting accepted in a record (guards recursive writer schemas). Default 64. */
  maxDepth?: number;
}

export interface DecodedContainer {
  /** Full name of the writer schema's record, e.g. `dataexport.S3.inner.users.behaviors.CustomEvent`. */
  schemaName: string;
  /** Currents event type derived from it, e.g. `users.behaviors.CustomEvent`. */
  eventType: string;
  codec: string;
  /** One object per record in the HTTP connector shape; run each through `validateCurrentsEvent`. */
  events: Record<string, unknown>[];
}

const DEFAULT_MAX_RECORDS = 100_000;
const DEFAULT_MAX_BLOCK_BYTES = 64 * 1024 * 1024;
const DEFAULT_MAX_DEPTH = 64;

/** Fields of a Currents record that belong in the HTTP shape's `user` block. */
const USER_FIELDS = new Set(['user_id', 'external_user_id', 'device_id', 'timezone']);

/**
 * `dataexport.S3.inner.users.behaviors.CustomEvent` → `users.behaviors.CustomEvent`. The storage
 * kind segment (S3, GCS, AzureBlob) is matched loosely; a name without the prefix is returned as is.
 */
export function eventTypeFromSchemaName(schemaName: string): string {
  return schemaName.replace(/^dataexport\.[^.]+\.inner\./, '');
}

const MAGIC = Buffer.from('Obj\x01', 'latin1');
const SYNC_SIZE = 16;
const LONG_TYPE = avsc.Type.forSchema('long');
const META_TYPE = avsc.Type.forSchema({ type: 'map', values: 'bytes' });

/**
 * Decodes a whole Avro object container file held in memory. Codecs: `null` and `deflate` (the only
 * ones the Avro spec requires; the codec of Braze's production files is undocumented). Rejects on
 * bad magic, unknown codec, corrupt or truncated data, a writer schema that is not a record or uses
 * a forbidden field name, or a limit being exceeded.
 *
 * The container framing (header, block count and size, sync markers) is walked here and only the
 * values are decoded by avsc: avsc's streaming `BlockDecoder` ends quietly on a file cut off in the
 * middle of a block, which would turn a truncated upload into a silent partial import.
 */
export async function decodeAvroContainer(buf: Buffer, opts: AvroDecodeOptions = {}): Promise<DecodedContainer> {
  const maxRecords = opts.maxRecords ?? DEFAULT_MAX_RECORDS;
  const maxBlockBytes = opts.maxBlockBytes ?? DEFAULT_MAX_BLOCK_BYTES;
  const maxDepth = opts.maxDepth ?? DEFAULT_MAX_DEPTH;

  if (buf.length < MAGIC.length || !buf.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new Error('not an avro object container file (invalid magic bytes)');
  }
  const metaRead = decodeAt(META_TYPE, buf, MAGIC.length, 'header metadata');
  const meta = metaRead.value;
  let pos = metaRead.offset;
  if (pos + SYNC_SIZE > buf.length) throw new Error('avro file truncated in the header');
  const sync = buf.subarray(pos, pos + SYNC_SIZE);
  pos += SYNC_SIZE;

  const codec = metaString(meta, 'avro.codec') ?? 'null';
  if (codec !== 'null' && codec !== 'deflate') throw new Error(`unsupported avro codec: ${codec}`);
  const schemaText = metaString(meta, 'avro.schema');
  if (schemaText === undefined) throw new Error('avro header has no avro.schema');
  const parsedSchema = safeJsonParse(schemaText);
  if (!parsedSchema.ok) throw new Error(`avro writer schema: ${parsedSchema.message}`);
  const writerType = checkWriterSchema(parsedSchema.value);
  const schemaName = writerType.name ?? '';
  const eventType = eventTypeFromSchemaName(schemaName);

  const events: Record<string, unknown>[] = [];
  while (pos < buf.length) {
    const countRead = decodeAt(LONG_TYPE, buf, pos, 'block count');
    const sizeRead = decodeAt(LONG_TYPE, buf, countRead.offset, 'block size');
    const count: unknown = countRead.value;
    const size: unknown = sizeRead.value;
    if (typeof count !== 'number' || typeof size !== 'number' || count < 0 || size < 0) {
      throw new Error(`corrupt avro block header at byte ${pos}`);
    }
    if (events.length + count > maxRecords) throw new Error(`avro file has more than ${maxRecords} records`);
    const dataStart = sizeRead.offset;
    const dataEnd = dataStart + size;
    if (dataEnd + SYNC_SIZE > buf.length) throw new Error(`avro file truncated in the block at byte ${pos}`);
    if (!buf.subarray(dataEnd, dataEnd + SYNC_SIZE).equals(sync)) throw new Error(`invalid avro sync marker after the block at byte ${pos}`);

    const raw = buf.subarray(dataStart, dataEnd);
    const block = codec === 'deflate' ? await inflate(raw, maxBlockBytes) : raw;
    let p = 0;
    for (let i = 0; i < count; i++) {
      const rec = decodeAt(writerType, block, p, 'record');
      p = rec.offset;
      const plain = toPlain(writerType, rec.value, 0, maxDepth);
      if (!isPlainObject(plain)) throw new Error('avro record did not decode to an object');
      events.push(recordToCurrentsShape(eventType, plain));
    }
    if (p !== block.length) throw new Error(`avro block at byte ${pos} has ${block.length - p} bytes after its ${count} records`);
    pos = dataEnd + SYNC_SIZE;
  }
  return { schemaName, eventType, codec, events };
}

function decodeAt(type: avsc.Type, buf: Buffer, pos: number, what: string): { value: unknown; offset: number } {
  let res: { value: unknown; offset: number };
  try {
    res = type.decode(buf, pos);
  } catch (err) {
    throw new Error(`corrupt avro ${what} at byte ${pos}: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (res.offset < 0) throw new Error(`avro data truncated in the ${what} at byte ${pos}`);
  return res;
}

function metaString(meta: unknown, key: string): string | undefined {
  if (typeof meta !== 'object' || meta === null || !Object.hasOwn(meta, key)) return undefined;
  const v: unknown = (meta as Record<string, unknown>)[key];
  return Buffer.isBuffer(v) ? v.toString('utf8') : undefined;
}

function inflate(data: Buffer, maxOutputLength: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    inflateRaw(data, { maxOutputLength }, (err, out) => {
      if (err) reject(new Error(`avro deflate block: ${err.message}`));
      else resolve(out);
    });
  });
}

/** Vets the writer schema before avsc compiles it: the file's header is untrusted input. */
function checkWriterSchema(schema: unknown): avsc.types.RecordType {
  if (!isPlainObject(schema) || (schema['type'] !== 'record' && schema['type'] !== 'error') || typeof schema['name'] !== 'string') {
    throw new Error('avro writer schema must be a named record');
  }
  const fields = schema['fields'];
  if (!Array.isArray(fields)) throw new Error('avro writer schema has no fields');
  for (const f of fields) {
    const name: unknown = isPlainObject(f) ? f['name'] : undefined;
    if (typeof name === 'string' && FORBIDDEN_KEYS.has(name)) throw new Error(`avro writer schema uses the forbidden field name ${name}`);
  }
  const type = avsc.Type.forSchema(schema as AvroSchema);
  if (!(type instanceof avsc.types.RecordType)) throw new Error('avro writer schema must be a named record');
  return type;
}

/**
 * Avro value → plain JSON, guided by the writer type: records become plain objects with null
 * fields left out (the HTTP connector omits them), unions are unwrapped, `float`s are rounded back
 * to the decimal they were written from, bytes/fixed become base64.
 */
function toPlain(type: avsc.Type, value: unknown, depth: number, maxDepth: number): unknown {
  if (depth > maxDepth) throw new Error(`avro value nests deeper than ${maxDepth} levels`);
  if (value === null || value === undefined) return null;
  if (type instanceof avsc.types.RecordType) {
    const rec = value as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (const field of type.fields) {
      // Nested records too: assigning `out.__proto__` would swap the object's prototype.
      if (FORBIDDEN_KEYS.has(field.name)) throw new Error(`avro record ${type.name ?? ''} uses the forbidden field name ${field.name}`);
      const v = toPlain(field.type, rec[field.name], depth + 1, maxDepth);
      if (v !== null && v !== undefined) out[field.name] = v;
    }
    return out;
  }
  if (type instanceof avsc.types.UnwrappedUnionType) {
    const branch = type.types.find((t) => !(t instanceof avsc.types.NullType) && t.isValid(value));
    return branch === undefined ? value : toPlain(branch, value, depth, maxDepth);
  }
  if (type instanceof avsc.types.WrappedUnionType) {
    // avsc wraps the value in a per-branch class instance: `{long: 7}`.
    if (typeof value !== 'object') return value;
    const [key] = Object.keys(value);
    const branch = type.types.find((t) => t.branchName === key);
    if (branch === undefined || key === undefined) return null;
    return toPlain(branch, (value as Record<string, unknown>)[key], depth, maxDepth);
  }
  if (type instanceof avsc.types.ArrayType) {
    if (!Array.isArray(value)) return value;
    const items: avsc.Type = type.itemsType;
    return value.map((v: unknown) => toPlain(items, v, depth + 1, maxDepth));
  }
  if (type instanceof avsc.types.MapType) {
    const values: unknown = type.valuesType;
    if (!(values instanceof avsc.Type) || typeof value !== 'object') return value;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      if (FORBIDDEN_KEYS.has(k)) throw new Error(`avro map has the forbidden key ${k}`);
      const pv = toPlain(values, v, depth + 1, maxDepth);
      if (pv !== null && pv !== undefined) out[k] = pv;
    }
    return out;
  }
  if (type instanceof avsc.types.FloatType && typeof value === 'number') return roundFloat32(value);
  if (Buffer.isBuffer(value)) return value.toString('base64');
  return value;
}

/**
 * A flat Currents record → `{id, event_type, time, user: {...}, properties: {...}}`, the Custom
 * HTTP connector shape. CustomEvent and Purchase records carry their properties as a JSON string
 * (`properties`); the HTTP connector sends them as `custom_properties` / `purchase_properties`
 * objects, so they are parsed. A string that doesn't parse to an object (or carries a forbidden
 * key) is kept verbatim under `properties` rather than lost.
 */
export function recordToCurrentsShape(eventType: string, record: Record<string, unknown>): Record<string, unknown> {
  const user: Record<string, unknown> = {};
  const properties: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(record)) {
    if (k === 'id' || k === 'time') continue;
    if (USER_FIELDS.has(k)) user[k] = v;
    else properties[k] = v;
  }
  const nestedKey = eventType === CUSTOM_EVENT_TYPE ? 'custom_properties' : eventType === PURCHASE_EVENT_TYPE ? 'purchase_properties' : undefined;
  const encoded = properties['properties'];
  if (nestedKey !== undefined && typeof encoded === 'string') {
    if (encoded.trim() === '') {
      delete properties['properties'];
    } else {
      const parsed = safeJsonParse(encoded);
      if (parsed.ok && isPlainObject(parsed.value)) {
        delete properties['properties'];
        properties[nestedKey] = parsed.value;
      }
    }
  }
  return { id: record['id'], event_type: eventType, time: record['time'], user, properties };
}

/**
 * The reverse of `recordToCurrentsShape`: an HTTP-shape event → a flat record for a Currents Avro
 * schema, re-encoding `custom_properties` / `purchase_properties` as the JSON string the storage
 * files carry.
 */
export function currentsEventToAvroRecord(ev: CurrentsEvent): Record<string, unknown> {
  const record: Record<string, unknown> = { id: ev.id, time: ev.time };
  for (const [k, v] of Object.entries(ev.user)) if (v !== undefined) record[k] = v;
  for (const [k, v] of Object.entries(ev.properties)) {
    if (k === 'custom_properties' || k === 'purchase_properties') record['properties'] = JSON.stringify(v);
    else record[k] = v;
  }
  return record;
}

export interface AvroEncodeOptions {
  codec?: 'null' | 'deflate';
  /** Bytes per block before it is flushed; small values produce multi-block files for tests. */
  blockSize?: number;
}

/**
 * Writes records as an Avro object container file. Optional (`["null", T]`) fields may be left
 * out; they are written as their default (null).
 */
export function encodeAvroContainer(
  schema: avsc.Type | AvroSchema,
  records: readonly Record<string, unknown>[],
  opts: AvroEncodeOptions = {},
): Promise<Buffer> {
  const type = schema instanceof avsc.Type ? schema : avsc.Type.forSchema(schema);
  const codecs: Record<string, AvroCodec> = {
    null: (b, cb) => cb(null, b),
    deflate: (b, cb) => deflateRaw(b, cb),
  };
  return new Promise<Buffer>((resolve, reject) => {
    const encoder = new avsc.streams.BlockEncoder(type, {
      // Eager header, so a file with no records is still a valid container.
      writeHeader: 'always',
      codec: opts.codec ?? 'null',
      codecs,
      ...(opts.blockSize !== undefined ? { blockSize: opts.blockSize } : {}),
    });
    const chunks: Buffer[] = [];
    encoder.on('data', (chunk: Buffer) => chunks.push(chunk));
    encoder.on('error', reject);
    encoder.on('end', () => resolve(Buffer.concat(chunks)));
    try {
      for (const r of records) {
        if (!type.isValid(r)) throw new Error(`record ${JSON.stringify(r['id'] ?? null)} does not match schema ${type.name ?? ''}`);
        encoder.write(r);
      }
      encoder.end();
    } catch (err) {
      encoder.destroy();
      reject(err instanceof Error ? err : new Error(String(err)));
    }
  });
}

/**
 * The package root: the nearest directory above `from` whose package.json is this package. Walking
 * up rather than using a fixed `../..` because the code runs both from `src/` (tests) and from
 * `dist/src/` (built).
 */
export function findProjectRoot(from: string = import.meta.url): string {
  let dir = dirname(from.startsWith('file:') ? fileURLToPath(from) : from);
  for (;;) {
    try {
      const pkg: unknown = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
      if (isPlainObject(pkg) && pkg['name'] === PACKAGE_NAME) return dir;
    } catch {
      // no (readable) package.json here: keep walking up
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`cannot find the ${PACKAGE_NAME} package root above ${from}`);
    dir = parent;
  }
}

let schemaCache: Readonly<Record<string, avsc.Type>> | undefined;

/**
 * The Currents schemas shipped in `schemas/currents/*.avsc`, keyed by event type
 * (`users.behaviors.CustomEvent`). Read once per process.
 */
export function loadCurrentsSchemas(): Readonly<Record<string, avsc.Type>> {
  if (schemaCache !== undefined) return schemaCache;
  const dir = join(findProjectRoot(), 'schemas', 'currents');
  const out: Record<string, avsc.Type> = {};
  for (const file of readdirSync(dir).sort()) {
    if (!file.endsWith('.avsc')) continue;
    const schema: AvroSchema = JSON.parse(readFileSync(join(dir, file), 'utf8')) as AvroSchema;
    const type = avsc.Type.forSchema(schema);
    out[eventTypeFromSchemaName(type.name ?? file.slice(0, -'.avsc'.length))] = type;
  }
  schemaCache = Object.freeze(out);
  return schemaCache;
}
