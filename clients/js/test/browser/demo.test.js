// The demo web app in headless Chromium: the whole promise, clicked through.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { Keyservice, initTokenHash } from '../../src/index.js';
import { binary } from '../support.js';

const artefacts = fileURLToPath(new URL('../../test-results/', import.meta.url));
const NOTE = 'Meet Åsa at noon — the results are fine.';

let demo;
let site;
let keyserviceUrl;
let browser;
let profile;

before(async () => {
  mkdirSync(artefacts, { recursive: true });
  demo = spawn(binary(join('examples', 'demo')), ['--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  [site, keyserviceUrl] = await new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`the demo did not start:\n${seen}`)), 30000);
    demo.stdout.setEncoding('utf8');
    demo.stdout.on('data', (chunk) => {
      seen += chunk;
      const page = /open (http:\/\/\S+?)\/ in a browser/.exec(seen);
      const keys = /keyservice at (http:\/\/\S+)/.exec(seen);
      if (page && keys) {
        clearTimeout(timer);
        resolve([page[1], keys[1]]);
      }
    });
    demo.on('exit', (code) => reject(new Error(`the demo exited (${code}):\n${seen}`)));
  });
  profile = mkdtempSync(join(tmpdir(), 'keyservice-chromium-'));
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

after(async () => {
  await browser?.close();
  demo?.kill('SIGKILL');
  if (profile) rmSync(profile, { recursive: true, force: true });
});

async function logIn(page, user) {
  await page.goto(`${site}/`);
  await page.fill('#user', user);
  await page.click('#login');
  await page.waitForSelector('#app', { state: 'visible' });
  assert.equal(await page.isVisible('#login-form'), false, 'the login form still shows');
  await page.waitForFunction(() => document.getElementById('status').textContent === 'Key ready.');
}

async function shown(page) {
  return page.evaluate(() => {
    const element = document.getElementById('note-shown');
    return { text: element.textContent, state: element.dataset.state };
  });
}

/** What the Real Service has stored, as raw bytes. */
async function storedRecords() {
  const { records } = await (await fetch(`${site}/admin/records`)).json();
  return records.map((r) => ({ ...r, bytes: Buffer.from(r.base64, 'base64') }));
}

/** The user's raw data key, fetched as a device of theirs would (outside the browser). */
async function rawKeyOf(user) {
  const login = await (await fetch(`${site}/login`, { method: 'POST', body: user })).json();
  const keyservice = new Keyservice(keyserviceUrl);
  const { initToken } = await keyservice.init();
  const response = await fetch(`${site}/keyservice-session`, {
    method: 'POST',
    headers: { 'X-Session': login.session },
    body: JSON.stringify({ initTokenHash: await initTokenHash(initToken) }),
  });
  const { sessionToken } = await response.json();
  return Buffer.from((await keyservice.session(sessionToken, initToken).getKey()).bytes);
}

function contains(haystack, needle) {
  const forms = [needle, Buffer.from(needle.toString('base64')), Buffer.from(needle.toString('hex'))];
  return forms.some((form) => haystack.includes(form));
}

test('a note is encrypted in the browser, read back after a reload and from a second browser', async () => {
  const first = await browser.newContext();
  const page = await first.newPage();
  await logIn(page, 'alice');
  assert.deepEqual(await shown(page), { text: '(no note yet)', state: 'empty' });
  await page.fill('#note', NOTE);
  await page.click('#save');
  await page.waitForFunction(() => document.getElementById('note-shown').dataset.state === 'decrypted');
  assert.equal((await shown(page)).text, NOTE);
  await page.screenshot({ path: join(artefacts, 'demo-1-saved.png') });

  // A reload keeps the login and decrypts again.
  await page.reload();
  await page.waitForFunction(() => document.getElementById('note-shown').dataset.state === 'decrypted');
  assert.equal((await shown(page)).text, NOTE);

  // The Real Service holds only ciphertext: neither the note nor the key.
  const records = await storedRecords();
  assert.equal(records.length, 1);
  const stored = records[0].bytes;
  assert.ok(!contains(stored, Buffer.from(NOTE)), 'the Real Service stores the note in clear');
  assert.ok(!contains(stored, Buffer.from('Meet Åsa')), 'the Real Service stores part of the note in clear');
  const key = await rawKeyOf('alice');
  assert.equal(key.length, 32);
  assert.ok(!contains(stored, key), 'the Real Service stores the key');
  assert.ok(stored.length >= NOTE.length + 12 + 16, 'not AES-GCM output');

  // Another browser, the same user: the same note.
  const second = await browser.newContext();
  const other = await second.newPage();
  await logIn(other, 'alice');
  await other.waitForFunction(() => document.getElementById('note-shown').dataset.state === 'decrypted');
  assert.equal((await shown(other)).text, NOTE);
  await other.screenshot({ path: join(artefacts, 'demo-2-second-browser.png') });

  // Another user cannot read it (they have no note, and their own key).
  const third = await (await browser.newContext()).newPage();
  await logIn(third, 'mallory');
  assert.equal((await shown(third)).state, 'empty');

  // Alice sees every session made for her and every use of her key, the second
  // browser's marked as not this page; Mallory's never show.
  await page.click('#show-history');
  await page.waitForSelector('#history', { state: 'visible' });
  const rows = await page.$$eval('#history tbody tr', (trs) =>
    trs.map((tr) => ({ op: tr.dataset.operation, other: tr.classList.contains('other'), cells: [...tr.cells].map((td) => td.textContent) })),
  );
  const ops = rows.map((row) => row.op);
  // One session at least per page load: the first, the reload, the second browser.
  assert.ok(ops.filter((op) => op === 'connect').length >= 3, `${ops}`);
  assert.equal(ops.at(-1), 'connect', 'the oldest entry is the first login');
  assert.ok(ops.includes('key_write') && ops.includes('key_read'), `${ops}`);
  assert.ok(rows.some((row) => row.other && row.op === 'key_read'), 'the second browser\'s read is not shown as another session');
  assert.ok(rows.some((row) => !row.other && row.cells[2] === 'this page'), 'this page\'s session is not marked');
  assert.ok(rows.every((row) => row.cells[3] === '127.0.0.1'), `${rows.map((row) => row.cells[3])}`);
  await page.screenshot({ path: join(artefacts, 'demo-history.png'), fullPage: true });

  // Logout ends the page's keyservice session at once.
  const beforeLogout = await page.evaluate(() => Boolean(window.keyserviceDemo.session));
  assert.ok(beforeLogout, 'the page holds no keyservice session');
  const loginId = await page.evaluate(() => {
    window.endedSession = window.keyserviceDemo.session;
    return sessionStorage.getItem('login');
  });
  const kept = await page.evaluate(async (name) => {
    const { loadKey } = await import('/keyservice-client.js');
    const key = await loadKey(name);
    return { type: key?.type, extractable: key?.extractable };
  }, `note-key:${loginId}`);
  assert.deepEqual(kept, { type: 'secret', extractable: false }, 'the page keeps a non-extractable key');
  await page.click('#logout');
  await page.waitForSelector('#login-form', { state: 'visible' });
  const afterLogout = await page.evaluate(() => window.endedSession.getKey().then(() => 'read', (e) => e.code));
  assert.equal(afterLogout, 'unknown_session');
  const cached = await page.evaluate(async (name) => {
    const { loadKey } = await import('/keyservice-client.js');
    return String(await loadKey(name));
  }, `note-key:${loginId}`);
  assert.equal(cached, 'undefined', 'logout left the key in IndexedDB');

  // Erasure: the key is destroyed, and the stored ciphertext can no longer be read.
  await other.click('#erase');
  await other.waitForSelector('#login-form', { state: 'visible' });
  await logIn(other, 'alice');
  await other.waitForFunction(() => document.getElementById('note-shown').dataset.state === 'unreadable');
  await other.screenshot({ path: join(artefacts, 'demo-3-erased.png') });
  const after = await storedRecords();
  assert.equal(after.length, 1);
  assert.ok(after[0].bytes.equals(stored), 'the ciphertext is still stored, unchanged: only unreadable');
  await first.close();
  await second.close();
});

test('a data key wrapped under a passphrase, in the page as served (no bundler, no import map)', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const failures = [];
  page.on('pageerror', (error) => failures.push(String(error)));
  await logIn(page, 'pia');
  const result = await page.evaluate(async () => {
    const ks = await import('/keyservice-client.js');
    const session = window.keyserviceDemo.session;
    const factor = { userFactor: { passphrase: 'correct horse battery staple', params: ks.MINIMUM_ARGON2 } };
    await session.deleteKey();
    const key = await ks.escrowNewDataKey(session, factor);
    const sealed = await ks.encrypt(key, 'behind my passphrase');
    const escrowed = await session.getKey();
    const fetched = await ks.fetchDataKey(session, factor);
    const text = new TextDecoder().decode(await ks.decrypt(fetched, sealed));
    const wrong = { userFactor: { passphrase: 'Tr0ub4dor&3' } };
    const withWrong = await ks.fetchDataKey(session, wrong).then(() => 'opened', (e) => e.code);
    const without = await ks.fetchDataKey(session).then(() => 'opened', (e) => e.code);
    return { contentType: escrowed.contentType, kdf: ks.describeWrapped(escrowed.bytes).kdf, text, withWrong, without };
  });
  assert.deepEqual(result, {
    contentType: 'application/vnd.keyservice.wrapped-v1',
    kdf: 'argon2id',
    text: 'behind my passphrase',
    withWrong: 'wrong_user_factor',
    without: 'user_factor_required',
  });
  assert.deepEqual(failures, []);
  await context.close();
});

test('a data key wrapped under a passkey (WebAuthn PRF) opens only with that passkey', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  // A virtual platform authenticator with the PRF extension, as a phone or laptop has.
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      ctap2Version: 'ctap2_1',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
      hasPrf: true,
    },
  });
  await logIn(page, 'paula');
  const result = await page.evaluate(async () => {
    const ks = await import('/keyservice-client.js');
    const session = window.keyserviceDemo.session;
    const credentialId = await ks.createPasskey({ userName: 'paula' });
    const passkey = { userFactor: { passkey: { credentialId } } };
    // Replace the key the login made with one wrapped under the passkey.
    await session.deleteKey();
    const key = await ks.escrowNewDataKey(session, passkey);
    const sealed = await ks.encrypt(key, 'behind my passkey');
    const escrowed = await session.getKey();
    const described = ks.describeWrapped(escrowed.bytes);
    const fetched = await ks.fetchDataKey(session, passkey);
    const text = new TextDecoder().decode(await ks.decrypt(fetched, sealed));
    const without = await ks.fetchDataKey(session).then(() => 'opened', (e) => e.code);
    window.passkeyTest = { sealed, credentialId };
    return {
      contentType: escrowed.contentType,
      kdf: described.kdf,
      sameCredential: described.credentialId.join() === credentialId.join(),
      text,
      without,
    };
  });
  assert.deepEqual(result, {
    contentType: 'application/vnd.keyservice.wrapped-v1',
    kdf: 'webauthn-prf',
    sameCredential: true,
    text: 'behind my passkey',
    without: 'user_factor_required',
  });
  // Without the passkey on the authenticator, the key stays shut.
  await cdp.send('WebAuthn.clearCredentials', { authenticatorId });
  const gone = await page.evaluate(async () => {
    const ks = await import('/keyservice-client.js');
    const { credentialId } = window.passkeyTest;
    const factor = { userFactor: { passkey: { credentialId } } };
    return ks.fetchDataKey(window.keyserviceDemo.session, factor).then(
      () => 'opened',
      (e) => [e instanceof ks.KeyserviceError, e.code, e.status, e.cause?.name],
    );
  });
  assert.deepEqual(gone, [true, 'passkey_not_allowed', 0, 'NotAllowedError']);
  await context.close();

  // An authenticator without PRF cannot hold the key: a clear error, nothing escrowed.
  const plain = await browser.newContext();
  const other = await plain.newPage();
  const plainCdp = await plain.newCDPSession(other);
  await plainCdp.send('WebAuthn.enable');
  await plainCdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      ctap2Version: 'ctap2_1',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
      hasPrf: false,
    },
  });
  await other.goto(`${site}/`);
  const refused = await other.evaluate(async () => {
    const ks = await import('/keyservice-client.js');
    return ks.createPasskey({ userName: 'quinn' }).then(() => 'created', (e) => `${e.name}:${e.code}`);
  });
  assert.equal(refused, 'WrapError:prf_unsupported');
  await plain.close();
});

test("the README's device flow runs as written in a page", async () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const flow = /```js\n([\s\S]*?)```/.exec(readme)[1];
  const code = flow
    .replace(/^import (\{[^}]*\}) from 'keyservice-client';$/m, "const $1 = await import('/keyservice-client.js');")
    .replaceAll('https://keys.example.com', keyserviceUrl);
  // The demo's Content-Security-Policy forbids evaluating strings, which is how the
  // example is run here; the page's origin (allowed by keyservice's CORS) is what counts.
  const context = await browser.newContext({ bypassCSP: true });
  const page = await context.newPage();
  await page.goto(`${site}/`);
  const note = await page.evaluate(async (body) => {
    // The application's own part: its login, and its route that calls /connect.
    const login = await (await fetch('/login', { method: 'POST', body: 'readme-reader' })).json();
    const myRealService = {
      async connectKeyservice(initTokenHash) {
        const headers = { 'X-Session': login.session };
        const response = await fetch('/keyservice-session', { method: 'POST', headers, body: JSON.stringify({ initTokenHash }) });
        return response.json();
      },
      async save() {},
    };
    const AsyncFunction = (async () => {}).constructor;
    return new AsyncFunction('myRealService', `${body}\nreturn note;`)(myRealService);
  }, code);
  assert.equal(note, 'my private note');
  await context.close();
});

test('a page from another origin is refused by CORS', async () => {
  const bundle = readFileSync(new URL('../../dist/keyservice.js', import.meta.url));
  const foreign = createServer((request, response) => {
    if (request.url === '/keyservice.js') {
      response.writeHead(200, { 'content-type': 'text/javascript' });
      response.end(bundle);
      return;
    }
    response.writeHead(200, { 'content-type': 'text/html' });
    response.end('<!doctype html><title>elsewhere</title>');
  });
  await new Promise((resolve) => foreign.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${foreign.address().port}`;
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${origin}/`);
    const answer = await page.evaluate(
      (url) => fetch(`${url}/init`, { method: 'POST' }).then((r) => `status ${r.status}`, (e) => e.name),
      keyserviceUrl,
    );
    assert.equal(answer, 'TypeError', 'keyservice answered a page of another origin');
    // The client tells a page left out of cors_origins from an outage.
    const told = await page.evaluate(async (url) => {
      const ks = await import('/keyservice.js');
      const code = (target) => new ks.Keyservice(target).init().then(() => 'answered', (e) => [e.code, e.message]);
      return { refused: await code(url), down: await code('http://127.0.0.1:9') };
    }, keyserviceUrl);
    assert.equal(told.refused[0], 'cors_refused');
    assert.match(told.refused[1], new RegExp(`add ${origin} to its cors_origins`));
    assert.equal(told.down[0], 'network_error');
    // The demo's own origin is allowed (the same call from there works).
    await page.goto(`${site}/`);
    const allowed = await page.evaluate(
      (url) => fetch(`${url}/init`, { method: 'POST' }).then((r) => r.status, (e) => e.name),
      keyserviceUrl,
    );
    assert.equal(allowed, 200);
    await context.close();
  } finally {
    foreign.close();
  }
});
