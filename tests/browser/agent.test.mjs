// The agent search page behind single sign-on, in headless Chromium.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ENTRIES, eventually, launchChromium, startHub } from './lib.mjs';

let hub;
let browser;

before(async () => {
  hub = await startHub();
  await hub.run(['user', 'add', 'agent01', '--password-stdin', '--name', '话务员甲', '--role', 'agent'], 'agent-password-1\n');
  await hub.importEntries(ENTRIES);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await hub?.stop();
});

test('an agent signs in once, searches with facets and opens an entry', async () => {
  const page = await browser.newPage();
  await page.goto(`${hub.url}/kb?q=${encodeURIComponent('公积金')}`);
  // No session yet: the SSO login page, then back to the search.
  await page.locator('input[name=username]').fill('agent01');
  await page.locator('input[name=password]').fill('agent-password-1');
  await page.locator('form button[type=submit]').click();
  await page.waitForURL(/\/kb\?q=/);
  await eventually(async () => {
    await page.reload();
    return (await page.locator('.hit').count()) >= 2;
  });
  assert.match(await page.locator('header .who').textContent(), /话务员甲/);
  assert.ok((await page.locator('.hit .snippet em').count()) > 0, 'matched words are highlighted');
  await page.screenshot({ path: process.env.SCREENSHOT_DIR ? `${process.env.SCREENSHOT_DIR}/agent-search.png` : '/tmp/civichub-agent-search.png', fullPage: true });

  // Facets narrow the results.
  await page.locator('.facets a', { hasText: '台州市住房公积金管理中心' }).click();
  await page.waitForURL(/department=/);
  assert.equal(await page.locator('#total').textContent(), '2');

  // A filter stays while searching again, until it is cleared.
  await page.locator('.facets a', { hasText: '清除筛选' }).click();
  await page.waitForURL((url) => !url.search.includes('department='));

  // Internal entries are there for agents.
  await page.locator('.search input[name=q]').fill('欠薪');
  await page.locator('.search button').click();
  await page.waitForURL(/q=%E6%AC%A0%E8%96%AA/);
  await page.locator('.hit .title', { hasText: '欠薪类诉求派单口径' }).click();
  await page.waitForURL(/\/kb\/entries\/kb-b-3\?q=/);
  assert.equal(await page.locator('article h1').textContent(), '欠薪类诉求派单口径');
  assert.match(await page.locator('article .meta').first().textContent(), /内部/);
  // Back to the same results, without script.
  await page.locator('a', { hasText: '返回检索结果' }).click();
  await page.waitForURL(/\/kb\?q=%E6%AC%A0%E8%96%AA$/);
  assert.ok((await page.locator('.hit').count()) >= 1);
});
