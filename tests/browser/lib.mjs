// Shared by the browser tests: a civichub on a free port with a fresh data
// directory, and Debian's Chromium driven by playwright-core.
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { admin, civichubBinary } from '../interop/lib/civichub.mjs';

export { admin };

// Starts `civichub serve` with `extra` arguments; resolves once it listens.
export async function startHub(extra = []) {
  const bin = civichubBinary();
  const dataDir = await mkdtemp(join(tmpdir(), 'civichub-browser-'));
  const listen = extra.includes('--listen') ? [] : ['--listen', '127.0.0.1:0'];
  const child = spawn(bin, ['serve', ...listen, '--data-dir', dataDir, '--log', 'warn', ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  const url = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`civichub did not start\n${out}\n${log}`)), 30_000);
    child.once('exit', (code) => reject(new Error(`civichub exited (${code})\n${log}`)));
    child.stdout.on('data', (d) => {
      out += d;
      const m = /civichub listening on (http:\/\/\S+)/.exec(out);
      if (m) { clearTimeout(timer); child.removeAllListeners('exit'); child.stdout.resume(); resolve(m[1]); }
    });
  });
  const run = (args, input = '') => admin(bin, [...args, '--data-dir', dataDir], input);
  return {
    url,
    run,
    log: () => log,
    async importEntries(lines) {
      const file = join(dataDir, 'entries.jsonl');
      await writeFile(file, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
      return run(['kb', 'import', file]);
    },
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => { if (child.exitCode !== null) r(); else child.once('exit', r); });
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

// Debian's Chromium, headless, with the flags this closed network needs.
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}

// A TCP port free now on 127.0.0.1 (for a hub whose issuer must name it).
export async function freePort() {
  const { createServer } = await import('node:net');
  const server = createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

// Polls `fn` until it returns a truthy value or `ms` pass.
export async function eventually(fn, ms = 5000) {
  const start = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - start > ms) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 100));
  }
}

export const ENTRIES = [
  { id: 'kb-b-1', title: '住房公积金提取需要哪些材料？', body: '问：离职后想提取住房公积金，需要准备什么？\n答：携带身份证和离职证明，通过浙里办或公积金中心窗口办理。', category_name: '住房保障/住房公积金', department: '台州市住房公积金管理中心', tags: ['公积金', '提取'] },
  { id: 'kb-b-2', title: '公积金贷款额度怎么计算？', body: '公积金贷款额度与缴存基数、缴存时间和还款能力有关，以公积金中心审核为准。', category_name: '住房保障/住房公积金', department: '台州市住房公积金管理中心', tags: ['公积金', '贷款'] },
  { id: 'kb-b-3', title: '欠薪类诉求派单口径', body: '坐席受理拖欠工资诉求时，按用工单位所在地派至劳动保障监察机构。', category_name: '劳动就业/劳动争议', department: '台州市人力资源和社会保障局', audience: 'internal', tags: ['欠薪'] },
  { id: 'kb-b-4', title: '灵活就业人员如何参加养老保险？', body: '灵活就业人员可通过浙里办APP办理社会保险参保登记。<script>alert(1)</script>', category_name: '社会保障/养老保险', department: '台州市人力资源和社会保障局', tags: ['社保'] },
];
