/**
 * `npm run demo` next to something that already holds its port (8080 by default, HTTP_PORT when
 * set): it takes a free port instead and says which, in one line.
 */
import { createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { choosePort } from '../../src/http/free-port.js';
import { runDemo } from '../../src/demo/demo.js';

const held: Server[] = [];
afterEach(async () => {
  while (held.length) {
    const s = held.pop();
    await new Promise((r) => s?.close(r));
  }
});

/** occupies a port on `host` (any free one when port is 0) and returns it */
async function occupy(host: string, port = 0): Promise<number> {
  const s = createServer();
  held.push(s);
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen({ port, host }, () => resolve());
  });
  const a = s.address();
  return a && typeof a === 'object' ? a.port : port;
}

describe('choosePort', () => {
  it('keeps a free port', async () => {
    const port = await occupy('127.0.0.1');
    await new Promise((r) => held.pop()?.close(r));
    expect(await choosePort(port, '127.0.0.1')).toEqual({ port, moved: false });
  });

  it('moves off a taken port to a free one', async () => {
    const port = await occupy('127.0.0.1');
    const chosen = await choosePort(port, '127.0.0.1');
    expect(chosen.moved).toBe(true);
    expect(chosen.port).not.toBe(port);
    expect(chosen.port).toBeGreaterThan(0);
    // and that one is really free
    await occupy('127.0.0.1', chosen.port);
  });

  it('sees a port held on another address of the machine as taken too', async () => {
    const port = await occupy('0.0.0.0');
    expect((await choosePort(port, '127.0.0.1')).moved).toBe(true);
  });

  it('leaves 0 (any port) alone', async () => {
    expect(await choosePort(0, '127.0.0.1')).toEqual({ port: 0, moved: false });
  });
});

describe('npm run demo with its port taken', () => {
  it.each([
    ['HTTP_PORT', false],
    ['8080, the default', true],
  ])('runs on a free port and says which (%s)', async (_name, byDefault) => {
    // 8080 held by something else on this machine already is as good as held by the test
    const busy = byDefault ? await occupy('127.0.0.1', 8080).catch(() => 8080) : await occupy('127.0.0.1');
    const saved = { HTTP_PORT: process.env.HTTP_PORT, KAFKA_BROKERS: process.env.KAFKA_BROKERS };
    if (byDefault) delete process.env.HTTP_PORT;
    else process.env.HTTP_PORT = String(busy);
    delete process.env.KAFKA_BROKERS;
    const out: string[] = [];
    const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      out.push(String(chunk));
      return true;
    });
    let code: number;
    try {
      code = await runDemo(['--events', '300', '--currents', '100']);
    } finally {
      write.mockRestore();
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
    const text = out.join('');
    expect(code, text).toBe(0);
    const line = new RegExp(`^port ${busy} is taken: the gateway listens on port (\\d+) instead \\(HTTP_PORT chooses another\\)$`, 'm').exec(text);
    expect(line, text).not.toBeNull();
    const moved = line?.[1] ?? '';
    expect(text).toContain(`gateway up: http://127.0.0.1:${moved}/metrics`);
    expect(text).toContain('=== demo summary ===');
    expect(text).toMatch(/stored 100 events .*delivered 100/);
  }, 120_000);
});
