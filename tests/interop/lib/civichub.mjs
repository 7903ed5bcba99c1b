// Starts the civichub binary on a free loopback port with a fresh data dir and
// provisions a user and clients through its admin CLI.
import { execFile, spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

// CIVICHUB_BIN, else the newer of target/debug and target/release.
export function civichubBinary() {
  if (process.env.CIVICHUB_BIN) return process.env.CIVICHUB_BIN;
  const candidates = ['debug', 'release']
    .map((p) => join(repoRoot, 'target', p, 'civichub'))
    .filter((p) => existsSync(p))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  if (!candidates.length) {
    throw new Error('civichub binary not found: build it (cargo build -p civichub) or set CIVICHUB_BIN');
  }
  return candidates[0];
}

// Runs an admin command; `input` goes to stdin. Resolves with stdout.
export function admin(bin, args, input = '') {
  return new Promise((resolveRun, reject) => {
    const child = execFile(bin, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`civichub ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolveRun(stdout);
    });
    child.stdin.end(input);
  });
}

// Starts `civichub serve` and waits for its "listening on" line.
function serve(bin, dataDir) {
  const child = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  return new Promise((resolveStart, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`civichub did not report its port within 30 s\n${out}\n${log}`));
    }, 30_000);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`civichub exited early (${code ?? signal})\n${out}\n${log}`));
    });
    child.stdout.on('data', (d) => {
      out += d;
      const m = /civichub listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        child.stdout.resume();
        resolveStart({ child, url: m[1].replace(/\/$/, ''), log: () => log });
      }
    });
  });
}

// The fixture used by oidc.test.mjs: { issuer, user, clients, stop() }.
export async function startTarget({ user, clients }) {
  const bin = civichubBinary();
  const dataDir = await mkdtemp(join(tmpdir(), 'civichub-interop-'));
  try {
    const d = ['--data-dir', dataDir];
    const userArgs = ['user', 'add', user.username, '--password-stdin',
      '--name', user.name, '--email', user.email, '--phone', user.phone, '--department', user.department,
      ...user.roles.flatMap((r) => ['--role', r]), ...d];
    await admin(bin, userArgs, `${user.password}\n`);
    const provisioned = {};
    for (const c of clients) {
      const args = ['client', 'add', c.clientId,
        ...c.redirectUris.flatMap((u) => ['--redirect-uri', u]),
        ...(c.public ? ['--public'] : []),
        ...(c.firstParty ? ['--first-party'] : []),
        ...c.postLogoutRedirectUris.flatMap((u) => ['--post-logout-redirect-uri', u]), ...d];
      const out = await admin(bin, args);
      const secret = /client_secret:\s*(\S+)/.exec(out)?.[1];
      if (!c.public && !secret) throw new Error(`no client_secret printed for ${c.clientId}: ${out}`);
      provisioned[c.name] = { ...c, clientSecret: secret };
    }
    const server = await serve(bin, dataDir);
    return {
      issuer: server.url,
      clients: provisioned,
      serverLog: server.log,
      async stop() {
        if (server.child.exitCode === null && server.child.signalCode === null) {
          const exited = new Promise((r) => server.child.once('exit', r));
          server.child.kill('SIGTERM');
          const timer = setTimeout(() => server.child.kill('SIGKILL'), 5000);
          await exited;
          clearTimeout(timer);
        }
        await rm(dataDir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await rm(dataDir, { recursive: true, force: true });
    throw err;
  }
}
