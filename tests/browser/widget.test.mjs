// The public search widget, embedded in a government website served from
// another origin, in headless Chromium.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, test } from 'node:test';
import { ENTRIES, eventually, launchChromium, startHub } from './lib.mjs';

let hub;
let site;
let siteUrl;
let browser;

before(async () => {
  site = createServer();
  await new Promise((r) => site.listen(0, '127.0.0.1', r));
  siteUrl = `http://127.0.0.1:${site.address().port}`;
  hub = await startHub(['--kb-cors-origin', siteUrl]);
  site.on('request', (req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>台州市人民政府门户网站</title></head>
<body><h1>办事服务</h1><div id="kb" data-civichub-kb></div>
<script src="${hub.url}/kb/widget.js" defer></script></body></html>`);
  });
  const out = await hub.importEntries(ENTRIES);
  assert.match(out, /4 loaded/);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await hub?.stop();
  site?.close();
});

test('a citizen searches from the city website and sees highlighted answers', async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(siteUrl);
  const input = page.locator('#kb input[type=search]');
  await input.waitFor();
  // The index follows the import within a second; retry the search until it answers.
  await eventually(async () => {
    await input.fill('公积金提取');
    await input.press('Enter');
    await page.waitForFunction(() => !/正在搜索/.test(document.querySelector('#kb .kb-status').textContent));
    return (await page.locator('#kb .kb-hit').count()) > 0;
  });
  const titles = await page.locator('#kb .kb-title').allTextContents();
  assert.equal(titles[0], '住房公积金提取需要哪些材料？');
  const marked = await page.locator('#kb .kb-hit').first().locator('em').allTextContents();
  assert.ok(marked.some((t) => t.includes('公积金')), `highlighted: ${marked}`);
  assert.match(await page.locator('#kb .kb-status').textContent(), /共找到 \d+ 条/);
  await page.screenshot({ path: process.env.SCREENSHOT_DIR ? `${process.env.SCREENSHOT_DIR}/widget.png` : '/tmp/civichub-widget.png' });

  // Internal entries never reach the public widget.
  await input.fill('欠薪');
  await input.press('Enter');
  await page.waitForFunction(() => /没有找到|共找到/.test(document.querySelector('#kb .kb-status').textContent));
  assert.equal(await page.locator('#kb .kb-hit').count(), 0);

  // Entry text is shown as text, never run as markup.
  await input.fill('灵活就业');
  await input.press('Enter');
  await page.locator('#kb .kb-hit').first().waitFor();
  assert.match(await page.locator('#kb .kb-snippet').first().textContent(), /<script>|灵活就业/);

  // A refusal is explained to the citizen in Chinese, not in the API's English.
  await input.fill('！？');
  await input.press('Enter');
  await page.waitForFunction(() => /关键词|失败/.test(document.querySelector('#kb .kb-status').textContent));
  assert.equal(await page.locator('#kb .kb-status').textContent(), '请换用更简短的关键词再试');
  assert.deepEqual(errors, []);
});
