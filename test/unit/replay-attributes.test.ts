import { describe, expect, it } from 'vitest';
import { AttributeState } from '../../src/amplitude-to-braze/attribute-state.js';
import type { BrazeAttributes } from '../../src/amplitude-to-braze/braze-types.js';
import { replayedAttributes } from '../../src/replay/replay-attributes.js';

const headers = (t: number) => ({ payload: 'braze-object', 'braze-array': 'attributes', 'braze-user': 'ext:u', 'event-time': String(t) });

/** a state where Braze accepted plan=pro and country=DE for ext:u from an event at t=100 */
function accepted(): AttributeState {
  const s = new AttributeState();
  const r = s.filter('ext:u', { external_id: 'u', plan: 'pro', country: 'DE' } as BrazeAttributes, 100);
  s.confirm(r.write);
  return s;
}

describe('replayedAttributes: a refused attributes object replayed later', () => {
  const obj = { external_id: 'u', plan: 'free', city: 'Berlin' };
  const json = JSON.stringify(obj);
  it.each([
    ['no attribute state (OUTBOUND_ATTRIBUTE_STATE_USERS=0): as it was', undefined, headers(50), obj, { send: json }],
    ['a dead letter written before the headers existed: as it was', accepted(), { payload: 'braze-object' }, obj, { send: json }],
    ['older than what Braze has: the newer attribute left out, the unknown one sent', accepted(), headers(50), obj, { send: JSON.stringify({ external_id: 'u', city: 'Berlin' }) }],
    ['newer than what Braze has: everything sent', accepted(), headers(200), obj, { send: json }],
    ['every attribute older or equal: nothing sent', accepted(), headers(50), { external_id: 'u', plan: 'free', country: 'DE' }, { skip: true }],
    ['only the profile-creating flag: sent', accepted(), headers(50), { external_id: 'u', _update_existing_only: false }, { send: JSON.stringify({ external_id: 'u', _update_existing_only: false }) }],
  ])('%s', (_name, state, h, o, expected) => {
    expect(replayedAttributes(state, h, o, JSON.stringify(o))).toEqual(expected);
  });
});
