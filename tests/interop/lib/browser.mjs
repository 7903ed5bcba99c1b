// A tiny "browser": a cookie jar, a generic HTML form parser and a driver that
// follows redirects and submits the provider's login, consent and logout forms
// until it is sent to a URL the caller waits for (the client's redirect_uri).

// Cookies by name, for one host. Path, domain and flags are ignored: every
// request of a test goes to the provider under test.
export class CookieJar {
  #cookies = new Map();

  store(response) {
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq < 1) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attrs.some((a) => {
        const [k, v = ''] = a.split('=').map((s) => s.trim());
        if (/^max-age$/i.test(k)) return Number(v) <= 0;
        if (/^expires$/i.test(k)) return Date.parse(v) <= Date.now();
        return false;
      });
      if (expired) this.#cookies.delete(name);
      else this.#cookies.set(name, value);
    }
  }

  header() {
    return [...this.#cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  get size() {
    return this.#cookies.size;
  }
}

const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };
function decodeEntities(s) {
  return s.replace(/&(#x[0-9a-f]+|#\d+|\w+);/gi, (m, e) => {
    if (e[0] === '#') {
      const code = e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
      return String.fromCodePoint(code);
    }
    return ENTITIES[e.toLowerCase()] ?? m;
  });
}

function parseAttributes(s) {
  const attrs = {};
  for (const m of s.matchAll(/([^\s"'=<>\/]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?/g)) {
    attrs[m[1].toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return attrs;
}

// Every <form> of a page, with its <input>s and <button>s (including those
// outside the form that point at it with form="ID").
export function parseForms(html) {
  const controls = [];
  for (const m of html.matchAll(/<(input|button)\b([^>]*)>/gi)) {
    controls.push({ tag: m[1].toLowerCase(), index: m.index, ...parseAttributes(m[2]) });
  }
  const forms = [];
  for (const m of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form\s*>/gi)) {
    const attrs = parseAttributes(m[1]);
    const start = m.index;
    const end = m.index + m[0].length;
    const mine = controls.filter((c) => (c.form ? c.form === attrs.id : c.index > start && c.index < end));
    forms.push({
      action: attrs.action ?? '',
      method: (attrs.method ?? 'get').toLowerCase(),
      inputs: mine.filter((c) => c.tag === 'input'),
      buttons: mine.filter((c) => c.tag === 'button' || (c.tag === 'input' && c.type === 'submit')),
    });
  }
  return forms;
}

// Fields to submit for a form: a login form (it has a password input) gets
// the credentials; any other form (consent, logout confirmation) is submitted
// with its hidden inputs and its "yes" button (decision=allow if present).
export function fillForm(form, { username, password }) {
  const fields = new URLSearchParams();
  const isLogin = form.inputs.some((i) => i.type === 'password');
  for (const input of form.inputs) {
    const type = (input.type ?? 'text').toLowerCase();
    if (!input.name || ['submit', 'button', 'image', 'reset', 'checkbox', 'radio'].includes(type)) continue;
    if (isLogin && input.name === 'username') fields.append('username', username);
    else if (isLogin && type === 'password') fields.append(input.name, password);
    else fields.append(input.name, input.value ?? '');
  }
  if (isLogin) return { kind: 'login', fields };
  const named = form.buttons.filter((b) => b.name);
  const allow = named.find((b) => b.name === 'decision' && b.value === 'allow');
  const button = allow ?? named.find((b) => /^(yes|true|allow|confirm|logout)$/i.test(b.value ?? '')) ?? named[0];
  if (button) fields.append(button.name, button.value ?? '');
  return { kind: allow ? 'consent' : 'confirm', fields };
}

// Follows the provider from `start` (GET) through redirects and forms until a
// redirect points at a URL for which `isDone(url)` is true, and returns that
// URL plus the kinds of forms submitted on the way ('login', 'consent', ...).
export async function browse(start, { jar, isDone, username, password, maxSteps = 20 }) {
  let url = new URL(start);
  let init = { method: 'GET' };
  const submitted = [];
  for (let step = 0; step < maxSteps; step += 1) {
    const headers = { ...init.headers };
    if (jar.size) headers.cookie = jar.header();
    const res = await fetch(url, { ...init, headers, redirect: 'manual' });
    jar.store(res);
    if (res.status >= 300 && res.status < 400) {
      await res.arrayBuffer();
      const next = new URL(res.headers.get('location'), url);
      if (isDone(next)) return { url: next, submitted };
      url = next;
      init = { method: 'GET' };
      continue;
    }
    const body = await res.text();
    const form = parseForms(body).find((f) => f.method === 'post');
    if (!form) throw new Error(`no form on ${res.status} page at ${url.href}: ${body.slice(0, 300)}`);
    if (submitted.at(-1) === 'login' && form.inputs.some((i) => i.type === 'password')) {
      throw new Error(`login rejected (status ${res.status}) at ${url.href}`);
    }
    const { kind, fields } = fillForm(form, { username, password });
    submitted.push(kind);
    url = new URL(form.action || url.href, url);
    init = {
      method: 'POST',
      body: fields.toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    };
  }
  throw new Error(`no redirect to the expected URL within ${maxSteps} steps (last: ${url.href})`);
}
