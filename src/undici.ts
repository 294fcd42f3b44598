// undici's Agent and Pool, with their request API, loaded without undici's index: the index also
// loads fetch, WebSocket, EventSource, its caches and mocks, which the operator does not use, and
// costs ~12 MiB of RSS at idle (42 → 69 MiB in a bare Node 24; these files alone: 57). The same
// files and the same setup as the index (undici's version is pinned in package.json: a new one
// that moves them fails every test that starts the operator).
import { createRequire } from 'node:module';
import type * as undici from 'undici';

const load = createRequire(import.meta.url);
const dispatcher: { prototype: object } = load('undici/lib/dispatcher/dispatcher.js');
Object.assign(dispatcher.prototype, load('undici/lib/api/index.js')); // request(), as the index does

export const Agent: typeof undici.Agent = load('undici/lib/dispatcher/agent.js');
export type Agent = undici.Agent;
export const Pool: typeof undici.Pool = load('undici/lib/dispatcher/pool.js');
export type Pool = undici.Pool;
export type { Dispatcher } from 'undici';
export const buildConnector: typeof undici.buildConnector = load('undici/lib/core/connect.js');
if (typeof Agent?.prototype?.request !== 'function' || typeof Pool?.prototype?.dispatch !== 'function' || typeof buildConnector !== 'function') {
  throw new Error('undici\'s files are not where src/undici.ts expects them (a new undici version?)');
}
