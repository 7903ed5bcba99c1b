// Interop test: the certified relying party library openid-client (v6)
// against a freshly started civichub.
//
//   node --test            (run.sh does npm ci first)
//
// CIVICHUB_BIN overrides the binary (default: the newer of target/debug and
// target/release). INTEROP_TARGET_MODULE may name a module exporting
// startTarget() (same contract as lib/civichub.mjs) to dry-run these flows
// against another provider.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import * as client from 'openid-client';
import { browse, CookieJar } from './lib/browser.mjs';

const { startTarget } = process.env.INTEROP_TARGET_MODULE
  ? await import(process.env.INTEROP_TARGET_MODULE)
  : await import('./lib/civichub.mjs');

const USER = {
  username: 'alice',
  password: 'correct horse battery staple',
  name: 'Alice Example',
  email: 'alice@example.test',
  phone: '+15550199',
  department: 'Public Works',
  roles: ['clerk', 'auditor'],
};
// The redirect URIs are never fetched: the browser stops at the redirect.
const CLIENTS = [
  {
    name: 'web', clientId: 'rp-web', firstParty: false, public: false,
    redirectUris: ['http://127.0.0.1:9/web/callback'],
    postLogoutRedirectUris: ['http://127.0.0.1:9/web/logged-out'],
  },
  {
    name: 'spa', clientId: 'rp-spa', firstParty: true, public: true,
    redirectUris: ['http://127.0.0.1:9/spa/callback'],
    postLogoutRedirectUris: ['http://127.0.0.1:9/spa/logged-out'],
  },
];
const ALL_SCOPES = 'openid profile email phone department offline_access';
const T = { timeout: 60_000 };

let target;
let web; // confidential client, client_secret_basic
let webPost; // the same client, client_secret_post
let spa; // public client, token_endpoint_auth_method none
const jar = new CookieJar(); // the user's browser for the web client
const state = {}; // tokens handed from one test to the next

const startsWith = (prefix) => (url) => url.href.startsWith(prefix);

// Runs the authorization code flow with PKCE S256 through the browser and
// exchanges the code with openid-client. Returns tokens, claims and the forms
// that the provider showed on the way.
async function codeFlow(config, { browser, scope = ALL_SCOPES, extra = {} }) {
  const redirectUri = config.clientMetadata().redirect_uris[0];
  const verifier = client.randomPKCECodeVerifier();
  const checks = { pkceCodeVerifier: verifier, expectedState: client.randomState(), expectedNonce: client.randomNonce() };
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state: checks.expectedState,
    nonce: checks.expectedNonce,
    ...extra,
  });
  const { url: callback, submitted } = await browse(url, {
    jar: browser, isDone: startsWith(redirectUri), username: USER.username, password: USER.password,
  });
  assert.ok(callback.searchParams.get('code'), `no code in ${callback.href}`);
  const tokens = await client.authorizationCodeGrant(config, callback, { ...checks, idTokenExpected: true });
  checkAtHash(tokens.id_token, tokens.access_token);
  return { tokens, claims: tokens.claims(), submitted };
}

// openid-client checks nonce, iss, aud, exp, the signature (non-repudiation
// checks are on) but not at_hash in the code flow: check it here if present.
function checkAtHash(idToken, accessToken) {
  const header = JSON.parse(Buffer.from(idToken.split('.')[0], 'base64url'));
  const claims = JSON.parse(Buffer.from(idToken.split('.')[1], 'base64url'));
  if (claims.at_hash === undefined) return;
  const bits = /(\d{3})$/.exec(header.alg)?.[1] ?? (header.alg === 'EdDSA' ? '512' : '256');
  const digest = createHash(`sha${bits}`).update(accessToken).digest();
  assert.equal(claims.at_hash, digest.subarray(0, digest.length / 2).toString('base64url'), 'at_hash');
}

const isInvalidGrant = (err) => {
  assert.equal(err.error, 'invalid_grant', `expected invalid_grant, got ${err.error ?? err.message}`);
  return true;
};

describe('civichub with openid-client', () => {
  before(async () => {
    target = await startTarget({ user: USER, clients: CLIENTS });
    const issuer = new URL(target.issuer);
    const opts = { execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks] };
    const w = target.clients.web;
    web = await client.discovery(issuer, w.clientId,
      { client_secret: w.clientSecret, redirect_uris: w.redirectUris }, client.ClientSecretBasic(w.clientSecret), opts);
    webPost = new client.Configuration(web.serverMetadata(), w.clientId,
      { client_secret: w.clientSecret, redirect_uris: w.redirectUris }, client.ClientSecretPost(w.clientSecret));
    client.allowInsecureRequests(webPost);
    const s = target.clients.spa;
    spa = await client.discovery(issuer, s.clientId, { redirect_uris: s.redirectUris }, client.None(), opts);
  }, T);

  after(async () => {
    await target?.stop();
  });

  test('discovery advertises the endpoints and capabilities', T, () => {
    const md = web.serverMetadata();
    assert.equal(md.issuer, target.issuer);
    for (const ep of ['authorization_endpoint', 'token_endpoint', 'userinfo_endpoint', 'jwks_uri',
      'introspection_endpoint', 'revocation_endpoint', 'end_session_endpoint']) {
      assert.match(md[ep] ?? '', /^http:\/\/127\.0\.0\.1:\d+\//, `${ep} advertised`);
    }
    if (md.code_challenge_methods_supported) assert.ok(md.code_challenge_methods_supported.includes('S256'));
    if (md.scopes_supported) {
      for (const s of ALL_SCOPES.split(' ')) assert.ok(md.scopes_supported.includes(s), `scope ${s} supported`);
    }
  });

  test('code flow + PKCE, confidential client (client_secret_basic): login, consent, ID token', T, async (t) => {
    const { tokens, claims, submitted } = await codeFlow(web, { browser: jar, extra: { prompt: 'consent' } });
    assert.deepEqual(submitted, ['login', 'consent']);
    assert.equal(claims.iss, target.issuer);
    assert.ok([].concat(claims.aud).includes(web.clientMetadata().client_id), 'aud');
    assert.ok(claims.sub);
    for (const k of ['name', 'email', 'department']) {
      if (claims[k] !== undefined) assert.equal(claims[k], USER[k], `ID token ${k}`);
    }
    assert.ok(tokens.access_token);
    assert.equal(tokens.token_type.toLowerCase(), 'bearer');
    assert.ok(tokens.refresh_token, 'offline_access with prompt=consent yields a refresh token');
    t.diagnostic(`ID token claims: ${Object.keys(claims).join(' ')}`);
    Object.assign(state, { sub: claims.sub, web: tokens });
  });

  test('userinfo returns the profile claims', T, async (t) => {
    const info = await client.fetchUserInfo(web, state.web.access_token, state.sub);
    assert.equal(info.sub, state.sub);
    assert.equal(info.name, USER.name);
    assert.equal(info.email, USER.email);
    assert.equal(info.department, USER.department);
    assert.equal(info.phone_number, USER.phone);
    t.diagnostic(`userinfo claims: ${JSON.stringify(info)}`);
  });

  test('a live session yields a code without login or consent', T, async () => {
    const { claims, submitted } = await codeFlow(web, { browser: jar, scope: 'openid profile email' });
    assert.deepEqual(submitted, []);
    assert.equal(claims.sub, state.sub);
  });

  test('code flow + PKCE, public first-party client (none): login without consent', T, async () => {
    const { tokens, claims, submitted } = await codeFlow(spa, { browser: new CookieJar(), scope: 'openid profile' });
    assert.deepEqual(submitted, ['login']);
    assert.equal(claims.sub, state.sub);
    assert.ok(tokens.access_token);
  });

  test('refresh rotates the refresh token; the old one is then invalid_grant', T, async () => {
    const old = state.web.refresh_token;
    const refreshed = await client.refreshTokenGrant(web, old);
    assert.ok(refreshed.access_token);
    assert.ok(refreshed.refresh_token, 'a new refresh token');
    assert.notEqual(refreshed.refresh_token, old);
    assert.notEqual(refreshed.access_token, state.web.access_token);
    if (refreshed.id_token) assert.equal(refreshed.claims().sub, state.sub);
    await assert.rejects(client.refreshTokenGrant(web, old), isInvalidGrant);
  });

  test('client_credentials with client_secret_post', T, async () => {
    const tokens = await client.clientCredentialsGrant(webPost);
    assert.ok(tokens.access_token);
    assert.equal(tokens.token_type.toLowerCase(), 'bearer');
    assert.equal(tokens.refresh_token, undefined);
    state.service = tokens;
  });

  test('introspection is active until revocation (access and refresh tokens)', T, async () => {
    const access = state.service.access_token;
    const before = await client.tokenIntrospection(web, access);
    assert.equal(before.active, true);
    assert.equal(before.client_id, web.clientMetadata().client_id);
    await client.tokenRevocation(web, access);
    assert.equal((await client.tokenIntrospection(web, access)).active, false);

    // A fresh refresh token from the live session (prompt=consent again).
    const { tokens, submitted } = await codeFlow(web, { browser: jar, extra: { prompt: 'consent' } });
    assert.ok(!submitted.includes('login'), 'no login with a live session');
    const user = await client.tokenIntrospection(web, tokens.access_token);
    assert.equal(user.active, true);
    assert.equal(user.sub, state.sub);
    assert.equal((await client.tokenIntrospection(web, tokens.refresh_token)).active, true);
    await client.tokenRevocation(web, tokens.refresh_token, { token_type_hint: 'refresh_token' });
    assert.equal((await client.tokenIntrospection(web, tokens.refresh_token)).active, false);
    await assert.rejects(client.refreshTokenGrant(web, tokens.refresh_token), isInvalidGrant);
    state.idToken = tokens.id_token;
  });

  test('RP-initiated logout ends the session; prompt=none then gives login_required', T, async () => {
    const postLogout = target.clients.web.postLogoutRedirectUris[0];
    const logoutState = client.randomState();
    const endSession = client.buildEndSessionUrl(web, {
      id_token_hint: state.idToken,
      post_logout_redirect_uri: postLogout,
      state: logoutState,
    });
    const { url } = await browse(endSession, {
      jar, isDone: startsWith(postLogout), username: USER.username, password: USER.password,
    });
    assert.equal(url.searchParams.get('state'), logoutState);

    const redirectUri = target.clients.web.redirectUris[0];
    const authState = client.randomState();
    const verifier = client.randomPKCECodeVerifier();
    const authUrl = client.buildAuthorizationUrl(web, {
      redirect_uri: redirectUri,
      scope: 'openid',
      prompt: 'none',
      state: authState,
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    const { url: back } = await browse(authUrl, { jar, isDone: startsWith(redirectUri), maxSteps: 5 });
    assert.equal(back.searchParams.get('error'), 'login_required');
    assert.equal(back.searchParams.get('state'), authState);
    assert.equal(back.searchParams.get('code'), null);
  });
});
