// The demo web app: log in at the Real Service, get (or create and escrow) the user's
// data key at keyservice, and keep a note that this site stores only encrypted.
import {
  Keyservice,
  KeyserviceError,
  decrypt,
  encrypt,
  forgetKey,
  getOrCreateDataKey,
  initTokenHash,
  loadKey,
  storeKey,
} from '/keyservice-client.js';

const $ = (id) => document.getElementById(id);
const config = await (await fetch('/config.json')).json();
const keyservice = new Keyservice(config.keyserviceUrl);

/** What the tests may look at: the current keyservice session. */
window.keyserviceDemo = { session: undefined };

function status(text) {
  $('status').textContent = text;
}

function login() {
  return sessionStorage.getItem('login');
}

async function realService(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { 'X-Session': login() ?? '' },
    body,
  });
  if (response.status === 401) {
    showLogin('Your login ended; log in again.');
    throw new Error('logged out');
  }
  return response;
}

/** A keyservice session for this login: init here, connect through the Real Service. */
async function openSession() {
  const { initToken } = await keyservice.init();
  const response = await realService(
    'POST',
    '/keyservice-session',
    JSON.stringify({ initTokenHash: await initTokenHash(initToken) }),
  );
  if (!response.ok) throw new Error(`the site could not connect you to keyservice: ${await response.text()}`);
  const { sessionToken } = await response.json();
  const session = keyservice.session(sessionToken, initToken);
  window.keyserviceDemo.session = session;
  return session;
}

let dataKey;

/**
 * The data key: kept (non-extractable) in IndexedDB for this login, else fetched from
 * keyservice (or made and escrowed there). A page always holds a keyservice session of
 * its own, so that logging out ends it.
 */
async function key() {
  if (dataKey) return dataKey;
  const session = window.keyserviceDemo.session ?? (await openSession());
  const name = `note-key:${login()}`;
  dataKey = await loadKey(name);
  if (!dataKey) {
    dataKey = await getOrCreateDataKey(session);
    await storeKey(name, dataKey);
  }
  return dataKey;
}

async function showNote() {
  const shown = $('note-shown');
  const response = await realService('GET', '/records/note');
  if (response.status === 404) {
    shown.textContent = '(no note yet)';
    shown.dataset.state = 'empty';
    return;
  }
  const sealed = new Uint8Array(await response.arrayBuffer());
  try {
    shown.textContent = new TextDecoder().decode(await decrypt(await key(), sealed));
    shown.dataset.state = 'decrypted';
    shown.classList.remove('unreadable');
  } catch {
    shown.textContent = 'This note cannot be decrypted: its key is gone.';
    shown.dataset.state = 'unreadable';
    shown.classList.add('unreadable');
  }
}

function showLogin(text) {
  sessionStorage.clear();
  dataKey = undefined;
  window.keyserviceDemo.session = undefined;
  $('app').classList.add('hidden');
  $('login-form').classList.remove('hidden');
  status(text);
}

async function showApp() {
  $('who').textContent = sessionStorage.getItem('user');
  $('login-form').classList.add('hidden');
  $('app').classList.remove('hidden');
  await key();
  await showNote();
  status('Key ready.');
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const user = $('user').value;
  const response = await fetch('/login', { method: 'POST', body: user });
  const { session } = await response.json();
  sessionStorage.setItem('login', session);
  sessionStorage.setItem('user', user);
  await run(showApp);
});

$('save').addEventListener('click', () =>
  run(async () => {
    const sealed = await encrypt(await key(), $('note').value);
    await realService('PUT', '/records/note', sealed);
    $('note').value = '';
    await showNote();
    status('Saved (encrypted).');
  }),
);

/** Fills the history table from `GET /key/history` (newest first, one page). */
async function showHistory() {
  const session = window.keyserviceDemo.session ?? (await openSession());
  const { entries } = await session.accessHistory({ limit: 50 });
  const body = $('history').querySelector('tbody');
  body.replaceChildren(
    ...entries.map((entry) => {
      const row = document.createElement('tr');
      row.dataset.operation = entry.operation;
      if (entry.session && !entry.currentSession) row.classList.add('other');
      const session = entry.session === null ? 'the site itself' : entry.currentSession ? 'this page' : entry.session;
      const times = entry.count > 1 ? ` ×${entry.count}` : '';
      const versions = entry.firstVersion ? `versions ${entry.firstVersion}–${entry.version}` : `version ${entry.version}`;
      const what = (entry.version === null ? entry.operation : `${entry.operation} (${versions})`) + times;
      for (const text of [new Date(entry.time).toLocaleString(), what, session, entry.address, entry.credential ?? '']) {
        const cell = document.createElement('td');
        cell.textContent = text;
        row.append(cell);
      }
      return row;
    }),
  );
  $('history').classList.remove('hidden');
  status(`${entries.length} accesses on record.`);
}

$('show-history').addEventListener('click', () => run(showHistory));

$('logout').addEventListener('click', () =>
  run(async () => {
    const name = `note-key:${login()}`;
    if (window.keyserviceDemo.session) await window.keyserviceDemo.session.logout();
    await forgetKey(name);
    await realService('POST', '/logout');
    showLogin('Logged out.');
  }),
);

$('erase').addEventListener('click', () =>
  run(async () => {
    const name = `note-key:${login()}`;
    await realService('POST', '/erase');
    await forgetKey(name);
    showLogin('Your key was erased: your notes can no longer be read by anyone.');
  }),
);

async function run(action) {
  try {
    await action();
  } catch (error) {
    if (error instanceof Error && error.message === 'logged out') return;
    status(error instanceof KeyserviceError ? `keyservice: ${error.message} (${error.code})` : String(error));
  }
}

if (login()) {
  await run(showApp);
}
