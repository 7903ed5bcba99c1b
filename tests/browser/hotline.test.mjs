// The hotline agents' workbench behind single sign-on, in headless Chromium:
// register a ticket with the knowledge base beside the form, then dispatch it.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ENTRIES, launchChromium, startHub } from './lib.mjs';

let hub;
let browser;

before(async () => {
  hub = await startHub();
  await hub.run(['user', 'add', 'agent02', '--password-stdin', '--name', '话务员乙', '--role', 'agent'], 'agent-password-2\n');
  await hub.run(['user', 'add', 'clerk', '--password-stdin'], 'clerk-password-1\n');
  await hub.importEntries(ENTRIES);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await hub?.stop();
});

async function signIn(page, username, password) {
  await page.goto(`${hub.url}/hotline`);
  await page.locator('input[name=username]').fill(username);
  await page.locator('input[name=password]').fill(password);
  await page.locator('form button[type=submit]').click();
}

test('an agent registers a ticket and dispatches it from the workbench', async () => {
  const page = await browser.newPage();
  await signIn(page, 'agent02', 'agent-password-2');
  await page.waitForURL(/\/hotline$/);
  assert.match(await page.locator('header .who').textContent(), /话务员乙/);
  assert.equal(await page.locator('#waiting').textContent(), '0');

  // The knowledge base answers beside the form.
  await page.locator('.kbsearch input[name=q]').fill('公积金');
  await page.locator('.kbsearch button').click();
  const kb = page.frameLocator('iframe[name=kb]');
  await kb.locator('.hit').first().waitFor();
  assert.ok((await kb.locator('.hit').count()) >= 2, 'knowledge-base hits in the frame');

  // Register.
  const form = page.locator('form#register');
  await form.locator('select[name=channel]').selectOption('phone');
  await form.locator('input[name=caller_name]').fill('王小明');
  await form.locator('input[name=caller_phone]').fill('13912345678');
  await form.locator('textarea[name=content]').fill('幸福小区门口路灯不亮已一周');
  await form.locator('input[name=category]').fill('070101');
  await form.locator('button[type=submit]').click();
  await page.waitForURL(/registered=12345-/);
  const number = new URL(page.url()).searchParams.get('registered');
  assert.match(number, /^12345-\d{8}-\d{6}$/);
  assert.match(await page.locator('.notice').textContent(), new RegExp(number));
  const item = page.locator(`.ticket[data-number="${number}"]`);
  assert.match(await item.locator('.content').textContent(), /路灯不亮/);
  await page.screenshot({ path: process.env.SCREENSHOT_DIR ? `${process.env.SCREENSHOT_DIR}/hotline-workbench.png` : '/tmp/civichub-hotline-workbench.png', fullPage: true });

  // Dispatch: the ticket leaves the queue and shows as waiting for the department to sign.
  await item.locator('input[name=department]').fill('城管局');
  await item.locator('button[type=submit]').click();
  await page.waitForURL(/dispatched=/);
  assert.match(await page.locator('.notice').textContent(), /已派至城管局/);
  assert.equal(await page.locator(`.ticket[data-number="${number}"]`).count(), 0);
  const rowEl = page.locator(`.recent tr[data-number="${number}"]`);
  assert.equal(await rowEl.locator('.status').textContent(), '待签收');
  assert.match(await rowEl.textContent(), /城管局/);

  // An empty form is refused with a message, and nothing is registered.
  await page.locator('form#register textarea[name=content]').evaluate((el) => { el.removeAttribute('required'); });
  await page.locator('form#register button[type=submit]').click();
  await page.locator('.error').waitFor();
  assert.match(await page.locator('.error').textContent(), /content must not be empty|未能登记/);
});

test('the workbench is for agents only', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, 'clerk', 'clerk-password-1');
  await page.waitForURL(/\/hotline$/);
  assert.match(await page.locator('body').textContent(), /没有话务员/);
  await context.close();
});
