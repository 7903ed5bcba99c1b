// oidc-provider configured alike to civichub, as the benchmark baseline.
//
//   node provider.mjs [--port 0] [--id-token-alg RS256|ES256] [--redirect-uri URI]
//
// Prints "oidc-provider listening on http://127.0.0.1:PORT" once it accepts
// connections (the same shape as civichub's startup line).
//
// What "alike" means here:
// - opaque access tokens (oidc-provider's default without resource indicators),
// - PKCE (S256) required for every client, refresh tokens rotated on every use,
// - scopes openid profile email phone offline_access department,
// - a login form (username, password, hidden CSRF token) and a consent form
//   (hidden inputs + button decision=allow) shaped like civichub's pages,
// - the first-party client gets its grant without a consent page.
// Storage is in memory (see MapAdapter): civichub uses SQLite on disk.
import { createHash, createHmac, generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import Provider from 'oidc-provider';

// The benchmark's clients and user; the same ones run.sh creates in civichub.
export const BENCH = {
  redirectUri: 'http://127.0.0.1:9/cb',
  postLogoutRedirectUri: 'http://127.0.0.1:9/logged-out',
  clients: [
    {
      client_id: 'bench-conf',
      client_secret: 'bench-conf-secret-0123456789abcdef',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      firstParty: true,
    },
    {
      client_id: 'bench-public',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      firstParty: true,
    },
  ],
  users: [
    {
      username: 'bench',
      password: 'bench-password-1',
      name: 'Bench User',
      email: 'bench@example.test',
      phone: '+15550100',
      department: 'Benchmarks',
      roles: ['staff'],
    },
  ],
};

const SCOPES = ['openid', 'offline_access', 'profile', 'email', 'phone', 'department'];

// In-memory adapter without the size-bounded LRU of oidc-provider's default
// one, which would evict live sessions and grants under benchmark load.
// Entries expire after their TTL; a timer sweeps expired ones.
const store = new Map(); // key -> { payload, expiresAt }
const grants = new Map(); // grantId -> Set of keys
setInterval(() => {
  const now = Date.now();
  for (const [key, entry] of store) if (entry.expiresAt <= now) store.delete(key);
  for (const [grantId, keys] of grants) {
    for (const key of keys) if (!store.has(key)) keys.delete(key);
    if (keys.size === 0) grants.delete(grantId);
  }
}, 5000).unref();

class MapAdapter {
  constructor(model) { this.model = model; }
  key(id) { return `${this.model}:${id}`; }
  get(key) {
    const entry = store.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) { store.delete(key); return undefined; }
    return entry.payload;
  }
  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    store.set(key, { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : Infinity });
    if (payload.grantId) {
      if (!grants.has(payload.grantId)) grants.set(payload.grantId, new Set());
      grants.get(payload.grantId).add(key);
    }
    if (payload.uid) store.set(`uid:${this.model}:${payload.uid}`, { payload: id, expiresAt: store.get(key).expiresAt });
    if (payload.userCode) store.set(`userCode:${payload.userCode}`, { payload: id, expiresAt: store.get(key).expiresAt });
  }
  async find(id) { return this.get(this.key(id)); }
  async findByUid(uid) {
    const id = this.get(`uid:${this.model}:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }
  async findByUserCode(userCode) {
    const id = this.get(`userCode:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }
  async consume(id) {
    const payload = this.get(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) { store.delete(this.key(id)); }
  async revokeByGrantId(grantId) {
    for (const key of grants.get(grantId) ?? []) store.delete(key);
    grants.delete(grantId);
  }
}

function signingKey(alg) {
  const { privateKey } = alg === 'ES256'
    ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const kid = createHash('sha256').update(JSON.stringify(jwk)).digest('base64url').slice(0, 16);
  return { ...jwk, alg, use: 'sig', kid };
}

// Minimal HTML for the interaction pages (same form shapes as civichub's).
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head><body>${body}</body></html>`;

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

export async function startProvider({ port = 0, host = '127.0.0.1', idTokenAlg = 'RS256', clients = BENCH.clients, users = BENCH.users, redirectUri = BENCH.redirectUri, postLogoutRedirectUri = BENCH.postLogoutRedirectUri } = {}) {
  const server = createServer();
  await new Promise((resolve, reject) => server.once('error', reject).listen(port, host, resolve));
  const issuer = `http://${host}:${server.address().port}`;

  const firstParty = new Set(clients.filter((c) => c.firstParty).map((c) => c.client_id));
  const accounts = new Map(users.map((u) => [u.username, u]));
  const csrfSecret = randomBytes(32);
  const csrfFor = (uid) => createHmac('sha256', csrfSecret).update(uid).digest('base64url');

  const provider = new Provider(issuer, {
    adapter: MapAdapter,
    clients: clients.map(({ firstParty: _fp, ...c }) => ({
      redirect_uris: [redirectUri],
      post_logout_redirect_uris: [postLogoutRedirectUri],
      response_types: ['code'],
      id_token_signed_response_alg: idTokenAlg,
      ...c,
    })),
    jwks: { keys: [signingKey(idTokenAlg)] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    scopes: SCOPES,
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username', 'roles'],
      email: ['email', 'email_verified'],
      phone: ['phone_number', 'phone_number_verified'],
      department: ['department'],
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      // A client may introspect and revoke only its own tokens.
      introspection: { enabled: true, allowedPolicy: ownToken },
      revocation: { enabled: true, allowedPolicy: ownToken },
      rpInitiatedLogout: { enabled: true, logoutSource },
    },
    pkce: { required: () => true },
    // oidc-provider's default lifetimes (seconds), made explicit.
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      ClientCredentials: 600,
      IdToken: 3600,
      RefreshToken: 14 * 24 * 3600,
      Interaction: 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
    rotateRefreshToken: true,
    async findAccount(_ctx, id) {
      const user = accounts.get(id);
      if (!user) return undefined;
      return {
        accountId: id,
        async claims() {
          return {
            sub: id,
            name: user.name,
            preferred_username: id,
            roles: user.roles,
            email: user.email,
            email_verified: false,
            phone_number: user.phone,
            phone_number_verified: false,
            department: user.department,
          };
        },
      };
    },
    // The first-party clients get a grant for every scope and claim without
    // a consent page (civichub's --first-party).
    async loadExistingGrant(ctx) {
      const { client, session } = ctx.oidc;
      const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
      if (grantId) {
        const grant = await ctx.oidc.provider.Grant.find(grantId);
        if (grant) return grant;
      }
      if (!firstParty.has(client.clientId)) return undefined;
      const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
      grant.addOIDCScope(SCOPES.join(' '));
      await grant.save();
      return grant;
    },
  });

  // Interaction pages: GET shows the login or consent form, POST handles it.
  provider.use(async (ctx, next) => {
    const m = /^\/interaction\/([\w-]+)(?:\/(login|confirm))?$/.exec(ctx.path);
    if (!m) return next();
    const [, uid, action] = m;
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.uid !== uid) ctx.throw(400, 'interaction mismatch');
    const csrf = csrfFor(uid);
    ctx.set('cache-control', 'no-store');
    ctx.type = 'html';

    if (ctx.method === 'GET' && !action) {
      if (details.prompt.name === 'login') {
        ctx.body = loginPage(uid, csrf);
      } else {
        ctx.body = page('Allow access', `<form method="post" action="/interaction/${uid}/confirm">
<input type="hidden" name="csrf" value="${esc(csrf)}">
<p>${esc(details.params.client_id)} asks for: ${esc(details.params.scope)}</p>
<button type="submit" name="decision" value="allow">Allow</button>
<button type="submit" name="decision" value="deny">Deny</button></form>`);
      }
      return undefined;
    }
    if (ctx.method !== 'POST' || !action) ctx.throw(405);
    const form = await readForm(ctx.req);
    const given = Buffer.from(form.get('csrf') ?? '');
    if (given.length !== csrf.length || !timingSafeEqual(given, Buffer.from(csrf))) ctx.throw(403, 'bad csrf token');

    if (action === 'login') {
      const user = accounts.get(form.get('username') ?? '');
      if (!user || user.password !== form.get('password')) {
        ctx.status = 401;
        ctx.body = loginPage(uid, csrf, 'Invalid username or password');
        return undefined;
      }
      await provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: user.username } }, { mergeWithLastSubmission: false });
      return undefined;
    }
    // Consent.
    if (form.get('decision') !== 'allow') {
      await provider.interactionFinished(ctx.req, ctx.res, { error: 'access_denied' }, { mergeWithLastSubmission: false });
      return undefined;
    }
    const { accountId } = details.session;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId, clientId: details.params.client_id });
    const missing = details.prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    await provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return undefined;
  });

  server.on('request', provider.callback());
  return { issuer, provider, server, close: () => new Promise((r) => server.close(r)) };
}

function ownToken(_ctx, client, token) {
  return !token.clientId || token.clientId === client.clientId;
}

// The logout confirmation page: a form with the provider's hidden inputs and
// a "yes" button.
async function logoutSource(ctx, form) {
  ctx.body = page('Sign out', form.replace('</form>',
    '<button type="submit" name="logout" value="yes">Sign out</button></form>'));
}

function loginPage(uid, csrf, error) {
  return page('Sign in', `${error ? `<p>${esc(error)}</p>` : ''}<form method="post" action="/interaction/${uid}/login">
<input type="hidden" name="csrf" value="${esc(csrf)}">
<input type="text" name="username" autocomplete="username">
<input type="password" name="password" autocomplete="current-password">
<button type="submit">Sign in</button></form>`);
}

// Command line entry point.
if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      'id-token-alg': { type: 'string', default: 'RS256' },
      // Where the clients may send the browser back to (the end-to-end tests
      // federate a CivicHub to this provider).
      'redirect-uri': { type: 'string', default: BENCH.redirectUri },
    },
  });
  const { issuer } = await startProvider({ port: Number(values.port), idTokenAlg: values['id-token-alg'], redirectUri: values['redirect-uri'] });
  console.log(`oidc-provider listening on ${issuer}`);
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
}
