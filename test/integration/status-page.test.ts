/// <reference lib="dom" />
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { type Browser, type Page, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectApi, nodeTokens } from '../harness/api.js';
import { type GatewayCluster, startGatewayCluster } from '../harness/gateway-cluster.js';
import { unaryCall } from '../harness/grpc.js';
import { REPO_ROOT, runCli } from '../harness/server.js';

/**
 * The coordinator's status page in a real browser (Debian's chromium,
 * driven by playwright-core) against a real cluster: two nodes with their
 * gateways and Dovecots, two tenants. Screenshots go to
 * test-artifacts/status-page/.
 */
const CHROMIUM = process.env.MAILSHARE_CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = path.join(REPO_ROOT, 'test-artifacts', 'status-page');
const USERS = { alice: 'alice-pw', bob: 'bob-pw', dave: 'dave-pw' };
const MOVERS = Array.from({ length: 40 }, (_, i) => `user${i}`);
let cluster: GatewayCluster;
let browser: Browser;
let base: string;
let tenantAdminToken: string;
let nodeToken: string;

beforeAll(async () => {
  cluster = await startGatewayCluster({ nodes: ['n1', 'n2'], users: USERS, tenant: true, serverFlags: { httpListen: '127.0.0.1:0' } });
  base = `http://${cluster.server.httpAddress}`;
  const admin = connectApi(cluster.server.address, cluster.server.adminToken);
  try {
    await admin.directory.addTenantDomain({ tenant: 'acme', domain: 'acme.test' });
    await admin.directory.createTenant({ id: 'globex', domains: ['globex.test'] });
    await admin.mailbox.createMailbox({ tenant: 'acme', owner: 'alice', name: 'Team', actor: '' });
    await admin.directory.setGroupMembers({ tenant: 'acme', name: 'team', members: ['bob'], expectedRevision: 0 });
    await admin.acl.setAcl({ tenant: 'acme', mailbox: 'alice/Team', identifier: 'group:team', rights: 'lr', expectedRevision: 0, actor: '' });
    await admin.acl.setAcl({ tenant: 'acme', mailbox: 'alice/Team', identifier: 'bob', rights: 'ls', expectedRevision: 0, actor: '' });
    await admin.acl.setAcl({ tenant: 'acme', mailbox: 'alice/Team', identifier: '-anyone', rights: 's', expectedRevision: 0, actor: '' });
    await admin.mailbox.createMailbox({ tenant: 'globex', owner: 'dave', name: 'Secret', actor: '' });
    tenantAdminToken = (await admin.auth.createToken({ role: 'tenant-admin:acme', description: 'status page test' })).token;
    nodeToken = await nodeTokens(admin)('n1');
  } finally {
    admin.close();
  }
  await cluster.pin('alice', 'n2');
  for (const u of MOVERS) await cluster.pin(u, 'n1');
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
}, 120_000);
afterAll(async () => {
  await browser?.close();
  await cluster?.stop();
});

async function signIn(token: string): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${base}/`);
  await page.fill('#token', token);
  await page.click('#login-form button');
  await page.waitForSelector('#tenants tbody tr');
  return page;
}

const text = async (page: Page, selector: string): Promise<string> => (await page.textContent(selector)) ?? '';

describe('status page (chromium)', () => {
  it('is there: chromium and the page', () => {
    expect(existsSync(CHROMIUM), `${CHROMIUM} (Debian's chromium; scripts/setup.sh installs it)`).toBe(true);
  });

  it('shows both nodes with their users against the capacity, the tenants with their counts, and keeps the token out of the URL', async () => {
    const page = await signIn(cluster.server.adminToken);
    await page.waitForSelector('#nodes tbody tr[data-node="n2"]');
    expect(await page.locator('#nodes tbody tr').count()).toBe(2);
    expect(await page.getAttribute('#nodes tr[data-node="n1"]', 'data-state')).toBe('active');
    // users / bounded-load capacity: (1 + 0.25) × (41 + 1) × ½ → 27 each.
    expect(await text(page, '#nodes tr[data-node="n1"] td:nth-child(5)')).toBe('40 / 27');
    expect(await text(page, '#nodes tr[data-node="n2"] td:nth-child(5)')).toBe('1 / 27');
    expect(await text(page, '#nodes tr[data-node="n1"] td:nth-child(6)')).toMatch(/^[1-5] s$/);
    expect(await text(page, '#tenants tr[data-tenant="acme"]')).toMatch(/^acmeacme\.test1141$/);
    expect(await text(page, '#tenants tr[data-tenant="globex"]')).toMatch(/^globexglobex\.test100$/);
    expect(await text(page, '#who')).toBe('admin');
    expect(page.url()).toBe(`${base}/`);
    expect(await page.evaluate(() => sessionStorage.getItem('mailshare-token'))).toBe(cluster.server.adminToken);
    await page.screenshot({ path: path.join(ARTIFACTS, '1-nodes.png'), fullPage: true });
    await page.context().close();
  });

  it('answers a lookup: where the user is, which shares they see, with which rights, and why', async () => {
    const page = await signIn(cluster.server.adminToken);
    await page.fill('#lookup-user', 'bob@acme.test');
    await page.click('#lookup-form button');
    await page.waitForSelector('#shares tr[data-mailbox="alice/Team"]');
    const share = await text(page, '#shares tr[data-mailbox="alice/Team"]');
    // lr from group:team, s from bob, minus s from -anyone: lr; served by alice's node.
    expect(share).toBe('alice/Teamlrls from bob; lr from group:team; minus s from -anyone (taken away: s)n2');
    expect(await text(page, '#lookup')).toMatch(/bob of tenant acme: not assigned to any node now/);
    expect(await text(page, '#lookup')).toMatch(/member of group:team/);
    await page.fill('#lookup-user', 'nobody@nowhere.test');
    await page.click('#lookup-form button');
    await page.waitForSelector('.lookup-error');
    expect(await text(page, '.lookup-error')).toMatch(/no tenant of yours has the domain nowhere\.test/);
    await page.screenshot({ path: path.join(ARTIFACTS, '2-lookup.png'), fullPage: true });
    await page.context().close();
  });

  it('shows a drain started from the CLI live: the node turns draining and its users leave, without a reload', async () => {
    const page = await signIn(cluster.server.adminToken);
    await page.waitForSelector('#nodes tr[data-node="n1"][data-state="active"]');
    // Every text the progress line shows, as it changes.
    await page.evaluate(() => {
      const seen: string[] = [];
      (window as unknown as { seen: string[] }).seen = seen;
      new MutationObserver(() => {
        const t = document.querySelector('.drain[data-node="n1"] .drain-progress')?.textContent;
        if (t && seen[seen.length - 1] !== t) seen.push(t);
      }).observe(document.getElementById('drains')!, { childList: true, subtree: true, characterData: true });
    });
    const drained = runCli(['node', 'drain', 'n1', '--parallel', '1'], { env: { MAILSHARE_ADDR: cluster.server.address, MAILSHARE_TOKEN: cluster.server.adminToken } });
    await page.waitForSelector('#nodes tr[data-node="n1"][data-state="draining"]', { timeout: 20_000 });
    const r = await drained;
    expect(r.code, r.stderr).toBe(0);
    await page.waitForFunction(() => /^0 of \d+ users left \(100% moved\)$/.test(document.querySelector('.drain[data-node="n1"] .drain-progress')?.textContent ?? ''), undefined, { timeout: 20_000 });
    const seen = await page.evaluate(() => (window as unknown as { seen: string[] }).seen);
    // It moved on its own, through states between the start and the end.
    expect(seen.length).toBeGreaterThan(2);
    expect(seen.some((t) => /^([1-9]\d*) of \d+ users left/.test(t))).toBe(true);
    expect(await text(page, '#nodes tr[data-node="n1"] td:nth-child(5)')).toBe('0 / 0');
    // The last user may be between its old node's release and its new assignment at that refresh.
    await page.waitForFunction(() => /^41 \/ \d+$/.test(document.querySelector('#nodes tr[data-node="n2"] td:nth-child(5)')?.textContent ?? ''), undefined, { timeout: 10_000 });
    // The event stream showed the moves as they happened.
    expect(await text(page, '#events')).toMatch(/assignment acme\/user\d+/);
    await page.screenshot({ path: path.join(ARTIFACTS, '3-drain.png'), fullPage: true });
    await page.context().close();
    await unaryCall(cluster.placement.setNodeState.bind(cluster.placement), { name: 'n1', state: 'active' }, cluster.server.adminToken);
  }, 60_000);

  it('shows a tenant admin their tenant only', async () => {
    const page = await signIn(tenantAdminToken);
    expect(await text(page, '#who')).toBe('tenant admin of acme');
    expect(await page.locator('#tenants tbody tr').count()).toBe(1);
    expect(await page.locator('#tenants tr[data-tenant="globex"]').count()).toBe(0);
    expect(await page.isHidden('#nodes-section')).toBe(true);
    await page.fill('#lookup-user', 'dave@globex.test');
    await page.click('#lookup-form button');
    await page.waitForSelector('.lookup-error');
    expect(await text(page, '.lookup-error')).toMatch(/no tenant of yours has the domain globex\.test/);
    await page.fill('#lookup-user', 'bob@acme.test');
    await page.click('#lookup-form button');
    await page.waitForSelector('#shares tr[data-mailbox="alice/Team"]');
    // Straight at the API with the same token: the other tenant is refused.
    const other = await page.evaluate(async (token) => (await fetch('/api/lookup?tenant=globex&user=dave', { headers: { authorization: `Bearer ${token}` } })).status, tenantAdminToken);
    expect(other).toBe(403);
    await page.screenshot({ path: path.join(ARTIFACTS, '4-tenant-admin.png'), fullPage: true });
    await page.click('#logout');
    expect(await page.evaluate(() => sessionStorage.getItem('mailshare-token'))).toBeNull();
    expect(await page.isVisible('#login')).toBe(true);
    await page.context().close();
  });
});

describe('status API', () => {
  const get = async (p: string, token?: string): Promise<{ status: number; body: Record<string, unknown> }> => {
    const res = await fetch(`${base}${p}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  it('needs an admin or tenant-admin token, in the header', async () => {
    expect((await get('/api/overview')).status).toBe(401);
    expect((await get('/api/overview', 'mst_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA')).status).toBe(401);
    const node = await get('/api/overview', nodeToken);
    expect(node.status).toBe(403);
    expect(node.body.error).toMatch(/^token: node tokens cannot read the status page/);
    expect((await get('/api/lookup?user=', cluster.server.adminToken)).body).toEqual({ error: 'user: give a user (alice@acme.test, or alice with a tenant)', field: 'user' });
    expect((await get('/api/lookup?user=Bad%20Name&tenant=acme', cluster.server.adminToken)).status).toBe(400);
    const page = await fetch(`${base}/`);
    expect(page.headers.get('content-security-policy')).toMatch(/script-src 'self'/);
  });
});
