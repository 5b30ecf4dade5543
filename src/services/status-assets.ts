/**
 * The status page as served (no framework, no build step): one HTML page,
 * its stylesheet and its script. The script fills the page with
 * textContent only (nothing from the server is parsed as HTML) and keeps
 * the token in sessionStorage, sending it as a header, never in a URL.
 */
export const STATUS_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mailshare status</title>
<link rel="stylesheet" href="/status.css">
<script src="/status.js" defer></script>
</head>
<body>
<header>
  <h1>mailshare</h1>
  <span id="who"></span>
  <button id="logout" type="button" hidden>Forget token</button>
</header>
<main>
  <section id="login">
    <h2>Sign in</h2>
    <p>An admin or tenant-admin token (<code>mailshare token create</code>). It stays in this tab only.</p>
    <form id="login-form">
      <input id="token" type="password" autocomplete="off" placeholder="mst_…" aria-label="token" required>
      <button type="submit">Show status</button>
    </form>
    <p id="login-error" class="error" role="alert"></p>
  </section>
  <div id="status" hidden>
    <p id="error" class="error" role="alert"></p>
    <section id="nodes-section">
      <h2>Nodes</h2>
      <table id="nodes">
        <thead><tr><th>node</th><th>state</th><th>zone</th><th>weight</th><th>users / capacity</th><th>lease left</th><th>addresses</th></tr></thead>
        <tbody></tbody>
      </table>
      <div id="drains"></div>
    </section>
    <section>
      <h2>Tenants</h2>
      <table id="tenants">
        <thead><tr><th>tenant</th><th>domains</th><th>mailboxes</th><th>groups</th><th>users assigned</th></tr></thead>
        <tbody></tbody>
      </table>
    </section>
    <section>
      <h2>Look up a user</h2>
      <form id="lookup-form">
        <input id="lookup-user" placeholder="alice@acme.test" aria-label="user" required>
        <button type="submit">Look up</button>
      </form>
      <div id="lookup"></div>
    </section>
    <section>
      <h2>Events <span id="events-state" class="muted"></span></h2>
      <ol id="events"></ol>
    </section>
  </div>
</main>
</body>
</html>
`;

export const STATUS_CSS = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { display: flex; gap: 1em; align-items: baseline; padding: .6em 1.2em; background: #1d2330; color: #fff; }
header h1 { font-size: 1.2em; margin: 0; }
main { padding: 1em 1.2em; max-width: 1100px; }
section { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: .6em 1em 1em; margin-bottom: 1em; }
h2 { font-size: 1.05em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25em .6em; border-bottom: 1px solid #eceef2; vertical-align: top; }
th { font-weight: 600; color: #5a6270; }
.state-active { color: #16794c; } .state-draining { color: #a35d00; } .state-down { color: #b3261e; }
.bar { display: inline-block; width: 120px; height: 8px; background: #eceef2; border-radius: 4px; margin-right: .5em; vertical-align: middle; }
.bar > span { display: block; height: 100%; background: #3b6fd8; border-radius: 4px; }
.drain { margin-top: .6em; }
.error { color: #b3261e; }
.muted { color: #7a8290; font-weight: normal; }
code, .mono { font-family: ui-monospace, monospace; font-size: .95em; }
#events { max-height: 260px; overflow: auto; font-family: ui-monospace, monospace; font-size: .9em; padding-left: 2.5em; }
input { padding: .3em .5em; min-width: 22em; }
`;

export const STATUS_JS = `'use strict';
(() => {
  const KEY = 'mailshare-token';
  const $ = (id) => document.getElementById(id);
  const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = String(text); if (cls) e.className = cls; return e; };
  const row = (cells) => { const tr = el('tr'); for (const c of cells) { const td = el('td'); if (c instanceof Node) td.append(c); else td.textContent = String(c); tr.append(td); } return tr; };
  const bar = (fraction) => { const b = el('span', undefined, 'bar'); const f = el('span'); f.style.width = Math.round(Math.max(0, Math.min(1, fraction)) * 100) + '%'; b.append(f); return b; };
  let timer; let events; const drainStart = new Map();

  async function call(path) {
    const res = await fetch(path, { headers: { authorization: 'Bearer ' + sessionStorage.getItem(KEY) }, cache: 'no-store' });
    const body = await res.json().catch(() => ({ error: 'HTTP ' + res.status }));
    if (!res.ok) { const e = new Error(body.error || ('HTTP ' + res.status)); e.status = res.status; throw e; }
    return body;
  }

  function show(signedIn) {
    $('login').hidden = signedIn; $('status').hidden = !signedIn; $('logout').hidden = !signedIn;
    if (!signedIn) { clearInterval(timer); if (events) events.abort(); $('who').textContent = ''; }
  }

  function renderNodes(nodes) {
    const body = $('nodes').tBodies[0]; body.replaceChildren();
    const drains = $('drains'); drains.replaceChildren();
    for (const n of nodes) {
      const load = el('span'); load.append(bar(n.capacity ? n.users / n.capacity : 0), el('span', n.users + ' / ' + n.capacity));
      const addr = [n.imap, ...Object.entries(n.addresses || {}).map(([p, a]) => p + ' ' + a)].join(', ');
      const state = el('span', n.state + (n.downReason ? ' (' + n.downReason + ')' : ''), 'state-' + n.state);
      const tr = row([n.name, state, n.zone || '-', n.weight, load, n.leaseSeconds === null ? '-' : n.leaseSeconds + ' s', addr]);
      tr.dataset.node = n.name; tr.dataset.state = n.state; body.append(tr);
      if (n.state === 'draining') {
        const start = Math.max(drainStart.get(n.name) || 0, n.users); drainStart.set(n.name, start);
        const done = start === 0 ? 1 : (start - n.users) / start;
        const d = el('div', undefined, 'drain'); d.dataset.node = n.name;
        d.append(el('strong', 'Draining ' + n.name + ': '), bar(done), el('span', n.users + ' of ' + start + ' users left (' + Math.round(done * 100) + '% moved)', 'drain-progress'));
        drains.append(d);
      } else drainStart.delete(n.name);
    }
  }

  function renderTenants(tenants) {
    const body = $('tenants').tBodies[0]; body.replaceChildren();
    for (const t of tenants) { const tr = row([t.id, t.domains.join(', ') || '-', t.mailboxes, t.groups, t.users]); tr.dataset.tenant = t.id; body.append(tr); }
  }

  async function refresh() {
    try {
      const o = await call('/api/overview');
      $('error').textContent = '';
      $('who').textContent = o.role === 'admin' ? 'admin' : 'tenant admin of ' + o.tenant;
      $('nodes-section').hidden = !o.nodes;
      if (o.nodes) renderNodes(o.nodes);
      renderTenants(o.tenants);
    } catch (e) {
      if (e.status === 401 || e.status === 403) { sessionStorage.removeItem(KEY); show(false); $('login-error').textContent = e.message; return; }
      $('error').textContent = 'Cannot read the status: ' + e.message;
    }
  }

  async function lookup(user) {
    const out = $('lookup'); out.replaceChildren(el('p', 'Looking up ' + user + '…', 'muted'));
    try {
      const r = await call('/api/lookup?user=' + encodeURIComponent(user));
      out.replaceChildren();
      out.append(el('p', r.user + ' of tenant ' + r.tenant + ': ' + (r.node ? 'on node ' + r.node.name + ' (epoch ' + r.node.epoch + ')' : 'not assigned to any node now')));
      if (r.groups.length) out.append(el('p', 'member of ' + r.groups.map((g) => 'group:' + g).join(', ')));
      if (!r.shares.length) { out.append(el('p', 'sees no other user\\'s mailbox', 'shares-none')); return; }
      const t = el('table'); t.id = 'shares';
      const head = el('thead'); head.append(row(['mailbox', 'rights', 'why', 'served by']));
      const body = el('tbody');
      for (const s of r.shares) {
        const why = s.because.map((b) => (b.negative ? 'minus ' : '') + b.rights + ' from ' + b.identifier).join('; ') + (s.denied ? ' (taken away: ' + s.denied + ')' : '');
        const tr = row([s.mailbox, s.rights, why, s.ownerNode || 'not assigned']); tr.dataset.mailbox = s.mailbox; body.append(tr);
      }
      t.append(head, body); out.append(t);
    } catch (e) { out.replaceChildren(el('p', e.message, 'error lookup-error')); }
  }

  async function follow() {
    events = new AbortController();
    const list = $('events');
    try {
      const res = await fetch('/api/events', { headers: { authorization: 'Bearer ' + sessionStorage.getItem(KEY) }, signal: events.signal });
      if (!res.ok) throw new Error('HTTP ' + res.status);
      $('events-state').textContent = '(live)';
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf('\\n\\n')) >= 0) {
          const frame = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = frame.split('\\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\\n');
          if (!/^event: change$/m.test(frame) || !data) continue;
          const e = JSON.parse(data);
          const li = el('li', '#' + e.revision + ' ' + e.kind + (e.deleted ? ' deleted ' : ' ') + (e.tenant ? e.tenant + '/' : '') + e.id);
          list.prepend(li);
          while (list.children.length > 50) list.lastChild.remove();
          if (e.kind === 'node' || e.kind === 'assignment') scheduleRefresh();
        }
      }
    } catch (e) { if (events.signal.aborted) return; }
    $('events-state').textContent = '(reconnecting)';
    setTimeout(() => { if (!$('status').hidden) follow(); }, 2000);
  }

  let soon;
  function scheduleRefresh() { if (!soon) soon = setTimeout(() => { soon = undefined; refresh(); }, 250); }

  function start() { show(true); refresh(); clearInterval(timer); timer = setInterval(refresh, 2000); follow(); }

  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $('token').value.trim()); $('token').value = ''; $('login-error').textContent = '';
    start();
  });
  $('logout').addEventListener('click', () => { sessionStorage.removeItem(KEY); show(false); });
  $('lookup-form').addEventListener('submit', (ev) => { ev.preventDefault(); lookup($('lookup-user').value.trim()); });
  if (sessionStorage.getItem(KEY)) start(); else show(false);
})();
`;
