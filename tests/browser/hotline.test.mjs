// The hotline's pages behind single sign-on, in headless Chromium: an agent
// registers a ticket with the knowledge base beside the form and dispatches
// it; the department signs for it, asks for more time and replies; a
// supervisor decides the extension and a return; a leader reads the dashboard.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ENTRIES, launchChromium, startHub } from './lib.mjs';

let hub;
let browser;

before(async () => {
  hub = await startHub();
  await hub.run(['user', 'add', 'agent02', '--password-stdin', '--name', '话务员乙', '--role', 'agent'], 'agent-password-2\n');
  await hub.run(['user', 'add', 'clerk', '--password-stdin'], 'clerk-password-1\n');
  await hub.run(['user', 'add', 'handler01', '--password-stdin', '--name', '城管办理员', '--role', 'handler', '--department', '城管局'], 'handler-password-1\n');
  await hub.run(['user', 'add', 'super01', '--password-stdin', '--name', '督办员', '--role', 'supervisor'], 'super-password-1\n');
  await hub.run(['user', 'add', 'leader01', '--password-stdin', '--name', '王局长', '--role', 'leader'], 'leader-password-1\n');
  await hub.importEntries(ENTRIES);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await hub?.stop();
});

let dispatched;
const shot = (name) => (process.env.SCREENSHOT_DIR ? `${process.env.SCREENSHOT_DIR}/${name}.png` : `/tmp/civichub-${name}.png`);

async function signIn(page, username, password, path = '/hotline') {
  await page.goto(`${hub.url}${path}`);
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
  await page.screenshot({ path: shot('hotline-workbench'), fullPage: true });

  // The directory's departments are offered when dispatching.
  assert.equal(await page.locator('datalist#departments option[value="城管局"]').count(), 1);

  // Dispatch: the ticket leaves the queue and shows as waiting for the department to sign.
  await item.locator('input[name=department]').fill('城管局');
  await item.locator('form.dispatch button').click();
  await page.waitForURL(/done=dispatch/);
  dispatched = number;
  assert.match(await page.locator('.notice').textContent(), /已派至城管局/);
  assert.equal(await page.locator(`.ticket[data-number="${number}"]`).count(), 0);
  const rowEl = page.locator(`.recent tr[data-number="${number}"]`);
  assert.equal(await rowEl.locator('.status').textContent(), '待签收');
  assert.match(await rowEl.textContent(), /城管局/);

  // An empty form is refused with a message, and nothing is registered.
  await page.locator('form#register textarea[name=content]').evaluate((el) => { el.removeAttribute('required'); });
  await page.locator('form#register input[name=caller_name]').fill('李大姐');
  await page.locator('form#register input[name=location]').fill('东门菜场');
  await page.locator('form#register select[name=urgency]').selectOption('urgent');
  await page.locator('form#register button[type=submit]').click();
  await page.locator('.error').waitFor();
  assert.equal(await page.locator('.error').textContent(), '未能登记：诉求内容不能为空');
  // What the agent typed is still there, to complete and send again.
  assert.equal(await page.locator('form#register input[name=caller_name]').inputValue(), '李大姐');
  assert.equal(await page.locator('form#register input[name=location]').inputValue(), '东门菜场');
  assert.equal(await page.locator('form#register select[name=urgency]').inputValue(), 'urgent');
});

test('the workbench is for agents only', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, 'clerk', 'clerk-password-1');
  await page.waitForURL(/\/hotline$/);
  assert.match(await page.locator('body').textContent(), /没有话务员/);
  await context.close();
});

test('the department signs for the ticket, asks for more time and replies; a supervisor decides', async () => {
  assert.ok(dispatched, 'the workbench test dispatched a ticket');
  const handler = await (await browser.newContext()).newPage();
  await signIn(handler, 'handler01', 'handler-password-1', '/hotline/department');
  await handler.waitForURL(/\/hotline\/department$/);
  assert.match(await handler.locator('h1').textContent(), /城管局/);
  const card = handler.locator(`#to-sign .ticket[data-number="${dispatched}"]`);
  assert.match(await card.locator('.content').textContent(), /路灯不亮/);
  assert.match(await card.textContent(), /139\*\*\*\*5678/, 'the caller is masked for departments');
  assert.doesNotMatch(await card.textContent(), /13912345678/);

  // Sign: the ticket moves to 办理中.
  await card.locator('button[value=accept]').click();
  await handler.waitForURL(/done=accept/);
  assert.match(await handler.locator('.notice').textContent(), /已签收/);
  const handling = handler.locator(`#in-progress .ticket[data-number="${dispatched}"]`);
  assert.equal(await handling.count(), 1);

  // Ask for three more working days.
  await handling.locator('form[action$="/extend"] input[name=reason]').fill('需协调供电公司检修线路');
  await handling.locator('form[action$="/extend"] button').click();
  await handler.waitForURL(/done=extend/);
  assert.match(await handler.locator(`#in-progress .ticket[data-number="${dispatched}"] .flag`).textContent(), /3 个工作日/);
  await handler.screenshot({ path: shot('hotline-department'), fullPage: true });

  // The supervisor approves it.
  const supervisor = await (await browser.newContext()).newPage();
  await signIn(supervisor, 'super01', 'super-password-1', '/hotline/supervise');
  await supervisor.waitForURL(/\/hotline\/supervise$/);
  const request = supervisor.locator(`#extensions .ticket[data-number="${dispatched}"]`);
  assert.match(await request.textContent(), /需协调供电公司检修线路/);
  await request.locator('input[name=note]').fill('同意');
  await request.locator('button[name=approve][value=true]').click();
  await supervisor.waitForURL(/done=review-extension/);
  assert.equal(await supervisor.locator(`#extensions .ticket[data-number="${dispatched}"]`).count(), 0);

  // The department replies; the ticket leaves its open lists.
  await handler.goto(`${hub.url}/hotline/department`);
  const again = handler.locator(`#in-progress .ticket[data-number="${dispatched}"]`);
  assert.equal(await again.locator('.flag').count(), 0, 'no extension pending any more');
  await again.locator('textarea[name=text]').fill('已更换路灯灯具，恢复照明。');
  await again.locator('form[action$="/reply"] button').click();
  await handler.waitForURL(/done=reply/);
  assert.equal(await handler.locator(`.ticket[data-number="${dispatched}"]`).count(), 0);

  // A second ticket is returned, and the supervisor re-dispatches it.
  const agent = await (await browser.newContext()).newPage();
  await signIn(agent, 'agent02', 'agent-password-2');
  await agent.waitForURL(/\/hotline$/);
  await agent.locator('form#register textarea[name=content]').fill('江边绿道积水严重');
  await agent.locator('form#register button[type=submit]').click();
  await agent.waitForURL(/registered=/);
  const second = new URL(agent.url()).searchParams.get('registered');
  const queued = agent.locator(`.ticket[data-number="${second}"]`);
  await queued.locator('input[name=department]').fill('城管局');
  await queued.locator('form.dispatch button').click();
  await agent.waitForURL(/done=dispatch/);

  await handler.goto(`${hub.url}/hotline/department`);
  const toReturn = handler.locator(`#to-sign .ticket[data-number="${second}"]`);
  await toReturn.locator('input[name=reason]').fill('职能交叉：绿道属水利局管养');
  await toReturn.locator('form[action$="/return"] button').click();
  await handler.waitForURL(/done=return/);
  assert.equal(await handler.locator(`#returned .ticket[data-number="${second}"]`).count(), 1);

  await supervisor.goto(`${hub.url}/hotline/supervise`);
  const returned = supervisor.locator(`#returns .ticket[data-number="${second}"]`);
  assert.match(await returned.locator('.flag').textContent(), /水利局/);
  await returned.locator('input[name=department]').fill('水利局');
  await returned.locator('form:has(input[value=redispatch]) button').click();
  await supervisor.waitForURL(/done=review-return/);
  await supervisor.screenshot({ path: shot('hotline-supervise'), fullPage: true });

  // Refusals are shown on the page: a handler cannot sign for another department's ticket.
  await handler.goto(`${hub.url}/hotline/department`);
  assert.equal(await handler.locator(`.ticket[data-number="${second}"]`).count(), 0, 'gone to 水利局');
  assert.equal(await handler.locator('nav.pages a').count(), 1, 'a handler sees only the department page');
});

test('the leaders\' dashboard shows the KPIs and their charts', async () => {
  const page = await (await browser.newContext()).newPage();
  await signIn(page, 'leader01', 'leader-password-1', '/hotline/dashboard');
  await page.waitForURL(/\/hotline\/dashboard$/);
  assert.equal(await page.locator('[data-kpi=total] .value').textContent(), '2');
  assert.equal(await page.locator('[data-kpi=on_time_reply_rate] .value').textContent(), '100.0%');
  // Thirty days of bars, today's the tallest, and three series of daily rates.
  assert.equal(await page.locator('svg.chart').first().locator('rect.col').count(), 30);
  assert.match(await page.locator('svg.chart rect.col').last().locator('title').textContent(), /：2$/);
  assert.ok((await page.locator('svg.chart circle.dot').count()) >= 1);
  assert.match(await page.locator('#by-department').textContent(), /城管局/);
  // The bars are SVG rectangles sized by attribute (inline styles are refused by the CSP).
  const widths = await page.locator('#by-channel svg.hbar rect').evaluateAll((rects) => rects.map((r) => r.getBoundingClientRect().width));
  assert.ok(widths.length >= 1 && Math.max(...widths) > 0, `bars drawn: ${widths}`);
  assert.match(await page.locator('#by-channel').textContent(), /电话/);
  await page.screenshot({ path: shot('hotline-dashboard'), fullPage: true });

  // Another period; a bad one falls back with a message.
  await page.locator('input[name=from]').fill('2026-01-01');
  await page.locator('input[name=to]').fill('2026-01-07');
  await page.locator('.period button').click();
  await page.waitForURL(/from=2026-01-01/);
  assert.equal(await page.locator('[data-kpi=total] .value').textContent(), '0');
  assert.equal(await page.locator('svg.chart').first().locator('rect.col').count(), 7);
  await page.goto(`${hub.url}/hotline/dashboard?from=2026-02-01&to=2026-01-01`);
  assert.match(await page.locator('.error').textContent(), /开始日期晚于结束日期，已显示最近 30 天/);
  // An emptied date box is not an error: that end of the period takes its default.
  await page.goto(`${hub.url}/hotline/dashboard?from=&to=`);
  assert.equal(await page.locator('.error').count(), 0);

  // Agents do not see it.
  const agent = await (await browser.newContext()).newPage();
  await signIn(agent, 'agent02', 'agent-password-2', '/hotline/dashboard');
  await agent.waitForURL(/\/hotline\/dashboard$/);
  assert.match(await agent.locator('body').textContent(), /领导驾驶舱供领导和督办人员使用/);
});

test('the agent calls the citizen back and closes the ticket, and answers another at once', async () => {
  assert.ok(dispatched, 'the workbench test dispatched a ticket');
  const page = await (await browser.newContext()).newPage();
  await signIn(page, 'agent02', 'agent-password-2');
  await page.waitForURL(/\/hotline$/);

  // The department's answer waits for the callback (回访).
  const replied = page.locator(`.callbacks .ticket[data-number="${dispatched}"]`);
  assert.match(await replied.locator('.reply').textContent(), /已更换路灯灯具/);
  await replied.locator('select[name=rating]').selectOption('unsatisfied');
  await replied.locator('input[name=note]').fill('仍有一盏不亮');
  await replied.locator('form.callback button').click();
  await page.waitForURL(/done=callback/);
  assert.match(await page.locator('.notice').textContent(), /回访/);

  // Called back, not satisfied: it may be handed back (重办) or closed (办结).
  const visited = page.locator(`.closing .ticket[data-number="${dispatched}"]`);
  assert.match(await visited.textContent(), /不满意/);
  assert.equal(await visited.locator('form.reopen').count(), 1);
  await visited.locator('form.close button').click();
  await page.waitForURL(/done=close/);
  assert.equal(await page.locator(`.closing .ticket[data-number="${dispatched}"]`).count(), 0);
  assert.equal(await page.locator(`.recent tr[data-number="${dispatched}"] .status`).textContent(), '已办结');

  // A question the knowledge base answers is answered on the spot (即办) and closed.
  await page.locator('form#register textarea[name=content]').fill('公积金提取需要哪些材料？');
  await page.locator('form#register button[type=submit]').click();
  await page.waitForURL(/registered=/);
  const asked = new URL(page.url()).searchParams.get('registered');
  const waiting = page.locator(`.ticket[data-number="${asked}"]`);
  await waiting.locator('details.more summary', { hasText: '即办' }).click();
  await waiting.locator('textarea[name=answer]').fill('携带身份证和购房合同到公积金中心办理。');
  await waiting.locator('form.answer button').click();
  await page.waitForURL(/done=answer-directly/);
  assert.equal(await page.locator(`.recent tr[data-number="${asked}"] .status`).textContent(), '已办结');
  await page.screenshot({ path: shot('hotline-callbacks'), fullPage: true });
});
