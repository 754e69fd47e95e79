// Starts the real keyservice binary on a loopback port for the tests.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../../..', import.meta.url));

export const NAMESPACE = 'shop';
export const CREDENTIAL = { keyId: 'shop-1', secret: 'shop-secret-0123456789abcdef0123456789' };

/** The binary the tests run: KEYSERVICE_BIN, else the workspace's debug build. */
export function binary(name = 'keyservice') {
  const fromEnv = name === 'keyservice' ? process.env.KEYSERVICE_BIN : undefined;
  return fromEnv ?? join(repo, 'target', 'debug', name);
}

/**
 * `keyservice serve` with a config in a fresh directory; resolves to
 * `{url, stop()}` once it logs its address.
 */
export async function startKeyservice({ extra = '', namespaceExtra = '', files = {} } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'keyservice-js-'));
  const config = join(dir, 'keyservice.toml');
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  writeFileSync(
    config,
    `listen = "127.0.0.1:0"
data_dir = ${JSON.stringify(join(dir, 'data'))}
${extra}
[namespaces.${NAMESPACE}]
allow = ["127.0.0.0/8"]
credentials = [ { key_id = "${CREDENTIAL.keyId}", secret = "${CREDENTIAL.secret}" } ]
${namespaceExtra.replaceAll('{dir}', dir)}
`,
  );
  const child = spawn(binary(), ['serve', '--config', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  const url = await new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`keyservice did not start:\n${seen}`)), 30000);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      seen += chunk;
      const match = /keyservice listening address=(\S+)/.exec(seen);
      if (match) {
        clearTimeout(timer);
        resolve(`http://${match[1]}`);
      }
    });
    child.on('exit', (code) => reject(new Error(`keyservice exited (${code}):\n${seen}`)));
  });
  return {
    url,
    stop() {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
