// The README's examples, run as written: the only changes are keyservice's address (a
// server started here instead of keys.example.com) and the application's own parts the
// README leaves to the reader (`myRealService`, `userId`, `initTokenHashFromDevice`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { Keyservice, initTokenHash } from '../src/index.js';
import { startKeyservice } from './support.js';

const SECRET = 'readme-secret-0123456789abcdef0123456789';
const SOURCE = new URL('../src/index.js', import.meta.url).href;
const AsyncFunction = (async () => {}).constructor;

let server;
before(async () => {
  server = await startKeyservice({
    extra: `[namespaces.my_namespace]\nallow = ["127.0.0.0/8"]\ncredentials = [ { key_id = "rs-1", secret = "${SECRET}" } ]\n`,
  });
});
after(() => server?.stop());

/** The README's ```js blocks, in order. */
function examples() {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  return [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);
}

/** One example as a function of `names`, returning `result`, importing this package's source. */
function runnable(code, names, result) {
  const body = code
    .replace(/^import (\{[^}]*\}) from 'keyservice-client';$/gm, `const $1 = await import(${JSON.stringify(SOURCE)});`)
    .replaceAll('https://keys.example.com', server.url);
  return new AsyncFunction(...names, `${body}\nreturn ${result};`);
}

test('the README has the device flow and the Real Service example', () => {
  assert.equal(examples().length, 2);
});

test("the device flow runs as written and reads the note back", async () => {
  const [flow] = examples();
  const saved = [];
  const realService = new Keyservice(server.url).realService({ keyId: 'rs-1', secret: SECRET });
  const myRealService = {
    connectKeyservice: (hash) => realService.connect('my_namespace', 'reader-1', hash),
    save: async (sealed) => saved.push(sealed),
  };
  const note = await runnable(flow, ['myRealService'], 'note')(myRealService);
  assert.equal(note, 'my private note');
  assert.equal(saved.length, 1);
  assert.ok(!Buffer.from(saved[0]).includes(Buffer.from('my private note')), 'the Real Service saw the note');
});

test('the Real Service example runs as written: connect, erase, export', async () => {
  const [flow, realServiceExample] = examples();
  const imports = flow.match(/^import .*$/m)[0];
  process.env.KEYSERVICE_SECRET = SECRET;
  const { initToken } = await new Keyservice(server.url).init();
  const held = await runnable(`${imports}\n${realServiceExample}`, ['userId', 'initTokenHashFromDevice'], 'held')(
    'reader-2',
    await initTokenHash(initToken),
  );
  assert.deepEqual([held.keyVersions, held.sessions], [[], []], 'the erasure left something');
});
