/**
 * A streaming parser for the quoted CSV Amplitude's cohort export writes (amplitude-cohort-api.md
 * §4.3): a header row, then one row per member, every field in double quotes, `""` for a quote
 * inside a field, commas and newlines allowed inside quotes, CRLF or LF line ends. Unquoted fields
 * are accepted too. Fed chunk by chunk (text already decoded), it hands each complete row to the
 * callback and keeps only the current partial row, so a 2,000,000-member file never sits in memory.
 */
export class CsvRowParser {
  private field = '';
  private row: string[] = [];
  private inQuotes = false;
  /** the previous character closed a quoted section: a `"` now is an escaped quote */
  private quoteClosed = false;
  /** the last character of the previous chunk was a CR */
  private pendingCr = false;
  private rowHasData = false;
  private rows = 0;

  constructor(
    private readonly onRow: (fields: string[]) => void,
    /** longest field accepted; a longer one is a malformed file (and not a memory hazard) */
    private readonly maxFieldLength = 1 << 20,
  ) {}

  get rowCount(): number {
    return this.rows;
  }

  write(chunk: string): void {
    let start = 0;
    const n = chunk.length;
    let i = 0;
    if (this.pendingCr) {
      this.pendingCr = false;
      if (n > 0 && chunk.charCodeAt(0) === 10) i = start = 1;
    }
    while (i < n) {
      if (this.inQuotes) {
        const q = chunk.indexOf('"', i);
        if (q === -1) {
          this.append(chunk, i, n);
          return;
        }
        this.append(chunk, i, q);
        this.inQuotes = false;
        this.quoteClosed = true;
        i = start = q + 1;
        continue;
      }
      const c = chunk.charCodeAt(i);
      if (c === 34 /* " */) {
        if (this.quoteClosed) {
          // `""` inside a quoted field: one literal quote, and the field goes on quoted
          this.field += '"';
        } else {
          this.append(chunk, start, i);
        }
        this.inQuotes = true;
        this.quoteClosed = false;
        this.rowHasData = true;
        i = start = i + 1;
        continue;
      }
      this.quoteClosed = false;
      if (c === 44 /* , */) {
        this.append(chunk, start, i);
        this.endField();
        i = start = i + 1;
        continue;
      }
      if (c === 10 || c === 13) {
        this.append(chunk, start, i);
        this.endRow();
        if (c === 13) {
          if (i + 1 < n) {
            if (chunk.charCodeAt(i + 1) === 10) i++;
          } else {
            this.pendingCr = true;
          }
        }
        i = start = i + 1;
        continue;
      }
      this.rowHasData = true;
      i++;
    }
    if (start < n) this.append(chunk, start, n);
  }

  /** The end of the input: a last row without a newline is still a row. Throws on an open quote. */
  end(): void {
    if (this.inQuotes) throw new Error(`CSV ends inside a quoted field (row ${this.rows + 1})`);
    this.endRow();
  }

  private append(chunk: string, from: number, to: number): void {
    if (to <= from) return;
    this.rowHasData = true;
    this.field += chunk.slice(from, to);
    if (this.field.length > this.maxFieldLength) throw new Error(`CSV field longer than ${this.maxFieldLength} characters (row ${this.rows + 1})`);
  }

  private endField(): void {
    this.row.push(this.field);
    this.field = '';
    this.rowHasData = true;
  }

  private endRow(): void {
    this.quoteClosed = false;
    if (!this.rowHasData && this.row.length === 0 && this.field === '') return; // blank line
    this.row.push(this.field);
    this.field = '';
    const row = this.row;
    this.row = [];
    this.rowHasData = false;
    this.rows++;
    this.onRow(row);
  }
}

/** The export's columns: `amplitude_id`, `user_id`, then one per user property (props=1). */
export interface CohortColumns {
  amplitudeId: number;
  userId: number;
  /** device_id is not documented in the export; used when a template or a future export has it */
  deviceId: number;
  /** property name -> column */
  properties: Map<string, number>;
}

export function cohortColumns(header: readonly string[]): CohortColumns {
  const norm = header.map((h) => h.trim());
  const find = (...names: string[]) => norm.findIndex((h) => names.includes(h.toLowerCase()));
  const amplitudeId = find('amplitude_id', 'amplitude id');
  const userId = find('user_id', 'user id');
  const deviceId = find('device_id', 'device id');
  if (amplitudeId === -1) throw new Error(`the cohort file has no amplitude_id column (header: ${JSON.stringify(header.slice(0, 10))})`);
  const properties = new Map<string, number>();
  norm.forEach((h, i) => {
    if (i === amplitudeId || i === userId || i === deviceId) return;
    properties.set(h, i);
    // the export's property header spelling is undocumented: accept `gp:NAME` for NAME too
    if (h.startsWith('gp:') && !properties.has(h.slice(3))) properties.set(h.slice(3), i);
  });
  return { amplitudeId, userId, deviceId, properties };
}
