// The hotline's OpenAPI description, checked by an OpenAPI parser we did
// not write (@readme/openapi-parser), and held against the running hub:
// every documented operation exists and answers with a documented status.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { validate } from '@readme/openapi-parser';
import { startTarget } from './lib/civichub.mjs';

let hub;
let spec;

before(async () => {
  hub = await startTarget({
    user: { username: 'agent', password: 'agent-password-1', name: 'Agent', email: 'a@example.test', phone: '13800000001', department: '热线中心', roles: ['agent'] },
    clients: [],
  });
  const r = await fetch(`${hub.issuer}/api/openapi.json`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /application\/json/);
  spec = await r.json();
});

after(async () => {
  await hub?.stop();
});

test('the description is valid OpenAPI 3.1', async () => {
  const result = await validate(structuredClone(spec));
  assert.equal(result.valid, true, JSON.stringify(result.errors ?? result, null, 1));
  assert.equal(spec.openapi, '3.1.0');
});

test('every documented operation exists and answers with a documented status', async () => {
  const number = '12345-20260101-000001';
  let checked = 0;
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const url = `${hub.issuer}${path.replace('{number}', number)}`;
      const init = { method: method.toUpperCase() };
      if (method === 'post') {
        init.headers = { 'content-type': 'application/json' };
        init.body = '{}';
      }
      const r = await fetch(url, init);
      const documented = Object.keys(op.responses);
      assert.ok(documented.includes(String(r.status)), `${method.toUpperCase()} ${path} answered ${r.status}, documented: ${documented}`);
      const secured = !(Array.isArray(op.security) && op.security.length === 0);
      if (secured) {
        assert.equal(r.status, 401, `${method.toUpperCase()} ${path} needs a bearer token`);
        assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer/);
      }
      checked += 1;
    }
  }
  assert.ok(checked >= 18, `${checked} operations`);
});

test('the public form answers as documented', async () => {
  const op = spec.paths['/api/public/hotline/tickets'].post;
  const r = await fetch(`${hub.issuer}/api/public/hotline/tickets`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ content: '小区路灯不亮', caller_phone: '13912345678' }),
  });
  assert.equal(r.status, 201);
  const body = await r.json();
  for (const key of op.responses['201'].content['application/json'].schema.required) {
    assert.ok(key in body, `${key} in ${JSON.stringify(body)}`);
  }
  const lookup = await fetch(`${hub.issuer}/api/public/hotline/tickets/${body.number}?phone_last4=5678`);
  assert.equal(lookup.status, 200);
  const seen = await lookup.json();
  const schema = spec.paths['/api/public/hotline/tickets/{number}'].get.responses['200'].content['application/json'].schema;
  for (const key of schema.required) assert.ok(key in seen, `${key} in ${JSON.stringify(seen)}`);
  assert.ok(spec.components.schemas.Status.enum.includes(seen.status));
});
