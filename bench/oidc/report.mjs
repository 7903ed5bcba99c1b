// Prints the side-by-side table, the civichub ÷ oidc-provider ratios and the
// targets, from the JSON files that oidc-load wrote.
//
//   node report.mjs civichub.json oidc-provider.json argon2.json [rs256.json]
import { readFileSync } from 'node:fs';

const [civ, ref, argon2, rs256] = process.argv.slice(2).map((f) => JSON.parse(readFileSync(f, 'utf8')));
const op = (r, name) => r.ops.find((o) => o.op === name);
const mb = (kib) => (kib == null ? '-' : `${(kib / 1024).toFixed(1)} MB`);
const num = (v, d = 0) => (v == null ? '-' : v.toFixed(d));
const verdict = (ok) => (ok ? 'met' : 'MISSED');

// Errors make a throughput number meaningless: say so next to it.
const cell = (o) => {
  if (!o) return ['-', '-'];
  const bad = o.errors + o.warmup_errors + o.setup_errors;
  return [`${num(o.ops_per_sec)}${bad ? ` (${bad} errors)` : ''}`, `${num(o.p50_ms, 2)} / ${num(o.p99_ms, 2)}`];
};

const rows = [['operation', 'civichub ops/s', 'p50 / p99 ms', 'oidc-provider ops/s', 'p50 / p99 ms', 'ratio', 'target']];
const targets = [];
for (const [name, target] of [['discovery', null], ['client_credentials', 5], ['refresh', null], ['code_flow', 5]]) {
  const a = op(civ, name);
  const b = op(ref, name);
  const ratio = a && b && b.ops_per_sec ? a.ops_per_sec / b.ops_per_sec : null;
  const clean = a && b && !(a.errors + a.warmup_errors + a.setup_errors);
  let t = '';
  if (target) {
    t = `>= ${target}x: ${verdict(clean && ratio >= target)}`;
    targets.push(clean && ratio >= target);
  }
  if (name === 'discovery') t = 'ceiling: generator and provider share 2 cores';
  rows.push([name, ...cell(a), ...cell(b), ratio == null ? '-' : `${ratio.toFixed(2)}x`, t]);
}

const login = op(civ, 'password_login');
const loginRatio = login && argon2.verifies_per_sec ? login.ops_per_sec / argon2.verifies_per_sec : null;
const loginOk = loginRatio != null && loginRatio >= 0.85 && !(login.errors + login.warmup_errors);
targets.push(loginOk);
rows.push(['password_login', ...cell(login), `raw argon2: ${num(argon2.verifies_per_sec, 1)}/s`,
  `${argon2.threads} threads`, loginRatio == null ? '-' : loginRatio.toFixed(2), `>= 0.85: ${verdict(loginOk)}`]);

const peak = (r, names) => Math.max(0, ...r.ops.filter((o) => names.includes(o.op)).map((o) => o.peak_rss_kib ?? 0));
const oidcOps = ['client_credentials', 'refresh', 'code_flow'];
const idleOk = civ.idle_rss_kib != null && civ.idle_rss_kib <= 40 * 1024;
targets.push(idleOk);
rows.push(['idle RSS', mb(civ.idle_rss_kib), '', mb(ref.idle_rss_kib), '', '', `<= 40 MB: ${verdict(idleOk)}`]);
rows.push(['loaded RSS (peak)', mb(peak(civ, oidcOps)), '', mb(peak(ref, oidcOps)), '', '', '']);
rows.push(['RSS after logins', mb(login?.peak_rss_kib), '', '', '', '', '']);

const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
console.log(`civichub vs oidc-provider, ${civ.concurrency} connections, ${civ.duration_s} s per operation`);
for (const [i, r] of rows.entries()) {
  console.log(r.map((c, j) => String(c).padEnd(widths[j])).join('  ').trimEnd());
  if (i === 0) console.log(widths.map((w) => '-'.repeat(w)).join('  '));
}
console.log('\nCPU share (100 = one core), provider / generator:');
for (const r of [civ, ref]) {
  console.log(`  ${r.label}: ${r.ops.map((o) => `${o.op} ${num(o.server_cpu_pct)} / ${num(o.generator_cpu_pct)}`).join(', ')}`);
}
for (const r of [civ, ref]) {
  for (const o of r.ops) if (o.first_error) console.log(`note: ${r.label} ${o.op}: first error: ${o.first_error}`);
}
// Every code flow signs one ID token: with RS256, the raw signing rate on all
// of the machine's cores bounds any provider's code flow here.
const codeRef = op(ref, 'code_flow');
if (rs256 && codeRef) {
  const needed = 5 * codeRef.ops_per_sec;
  const reachable = needed <= rs256.signs_per_sec;
  console.log(`\ncode_flow ceiling: one RS256 ID token per flow; raw RS256 signing (aws-lc-rs, ${rs256.threads} threads, nothing else running): ` +
    `${num(rs256.signs_per_sec)}/s; 5 x oidc-provider = ${num(needed)}/s: ` +
    (reachable ? 'within the ceiling' : 'above the ceiling, so no RS256 provider can reach it on this machine'));
}
console.log(`targets met: ${targets.filter(Boolean).length} of ${targets.length}`);
