// Armada monitor dashboard: a hash-routed single-page app over /api/v1 (docs/monitor-api.md).
// Every piece of data reaches the DOM through textContent or attributes, never innerHTML.

const API = '/api/v1';
const TOKEN_KEY = 'armada-token';
const JOB_STATUSES = ['queued', 'running', 'retrying', 'succeeded', 'failed', 'abandoned', 'canceled'];
const TERMINAL = ['succeeded', 'failed', 'abandoned', 'canceled'];
const PAGE = 50;
const MAX_STREAM = 500;

// ---------- DOM helpers ----------

/** Builds an element; string children become text nodes, so data is always escaped. */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  el.append(...children.flat(Infinity).filter((c) => c != null && c !== false)
    .map((c) => (c instanceof Node ? c : String(c))));
  return el;
}

const $ = (sel, root = document) => root.querySelector(sel);
const enc = encodeURIComponent;
const runHref = (id) => `#/runs/${enc(id)}`;
const jobHref = (id, index) => `#/runs/${enc(id)}/jobs/${index}`;

/** Whether a run has not ended: running, or stalled (it may still go on). */
function isOpen(status) {
  return status === 'running' || status === 'stalled';
}

function badge(status) {
  return h('span', { class: `badge st-${status}` }, status);
}

function table(caption, headers, body, id) {
  return h('div', { class: 'table-wrap' },
    h('table', { id },
      h('caption', null, caption),
      h('thead', null, h('tr', null, headers.map((t) => h('th', { scope: 'col' }, t)))),
      body));
}

/** A definition list from [label, value] pairs; values may be nodes. */
function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([k, v]) => h('div', null, h('dt', null, k), h('dd', null, v ?? '—'))));
}

// ---------- formatting ----------

const pad = (n, w = 2) => String(n).padStart(w, '0');

function fmtTime(ms, withMs = false) {
  if (ms == null) return '—';
  const d = new Date(ms);
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}${withMs ? `.${pad(d.getMilliseconds(), 3)}` : ''}`;
  const today = new Date().toDateString() === d.toDateString();
  return today ? time : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

function timeEl(ms, withMs) {
  return ms == null ? '—' : h('time', { datetime: new Date(ms).toISOString() }, fmtTime(ms, withMs));
}

function fmtDur(ms) {
  if (ms == null || Number.isNaN(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${pad(Math.floor(s % 60))}s`;
  return `${Math.floor(m / 60)}h ${pad(m % 60)}m`;
}

const fmtNum = (n) => (n == null ? '—' : Number(n).toLocaleString());
const fmtPct = (x) => (x == null || Number.isNaN(x) ? '—' : `${(x * 100).toFixed(1)} %`);
const done = (c) => TERMINAL.reduce((sum, s) => sum + (c[s] ?? 0), 0);
const runDuration = (r) => (r.finished_ms ?? Date.now()) - r.created_ms;

function brief(data, max = 160) {
  if (data == null) return '';
  const s = typeof data === 'string' ? data : JSON.stringify(data);
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

function countsLine(counts) {
  const parts = JOB_STATUSES.filter((s) => counts[s]).map((s) => h('span', { class: `count st-${s}` }, `${fmtNum(counts[s])} ${s}`));
  return parts.length ? h('span', { class: 'counts' }, parts) : '—';
}

function progressCell(run) {
  const d = done(run.counts);
  const pct = run.jobs ? Math.round((d / run.jobs) * 100) : 0;
  return h('span', { class: 'progress-cell' },
    h('progress', { value: d, max: run.jobs || 1, 'aria-label': `${d} of ${run.jobs} jobs done` }),
    ` ${fmtNum(d)}/${fmtNum(run.jobs)} (${pct} %)`);
}

// ---------- notices, token, API ----------

const notices = () => $('#notices');

/** Shows a message in the polite live region; errors stay until dismissed or the route changes. */
function notify(text, kind = 'error') {
  const item = h('p', { class: `notice ${kind}` }, h('span', null, text),
    h('button', { type: 'button', class: 'link', onclick: () => item.remove(), 'aria-label': 'Dismiss message' }, '×'));
  notices().append(item);
  if (kind !== 'error') setTimeout(() => item.remove(), 6000);
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error ?? `HTTP ${status}`);
    this.status = status;
    this.body = body ?? {};
  }
}

const token = () => sessionStorage.getItem(TOKEN_KEY);

function askToken() {
  const box = $('#token-box');
  if (!box.hidden) return;
  box.hidden = false;
  $('#token-input').focus();
}

async function api(path, { method = 'GET', json, form, raw = false } = {}) {
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  let body = form;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  }
  let res;
  try {
    res = await fetch(API + path, { method, headers, body });
  } catch (e) {
    throw new ApiError(0, { error: `Cannot reach the monitor (${e.message}). Is it still running?` });
  }
  if (res.status === 401) {
    askToken();
    throw new ApiError(401, { error: 'The monitor needs an access token: enter it above.' });
  }
  if (!res.ok) {
    let err;
    try { err = await res.json(); } catch { err = { error: `${res.status} ${res.statusText}` }; }
    throw new ApiError(res.status, err);
  }
  if (raw) return res;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

/** Fetches bytes with the token header and returns a Blob URL revoked when the page goes. */
async function blobUrl(ctx, path) {
  const res = await api(path, { raw: true });
  const url = URL.createObjectURL(await res.blob());
  ctx.on(() => URL.revokeObjectURL(url));
  return url;
}

/** A download link; with a token the browser cannot send the header, so fetch it into a Blob. */
function downloadLink(ctx, path, filename, label) {
  return h('a', {
    href: API + path, download: filename, class: 'button',
    onclick: async (e) => {
      if (!token()) return;
      e.preventDefault();
      try {
        const a = h('a', { href: await blobUrl(ctx, path), download: filename });
        document.body.append(a);
        a.click();
        a.remove();
      } catch (err) { report(ctx, err); }
    },
  }, label);
}

function report(ctx, err) {
  if (!ctx.alive || err.status === 401) return;
  notify(err.status ? `Error ${err.status}: ${err.message}` : err.message);
}

// ---------- live updates ----------

/**
 * The monitor's WebSocket with reconnect (exponential backoff) and batching: messages are queued
 * and handed over once per animation frame (with a timer fallback for hidden tabs), so a busy run
 * costs one DOM update per frame. Held until `release()` so REST and WS data do not interleave.
 */
class Live {
  constructor(ctx, runId, { onBatch, onReload, status }) {
    Object.assign(this, { ctx, runId, onBatch, onReload, status, queue: [], held: true, tries: 0, opened: false });
    ctx.on(() => this.close());
    this.connect();
  }

  async connect() {
    const q = new URLSearchParams();
    if (this.runId) q.set('run', this.runId);
    if (token()) {
      // A single-use ticket per connection: the token itself never goes in a URL.
      try {
        q.set('ticket', (await api('/ws/ticket', { method: 'POST' })).ticket);
      } catch {
        this.reconnectLater();
        return;
      }
      if (!this.ctx.alive || this.closed) return;
    }
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    this.ws = new WebSocket(`${proto}://${location.host}${API}/ws?${q}`);
    this.ws.onopen = () => {
      this.status?.('Live: updates arrive as they happen.');
      // A reconnect may have missed messages: reload what is shown.
      if (this.opened) this.onReload();
      this.opened = true;
      this.tries = 0;
    };
    this.ws.onmessage = (e) => {
      let msg;
      try { msg = JSON.parse(e.data); } catch { return; }
      if (msg.type === 'lagged') { this.queue = []; this.onReload(); return; }
      this.queue.push(msg);
      // Far behind (a hidden tab, say): drop the backlog and reload through REST instead.
      if (this.queue.length > 5000) { this.queue = []; this.onReload(); return; }
      this.schedule();
    };
    this.ws.onclose = () => this.reconnectLater();
  }

  reconnectLater() {
    if (!this.ctx.alive || this.closed) return;
    const delay = Math.min(30000, 1000 * 2 ** this.tries++) * (0.75 + Math.random() / 2);
    this.status?.(`Connection lost; reconnecting in ${Math.round(delay / 1000)} s.`);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  release() { this.held = false; this.schedule(); }

  schedule() {
    if (this.pending || this.held || !this.queue.length) return;
    this.pending = true;
    const run = () => {
      if (!this.pending) return;
      this.pending = false;
      const batch = this.queue;
      this.queue = [];
      if (this.ctx.alive) this.onBatch(batch);
    };
    requestAnimationFrame(run);
    setTimeout(run, 250);
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) { this.ws.onclose = null; this.ws.close(); }
  }
}

// ---------- router ----------

/** Everything a page owns; disposing it stops its timers, sockets and Blob URLs. */
class PageCtx {
  alive = true;
  cleanups = [];
  on(fn) { this.cleanups.push(fn); }
  every(ms, fn) { const t = setInterval(fn, ms); this.on(() => clearInterval(t)); }
  ready(name) { if (this.alive) document.body.dataset.ready = name; }
  dispose() { this.alive = false; this.cleanups.forEach((f) => f()); }
}

let current = null;

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, query = ''] = raw.split('?');
  return { parts: path.split('/').filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query) };
}

function route() {
  current?.dispose();
  const ctx = (current = new PageCtx());
  delete document.body.dataset.ready;
  notices().replaceChildren();
  const { parts, params } = parseHash();
  let name = 'runs';
  let page;
  if (parts[0] === 'runs' && parts[1] && parts[2] === 'jobs' && parts[3] != null) {
    name = 'job';
    page = jobPage(ctx, parts[1], Number(parts[3]));
  } else if (parts[0] === 'runs' && parts[1]) {
    name = 'run';
    page = runPage(ctx, parts[1]);
  } else if (parts[0] === 'launch') {
    name = 'launch';
    page = launchPage(ctx, params.get('relaunch'));
  } else if (parts[0] === 'compare') {
    name = 'compare';
    page = comparePage(ctx, params.get('a'), params.get('b'));
  } else {
    page = runsPage(ctx);
  }
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === (name === 'run' || name === 'job' ? 'runs' : name)) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  $('#page').replaceChildren(page);
}

// ---------- runs page ----------

function runsPage(ctx) {
  document.title = 'Runs · Armada';
  const selected = new Set();
  const tbody = h('tbody');
  const more = h('button', { type: 'button', hidden: true }, 'Load more runs');
  const compareBtn = h('button', { type: 'button', disabled: true }, 'Compare selected');
  const live = h('p', { class: 'live-status', role: 'status', 'aria-live': 'polite' }, 'Connecting…');
  let next = null;

  const syncCompare = () => {
    compareBtn.disabled = selected.size !== 2;
    compareBtn.textContent = `Compare selected (${selected.size}/2)`;
  };
  compareBtn.onclick = () => {
    const [a, b] = [...selected];
    location.hash = `#/compare?a=${enc(a)}&b=${enc(b)}`;
  };

  const row = (r) => h('tr', { dataset: { runId: r.id, created: r.created_ms } },
    h('td', null, h('input', {
      type: 'checkbox', 'aria-label': `Select run ${r.id} to compare`, checked: selected.has(r.id),
      onchange: (e) => { e.target.checked ? selected.add(r.id) : selected.delete(r.id); syncCompare(); },
    })),
    h('th', { scope: 'row' }, h('a', { href: runHref(r.id) }, r.id), h('div', { class: 'sub' }, r.project, r.tune ? ` · ${r.tune}` : '')),
    h('td', null, badge(r.status)),
    h('td', null, progressCell(r)),
    h('td', null, countsLine(r.counts)),
    h('td', null, timeEl(r.created_ms)),
    h('td', null, fmtDur(runDuration(r))),
    h('td', { class: 'num' }, `${(r.throughput_per_min ?? 0).toFixed(1)}/min`),
    h('td', null, h('button', {
      type: 'button', class: 'danger small', 'aria-label': `Delete run ${r.id}`,
      onclick: async () => {
        if (!confirm(`Delete run ${r.id} with all its jobs, events, outputs and attachments?`)) return;
        try {
          await api(`/runs/${enc(r.id)}`, { method: 'DELETE' });
          removeRow(r.id);
          notify(`Run ${r.id} deleted.`, 'info');
        } catch (err) { report(ctx, err); }
      },
    }, 'Delete')));

  const findRow = (id) => [...tbody.rows].find((tr) => tr.dataset.runId === id);
  const removeRow = (id) => { findRow(id)?.remove(); selected.delete(id); syncCompare(); };

  // Upserts keep newest-first order; a run older than the loaded pages belongs to a later page.
  const upsert = (r) => {
    const old = findRow(r.id);
    if (old) { old.replaceWith(row(r)); return; }
    const rows = [...tbody.rows];
    const after = rows.find((tr) => Number(tr.dataset.created) < r.created_ms);
    if (after) tbody.insertBefore(row(r), after);
    else if (next == null) tbody.append(row(r));
  };

  const load = async (reset) => {
    const q = new URLSearchParams({ limit: PAGE });
    if (!reset && next) q.set('after', next);
    const res = await api(`/runs?${q}`);
    if (!ctx.alive) return;
    if (reset) tbody.replaceChildren();
    for (const r of res.runs) {
      const old = findRow(r.id); // a live message may have shown it already
      if (old) old.replaceWith(row(r));
      else tbody.append(row(r));
    }
    next = res.next;
    more.hidden = next == null;
    if (!tbody.rows.length) {
      tbody.append(h('tr', null, h('td', { colspan: 9 }, 'No runs yet. Launch one from the Launch page or with `orchestrate launch`.')));
    }
  };
  more.onclick = () => load(false).catch((e) => report(ctx, e));

  const sock = new Live(ctx, null, {
    status: (t) => { live.textContent = t; },
    onReload: () => load(true).catch((e) => report(ctx, e)),
    onBatch: (msgs) => {
      const runs = new Map();
      for (const m of msgs) {
        if (m.type === 'run') runs.set(m.run.id, m.run);
        else if (m.type === 'deleted') { runs.delete(m.run_id); removeRow(m.run_id); }
      }
      if (runs.size) tbody.querySelector('tr:not([data-run-id])')?.remove();
      runs.forEach(upsert);
    },
  });

  load(true).then(() => { sock.release(); ctx.ready('runs'); }, (e) => report(ctx, e));
  syncCompare();
  return h('div', { id: 'runs-page' },
    h('div', { class: 'page-head' }, h('h1', null, 'Runs'),
      h('div', { class: 'actions' }, compareBtn, h('a', { class: 'button', href: '#/launch' }, 'Launch a run'))),
    live,
    table('Runs, newest first. Select two to compare them.',
      ['Compare', 'Run', 'Status', 'Progress', 'Jobs by status', 'Started', 'Duration', 'Throughput', 'Actions'], tbody, 'runs-table'),
    more);
}

// ---------- run page ----------

function runPage(ctx, runId) {
  document.title = `Run ${runId} · Armada`;
  const path = `/runs/${enc(runId)}`;
  let run = null;

  // Header: built once and updated in place so buttons keep focus across live updates.
  const title = h('h1', null, 'Run ', h('span', { class: 'mono' }, runId));
  const statusSlot = h('span');
  const progress = h('progress', { id: 'run-progress', value: 0, max: 1, 'aria-label': 'Jobs done' });
  const progressText = h('span', { class: 'progress-text' });
  const summary = h('div', { class: 'summary' });
  const stalledNote = h('p', { class: 'stalled-note', role: 'status', hidden: true });
  const cancelBtn = h('button', { type: 'button', class: 'danger' }, 'Cancel run');
  const retryBtn = h('button', { type: 'button' }, 'Retry failed jobs');

  const renderHeader = (r) => {
    run = r;
    statusSlot.replaceChildren(badge(r.status));
    stalledNote.hidden = !r.stalled_reason;
    stalledNote.textContent = r.stalled_reason ? `Stalled: ${r.stalled_reason}.` : '';
    const d = done(r.counts);
    progress.max = r.jobs || 1;
    progress.value = d;
    progressText.textContent = `${fmtNum(d)} of ${fmtNum(r.jobs)} jobs done (${r.jobs ? Math.round((d / r.jobs) * 100) : 0} %)`;
    summary.replaceChildren(facts([
      ['Project', r.project],
      ['Tune', r.tune ?? 'default'],
      ['Agents', fmtNum(r.agents)],
      ['Started', timeEl(r.created_ms)],
      ['Duration', fmtDur(runDuration(r))],
      ['ETA', r.eta_ms == null ? '—' : fmtDur(r.eta_ms)],
      ['Throughput', `${(r.throughput_per_min ?? 0).toFixed(1)} jobs/min`],
      ['Events', fmtNum(r.events)],
      r.relaunch_of && ['Relaunch of', h('a', { href: runHref(r.relaunch_of) }, r.relaunch_of)],
    ]), h('ul', { class: 'status-counts', 'aria-label': 'Jobs per status' },
      JOB_STATUSES.map((s) => h('li', null, badge(s), ' ', fmtNum(r.counts[s] ?? 0)))));
    cancelBtn.disabled = !isOpen(r.status);
    retryBtn.disabled = !(r.counts.failed || r.counts.abandoned);
  };

  cancelBtn.onclick = async () => {
    if (!confirm(`Cancel run ${runId}? Running jobs are stopped and queued jobs never start.`)) return;
    try {
      await api(`${path}/cancel`, { method: 'POST' });
      notify('Cancel requested: the run stops after its running jobs end.', 'info');
    } catch (e) {
      if (e.status === 501) notify(`Cancel is not available from this monitor (${e.message}): canceling needs the orchestrator that launched the run.`);
      else if (e.status === 409) notify(`This run cannot be canceled (${e.message}).`);
      else report(ctx, e);
    }
  };
  retryBtn.onclick = async () => {
    retryBtn.disabled = true;
    try {
      const res = await api(`${path}/retry`, { method: 'POST', json: { failed: true } });
      location.hash = runHref(res.run_id);
    } catch (e) {
      retryBtn.disabled = false;
      if (e.status === 501) notify(`Retry is not available from this monitor (${e.message}): retrying needs the project's orchestrator.`);
      else report(ctx, e);
    }
  };

  const jobs = jobsSection(ctx, runId);
  const events = eventsSection(ctx, runId);
  const agents = agentsSection(ctx, runId);
  const failures = failuresSection(ctx, runId, (error) => jobs.filterError(error));

  // Agents and failures are secondary: their errors are shown but do not hold the page back.
  const reload = async () => {
    const side = [agents.load(), failures.load()].map((p) => p.catch((e) => report(ctx, e)));
    const [r] = await Promise.all([api(path), jobs.load(true), events.load(), ...side]);
    if (ctx.alive) renderHeader(r);
  };
  const sock = new Live(ctx, runId, {
    status: events.setStatus,
    onReload: () => reload().catch((e) => report(ctx, e)),
    onBatch: (msgs) => {
      let latest = null;
      const changed = new Map();
      const evs = [];
      for (const m of msgs) {
        if (m.run_id && m.run_id !== runId) continue;
        if (m.type === 'run' && m.run.id === runId) latest = m.run;
        else if (m.type === 'jobs') m.jobs.forEach((j) => changed.set(j.index, j));
        else if (m.type === 'events') evs.push(...m.events);
        else if (m.type === 'deleted') notify('This run was deleted.');
      }
      if (latest) {
        const finished = isOpen(run?.status) && !isOpen(latest.status);
        renderHeader(latest);
        if (finished) { agents.load().catch(() => {}); failures.load().catch(() => {}); }
      }
      jobs.update(changed);
      events.append(evs);
    },
  });
  // Agents, failures and silence (a run turning stalled, an agent gone) have no push
  // messages: poll them while the run is going.
  ctx.every(4000, () => {
    if (!isOpen(run?.status)) return;
    api(path).then((r) => { if (ctx.alive) renderHeader(r); }).catch(() => {});
    agents.load().catch(() => {});
    failures.load().catch(() => {});
  });

  reload().then(() => { sock.release(); ctx.ready('run'); }, (e) => report(ctx, e));

  return h('div', { id: 'run-page', dataset: { runId } },
    h('div', { class: 'page-head' }, title, statusSlot,
      h('div', { class: 'actions' }, cancelBtn, retryBtn,
        h('a', { class: 'button', href: `#/launch?relaunch=${enc(runId)}` }, 'Relaunch'),
        downloadLink(ctx, `${path}/outputs?format=jsonl`, `${runId}-outputs.jsonl`, 'Outputs JSONL'),
        downloadLink(ctx, `${path}/outputs?format=csv`, `${runId}-outputs.csv`, 'Outputs CSV'))),
    stalledNote,
    h('div', { class: 'progress-row' }, progress, progressText),
    summary,
    jobs.el,
    h('div', { class: 'columns' }, events.el, h('div', null, failures.el, agents.el)));
}

function jobsSection(ctx, runId) {
  const tbody = h('tbody');
  const more = h('button', { type: 'button', hidden: true }, 'Load more jobs');
  const statusSel = h('select', { id: 'filter-status', name: 'status' },
    h('option', { value: '' }, 'all'), JOB_STATUSES.map((s) => h('option', { value: s }, s)));
  const agentIn = h('input', { id: 'filter-agent', type: 'number', min: 0, inputmode: 'numeric' });
  const attemptIn = h('input', { id: 'filter-attempt', type: 'number', min: 0, inputmode: 'numeric' });
  const errorIn = h('input', { id: 'filter-error', type: 'text', placeholder: 'exact message' });
  const summary = h('p', { class: 'sub', 'aria-live': 'polite' });
  let next = null;
  let loading = 0;

  const row = (j) => h('tr', { dataset: { jobIndex: j.index } },
    h('th', { scope: 'row', class: 'num' }, h('a', { href: jobHref(runId, j.index) }, String(j.index))),
    h('td', { class: 'job-status' }, h('a', { href: jobHref(runId, j.index), 'aria-label': `Job ${j.index}: ${j.status}` }, badge(j.status))),
    h('td', { class: 'num' }, j.agent ?? '—'),
    h('td', { class: 'num' }, j.attempts),
    h('td', { class: 'num' }, fmtDur(j.duration_ms)),
    h('td', { class: 'clip', title: j.last_event ?? '' }, j.last_event ?? '—'),
    h('td', { class: 'clip error-text', title: j.error ?? '' }, j.error ?? ''));

  const query = () => {
    const q = new URLSearchParams({ limit: PAGE });
    if (statusSel.value) q.set('status', statusSel.value);
    if (agentIn.value !== '') q.set('agent', agentIn.value);
    if (attemptIn.value !== '') q.set('attempt', attemptIn.value);
    if (errorIn.value) q.set('error', errorIn.value);
    return q;
  };

  const load = async (reset) => {
    const q = query();
    if (!reset && next) q.set('after', next);
    const ticket = ++loading;
    const res = await api(`/runs/${enc(runId)}/jobs?${q}`);
    if (!ctx.alive || ticket !== loading) return; // a newer filter won
    if (reset) tbody.replaceChildren();
    tbody.append(...res.jobs.map(row));
    next = res.next;
    more.hidden = next == null;
    summary.textContent = tbody.rows.length
      ? `Showing ${tbody.rows.length} job${tbody.rows.length === 1 ? '' : 's'}${next ? '; more on request' : ''}.`
      : 'No jobs match these filters.';
  };
  const apply = () => load(true).catch((e) => report(ctx, e));
  more.onclick = () => load(false).catch((e) => report(ctx, e));

  const form = h('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); apply(); } },
    h('label', { for: 'filter-status' }, 'Status'), statusSel,
    h('label', { for: 'filter-agent' }, 'Agent'), agentIn,
    h('label', { for: 'filter-attempt' }, 'Attempts'), attemptIn,
    h('label', { for: 'filter-error' }, 'Error'), errorIn,
    h('button', { type: 'submit' }, 'Filter'),
    h('button', { type: 'button', class: 'link', onclick: () => { form.reset(); apply(); } }, 'Clear'));
  statusSel.onchange = apply;

  return {
    load,
    // Live changes touch only the rows on screen; other jobs appear through paging or filters.
    update(changed) {
      if (!changed.size) return;
      for (const tr of tbody.rows) {
        const j = changed.get(Number(tr.dataset.jobIndex));
        if (j) tr.replaceWith(row(j));
      }
    },
    filterError(error) {
      form.reset();
      errorIn.value = error;
      apply();
      statusSel.focus();
      form.scrollIntoView({ block: 'start' });
    },
    el: h('section', { class: 'panel', 'aria-labelledby': 'jobs-title' },
      h('h2', { id: 'jobs-title' }, 'Jobs'), form, summary,
      h('div', { class: 'scroll-y' }, table('Jobs of this run, by index',
        ['Index', 'Status', 'Agent', 'Attempts', 'Duration', 'Last event', 'Error'], tbody, 'jobs-table')),
      more),
  };
}

function eventItem(e, runId, withJob = true) {
  return h('li', { dataset: { seq: e.seq }, class: `ev k-${e.kind}` },
    timeEl(e.at_ms, true), ' ',
    h('span', { class: 'kind' }, e.kind), ' ',
    h('span', { class: 'who' }, `agent ${e.agent}`,
      withJob && e.job != null ? [' · ', h('a', { href: jobHref(runId, e.job) }, `job ${e.job}`)] : '',
      e.attempt != null ? ` · try ${e.attempt}` : ''), ' ',
    h('span', { class: 'msg' }, e.message ?? brief(e.data)));
}

function eventsSection(ctx, runId) {
  const list = h('ol', { id: 'event-stream', class: 'stream' });
  const status = h('p', { class: 'live-status', role: 'status', 'aria-live': 'polite' }, 'Connecting…');
  const pauseBtn = h('button', { type: 'button', 'aria-pressed': 'false' }, 'Pause');
  let lastSeq = -1;
  let paused = false;
  let held = [];

  const add = (evs) => {
    const fresh = evs.filter((e) => e.seq > lastSeq).sort((x, y) => x.seq - y.seq);
    if (!fresh.length) return;
    lastSeq = fresh[fresh.length - 1].seq;
    const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(...fresh.slice(-MAX_STREAM).map((e) => eventItem(e, runId)));
    while (list.childElementCount > MAX_STREAM) list.firstElementChild.remove();
    if (stick) list.scrollTop = list.scrollHeight;
  };

  pauseBtn.onclick = () => {
    paused = !paused;
    pauseBtn.setAttribute('aria-pressed', String(paused));
    pauseBtn.textContent = paused ? 'Resume' : 'Pause';
    status.textContent = paused ? 'Paused: new events are held until you resume.' : 'Live: updates arrive as they happen.';
    if (!paused) { add(held); held = []; }
  };

  return {
    setStatus: (t) => { if (!paused) status.textContent = t; },
    async load() {
      const res = await api(`/runs/${enc(runId)}/events?latest=100`);
      if (!ctx.alive) return;
      list.replaceChildren();
      lastSeq = -1;
      held = [];
      add(res.events);
    },
    append(evs) {
      if (!evs.length) return;
      if (paused) {
        held.push(...evs);
        if (held.length > MAX_STREAM) held = held.slice(-MAX_STREAM);
        pauseBtn.textContent = `Resume (${held.length}${held.length >= MAX_STREAM ? '+' : ''} new)`;
      } else add(evs);
    },
    el: h('section', { class: 'panel', 'aria-labelledby': 'events-title' },
      h('div', { class: 'panel-head' }, h('h2', { id: 'events-title' }, 'Live events'), pauseBtn),
      status, list),
  };
}

function agentsSection(ctx, runId) {
  const tbody = h('tbody');
  const row = (a) => h('tr', { dataset: { agent: a.index } },
    h('th', { scope: 'row', class: 'num' }, a.index),
    h('td', null, badge(a.status)),
    h('td', { class: 'num' }, fmtNum(a.succeeded)),
    h('td', { class: 'num' }, fmtNum(a.failed)),
    h('td', { class: 'num' }, fmtNum(a.retrying)),
    h('td', null, a.running_job == null ? '—' : h('a', { href: jobHref(runId, a.running_job) }, `job ${a.running_job}`)),
    h('td', null, timeEl(a.started_ms)),
    h('td', null, timeEl(a.seen_ms)),
    h('td', { class: 'clip error-text', title: a.error ?? '' }, a.error ?? ''));
  return {
    async load() {
      const res = await api(`/runs/${enc(runId)}/agents`);
      if (ctx.alive) tbody.replaceChildren(...res.agents.map(row));
    },
    el: h('section', { class: 'panel', 'aria-labelledby': 'agents-title' },
      h('h2', { id: 'agents-title' }, 'Agents'),
      table('Agents of this run', ['Agent', 'Status', 'Succeeded', 'Failed', 'Retrying', 'Running', 'Started', 'Last heard', 'Error'], tbody, 'agents-table')),
  };
}

function failuresSection(ctx, runId, onPick) {
  const tbody = h('tbody');
  const row = (f) => h('tr', null,
    h('th', { scope: 'row', class: 'error-text wrap' }, f.error),
    h('td', { class: 'num' }, fmtNum(f.jobs)),
    h('td', null, h('a', { href: jobHref(runId, f.sample_job) }, `job ${f.sample_job}`)),
    h('td', null, h('button', { type: 'button', class: 'small', onclick: () => onPick(f.error) }, 'Show jobs')));
  return {
    async load() {
      const res = await api(`/runs/${enc(runId)}/failures?limit=20`);
      if (!ctx.alive) return;
      tbody.replaceChildren(...res.failures.map(row));
      if (!res.failures.length) tbody.append(h('tr', null, h('td', { colspan: 4 }, 'No failures.')));
    },
    el: h('section', { class: 'panel', 'aria-labelledby': 'failures-title' },
      h('h2', { id: 'failures-title' }, 'Failures by error'),
      table('Failed jobs grouped by error message, most frequent first', ['Error', 'Jobs', 'Example', 'Filter'], tbody, 'failures-table')),
  };
}

// ---------- job page ----------

function jobPage(ctx, runId, index) {
  document.title = `Job ${index} of ${runId} · Armada`;
  const base = `/runs/${enc(runId)}/jobs/${index}`;
  const summary = h('div', { class: 'summary' });
  const statusSlot = h('span');
  const timeline = h('ol', { id: 'job-events', class: 'stream timeline' });
  const more = h('button', { type: 'button', hidden: true }, 'Load more events');
  const outputs = h('div', { id: 'job-outputs' }, h('p', { class: 'sub' }, 'No outputs yet.'));
  const attachments = h('div', { id: 'job-attachments' }, h('p', { class: 'sub' }, 'No attachments.'));
  const shownAttachments = new Set();
  let next = null;
  let lastSeq = -1;

  const renderJob = (j) => {
    statusSlot.replaceChildren(badge(j.status));
    summary.replaceChildren(facts([
      ['Job id', h('span', { class: 'mono' }, j.id)],
      ['Agent', j.agent ?? '—'],
      ['Attempts', j.attempts],
      ['Started', timeEl(j.started_ms)],
      ['Finished', timeEl(j.finished_ms)],
      ['Duration', fmtDur(j.duration_ms)],
      ['Last event', j.last_event ?? '—'],
      j.error && ['Error', h('span', { class: 'error-text' }, j.error)],
    ]));
  };

  const addEvents = (evs) => {
    const fresh = evs.filter((e) => e.seq > lastSeq).sort((x, y) => x.seq - y.seq);
    if (!fresh.length) return;
    lastSeq = fresh[fresh.length - 1].seq;
    timeline.append(...fresh.map((e) => {
      const li = eventItem(e, runId, false);
      if (e.data != null && e.kind !== 'output') {
        li.append(h('details', null, h('summary', null, 'data'), h('pre', null, JSON.stringify(e.data, null, 2))));
      }
      return li;
    }));
    const outs = fresh.filter((e) => e.kind === 'output');
    if (outs.length && !outputs.querySelector('pre')) outputs.replaceChildren();
    outputs.append(...outs.map((e) => h('figure', { class: 'output', dataset: { seq: e.seq } },
      h('figcaption', null, `Attempt ${e.attempt ?? '—'} · `, timeEl(e.at_ms, true)),
      h('pre', null, JSON.stringify(e.data, null, 2)))));
  };

  const loadEvents = async () => {
    const q = new URLSearchParams({ limit: 200 });
    if (next) q.set('after', next);
    const res = await api(`${base}/events?${q}`);
    if (!ctx.alive) return;
    addEvents(res.events);
    next = res.next;
    more.hidden = next == null;
  };
  more.onclick = () => loadEvents().catch((e) => report(ctx, e));

  // Images and HTML are fetched with the token header, then shown from Blob URLs or srcdoc.
  const showAttachment = async (a) => {
    if (shownAttachments.has(a.seq)) return;
    shownAttachments.add(a.seq);
    const path = `/runs/${enc(runId)}/attachments/${a.seq}`;
    const label = `${a.name} (${a.content_type}, ${fmtNum(a.size)} bytes, attempt ${a.attempt})`;
    const fig = h('figure', { class: 'attachment-box', dataset: { attachmentId: a.seq } });
    if (!attachments.querySelector('figure')) attachments.replaceChildren();
    attachments.append(fig);
    try {
      if (a.content_type.startsWith('image/')) {
        fig.append(h('img', { class: 'attachment', src: await blobUrl(ctx, path), alt: `Attachment ${a.name}` }));
      } else if (a.content_type.startsWith('text/html')) {
        const html = await (await api(path, { raw: true })).text();
        fig.append(h('iframe', { class: 'attachment-html', sandbox: '', srcdoc: html, title: `HTML attachment ${a.name}` }));
      }
      fig.append(h('figcaption', null, label, ' ', downloadLink(ctx, path, a.name, 'Download')));
    } catch (e) {
      fig.append(h('figcaption', null, label, ': could not load it'));
      report(ctx, e);
    }
  };
  const loadJob = async () => {
    const res = await api(base);
    if (!ctx.alive) return;
    renderJob(res.job);
    await Promise.all(res.attachments.map(showAttachment));
  };

  const sock = new Live(ctx, runId, {
    onReload: () => { loadJob().catch((e) => report(ctx, e)); if (next == null) loadEvents().catch((e) => report(ctx, e)); },
    onBatch: (msgs) => {
      let mine = [];
      for (const m of msgs) {
        if (m.run_id !== runId) continue;
        if (m.type === 'jobs') m.jobs.filter((j) => j.index === index).forEach(renderJob);
        else if (m.type === 'events') mine.push(...m.events.filter((e) => e.job === index));
      }
      // While older pages are unloaded, new events wait for "Load more" to keep the order.
      if (next != null) mine = [];
      addEvents(mine);
      if (mine.some((e) => e.kind === 'attachment')) loadJob().catch((e) => report(ctx, e));
    },
  });

  Promise.all([loadJob(), loadEvents()])
    .then(() => { sock.release(); ctx.ready('job'); }, (e) => report(ctx, e));

  return h('div', { id: 'job-page', dataset: { runId, jobIndex: index } },
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' },
      h('a', { href: '#/' }, 'Runs'), ' / ', h('a', { href: runHref(runId) }, runId), ' / ', `job ${index}`),
    h('div', { class: 'page-head' }, h('h1', null, `Job ${index}`), statusSlot),
    summary,
    h('div', { class: 'columns' },
      h('section', { class: 'panel', 'aria-labelledby': 'timeline-title' }, h('h2', { id: 'timeline-title' }, 'Event timeline'), timeline, more),
      h('div', null,
        h('section', { class: 'panel', 'aria-labelledby': 'outputs-title' }, h('h2', { id: 'outputs-title' }, 'Outputs'), outputs),
        h('section', { class: 'panel', 'aria-labelledby': 'attachments-title' }, h('h2', { id: 'attachments-title' }, 'Attachments'), attachments))));
}

// ---------- launch page ----------

function launchPage(ctx, relaunchOf) {
  document.title = 'Launch · Armada';
  const errors = h('div', { id: 'launch-errors', role: 'alert' });
  const tune = h('select', { id: 'launch-tune', name: 'tune' });
  const agents = h('input', { id: 'launch-agents', name: 'agents', type: 'number', min: 1, inputmode: 'numeric' });
  const jobs = h('input', { id: 'launch-jobs', name: 'jobs', type: 'number', min: 1, inputmode: 'numeric' });
  const dataAgent = h('input', { id: 'launch-data-agent', name: 'data_agent.csv', type: 'file', accept: '.csv,text/csv' });
  const dataJob = h('input', { id: 'launch-data-job', name: 'data_job.csv', type: 'file', accept: '.csv,text/csv' });
  const submit = h('button', { id: 'launch-submit', type: 'submit' }, relaunchOf ? 'Relaunch' : 'Launch');
  const fieldset = h('fieldset', { disabled: true },
    h('legend', null, 'Run settings'),
    h('div', { class: 'field' }, h('label', { for: 'launch-tune' }, 'Tune'), tune),
    h('div', { class: 'field' }, h('label', { for: 'launch-agents' }, 'Agents'), agents),
    h('div', { class: 'field' }, h('label', { for: 'launch-jobs' }, 'Jobs'), jobs),
    h('div', { class: 'field' }, h('label', { for: 'launch-data-agent' }, 'data_agent.csv (optional)'), dataAgent),
    h('div', { class: 'field' }, h('label', { for: 'launch-data-job' }, 'data_job.csv (optional)'), dataJob),
    submit);
  const project = h('p', { class: 'sub' });

  const showErrors = (err) => {
    const diags = err.body?.diagnostics ?? [];
    errors.replaceChildren(h('p', { class: 'notice error' }, err.status ? `Error ${err.status}: ${err.message}` : err.message),
      diags.length ? h('ul', { class: 'diagnostics' }, diags.map((d) => h('li', null,
        typeof d === 'object' && d ? Object.entries(d).map(([k, v]) => h('span', { class: 'diag-part' }, `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`))
          : String(d)))) : '');
  };

  const form = h('form', {
    id: 'launch-form',
    onsubmit: async (e) => {
      e.preventDefault();
      errors.replaceChildren();
      // Empty optional fields are left out so the server applies defaults or the relaunched run's values.
      const body = new FormData();
      body.append('tune', tune.value);
      if (agents.value !== '') body.append('agents', agents.value);
      if (jobs.value !== '') body.append('jobs', jobs.value);
      if (dataAgent.files[0]) body.append('data_agent.csv', dataAgent.files[0]);
      if (dataJob.files[0]) body.append('data_job.csv', dataJob.files[0]);
      if (relaunchOf) body.append('relaunch_of', relaunchOf);
      submit.disabled = true;
      submit.textContent = 'Launching…';
      try {
        const res = await api('/launch', { method: 'POST', form: body });
        location.hash = runHref(res.run_id);
      } catch (err) {
        if (!ctx.alive) return;
        showErrors(err);
      } finally {
        submit.disabled = false;
        submit.textContent = relaunchOf ? 'Relaunch' : 'Launch';
      }
    },
  }, fieldset);

  (async () => {
    try {
      const info = await api('/launch');
      if (!ctx.alive) return;
      const prior = relaunchOf ? await api(`/runs/${enc(relaunchOf)}`) : null;
      if (!ctx.alive) return;
      project.textContent = `Project: ${info.project}`;
      const tunes = info.tunes.length ? info.tunes : [info.defaults?.tune ?? ''];
      const chosen = prior?.tune ?? info.defaults?.tune;
      tune.replaceChildren(...tunes.map((t) => h('option', { value: t, selected: t === chosen }, t || '(default)')));
      if (prior) {
        agents.placeholder = `${prior.agents} (as run ${prior.id})`;
        jobs.placeholder = `${prior.jobs} (as run ${prior.id})`;
      } else {
        agents.value = info.defaults?.agents ?? '';
        jobs.value = info.defaults?.jobs ?? '';
      }
      fieldset.disabled = false;
    } catch (err) {
      if (err.status === 501) {
        errors.replaceChildren(h('p', { class: 'notice error' },
          'Launching from the dashboard needs the project\'s own orchestrator: run ',
          h('code', null, 'cargo run --bin orchestrate -- serve'), ' in the project.'));
      } else if (ctx.alive && err.status !== 401) showErrors(err);
    }
    ctx.ready('launch');
  })();

  return h('div', { id: 'launch-page' },
    h('h1', null, relaunchOf ? `Relaunch run ${relaunchOf}` : 'Launch a run'),
    project,
    relaunchOf ? h('p', null, 'Empty fields reuse that run\'s tune, counts and CSV files.') : '',
    errors, form);
}

// ---------- compare page ----------

function comparePage(ctx, a, b) {
  document.title = 'Compare runs · Armada';
  const pickA = h('select', { id: 'pick-a', name: 'a', required: true });
  const pickB = h('select', { id: 'pick-b', name: 'b', required: true });
  const picker = h('form', {
    class: 'filters',
    onsubmit: (e) => { e.preventDefault(); location.hash = `#/compare?a=${enc(pickA.value)}&b=${enc(pickB.value)}`; },
  }, h('label', { for: 'pick-a' }, 'Run A'), pickA, h('label', { for: 'pick-b' }, 'Run B'), pickB,
  h('button', { type: 'submit' }, 'Compare'));
  const body = h('div');

  const side = (key, s) => h('section', { id: `compare-${key}`, class: 'panel', 'aria-labelledby': `compare-${key}-title` },
    h('h2', { id: `compare-${key}-title` }, `${key.toUpperCase()}: `, h('a', { href: runHref(s.run.id) }, s.run.id), ' ', badge(s.run.status)),
    h('p', { class: 'big' }, 'Success rate ', h('strong', { class: 'success-rate' }, fmtPct(s.success_rate))),
    facts([
      ['Project', s.run.project],
      ['Tune', s.run.tune ?? 'default'],
      ['Agents', fmtNum(s.run.agents)],
      ['Jobs', fmtNum(s.run.jobs)],
      ['Jobs by status', countsLine(s.run.counts)],
      ['Started', timeEl(s.run.created_ms)],
      ['Duration', fmtDur(runDuration(s.run))],
      ['Throughput', `${(s.run.throughput_per_min ?? 0).toFixed(1)} jobs/min`],
      ['Outputs', fmtNum(s.outputs)],
    ]),
    table('Job duration percentiles', ['p50', 'p90', 'p99', 'max'], h('tbody', null, h('tr', null,
      ['p50', 'p90', 'p99', 'max'].map((p) => h('td', { class: 'num' }, fmtDur(s.duration_ms?.[p])))))));

  const delta = (x, y) => { const d = y - x; return d > 0 ? `+${fmtNum(d)}` : d < 0 ? `−${fmtNum(-d)}` : '0'; };

  const render = ({ a: A, b: B }) => {
    const errs = new Map();
    A.errors.forEach((e) => errs.set(e.error, [e.jobs, 0]));
    B.errors.forEach((e) => errs.set(e.error, [errs.get(e.error)?.[0] ?? 0, e.jobs]));
    const fields = new Map();
    A.output_fields.forEach((f) => fields.set(f.field, [f.filled, 0]));
    B.output_fields.forEach((f) => fields.set(f.field, [fields.get(f.field)?.[0] ?? 0, f.filled]));
    const cover = (n, total) => (total ? `${fmtNum(n)} (${((n / total) * 100).toFixed(1)} %)` : '—');
    body.replaceChildren(
      h('div', { class: 'columns even' }, side('a', A), side('b', B)),
      h('section', { class: 'panel', 'aria-labelledby': 'cmp-errors' }, h('h2', { id: 'cmp-errors' }, 'Errors'),
        table('Failed jobs per error message in A and B; delta is B minus A', ['Error', 'Jobs in A', 'Jobs in B', 'Delta'],
          h('tbody', null, errs.size ? [...errs].sort((x, y) => (y[1][0] + y[1][1]) - (x[1][0] + x[1][1])).map(([err, [x, y]]) => h('tr', null,
            h('th', { scope: 'row', class: 'error-text wrap' }, err), h('td', { class: 'num' }, fmtNum(x)),
            h('td', { class: 'num' }, fmtNum(y)), h('td', { class: 'num' }, delta(x, y))))
            : h('tr', null, h('td', { colspan: 4 }, 'No errors in either run.'))))),
      h('section', { class: 'panel', 'aria-labelledby': 'cmp-fields' }, h('h2', { id: 'cmp-fields' }, 'Output fields filled'),
        table('Outputs that fill each field, as a share of each run\'s outputs', ['Field', 'Filled in A', 'Filled in B'],
          h('tbody', null, fields.size ? [...fields].sort((x, y) => x[0].localeCompare(y[0])).map(([f, [x, y]]) => h('tr', null,
            h('th', { scope: 'row', class: 'mono' }, f), h('td', { class: 'num' }, cover(x, A.outputs)), h('td', { class: 'num' }, cover(y, B.outputs))))
            : h('tr', null, h('td', { colspan: 3 }, 'No outputs in either run.'))))));
  };

  (async () => {
    try {
      const [runs, cmp] = await Promise.all([
        api(`/runs?limit=100`),
        a && b ? api(`/compare?a=${enc(a)}&b=${enc(b)}`) : null,
      ]);
      if (!ctx.alive) return;
      const ids = runs.runs.map((r) => r.id);
      for (const [sel, want] of [[pickA, a ?? ids[1]], [pickB, b ?? ids[0]]]) {
        const opts = want && !ids.includes(want) ? [want, ...ids] : ids;
        sel.replaceChildren(...opts.map((id) => h('option', { value: id, selected: id === want }, id)));
      }
      if (cmp) render(cmp);
      else body.replaceChildren(h('p', null, 'Pick two runs to compare them side by side.'));
      ctx.ready('compare');
    } catch (err) { report(ctx, err); }
  })();

  return h('div', { id: 'compare-page' }, h('h1', null, 'Compare runs'), picker, body);
}

// ---------- start ----------

$('#token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('#token-input').value.trim());
  $('#token-input').value = '';
  $('#token-box').hidden = true;
  route();
});
// The skip link must not change the hash, which is the router's.
$('#skip-link').addEventListener('click', (e) => { e.preventDefault(); $('#main').focus(); });
window.addEventListener('hashchange', route);
route();
