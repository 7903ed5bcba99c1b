// Passkeys in headless Chromium with a virtual authenticator (Chrome DevTools
// Protocol, WebAuthn domain): register one on the account page, sign out,
// sign in without a password, and reach a relying party (openid-client)
// whose ID token says a hardware- or software-secured key was used.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createServer } from 'node:http';
import * as client from 'openid-client';
import { freePort, launchChromium, startHub } from './lib.mjs';

// WebAuthn needs a domain name: browsers refuse IP addresses as RP IDs.
let hub;
let base;
let browser;
let CALLBACK; // the relying party's redirect URI, on a small local server
let rpServer;
const callbacks = [];

before(async () => {
  rpServer = createServer((req, res) => {
    const url = new URL(req.url, CALLBACK);
    if (url.pathname === '/callback') callbacks.push(url);
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end('relying party');
  });
  await new Promise((r) => rpServer.listen(0, '127.0.0.1', r));
  CALLBACK = `http://127.0.0.1:${rpServer.address().port}/callback`;
  const port = await freePort();
  base = `http://localhost:${port}`;
  hub = await startHub(['--listen', `127.0.0.1:${port}`, '--issuer', base]);
  await hub.run(['user', 'add', 'keyuser', '--password-stdin', '--name', '密钥用户'], 'keyuser-password-1\n');
  await hub.run(['client', 'add', 'rp-passkey', '--public', '--first-party', '--redirect-uri', CALLBACK]);
  await hub.run(['user', 'add', 'newcomer', '--password-stdin', '--name', '新同事'], 'newcomer-password-1\n');
  await hub.run(['client', 'add', 'rp-strict', '--public', '--first-party', '--require-mfa', '--redirect-uri', CALLBACK]);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await hub?.stop();
  rpServer?.close();
});

let exported; // the registered credential, private key included

// Starts the code flow of the relying party in `page` and waits for the
// browser to come back to it (`before` runs once the provider's page is there).
async function toRelyingParty(page, before = async () => {}, clientId = 'rp-passkey') {
  const rp = await client.discovery(new URL(base), clientId, { redirect_uris: [CALLBACK] }, client.None(), { execute: [client.allowInsecureRequests] });
  const verifier = client.randomPKCECodeVerifier();
  const checks = { pkceCodeVerifier: verifier, expectedState: client.randomState(), expectedNonce: client.randomNonce() };
  const authorize = client.buildAuthorizationUrl(rp, {
    redirect_uri: CALLBACK, scope: 'openid profile', state: checks.expectedState, nonce: checks.expectedNonce,
    code_challenge: await client.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
  });
  await page.goto(authorize.href, { waitUntil: 'commit' });
  await before();
  await page.waitForURL((url) => url.href.startsWith(CALLBACK));
  const callback = callbacks.at(-1);
  assert.ok(callback?.searchParams.get('code'), `no code in ${callback}`);
  return { callback, checks, rp };
}

// A virtual platform authenticator that verifies the user (as a fingerprint
// or device PIN would) and keeps discoverable credentials.
async function virtualAuthenticator(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true },
  });
  return { cdp, authenticatorId };
}

// An authenticator in `page` holding `credential` (as exported by WebAuthn.getCredentials).
async function virtualAuthenticatorWith(page, credential) {
  const { cdp, authenticatorId } = await virtualAuthenticator(page);
  await cdp.send('WebAuthn.addCredential', { authenticatorId, credential });
}

test('a passkey registered on the account page signs in without a password and the relying party sees amr hwk', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const { cdp, authenticatorId } = await virtualAuthenticator(page);

  // Sign in with the password and register a passkey.
  await page.goto(`${base}/account`);
  assert.equal(await page.locator('#username').getAttribute('autocomplete'), 'username webauthn', 'passkeys are offered in the username autofill');
  await page.locator('input[name=username]').fill('keyuser');
  await page.locator('input[name=password]').fill('keyuser-password-1');
  await page.locator('form[action="/login"] button[type=submit]').click();
  await page.waitForURL(`${base}/account`);
  await page.locator('#passkey-name').fill('测试电脑');
  await page.locator('#passkey-add button[type=submit]').click();
  await page.locator('.passkey-row .passkey-name').waitFor();
  assert.equal(await page.locator('.passkey-row .passkey-name').textContent(), '测试电脑');
  assert.equal(await page.locator('.recovery-code').count(), 10, 'the first second factor brings recovery codes, shown once');
  const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  assert.equal(credentials.length, 1);
  assert.ok(credentials[0].isResidentCredential, 'the passkey is discoverable');
  await page.screenshot({ path: `${process.env.SCREENSHOT_DIR ?? '/tmp'}/civichub-passkeys.png`, fullPage: true });

  // Sign out.
  await page.goto(`${base}/end-session`);
  await Promise.all([page.waitForNavigation(), page.locator('button[name=confirm]').click()]);
  assert.match(await page.locator('main').textContent(), /退出/);

  // A relying party sends the browser to the provider. The login page asks
  // for a passkey in the username autofill; the authenticator (present and
  // verifying) answers it, and no password is typed.
  const { callback, checks, rp } = await toRelyingParty(page);
  const tokens = await client.authorizationCodeGrant(rp, callback, { ...checks, idTokenExpected: true });
  const claims = tokens.claims();
  assert.ok(claims.amr.includes('hwk') || claims.amr.includes('swk'), `amr ${claims.amr}`);
  assert.ok(claims.amr.includes('mfa'), 'a user-verifying passkey is multi-factor');
  assert.ok(!claims.amr.includes('pwd'), 'no password was used');
  assert.equal(claims.acr, '2');

  // The account page lists the use and the sign-in.
  await page.goto(`${base}/account`);
  assert.notEqual((await page.locator('.passkey-row td').nth(2).textContent()).trim(), '从未');
  assert.match(await page.locator('.signin .method').first().textContent(), /通行密钥/);
  // Taken now, with the signature counter as it stands: a copy taken before
  // the last use would be refused as a clone.
  exported = (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials[0];
  await context.close();
});

test('after a password, the passkey is the second factor', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  // A fresh browser: the password first (no authenticator yet, so the
  // autofill has nothing to offer), then the second-factor page asks for the
  // passkey, which an authenticator holding the registered credential gives.
  const { callback, checks, rp } = await toRelyingParty(page, async () => {
    await page.locator('input[name=password]').waitFor();
    await page.locator('input[name=username]').fill('keyuser');
    await page.locator('input[name=password]').fill('keyuser-password-1');
    await page.locator('form[action="/login"] button[type=submit]').click();
    await page.waitForURL(/\/login\/mfa/);
    await virtualAuthenticatorWith(page, exported);
    await page.locator('#passkey-verify button[type=submit]').click();
  });
  const claims = (await client.authorizationCodeGrant(rp, callback, { ...checks, idTokenExpected: true })).claims();
  assert.deepEqual([...claims.amr].sort(), ['hwk', 'mfa', 'pwd'], `amr ${claims.amr}`);
  assert.equal(claims.acr, '2');
  await context.close();
});

test('a system that requires two factors has a newcomer add a passkey on the way in', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const { callback, checks, rp } = await toRelyingParty(page, async () => {
    await page.locator('input[name=password]').waitFor();
    await page.locator('input[name=username]').fill('newcomer');
    await page.locator('input[name=password]').fill('newcomer-password-1');
    await page.locator('form[action="/login"] button[type=submit]').click();
    // No second factor yet: the account page asks for one, then leads back.
    await page.locator('#enrol-required').waitFor();
    await virtualAuthenticator(page);
    await page.locator('#passkey-add button[type=submit]').click();
    await page.locator('#continue').click();
    // Back at the system's request: only the second factor is asked for.
    await page.waitForURL(/\/login\/mfa/);
    await page.locator('#passkey-verify button[type=submit]').click();
  }, 'rp-strict');
  const claims = (await client.authorizationCodeGrant(rp, callback, { ...checks, idTokenExpected: true })).claims();
  assert.deepEqual([...claims.amr].sort(), ['hwk', 'mfa', 'pwd'], `amr ${claims.amr}`);
  assert.equal(claims.acr, '2');
  await context.close();
});
