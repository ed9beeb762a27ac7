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

/** An agent's badge: its own palette, since a normally stopped agent is no warning. */
function agentBadge(status) {
  return h('span', { class: `badge ag-${status}` }, status);
}

/** A table; a header is its text, or a <th> already built (a sortable one). */
function table(caption, headers, body, id) {
  return h('div', { class: 'table-wrap' },
    h('table', { id },
      h('caption', null, caption),
      h('thead', null, h('tr', null, headers.map((t) => (t instanceof Node && t.tagName === 'TH' ? t : h('th', { scope: 'col' }, t))))),
      body));
}

/**
 * Headers that sort a table: `columns` are [label, key] pairs (key null: not sortable). A
 * click sorts by that column, a second click the other way; `aria-sort` and an arrow show
 * the current one. `onSort(sort)` applies `sort` = { key, dir: 'asc' | 'desc' }.
 */
function sortableHeaders(columns, sort, onSort) {
  const buttons = new Map();
  const show = () => {
    for (const [key, { th, arrow }] of buttons) {
      const on = key === sort.key;
      th.setAttribute('aria-sort', on ? (sort.dir === 'asc' ? 'ascending' : 'descending') : 'none');
      arrow.textContent = on ? (sort.dir === 'asc' ? ' ▲' : ' ▼') : '';
    }
  };
  const headers = columns.map(([label, key]) => {
    if (key == null) return label;
    const arrow = h('span', { class: 'sort-arrow', 'aria-hidden': 'true' });
    const th = h('th', { scope: 'col', dataset: { sort: key } },
      h('button', {
        type: 'button', class: 'sort', title: `Sort by ${label.toLowerCase()}`,
        onclick: () => {
          sort = { key, dir: sort.key === key && sort.dir === 'asc' ? 'desc' : 'asc' };
          show();
          onSort(sort);
        },
      }, label, arrow));
    buttons.set(key, { th, arrow });
    return th;
  });
  show();
  return {
    headers,
    get sort() { return sort; },
    set(next) { sort = next; show(); },
  };
}

/** Orders two sort keys: numbers by value, text by the reader's collation; missing ones last either way. */
function compareKeys(a, b, dir) {
  if (a == null || b == null) return (a == null) - (b == null);
  const order = typeof a === 'number' && typeof b === 'number' ? a - b : String(a).localeCompare(String(b));
  return dir === 'desc' ? -order : order;
}

/** Reorders `tbody`'s rows by `key(row)` (rows it gives undefined for stay last), stably. */
function sortRows(tbody, key, dir) {
  const rows = [...tbody.rows];
  const keyed = rows.map((tr, at) => ({ tr, at, k: key(tr) }));
  keyed.sort((x, y) => (x.k === undefined) - (y.k === undefined) || compareKeys(x.k, y.k, dir) || x.at - y.at);
  if (keyed.some((x, at) => x.tr !== rows[at])) tbody.append(...keyed.map((x) => x.tr));
}

/** A definition list from [label, value] pairs; values may be nodes. */
function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([k, v]) => h('div', null, h('dt', null, k), h('dd', null, v ?? '—'))));
}

/** What a person calls a run: its name when it was given one, else its id. */
const runLabel = (r) => r.name || r.id;

/**
 * A run's tags as small chips, each a link to the runs list searching that tag (plain chips
 * where following one would leave unsaved input, as a preview in the Launch form).
 */
function tagChips(tags, links = true) {
  if (!tags?.length) return null;
  return h('ul', { class: 'tags', 'aria-label': 'Tags' }, tags.map((t) => h('li', null, links
    ? h('a', { class: 'tag', href: `#/?q=${enc(`tag:${t}`)}`, title: `Runs tagged ${t}` }, t)
    : h('span', { class: 'tag' }, t))));
}

/** A link to a run under its name with the id beneath in small type; just the id when unnamed. */
function runLink(r) {
  const link = h('a', { href: runHref(r.id), class: r.name ? 'run-name' : 'run-id', title: r.id }, runLabel(r));
  return r.name ? h('span', { class: 'run-label' }, link, h('span', { class: 'run-id id-sub mono' }, r.id)) : link;
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
const plural = (n, word) => `${fmtNum(n)} ${word}${n === 1 ? '' : 's'}`;
const compact = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 });
const fmtCompact = (n) => compact.format(n);
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

/**
 * A bar split by how jobs ended: a canceled run's canceled share is grey, not green.
 * Decorative: the caller gives the numbers in text or through a <progress>.
 */
function stackBar(counts, jobs) {
  const total = Math.max(jobs, done(counts), 1);
  const parts = [['succeeded', counts.succeeded], ['failed', (counts.failed ?? 0) + (counts.abandoned ?? 0)], ['canceled', counts.canceled]];
  const bar = h('span', { class: 'stack-bar', 'aria-hidden': 'true' });
  for (const [cls, n] of parts) {
    if (!n) continue;
    const seg = h('span', { class: `seg seg-${cls}` });
    seg.style.width = `${(n / total) * 100}%`;
    bar.append(seg);
  }
  return bar;
}

function progressCell(run) {
  const d = done(run.counts);
  const pct = run.jobs ? Math.round((d / run.jobs) * 100) : 0;
  const c = run.counts;
  const title = `${fmtNum(c.succeeded ?? 0)} succeeded, ${fmtNum((c.failed ?? 0) + (c.abandoned ?? 0))} failed or abandoned, ${fmtNum(c.canceled ?? 0)} canceled`;
  return h('span', { class: 'progress-cell', title },
    stackBar(c, run.jobs), ` ${fmtNum(d)}/${fmtNum(run.jobs)} (${pct}\u00a0%)`);
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

async function api(path, { method = 'GET', json, form, raw = false, signal } = {}) {
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  let body = form;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  }
  let res;
  try {
    res = await fetch(API + path, { method, headers, body, signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e; // the caller gave up on it: no message to show
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
function downloadLink(ctx, path, filename, label, cls = 'button') {
  return h('a', {
    href: API + path, download: filename, class: cls,
    onclick: async (e) => {
      if (e.currentTarget.getAttribute('aria-disabled') === 'true') { e.preventDefault(); return; }
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

// ---------- a launch's own dashboard ----------

/**
 * What GET /about says this server is. `orchestrate launch` serves the dashboard only while its
 * run goes on: once the run ended (`ended`) and the process is gone (`closed`), controls that
 * need the server are disabled and a banner says how to see the run later.
 * An older server answers 404 and nothing here changes.
 */
const about = { serves: null, runId: null, later: null, ended: false, closed: false };
const lives = new Set();
const CLOSED_TEXT = 'The launch\'s dashboard has closed.';

/** The latest GET /about, which pages that depend on who serves them wait for. */
let aboutLoaded = Promise.resolve();

function loadAbout() {
  aboutLoaded = readAbout();
  return aboutLoaded;
}

async function readAbout() {
  let answer;
  try { answer = await api('/about'); } catch { return; }
  Object.assign(about, { serves: answer?.serves ?? null, runId: answer?.run_id ?? null, later: answer?.later ?? null });
  if (about.serves !== 'launch') return;
  checkLaunch();
  setInterval(checkLaunch, 5000);
}

/** Follows the launch's run (for pages without its live feed) and notices the server going. */
async function checkLaunch() {
  if (about.closed) return;
  try {
    if (about.ended || !about.runId) await api('/about');
    else noteRun(await api(`/runs/${enc(about.runId)}`));
  } catch (e) {
    if (e.status === 0) launchClosed();
  }
}

/** Every Run the dashboard receives passes here: the launch's run ending ends its dashboard. */
function noteRun(r) {
  if (about.serves === 'launch' && !about.ended && r?.id === about.runId && !isOpen(r.status)) launchEnded();
}

function launchEnded() {
  about.ended = true;
  renderLaunchBanner();
  syncLaunchControls();
}

function launchClosed() {
  if (about.closed) return;
  about.closed = true;
  launchEnded();
  for (const live of lives) { live.close(); live.status?.(CLOSED_TEXT); }
}

/** Whether a server that says it is a launch stopped answering: then no reconnect will help. */
async function launchGone() {
  if (about.serves !== 'launch') return false;
  if (!about.closed) {
    try { await fetch(`${API}/about`, { cache: 'no-store' }); } catch { launchClosed(); }
  }
  return about.closed;
}

function renderLaunchBanner() {
  const later = about.later;
  // The URL comes from our own server, but only an http(s) link is ever made clickable.
  const url = typeof later?.url === 'string' && /^https?:\/\//i.test(later.url) ? later.url : null;
  const command = later?.command ? h('code', { class: 'later-command' }, later.command) : null;
  // Without a command, the run lives on in a monitor service that is already up.
  const how = command
    ? [' To see the run later, run ', command, ' ', copyButton(command), url ? [' and open ', h('a', { href: url }, url)] : '', '.']
    : url ? [' The run stays in its monitor: ', h('a', { href: url }, url), '.'] : '';
  $('#launch-banner').replaceChildren(
    h('p', null, h('strong', null, about.closed ? CLOSED_TEXT : 'This run ended.'), ' ',
      about.closed ? 'It closed with ' : 'This dashboard closes with ', h('code', null, 'orchestrate launch'), '.', how));
  $('#launch-banner').hidden = false;
}

function copyButton(codeEl) {
  const btn = h('button', { type: 'button', class: 'small', 'aria-label': 'Copy the command' }, 'Copy');
  btn.onclick = async () => {
    let copied = false;
    try {
      await navigator.clipboard.writeText(codeEl.textContent);
      copied = true;
    } catch {
      // No clipboard API outside a secure context: select the text and ask the old way.
      getSelection().selectAllChildren(codeEl);
      copied = document.execCommand?.('copy') ?? false;
    }
    btn.textContent = copied ? 'Copied' : 'Selected: press Ctrl+C';
    setTimeout(() => { btn.textContent = 'Copy'; }, 2500);
  };
  return btn;
}

/** Marks a control that needs the server; `what` completes "to ... ," in its title once disabled. */
function needsServer(el, what) {
  el.dataset.needsServer = what;
  return el;
}

/** Enables or disables a control, never enabling one whose launch dashboard has ended. */
function setEnabled(el, ok) {
  el.disabled = !ok;
  if (about.ended && el.dataset.needsServer) disableControl(el);
}

function disableControl(el) {
  const why = `The run ended and this dashboard closes with orchestrate launch: to ${el.dataset.needsServer}, use orchestrate serve (see the banner above).`;
  if (el.tagName === 'A') {
    el.removeAttribute('href');
    el.setAttribute('aria-disabled', 'true');
    el.setAttribute('role', 'link');
  } else el.disabled = true;
  el.title = why;
}

function syncLaunchControls() {
  if (!about.ended) return;
  document.querySelectorAll('[data-needs-server]').forEach(disableControl);
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
    lives.add(this);
    ctx.on(() => this.close());
    if (about.closed) this.status?.(CLOSED_TEXT);
    else this.connect();
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

  async reconnectLater() {
    if (!this.ctx.alive || this.closed) return;
    // A launch's server goes with its run: say so rather than reconnect forever.
    if (await launchGone()) return;
    if (this.closed) return;
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
    lives.delete(this);
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
    page = runPage(ctx, parts[1], params);
  } else if (parts[0] === 'launch') {
    name = 'launch';
    page = launchPage(ctx, params.get('relaunch'));
  } else if (parts[0] === 'compare') {
    name = 'compare';
    page = comparePage(ctx, params.get('a'), params.get('b'));
  } else {
    page = runsPage(ctx, params.get('q'));
  }
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === (name === 'run' || name === 'job' ? 'runs' : name)) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  $('#page').replaceChildren(page);
  syncLaunchControls();
}

// ---------- runs page ----------

/**
 * A search as terms a run must all match: `tag:x` is one of its tags exactly, any other word
 * a part of its name, a tag, its id or its project. Case is ignored throughout.
 */
function parseSearch(text) {
  return text.toLowerCase().split(/\s+/).filter(Boolean)
    .map((w) => (w.startsWith('tag:') && w.length > 4 ? { tag: w.slice(4) } : { part: w }));
}

function runMatches(r, terms) {
  const tags = (r.tags ?? []).map((t) => t.toLowerCase());
  const text = [r.name ?? '', r.id, r.project ?? '', ...tags].map((x) => x.toLowerCase());
  return terms.every((t) => (t.tag != null ? tags.includes(t.tag) : text.some((x) => x.includes(t.part))));
}

function runsPage(ctx, query) {
  document.title = 'Runs · Armada';
  const selected = new Set();
  const runs = new Map(); // the loaded runs by id, which the search filters
  const tbody = h('tbody');
  const more = h('button', { type: 'button', hidden: true }, 'Load more runs');
  const compareBtn = h('button', { type: 'button', disabled: true }, 'Compare selected');
  const live = h('p', { class: 'live-status', role: 'status', 'aria-live': 'polite' }, 'Connecting…');
  const search = h('input', {
    id: 'runs-search', type: 'search', value: query ?? '', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'name, tag:x, id or project', 'aria-describedby': 'runs-search-note',
  });
  const searchNote = h('span', { id: 'runs-search-note', class: 'sub', 'aria-live': 'polite' });
  let terms = parseSearch(search.value);
  let next = null;

  // Sorting is over the loaded runs, in the page: newest first is the server's order.
  const RUN_KEYS = {
    name: (r) => runLabel(r).toLowerCase(), status: (r) => r.status, started: (r) => r.created_ms,
    jobs: (r) => r.jobs, duration: (r) => runDuration(r),
  };
  const applySort = () => {
    const { key, dir } = sorter.sort;
    sortRows(tbody, (tr) => { const r = runs.get(tr.dataset.runId); return r && RUN_KEYS[key](r); }, dir);
  };
  const sorter = sortableHeaders([['Compare', null], ['Run', 'name'], ['Status', 'status'], ['Progress', null],
    ['Jobs by status', 'jobs'], ['Started', 'started'], ['Duration', 'duration'], ['Throughput', null], ['Actions', null]],
  { key: 'started', dir: 'desc' }, applySort);

  const syncCompare = () => {
    compareBtn.disabled = selected.size !== 2;
    compareBtn.textContent = `Compare selected (${selected.size}/2)`;
  };
  compareBtn.onclick = () => {
    const [a, b] = [...selected];
    location.hash = `#/compare?a=${enc(a)}&b=${enc(b)}`;
  };

  const deleteButton = (r) => {
    const btn = needsServer(h('button', {
      type: 'button', class: 'danger small', 'aria-label': `Delete run ${runLabel(r)}`,
      title: isOpen(r.status) ? 'A run can be deleted once it has ended: cancel it first.' : null,
      onclick: async () => {
        if (!confirm(`Delete run ${runLabel(r)} with all its jobs, events, outputs and attachments?`)) return;
        try {
          await api(`/runs/${enc(r.id)}`, { method: 'DELETE' });
          removeRow(r.id);
          notify(`Run ${runLabel(r)} deleted.`, 'info');
        } catch (err) { report(ctx, err); }
      },
    }, 'Delete'), 'delete a run');
    // Rows come and go with live updates: each new button learns whether the server is gone.
    setEnabled(btn, !isOpen(r.status));
    return btn;
  };

  const row = (r) => h('tr', { dataset: { runId: r.id, created: r.created_ms }, hidden: !runMatches(r, terms) },
    h('td', null, h('input', {
      type: 'checkbox', 'aria-label': `Select run ${runLabel(r)} to compare`, checked: selected.has(r.id),
      onchange: (e) => { e.target.checked ? selected.add(r.id) : selected.delete(r.id); syncCompare(); },
    })),
    h('th', { scope: 'row' }, runLink(r), h('div', { class: 'sub' }, r.project, r.tune ? ` · ${r.tune}` : ''), tagChips(r.tags)),
    h('td', null, badge(r.status)),
    h('td', null, progressCell(r)),
    h('td', null, countsLine(r.counts)),
    h('td', null, timeEl(r.created_ms)),
    h('td', null, fmtDur(runDuration(r))),
    h('td', { class: 'num' }, `${(r.throughput_per_min ?? 0).toFixed(1)}/min`),
    h('td', { class: 'row-actions' }, deleteButton(r)));

  const findRow = (id) => [...tbody.rows].find((tr) => tr.dataset.runId === id);
  const removeRow = (id) => { findRow(id)?.remove(); runs.delete(id); selected.delete(id); syncCompare(); noteSearch(); };

  // Says how much of the list a search shows; only loaded runs are searched.
  const noteSearch = () => {
    if (!terms.length) { searchNote.textContent = ''; return; }
    const shown = [...runs.values()].filter((r) => runMatches(r, terms)).length;
    const found = shown ? `${fmtNum(shown)} of ${plural(runs.size, 'loaded run')} match${shown === 1 ? 'es' : ''}` : 'No loaded run matches';
    searchNote.textContent = found + (next == null ? '.' : '; load more runs to search older ones.');
  };

  const applySearch = () => {
    terms = parseSearch(search.value);
    for (const tr of tbody.rows) {
      const r = runs.get(tr.dataset.runId);
      if (r) tr.hidden = !runMatches(r, terms);
    }
    noteSearch();
    // The query lives in the address (for Back and for tag links) without a new route.
    history.replaceState(null, '', search.value.trim() ? `#/?q=${enc(search.value.trim())}` : '#/');
  };
  search.oninput = applySearch;

  const show = (r) => {
    noteRun(r);
    runs.set(r.id, r);
    const old = findRow(r.id); // a live message may have shown it already
    if (old) { old.replaceWith(row(r)); return true; }
    return false;
  };

  // Upserts keep newest-first order; a run older than the loaded pages belongs to a later page.
  const upsert = (r) => {
    if (show(r)) return;
    const after = [...tbody.rows].find((tr) => Number(tr.dataset.created) < r.created_ms);
    if (after) tbody.insertBefore(row(r), after);
    else if (next == null) tbody.append(row(r));
    else runs.delete(r.id);
  };

  const load = async (reset) => {
    const q = new URLSearchParams({ limit: PAGE });
    if (!reset && next) q.set('after', next);
    const res = await api(`/runs?${q}`);
    if (!ctx.alive) return;
    if (reset) { tbody.replaceChildren(); runs.clear(); }
    for (const r of res.runs) if (!show(r)) tbody.append(row(r));
    next = res.next;
    more.hidden = next == null;
    if (!tbody.rows.length) {
      tbody.append(h('tr', null, h('td', { colspan: 9 }, 'No runs yet. Launch one from the Launch page or with `orchestrate launch`.')));
    }
    applySort();
    noteSearch();
  };
  more.onclick = () => load(false).catch((e) => report(ctx, e));

  const sock = new Live(ctx, null, {
    status: (t) => { live.textContent = t; },
    onReload: () => load(true).catch((e) => report(ctx, e)),
    onBatch: (msgs) => {
      const changed = new Map();
      for (const m of msgs) {
        if (m.type === 'run') changed.set(m.run.id, m.run);
        else if (m.type === 'deleted') { changed.delete(m.run_id); removeRow(m.run_id); }
      }
      if (changed.size) tbody.querySelector('tr:not([data-run-id])')?.remove();
      changed.forEach(upsert);
      if (changed.size) { applySort(); noteSearch(); }
    },
  });

  load(true).then(() => { sock.release(); ctx.ready('runs'); }, (e) => report(ctx, e));
  syncCompare();
  return h('div', { id: 'runs-page' },
    h('div', { class: 'page-head' }, h('h1', null, 'Runs'),
      h('div', { class: 'actions' }, compareBtn, h('a', { class: 'button', href: '#/launch' }, 'Launch a run'))),
    h('form', { class: 'filters', role: 'search', onsubmit: (e) => e.preventDefault() },
      h('label', { for: 'runs-search' }, 'Search'), search, searchNote),
    live,
    table('Runs, newest first unless sorted by a column. Select two to compare them.', sorter.headers, tbody, 'runs-table'),
    more);
}

// ---------- charts (hand-written SVG: the page may load no library) ----------

const SVG_NS = 'http://www.w3.org/2000/svg';
const CHART = { w: 420, h: 190, left: 40, right: 14, top: 10, bottom: 22 };
const CHART_WIDE = { ...CHART, w: 640, h: 200 }; // for a chart alone across a half page
const TIME_STEPS = [100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5, 9e5, 18e5, 36e5, 72e5, 144e5, 432e5, 864e5];

/** Like h() for SVG elements. */
function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs ?? {})) if (v != null) el.setAttribute(k, String(v));
  el.append(...children.flat(Infinity).filter((c) => c != null && c !== false));
  return el;
}

/** A round step (1, 2 or 5 times a power of ten) giving about `count` ticks over `span`. */
function niceStep(span, count) {
  const raw = Math.max(span, 1e-9) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((k) => k * mag).find((st) => st >= raw);
}

const timeStep = (span, count) => TIME_STEPS.find((st) => st >= span / count) ?? niceStep(span, count);

/** Time since the run started, as mm:ss (h:mm:ss past an hour; tenths when the ticks need them). */
function fmtClock(ms, step = 1000) {
  const tenths = step < 1000;
  const total = tenths ? Math.round(ms / 100) / 10 : Math.round(ms / 1000);
  const hh = Math.floor(total / 3600);
  const mm = Math.floor((total % 3600) / 60);
  const ss = total % 60;
  const sec = tenths ? ss.toFixed(1).padStart(4, '0') : pad(ss);
  return hh ? `${hh}:${pad(mm)}:${sec}` : `${pad(mm)}:${sec}`;
}

/** The colour key, drawn with the same classes as the chart's shapes. */
function legend(series) {
  return h('ul', { class: 'legend' }, series.map((se) => h('li', null,
    svg('svg', { viewBox: '0 0 10 10', width: 10, height: 10, 'aria-hidden': 'true' }, svg('rect', { width: 10, height: 10, class: `c-${se.cls}` })),
    ` ${se.name}`)));
}

/**
 * One stacked chart over n bins of width bw starting at x0, shared by every chart here.
 * kind 'bars': series values are per bin (n of them); kind 'area': per bin edge (n + 1).
 * Tooltips are SVG <title>s on a transparent strip per bin or edge.
 */
function stackChart({ id, label, kind, x0, bw, n, series, xStep, xFmt, tip, yMax, empty, frame = CHART }) {
  const { w, h: ht, left, right, top, bottom } = frame;
  const pw = w - left - right;
  const ph = ht - top - bottom;
  const points = kind === 'area' ? n + 1 : n;
  let peak = yMax ?? 0;
  for (let i = 0; i < points; i += 1) peak = Math.max(peak, series.reduce((sum, se) => sum + (se.values[i] ?? 0), 0));
  const yStep = Math.max(1, niceStep(Math.max(peak, 1), 4));
  const yTop = Math.max(yStep, Math.ceil(peak / yStep) * yStep);
  const span = n * bw;
  const X = (x) => left + ((x - x0) / span) * pw;
  const Y = (v) => top + ph - (v / yTop) * ph;

  const grid = [];
  for (let v = 0; v <= yTop; v += yStep) {
    grid.push(svg('line', { x1: left, x2: left + pw, y1: Y(v), y2: Y(v), class: v ? 'grid' : 'axis' }),
      svg('text', { x: left - 5, y: Y(v) + 4, 'text-anchor': 'end' }, fmtCompact(v)));
  }
  const xs = xStep(span, 5);
  for (let t = Math.ceil(x0 / xs) * xs, k = 0; t <= x0 + span + 1e-9 && k < 30; t += xs, k += 1) {
    grid.push(svg('line', { x1: X(t), x2: X(t), y1: top + ph, y2: top + ph + 4, class: 'axis' }),
      svg('text', { x: X(t), y: ht - 6, 'text-anchor': 'middle' }, xFmt(t, xs)));
  }

  const shapes = [];
  const base = new Array(points).fill(0);
  for (const se of series) {
    if (kind === 'bars') {
      const bar = Math.max(pw / n - (n > 40 ? 0.5 : 2), 0.5);
      for (let i = 0; i < n; i += 1) {
        const v = se.values[i] ?? 0;
        if (v > 0) shapes.push(svg('rect', { x: X(x0 + i * bw) + (pw / n - bar) / 2, width: bar, y: Y(base[i] + v), height: Y(base[i]) - Y(base[i] + v), class: `c-${se.cls}` }));
        base[i] += v;
      }
    } else {
      const upper = [];
      const lower = [];
      for (let i = 0; i < points; i += 1) {
        const x = X(x0 + i * bw).toFixed(1);
        lower.push(`${x},${Y(base[i]).toFixed(1)}`);
        base[i] += se.values[i] ?? 0;
        upper.push(`${x},${Y(base[i]).toFixed(1)}`);
      }
      shapes.push(svg('polygon', { points: [...upper, ...lower.reverse()].join(' '), class: `c-${se.cls}` }));
    }
  }

  const strip = pw / n;
  const hovers = Array.from({ length: points }, (_, i) => {
    const x = kind === 'bars' ? X(x0 + i * bw) : Math.max(left, X(x0 + i * bw) - strip / 2);
    const width = kind === 'bars' ? strip : Math.min(strip, left + pw - x);
    return svg('rect', { x, y: top, width: Math.max(width, 0.5), height: ph, class: 'hover' }, svg('title', null, tip(i)));
  });

  return h('figure', { class: 'chart', id },
    h('figcaption', null, label),
    svg('svg', { viewBox: `0 0 ${w} ${ht}`, role: 'img', 'aria-label': label, preserveAspectRatio: 'xMidYMid meet' },
      svg('g', { class: 'ticks' }, grid), svg('g', null, shapes), svg('g', null, hovers)),
    empty ? h('p', { class: 'sub' }, empty) : legend(series));
}

/**
 * The timeline's buckets as dense arrays over start_ms..end_ms: omitted buckets are zeros.
 * `minN` stretches the range with empty bins (two runs drawn over one time axis).
 */
function timelineBins(tl, minN = 1) {
  const bw = Math.max(1, tl.bucket_ms);
  const n = Math.min(2000, Math.max(minN, Math.ceil((tl.end_ms - tl.start_ms) / bw)));
  const bins = { n, bw };
  for (const k of ['started', ...TERMINAL]) bins[k] = new Array(n).fill(0);
  for (const b of tl.buckets ?? []) {
    const i = Math.min(n - 1, Math.max(0, Math.floor((b.at_ms - tl.start_ms) / bw)));
    for (const k of ['started', ...TERMINAL]) bins[k][i] += b[k] ?? 0;
  }
  return bins;
}

const clockRange = (bw, i, j) => `${fmtClock(i * bw, bw)}–${fmtClock(j * bw, bw)}`;

/** The most jobs one bin saw finish, for a y axis shared by two charts. */
const throughputPeak = (b) => b.succeeded.reduce((peak, s, i) => Math.max(peak, s + b.failed[i]), 0);

/** Jobs finished per bucket; `n` and `yMax` give two runs' charts the same axes. */
function chartThroughput(tl, { id = 'chart-throughput', frame = CHART, n, yMax } = {}) {
  const b = timelineBins(tl, n);
  const finished = b.succeeded.reduce((x, y) => x + y, 0) + b.failed.reduce((x, y) => x + y, 0);
  return stackChart({
    id, frame, yMax, kind: 'bars', x0: 0, bw: b.bw, n: b.n,
    label: `Throughput: jobs finished per ${fmtDur(b.bw)} (time since start, mm:ss)`,
    series: [{ name: 'succeeded', cls: 'succeeded', values: b.succeeded }, { name: 'failed', cls: 'failed', values: b.failed }],
    xStep: timeStep, xFmt: fmtClock,
    tip: (i) => `${clockRange(b.bw, i, i + 1)}: ${fmtNum(b.succeeded[i])} succeeded, ${fmtNum(b.failed[i])} failed`,
    empty: finished ? null : 'No job has finished yet.',
  });
}

/**
 * Jobs by state at each bucket edge, from cumulative sums: queued = jobs − started,
 * running = started − ended (any terminal state). Clamped: a job canceled before it started
 * ends without starting.
 */
function chartStates(tl, jobs, id = 'chart-states') {
  const b = timelineBins(tl);
  const st = { queued: [jobs], running: [0], succeeded: [0], failed: [0], other: [0] };
  const sum = { started: 0, succeeded: 0, failed: 0, other: 0 };
  for (let i = 0; i < b.n; i += 1) {
    sum.started += b.started[i];
    sum.succeeded += b.succeeded[i];
    sum.failed += b.failed[i];
    sum.other += b.canceled[i] + b.abandoned[i];
    const ended = sum.succeeded + sum.failed + sum.other;
    const running = Math.max(0, sum.started - ended);
    st.running.push(running);
    st.queued.push(Math.max(0, jobs - running - ended));
    for (const k of ['succeeded', 'failed', 'other']) st[k].push(sum[k]);
  }
  const series = [
    { name: 'succeeded', cls: 'succeeded', values: st.succeeded },
    { name: 'failed', cls: 'failed', values: st.failed },
    sum.other ? { name: 'canceled or abandoned', cls: 'canceled', values: st.other } : null,
    { name: 'running', cls: 'running', values: st.running },
    { name: 'queued', cls: 'queued', values: st.queued },
  ].filter(Boolean);
  return stackChart({
    id, kind: 'area', x0: 0, bw: b.bw, n: b.n, yMax: jobs, series,
    label: 'Jobs by state over time (mm:ss since start)',
    xStep: timeStep, xFmt: fmtClock,
    tip: (i) => `${fmtClock(i * b.bw, b.bw)}: ${series.map((se) => `${fmtNum(se.values[i])} ${se.name}`).join(', ')}`,
  });
}

/**
 * A duration precise enough that values `step` apart read apart: ticks 0.2 ms apart are
 * "21.2 ms", "21.4 ms" (not "21 ms" twice), 10 ms apart past a second "1.02 s", below a
 * millisecond µs, past a minute "1m 05.5s".
 */
function fmtDurStep(ms, step) {
  // Decimals of `unit` that show a difference of `step` (up to 3).
  const digits = (unit) => Math.min(3, Math.max(0, Math.ceil(-Math.log10(step / unit) - 1e-9)));
  if (ms < 1 && step < 1) return `${(ms * 1000).toFixed(digits(1e-3))} µs`;
  if (ms < 1000) return `${ms.toFixed(digits(1))} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(digits(1000))} s`;
  if (step >= 60000) return fmtDur(ms);
  // As fmtDur writes minutes ("1m 05s"), with the seconds' decimals the step needs.
  const d = digits(1000);
  const total = Math.round((ms / 1000) * 10 ** d) / 10 ** d;
  const m = Math.floor(total / 60);
  const sec = (total - m * 60).toFixed(d).padStart(d ? d + 3 : 2, '0');
  return m < 60 ? `${m}m ${sec}s` : `${Math.floor(m / 60)}h ${pad(m % 60)}m ${sec}s`;
}

function chartDurations(d, id = 'chart-durations') {
  const bw = d.bucket_ms > 0 ? d.bucket_ms : Math.max(1, d.max_ms - d.min_ms);
  const counts = d.counts ?? [];
  return stackChart({
    id, kind: 'bars', x0: d.min_ms, bw, n: Math.max(1, counts.length),
    label: `Duration of succeeded jobs (${fmtDurStep(d.min_ms, bw)} to ${fmtDurStep(d.max_ms, bw)})`,
    series: [{ name: 'jobs', cls: 'duration', values: counts }],
    xStep: niceStep, xFmt: fmtDurStep,
    tip: (i) => `${fmtDurStep(d.min_ms + i * bw, bw)}–${fmtDurStep(d.min_ms + (i + 1) * bw, bw)}: ${fmtNum(counts[i] ?? 0)} jobs`,
  });
}

/**
 * GET /timeline, or null when this server has no such route (an older one answers 404).
 * `bucketMs` asks for that bucket width (the server may widen it to keep 120 buckets at most).
 */
async function fetchTimeline(runId, bucketMs) {
  try {
    return await api(`/runs/${enc(runId)}/timeline${bucketMs ? `?bucket_ms=${bucketMs}` : ''}`);
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
}

/** The run page's charts: refetched at most every 2 s however fast the run changes. */
function chartsSection(ctx, runId) {
  const body = h('div', { class: 'charts' });
  const el = h('section', { class: 'panel', id: 'run-charts', 'aria-labelledby': 'charts-title', hidden: true },
    h('h2', { id: 'charts-title' }, 'Over time'), body);
  const MIN_GAP = 2000;
  let jobs = 0;
  let last = 0;
  let timer = null;
  let busy = false;
  let again = false;
  let absent = false;
  ctx.on(() => clearTimeout(timer));

  const draw = (tl) => {
    body.replaceChildren(chartThroughput(tl), chartStates(tl, jobs),
      tl.durations ? chartDurations(tl.durations)
        : h('figure', { class: 'chart', id: 'chart-durations' }, h('figcaption', null, 'Duration of succeeded jobs'), h('p', { class: 'sub' }, 'No job has succeeded yet.')));
    el.hidden = false;
  };

  const fetchNow = async () => {
    timer = null;
    if (busy) { again = true; return; }
    busy = true;
    last = Date.now();
    try {
      const tl = await fetchTimeline(runId);
      if (!ctx.alive) return;
      if (tl) draw(tl);
      else { absent = true; el.hidden = true; }
    } catch {
      // Charts are secondary: keep the last drawing; the next change tries again.
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  };

  function refresh() {
    if (absent || timer || !ctx.alive) return;
    timer = setTimeout(fetchNow, Math.max(0, last + MIN_GAP - Date.now()));
  }

  // A run that just ended gets its final drawing at once: a launch's server may be gone in 2 s.
  const refreshNow = () => {
    clearTimeout(timer);
    timer = null;
    last = 0;
    refresh();
  };

  return { el, refresh, refreshNow, setJobs: (n) => { jobs = n; } };
}

// ---------- run page ----------

function runPage(ctx, runId, params) {
  document.title = `Run ${runId} · Armada`;
  const path = `/runs/${enc(runId)}`;
  let run = null;

  // Header: built once and updated in place so buttons keep focus across live updates.
  const title = h('h1', null, 'Run ', h('span', { class: 'mono' }, runId));
  const tagsSlot = h('span');
  let label = null;
  const statusSlot = h('span');
  // The <progress> is what assistive technology reads; the split bar beside it is what is seen.
  const progress = h('progress', { id: 'run-progress', class: 'visually-hidden', value: 0, max: 1, 'aria-label': 'Jobs done' });
  let progressBar = h('span', { class: 'stack-bar' });
  const progressText = h('span', { class: 'progress-text' });
  const summary = h('div', { class: 'summary' });
  const stalledNote = h('p', { class: 'stalled-note', role: 'status', hidden: true });
  const cancelBtn = needsServer(h('button', { type: 'button', class: 'danger' }, 'Cancel run'), 'cancel a run');
  const retryBtn = needsServer(h('button', { type: 'button' }, 'Retry failed jobs'), 'retry its failed jobs');

  // A named run is titled by its name, the id beside it in small type.
  const renderLabel = (r) => {
    const key = JSON.stringify([r.name, r.tags]);
    if (key === label) return;
    label = key;
    if (r.name) title.replaceChildren(h('span', { class: 'run-name' }, r.name), ' ', h('span', { class: 'id-sub mono', title: 'Run id' }, r.id));
    tagsSlot.replaceChildren(tagChips(r.tags) ?? '');
    document.title = `${r.name ? `${r.name} (run ${r.id})` : `Run ${r.id}`} · Armada`;
  };

  const renderHeader = (r) => {
    run = r;
    noteRun(r);
    renderLabel(r);
    charts.setJobs(r.jobs);
    statusSlot.replaceChildren(badge(r.status));
    stalledNote.hidden = !r.stalled_reason;
    stalledNote.textContent = r.stalled_reason ? `Stalled: ${r.stalled_reason}.` : '';
    const d = done(r.counts);
    progress.max = r.jobs || 1;
    progress.value = d;
    const bar = stackBar(r.counts, r.jobs);
    progressBar.replaceWith(bar);
    progressBar = bar;
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
    setEnabled(cancelBtn, isOpen(r.status));
    setEnabled(retryBtn, r.counts.failed || r.counts.abandoned);
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
      setEnabled(retryBtn, true);
      if (e.status === 501) notify(`Retry is not available from this monitor (${e.message}): retrying needs the project's orchestrator.`);
      else report(ctx, e);
    }
  };

  const jobs = jobsSection(ctx, runId, params);
  const events = eventsSection(ctx, runId);
  const agents = agentsSection(ctx, runId);
  const failures = failuresSection(ctx, runId, (error) => jobs.filterError(error));
  const charts = chartsSection(ctx, runId);

  // Agents and failures are secondary: their errors are shown but do not hold the page back.
  const reload = async () => {
    const side = [agents.load(), failures.load()].map((p) => p.catch((e) => report(ctx, e)));
    const [r] = await Promise.all([api(path), jobs.load(true), events.load(), ...side]);
    if (ctx.alive) renderHeader(r);
    charts.refresh();
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
        if (finished) { agents.load().catch(() => {}); failures.load().catch(() => {}); charts.refreshNow(); }
      }
      jobs.update(changed);
      events.append(evs);
      if (latest || changed.size) charts.refresh();
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
    h('div', { class: 'page-head' }, title, statusSlot, tagsSlot,
      h('div', { class: 'actions' }, cancelBtn, retryBtn,
        needsServer(h('a', { class: 'button', href: `#/launch?relaunch=${enc(runId)}` }, 'Relaunch'), 'relaunch it'),
        needsServer(downloadLink(ctx, `${path}/outputs?format=jsonl`, `${runId}-outputs.jsonl`, 'Outputs JSONL'), 'export its outputs'),
        needsServer(downloadLink(ctx, `${path}/outputs?format=csv`, `${runId}-outputs.csv`, 'Outputs CSV'), 'export its outputs'))),
    stalledNote,
    h('div', { class: 'progress-row' }, progress, progressBar, progressText),
    summary,
    charts.el,
    jobs.el,
    h('div', { class: 'columns even' }, events.el, h('div', null, failures.el, agents.el)));
}

/** A job's last event: the API gives a message, or a kind name that reads better as words. */
function lastEventText(j) {
  const ev = j.last_event;
  if (ev == null) return '—';
  if (!/^[a-z]+(_[a-z]+)*$/.test(ev)) return ev;
  return eventSentence({ kind: ev, agent: j.agent ?? '?', attempt: j.attempts, data: null, message: null }).text;
}

const JOB_SORTS = ['index', 'duration', 'attempts', 'started', 'finished'];

/**
 * A jobs search as the API takes it: `key=value` looks in inputs, `out.key=value` in outputs.
 * Null for an empty box, { error } for one the API would refuse.
 */
function parseJobSearch(text) {
  const t = text.trim();
  if (!t) return null;
  const m = /^(out\.)?([A-Za-z0-9_-]+)=(.*)$/s.exec(t);
  if (!m) return { error: 'Search as key=value (a key of the input) or out.key=value (of the output); a key is letters, digits, _ and -.' };
  return { param: m[1] ? 'output' : 'input', value: `${m[2]}:${m[3]}` };
}

/** The jobs table: filters, a payload search and a sort (both kept in the address), paged on the server. */
function jobsSection(ctx, runId, params) {
  const tbody = h('tbody');
  const more = h('button', { type: 'button', hidden: true }, 'Load more jobs');
  const statusSel = h('select', { id: 'filter-status', name: 'status' },
    h('option', { value: '' }, 'all'), JOB_STATUSES.map((s) => h('option', { value: s }, s)));
  const agentIn = h('input', { id: 'filter-agent', type: 'number', min: 0, inputmode: 'numeric' });
  const attemptIn = h('input', { id: 'filter-attempt', type: 'number', min: 0, inputmode: 'numeric' });
  const errorIn = h('input', { id: 'filter-error', type: 'text', placeholder: 'exact message' });
  const searchIn = h('input', {
    id: 'jobs-search', type: 'search', value: params?.get('q') ?? '', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'key=value or out.key=value', 'aria-describedby': 'jobs-search-note',
  });
  const searchNote = h('span', { id: 'jobs-search-note', class: 'sub', 'aria-live': 'polite' });
  const summary = h('p', { class: 'sub', 'aria-live': 'polite' });
  const asked = params?.get('sort');
  const sorter = sortableHeaders([['Index', 'index'], ['Status', null], ['Agent', null], ['Attempts', 'attempts'],
    ['Duration', 'duration'], ['Started', 'started'], ['Finished', 'finished'], ['Last event', null], ['Error', null]],
  { key: JOB_SORTS.includes(asked) ? asked : 'index', dir: params?.get('order') === 'desc' ? 'desc' : 'asc' },
  () => { keepInAddress(); apply(); });
  let next = null; // where the next page starts: { param: 'after' | 'cursor', value }
  let loading = 0;

  const row = (j) => h('tr', { dataset: { jobIndex: j.index } },
    h('th', { scope: 'row', class: 'num' }, h('a', { href: jobHref(runId, j.index) }, String(j.index))),
    h('td', { class: 'job-status' }, h('a', { href: jobHref(runId, j.index), 'aria-label': `Job ${j.index}: ${j.status}` }, badge(j.status))),
    h('td', { class: 'num' }, j.agent ?? '—'),
    h('td', { class: 'num' }, j.attempts),
    h('td', { class: 'num' }, fmtDur(j.duration_ms)),
    h('td', { class: 'num' }, timeEl(j.started_ms)),
    h('td', { class: 'num' }, timeEl(j.finished_ms)),
    h('td', { class: 'clip', title: j.last_event ?? '' }, lastEventText(j)),
    h('td', { class: 'clip error-text', title: j.error ?? '' }, j.error ?? ''));

  // The sort and the search live in the address, so that a reload or a link keeps them.
  const keepInAddress = () => {
    const p = new URLSearchParams();
    const { key, dir } = sorter.sort;
    if (key !== 'index') p.set('sort', key);
    if (dir !== 'asc') p.set('order', dir);
    if (searchIn.value.trim()) p.set('q', searchIn.value.trim());
    const qs = p.toString();
    history.replaceState(null, '', `${runHref(runId)}${qs ? `?${qs}` : ''}`);
  };

  const query = (search) => {
    const q = new URLSearchParams({ limit: PAGE });
    if (statusSel.value) q.set('status', statusSel.value);
    if (agentIn.value !== '') q.set('agent', agentIn.value);
    if (attemptIn.value !== '') q.set('attempt', attemptIn.value);
    if (errorIn.value) q.set('error', errorIn.value);
    if (search) q.set(search.param, search.value);
    const { key, dir } = sorter.sort;
    if (key !== 'index') q.set('sort', key);
    if (dir !== 'asc') q.set('order', dir);
    return q;
  };

  const load = async (reset) => {
    const search = parseJobSearch(searchIn.value);
    searchNote.textContent = search?.error ?? '';
    searchIn.setAttribute('aria-invalid', String(Boolean(search?.error)));
    if (search?.error) return; // the rows shown stay until the search reads right
    const q = query(search);
    if (!reset && next) q.set(next.param, next.value);
    const ticket = ++loading;
    const res = await api(`/runs/${enc(runId)}/jobs?${q}`);
    if (!ctx.alive || ticket !== loading) return; // a newer filter won
    if (reset) tbody.replaceChildren();
    tbody.append(...res.jobs.map(row));
    // Index order pages with `next`; a sort by another column with `cursor`.
    const key = 'cursor' in res ? res.cursor : res.next;
    next = key == null ? null : { param: 'cursor' in res ? 'cursor' : 'after', value: key };
    more.hidden = next == null;
    summary.textContent = tbody.rows.length
      ? `Showing ${tbody.rows.length} job${tbody.rows.length === 1 ? '' : 's'}${next ? '; more on request' : ''}.`
      : `No jobs match these ${search ? 'filters and search' : 'filters'}.`;
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
  // A search runs once typing pauses, or at once on Enter.
  let typing = null;
  const search = () => { clearTimeout(typing); keepInAddress(); apply(); };
  searchIn.oninput = () => { clearTimeout(typing); typing = setTimeout(search, 300); };
  ctx.on(() => clearTimeout(typing));
  const searchForm = h('form', { class: 'filters', role: 'search', onsubmit: (e) => { e.preventDefault(); search(); } },
    h('label', { for: 'jobs-search' }, 'Search'), searchIn, searchNote);

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
      h('h2', { id: 'jobs-title' }, 'Jobs'), form, searchForm, summary,
      h('div', { class: 'scroll-y' }, table('Jobs of this run, by index unless sorted by a column',
        sorter.headers, tbody, 'jobs-table')),
      more),
  };
}

const isTimeout = (error) => /^timed out\b/i.test(error ?? '');
const withMessage = (text, message) => (message ? `${text}: ${message}` : text);

/**
 * An event in words, with a tone for its colour. Covers every EventKind of armada-core's wire.rs;
 * a kind this dashboard does not know yet still reads as its name and message.
 */
function eventSentence(e) {
  const d = e.data && typeof e.data === 'object' ? e.data : {};
  const m = e.message;
  switch (e.kind) {
    case 'agent_starting': return { text: `Agent ${e.agent} is starting`, tone: 'quiet' };
    case 'agent_started': return { text: `Agent ${e.agent} started`, tone: 'quiet' };
    case 'agent_start_failed': return { text: withMessage(`Agent ${e.agent} could not start`, m), tone: 'bad' };
    case 'agent_stopped': return { text: withMessage(`Agent ${e.agent} stopped`, m), tone: m ? 'warn' : 'quiet' };
    case 'job_started': return { text: `Attempt ${e.attempt ?? '?'} started on agent ${e.agent}`, tone: 'quiet' };
    case 'success': return { text: withMessage('Step succeeded', m), tone: 'ok' };
    case 'failure': return { text: withMessage('Step failed', m), tone: 'bad' };
    case 'info': return { text: withMessage('Info', m), tone: 'plain' };
    case 'progress': return { text: withMessage(d.total != null ? `Progress: ${fmtNum(d.done)} of ${fmtNum(d.total)}` : 'Progress', m), tone: 'plain' };
    case 'output': return { text: `Output: ${brief(e.data, 120)}`, tone: 'plain' };
    case 'attachment': return { text: `Attached ${d.name ?? 'a file'}${d.size != null ? ` (${fmtNum(d.size)} bytes)` : ''}`, tone: 'plain' };
    case 'retrying': return { text: retrySentence(d, m), tone: 'warn' };
    case 'job_succeeded': return { text: d.duration_ms != null ? `Succeeded in ${fmtDur(d.duration_ms)}` : 'Succeeded', tone: 'ok' };
    case 'job_failed': return { text: withMessage('Failed', m), tone: 'bad' };
    case 'run_completed': return { text: 'The run completed', tone: 'ok' };
    case 'heartbeat': return { text: `Agent ${e.agent} is alive`, tone: 'quiet' };
    default: return { text: withMessage(e.kind, m ?? brief(e.data, 120)), tone: 'plain' };
  }
}

function retrySentence(d, message) {
  const failed = withMessage('Failed', message);
  if (d.identity_retry != null) return `${failed}. Will retry with another identity`;
  return `${failed}. ${d.delay_ms ? `Will retry in ${fmtDur(d.delay_ms)}` : 'Will retry at once'}`;
}

/** The event as stored, behind a toggle; its text is built only when first opened. */
function rawToggle(e) {
  const raw = h('details', { class: 'raw' }, h('summary', { 'aria-label': `Raw event ${e.seq}` }, 'raw'));
  raw.addEventListener('toggle', () => {
    if (raw.open && !raw.querySelector('pre')) raw.append(h('pre', null, JSON.stringify(e, null, 2)));
  });
  return raw;
}

function eventItem(e, runId, withJob = true) {
  const { text, tone } = eventSentence(e);
  const who = [
    withJob && e.job != null ? h('a', { href: jobHref(runId, e.job) }, `job ${e.job}`) : null,
    e.kind !== 'job_started' && e.attempt != null ? `attempt ${e.attempt}` : null,
    !e.kind.startsWith('agent_') && e.kind !== 'job_started' ? `agent ${e.agent}` : null,
  ].filter(Boolean);
  return h('li', { dataset: { seq: e.seq, kind: e.kind }, class: `ev tone-${tone}` },
    timeEl(e.at_ms, true), ' ',
    h('span', { class: 'msg' }, text), ' ',
    who.length ? h('span', { class: 'who' }, who.flatMap((w, i) => (i ? [' · ', w] : [w]))) : '', ' ',
    rawToggle(e));
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
    h('td', null, agentBadge(a.status)),
    h('td', { class: 'num' }, fmtNum(a.succeeded)),
    h('td', { class: 'num' }, fmtNum(a.failed)),
    h('td', { class: 'num' }, fmtNum(a.retrying)),
    h('td', null, a.running_job == null ? '—' : h('a', { href: jobHref(runId, a.running_job) }, `job ${a.running_job}`)),
    h('td', null, timeEl(a.started_ms)),
    h('td', null, timeEl(a.seen_ms)),
    h('td', { class: 'wrap error-text' }, a.error ?? ''));
  // Sorted in the page: a run's agents come in one answer.
  const AGENT_KEYS = { index: 'index', status: 'status', succeeded: 'succeeded', failed: 'failed', retrying: 'retrying' };
  let agents = [];
  const render = () => {
    const { key, dir } = sorter.sort;
    const sorted = agents.map((a, at) => ({ a, at }))
      .sort((x, y) => compareKeys(x.a[AGENT_KEYS[key]], y.a[AGENT_KEYS[key]], dir) || x.at - y.at);
    tbody.replaceChildren(...sorted.map((x) => row(x.a)));
  };
  const sorter = sortableHeaders([['Agent', 'index'], ['Status', 'status'], ['Succeeded', 'succeeded'], ['Failed', 'failed'],
    ['Retrying', 'retrying'], ['Running', null], ['Started', null], ['Last heard', null], ['Error', null]],
  { key: 'index', dir: 'asc' }, render);
  return {
    async load() {
      const res = await api(`/runs/${enc(runId)}/agents`);
      if (!ctx.alive) return;
      agents = res.agents;
      render();
    },
    el: h('section', { class: 'panel', 'aria-labelledby': 'agents-title' },
      h('h2', { id: 'agents-title' }, 'Agents'),
      table('Agents of this run', sorter.headers, tbody, 'agents-table')),
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

/** Whether a value reads well as a key/value table: an object of plain values. */
function isFlatObject(v) {
  return v != null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length > 0
    && Object.values(v).every((x) => x === null || typeof x !== 'object');
}

/** A JSON value for people: a flat object as a table, anything else pretty-printed. */
function valueView(value, caption) {
  if (!isFlatObject(value)) return h('pre', { class: 'json' }, JSON.stringify(value, null, 2));
  return table(caption, ['Field', 'Value'], h('tbody', null, Object.entries(value).map(([k, v]) => h('tr', null,
    h('th', { scope: 'row', class: 'mono' }, k),
    h('td', { class: v === null ? 'sub' : 'wrap' }, v === null ? 'null' : String(v))))));
}

/**
 * The job's attempts from its events, oldest first. An identity retry starts the same attempt
 * number again, so a start seen twice opens a new row.
 */
function attemptsOf(events) {
  const rows = [];
  const open = new Map();
  for (const e of events) {
    if (e.attempt == null) continue;
    let row = open.get(e.attempt);
    if (!row || (e.kind === 'job_started' && row.start)) {
      row = { attempt: e.attempt, agent: e.agent, start: null, end: null, input: undefined };
      rows.push(row);
      open.set(e.attempt, row);
    }
    if (e.kind === 'job_started') {
      row.start = e;
      row.agent = e.agent;
      row.input = e.data?.input;
    } else if (['job_succeeded', 'job_failed', 'retrying'].includes(e.kind)) row.end = e;
  }
  return rows;
}

/** How one attempt ended; an attempt without an end event takes the job's state if it was its last. */
function attemptOutcome(row, job, isLast) {
  const end = row.end;
  const error = end?.message ?? null;
  if (end?.kind === 'job_succeeded') return { label: 'succeeded', tone: 'ok' };
  if (end?.kind === 'job_failed') return { label: isTimeout(error) ? 'timed out' : 'failed', tone: 'bad', error };
  if (end?.kind === 'retrying') {
    const d = end.data ?? {};
    const then = d.identity_retry != null ? 'retrying with another identity' : `retrying in ${fmtDur(d.delay_ms ?? 0)}`;
    return { label: `${isTimeout(error) ? 'timed out' : 'failed'}, ${then}`, tone: 'warn', error };
  }
  if (!isLast || !job) return { label: 'no outcome recorded', tone: 'quiet' };
  if (job.status === 'running' || job.status === 'retrying') return { label: 'running', tone: 'run' };
  if (job.status === 'canceled') return { label: 'canceled', tone: 'quiet' };
  if (job.status === 'abandoned') return { label: 'abandoned', tone: 'bad', error: job.error };
  if (job.status === 'failed') return { label: 'failed', tone: 'bad', error: job.error };
  return { label: job.status, tone: 'quiet' };
}

function attemptDuration(row, isRunning) {
  if (row.end?.data?.duration_ms != null) return fmtDur(row.end.data.duration_ms);
  if (row.start && row.end) return fmtDur(row.end.at_ms - row.start.at_ms);
  if (row.start && isRunning) return `${fmtDur(Date.now() - row.start.at_ms)} so far`;
  return '—';
}

function renderAttempts(ctx, runId, rows, job, files) {
  if (!rows.length) return h('p', { class: 'sub' }, job?.status === 'queued' ? 'Not started yet.' : 'No attempt recorded.');
  const body = h('tbody', null, rows.map((row, i) => {
    const isLast = i === rows.length - 1;
    const out = attemptOutcome(row, job, isLast);
    const evidence = files.filter((f) => f.attempt === row.attempt).map((f) => downloadLink(ctx,
      `/runs/${enc(runId)}/attachments/${f.seq}`, f.name, f.name, 'evidence'));
    return h('tr', { dataset: { attempt: row.attempt } },
      h('th', { scope: 'row', class: 'num' }, row.attempt),
      h('td', { class: 'num' }, row.agent ?? '—'),
      h('td', null, timeEl(row.start?.at_ms, true)),
      h('td', { class: 'num' }, attemptDuration(row, isLast && out.label === 'running')),
      h('td', { class: 'wrap' }, h('span', { class: `outcome tone-${out.tone}` }, out.label),
        out.error ? h('div', { class: 'error-text' }, out.error) : ''),
      h('td', { class: 'wrap' }, evidence.length ? evidence.flatMap((a, k) => (k ? [' ', a] : [a])) : '—'));
  }));
  return table('One row per attempt, oldest first', ['Attempt', 'Agent', 'Started', 'Duration', 'Outcome', 'Evidence'], body, 'attempts-table');
}

/** The payload of the latest attempt that recorded one (secrets already shown as ***). */
function renderJobInput(rows, job) {
  const row = [...rows].reverse().find((r) => r.input !== undefined);
  if (!row) {
    return h('p', { class: 'sub' }, job?.status === 'queued' || !rows.length
      ? 'The input is recorded when the job starts.'
      : 'This monitor did not record the input of this job.');
  }
  const text = JSON.stringify(row.input, null, 2);
  const lines = text.split('\n').length;
  return h('details', { class: 'json-block', open: lines < 20 },
    h('summary', null, `Input of attempt ${row.attempt} (${lines} line${lines === 1 ? '' : 's'})`),
    h('pre', { class: 'json' }, text));
}

/** What the script returned: the job_succeeded event's data.output. */
function renderReturnValue(events, job) {
  const ok = events.findLast((e) => e.kind === 'job_succeeded');
  if (!ok) {
    const why = { queued: 'The job has not run yet.', running: 'The job is running.', retrying: 'The job will be tried again.' }[job?.status];
    return h('p', { class: 'sub' }, why ?? 'No return value: the job did not succeed.');
  }
  const d = ok.data ?? {};
  return h('div', null,
    h('p', { class: 'sub' }, `Attempt ${ok.attempt ?? '—'} on agent ${ok.agent}`, d.duration_ms != null ? `, in ${fmtDur(d.duration_ms)}` : '', '.'),
    d.output === undefined ? h('p', { class: 'sub' }, 'The event carries no output.') : valueView(d.output, 'Fields of the return value'));
}

function jobPage(ctx, runId, index) {
  document.title = `Job ${index} of ${runId} · Armada`;
  const base = `/runs/${enc(runId)}/jobs/${index}`;
  const summary = h('div', { class: 'summary' });
  const statusSlot = h('span');
  const inputSlot = h('div', { id: 'job-input' });
  const returnSlot = h('div', { id: 'job-return' });
  const attemptsSlot = h('div', { id: 'job-attempts' });
  const timeline = h('ol', { id: 'job-events', class: 'stream timeline' });
  const more = h('button', { type: 'button', hidden: true }, 'Load more events');
  const outputs = h('div', { id: 'job-outputs' }, h('p', { class: 'sub' }, 'No outputs reported.'));
  const attachments = h('div', { id: 'job-attachments' }, h('p', { class: 'sub' }, 'No attachments.'));
  const shownAttachments = new Set();
  const events = [];
  let job = null;
  let files = [];
  let next = null;
  let lastSeq = -1;
  let inputKey = null;
  let returnKey = null;

  const renderJob = (j) => {
    job = j;
    statusSlot.replaceChildren(badge(j.status));
    summary.replaceChildren(facts([
      ['Job id', h('span', { class: 'mono' }, j.id)],
      ['Agent', j.agent ?? '—'],
      ['Attempts', j.attempts],
      ['Started', timeEl(j.started_ms)],
      ['Finished', timeEl(j.finished_ms)],
      ['Duration', fmtDur(j.duration_ms)],
      ['Last event', lastEventText(j)],
      j.error && ['Error', h('span', { class: 'error-text' }, j.error)],
    ]));
  };

  // Input and return value are rebuilt only when they change, so an opened block stays open.
  const renderDerived = () => {
    const rows = attemptsOf(events);
    attemptsSlot.replaceChildren(renderAttempts(ctx, runId, rows, job, files));
    const withInput = rows.findLast((r) => r.input !== undefined);
    const iKey = `${withInput?.start?.seq}/${rows.length}/${job?.status}`;
    if (iKey !== inputKey) { inputKey = iKey; inputSlot.replaceChildren(renderJobInput(rows, job)); }
    const rKey = `${events.findLast((e) => e.kind === 'job_succeeded')?.seq}/${job?.status}`;
    if (rKey !== returnKey) { returnKey = rKey; returnSlot.replaceChildren(renderReturnValue(events, job)); }
  };

  const addEvents = (evs) => {
    const fresh = evs.filter((e) => e.seq > lastSeq).sort((x, y) => x.seq - y.seq);
    if (!fresh.length) return;
    lastSeq = fresh[fresh.length - 1].seq;
    events.push(...fresh);
    timeline.append(...fresh.map((e) => eventItem(e, runId, false)));
    const outs = fresh.filter((e) => e.kind === 'output');
    if (outs.length && !outputs.querySelector('figure')) outputs.replaceChildren();
    outputs.append(...outs.map((e) => h('figure', { class: 'output', dataset: { seq: e.seq } },
      h('figcaption', null, `Attempt ${e.attempt ?? '—'} · `, timeEl(e.at_ms, true)),
      h('pre', null, JSON.stringify(e.data, null, 2)))));
  };

  // Attempts and input need the whole story: read pages until the end (a job has few events).
  const loadEvents = async (pages = 10) => {
    for (let page = 0; page < pages; page += 1) {
      const q = new URLSearchParams({ limit: 200 });
      if (next) q.set('after', next);
      const res = await api(`${base}/events?${q}`);
      if (!ctx.alive) return;
      addEvents(res.events);
      next = res.next;
      if (next == null) break;
    }
    more.hidden = next == null;
    renderDerived();
  };
  more.onclick = () => loadEvents(1).catch((e) => report(ctx, e));

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
    files = res.attachments;
    renderDerived();
    await Promise.all(res.attachments.map(showAttachment));
  };

  const sock = new Live(ctx, runId, {
    onReload: () => { loadJob().catch((e) => report(ctx, e)); if (next == null) loadEvents().catch((e) => report(ctx, e)); },
    onBatch: (msgs) => {
      let mine = [];
      let jobChanged = false;
      for (const m of msgs) {
        if (m.type === 'run' && m.run?.id === runId) noteRun(m.run);
        if (m.run_id !== runId) continue;
        if (m.type === 'jobs') {
          const ours = m.jobs.filter((j) => j.index === index);
          ours.forEach(renderJob);
          jobChanged ||= ours.length > 0;
        } else if (m.type === 'events') mine.push(...m.events.filter((e) => e.job === index));
      }
      // While older pages are unloaded, new events wait for "Load more" to keep the order.
      if (next != null) mine = [];
      addEvents(mine);
      if (mine.length || jobChanged) renderDerived();
      if (mine.some((e) => e.kind === 'attachment')) loadJob().catch((e) => report(ctx, e));
    },
  });

  Promise.all([loadJob(), loadEvents()])
    .then(() => { sock.release(); ctx.ready('job'); }, (e) => report(ctx, e));

  const panel = (id, title, ...body) => h('section', { class: 'panel', 'aria-labelledby': `${id}-title` }, h('h2', { id: `${id}-title` }, title), ...body);
  return h('div', { id: 'job-page', dataset: { runId, jobIndex: index } },
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' },
      h('a', { href: '#/' }, 'Runs'), ' / ', h('a', { href: runHref(runId), class: 'run-id', title: runId }, runId), ' / ', `job ${index}`),
    h('div', { class: 'page-head' }, h('h1', null, `Job ${index}`), statusSlot),
    summary,
    h('div', { class: 'columns even' },
      panel('input', 'Input', inputSlot),
      panel('return', 'Return value', returnSlot)),
    panel('attempts', 'Attempts', attemptsSlot),
    h('div', { class: 'columns' },
      panel('timeline', 'Events', timeline, more),
      h('div', null,
        panel('outputs', 'Outputs reported', outputs),
        panel('attachments', 'Attachments', attachments))));
}

// ---------- launch page ----------

const isPlainObject = (v) => v != null && typeof v === 'object' && !Array.isArray(v);

/** `b` over `a`, objects merged key by key; `b` is ours (no `__proto__` keys). */
function deepMerge(a, b) {
  if (!isPlainObject(a) || !isPlainObject(b)) return b;
  const out = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = k in out ? deepMerge(out[k], v) : v;
  return out;
}

/**
 * The `overrides` part: the editor's JSON with the filled `run_message` fields merged over it
 * (an empty field leaves the editor's value). Null when there is nothing to override. Throws
 * the sentence to show when the editor's text is not a JSON object.
 */
function launchOverrides(text, runMessage) {
  let base = {};
  if (text.trim()) {
    try { base = JSON.parse(text); } catch (e) { throw new Error(`Overrides: not JSON: ${e.message}`); }
    if (!isPlainObject(base)) throw new Error('Overrides: write a JSON object of the template\'s sections, such as {"run_message": {"max_attempts": 2}}');
  }
  const filled = Object.entries(runMessage).filter(([, v]) => v !== '').map(([k, v]) => [k, Number(v)]);
  const merged = filled.length ? deepMerge(base, { run_message: Object.fromEntries(filled) }) : base;
  return Object.keys(merged).length ? merged : null;
}

/** Tags as the server splits them: at commas, spaces and line ends. */
const splitTags = (text) => text.split(/[, \n]+/).filter(Boolean);

/** A project diagnostic in words: "config_template.json, line 3, `run_message.agents`: …". */
function diagnosticItem(d) {
  if (!isPlainObject(d)) return h('li', null, String(d));
  const where = [d.file, d.line != null && `line ${d.line}`, d.column != null && `column ${d.column}`].filter(Boolean);
  const place = [where.join(', '), d.field && [where.length ? ', ' : '', h('code', null, d.field)]].filter(Boolean);
  return h('li', null, place, place.length ? ': ' : '', d.message ?? '');
}

/**
 * A refused launch or check, each problem once: the diagnostics when the answer has them (its
 * `error` only runs them together), else the error itself. `lead` introduces the list.
 */
function problemsView(err, lead) {
  const diags = err.body?.diagnostics;
  if (Array.isArray(diags) && diags.length) {
    return [h('p', { class: 'verdict bad' }, lead(diags.length)), h('ul', { class: 'diagnostics' }, diags.map(diagnosticItem))];
  }
  return [h('p', { class: 'verdict bad' }, err.status >= 500 ? `Error ${err.status}: ${err.message}` : err.message)];
}

/** What the check found: the run the settings give, and the CSV rows it leaves unused. */
function readyView(res) {
  const skipped = [
    [res.skipped_job_rows, 'data_job.csv', 'job', res.jobs],
    [res.skipped_agent_rows, 'data_agent.csv', 'agent', res.agents],
  ].filter(([n]) => n > 0).map(([n, file, what, count]) => h('span', { class: 'skipped' },
    ` ${plural(n, 'row')} of ${file} beyond ${what} ${fmtNum(count)} ${n === 1 ? 'is' : 'are'} skipped.`));
  return [h('p', { class: 'verdict ok' }, `Ready: ${plural(res.agents, 'agent')}, ${plural(res.jobs, 'job')}.`, skipped)];
}

/** A form row: label, control and an optional hint the control is described by. */
function field(control, label, hint) {
  const hintEl = hint ? h('div', { class: 'hint', id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), h('div', null, control, hintEl));
}

/** A sentence (with the command to copy) where this server cannot launch; no form. */
function cannotLaunch(lead, command, where = '') {
  const code = h('code', { class: 'later-command' }, command);
  return h('p', { id: 'launch-elsewhere', class: 'panel' }, lead, ' start ', code, where, '. ', copyButton(code));
}

/** A launch's own dashboard serves its one run: it has no orchestrator to start another. */
function launchOnlyServesItsRun() {
  const command = about.later?.command;
  return cannotLaunch(['This dashboard belongs to one run\'s ', h('code', null, 'launch'), '; to launch runs from here,'],
    command ?? 'orchestrate serve', command ? '' : ' in the project');
}

/** The standalone monitor shows runs; starting them takes the project's orchestrator. */
const monitorCannotLaunch = () => cannotLaunch('This monitor shows runs but cannot start them; to launch runs from here,', 'orchestrate serve', ' in the project');

function launchPage(ctx, relaunchOf) {
  document.title = 'Launch · Armada';
  const body = h('div', null, h('p', null, 'Loading…'));
  (async () => {
    await aboutLoaded;
    if (!ctx.alive) return;
    const cannot = { launch: launchOnlyServesItsRun, monitor: monitorCannotLaunch }[about.serves];
    if (cannot) {
      body.replaceChildren(cannot());
      ctx.ready('launch');
    } else body.replaceChildren(launchForm(ctx, relaunchOf));
  })();
  return h('div', { id: 'launch-page' },
    h('h1', null, relaunchOf ? `Relaunch run ${relaunchOf}` : 'Launch a run'), body);
}

/** The Launch form, checked by the server as it is edited (POST /launch/check). */
function launchForm(ctx, relaunchOf) {
  const input = (id, name, props) => h('input', { id, name, autocomplete: 'off', ...props });
  const whole = (id, name, props) => input(id, name, { type: 'number', min: 1, step: 1, inputmode: 'numeric', ...props });
  const name = input('launch-name', 'name', { type: 'text', maxlength: 200 });
  const tags = input('launch-tags', 'tags', { type: 'text', spellcheck: 'false' });
  const tagsPreview = h('span', { class: 'tags-preview', 'aria-hidden': 'true' });
  const tune = h('select', { id: 'launch-tune', name: 'tune' });
  const agents = whole('launch-agents', 'agents');
  const jobs = whole('launch-jobs', 'jobs');
  const maxAttempts = whole('launch-max-attempts', 'max_attempts', { placeholder: 'as in the template' });
  const timeout = input('launch-timeout', 'job_timeout_secs', { type: 'number', min: 0, step: 'any', inputmode: 'decimal', placeholder: 'as in the template' });
  const overrides = h('textarea', {
    id: 'launch-overrides', name: 'overrides', rows: 5, spellcheck: 'false', class: 'mono',
    placeholder: '{"default_job_message": {"work_ms": 50}}',
  });
  const dataAgent = input('launch-data-agent', 'data_agent.csv', { type: 'file', accept: '.csv,text/csv' });
  const dataJob = input('launch-data-job', 'data_job.csv', { type: 'file', accept: '.csv,text/csv' });
  const numbers = [[agents, 'Agents'], [jobs, 'Jobs'], [maxAttempts, 'Max attempts'], [timeout, 'Time limit per job']];
  const submit = needsServer(h('button', { id: 'launch-submit', type: 'submit' }, relaunchOf ? 'Relaunch' : 'Launch'), 'launch a run');
  // The check's verdict and a refused launch's problems take turns: each problem shows once.
  const check = h('div', { id: 'launch-check', role: 'status', 'aria-live': 'polite' });
  const errors = h('div', { id: 'launch-errors', role: 'alert' });
  const project = h('p', { class: 'sub' });
  const reuse = h('p', { hidden: !relaunchOf }, 'Empty fields reuse that run\'s tune, counts, CSV files, name and tags.');
  const showCheck = (...nodes) => { errors.replaceChildren(); check.replaceChildren(...nodes); };
  const showErrors = (...nodes) => { check.replaceChildren(); errors.replaceChildren(...nodes); };

  const fieldset = h('fieldset', { disabled: true },
    h('legend', null, 'Run settings'),
    field(name, 'Name (optional)'),
    field(tags, 'Tags (optional)', ['Separated by commas or spaces. ', tagsPreview]),
    field(tune, 'Tune'),
    field(agents, 'Agents'),
    field(jobs, 'Jobs'),
    field(maxAttempts, 'Max attempts per job'),
    field(timeout, 'Time limit per job (s)', 'A job still running after this many seconds fails as timed out.'),
    field(overrides, 'Template overrides (JSON)', 'Merged into the template\'s sections. Max attempts and time limit, when filled, win over its run_message.'),
    field(dataAgent, 'data_agent.csv (optional)'),
    field(dataJob, 'data_job.csv (optional)'),
    check, errors, submit);

  /**
   * The form's parts as the server takes them, or the problem that keeps them from being sent.
   * Empty fields are left out so the server applies the project's defaults or the relaunched
   * run's values.
   */
  const formBody = () => {
    const bad = numbers.find(([el]) => el.validity.badInput);
    if (bad) return { problem: `${bad[1]}: not a number.` };
    let extra;
    try {
      extra = launchOverrides(overrides.value, { max_attempts: maxAttempts.value.trim(), job_timeout_secs: timeout.value.trim() });
    } catch (e) { return { problem: e.message }; }
    const body = new FormData();
    const text = (part, value) => { if (value.trim()) body.append(part, value.trim()); };
    text('tune', tune.value);
    text('agents', agents.value);
    text('jobs', jobs.value);
    if (extra) body.append('overrides', JSON.stringify(extra));
    text('name', name.value);
    text('tags', tags.value);
    for (const file of [dataAgent, dataJob]) if (file.files[0]) body.append(file.name, file.files[0]);
    if (relaunchOf) body.append('relaunch_of', relaunchOf);
    return { body };
  };

  // Live check: one request at a time for the latest edit; a server without the route (an
  // older one: 404, 405) or without an orchestrator (501) is simply not asked again.
  let checkTimer = null;
  let checking = null;
  let canCheck = true;
  const stopCheck = () => { clearTimeout(checkTimer); checking?.abort(); checking = null; };
  ctx.on(stopCheck);
  const runCheck = async () => {
    stopCheck();
    const { body, problem } = formBody();
    if (problem) { showCheck(h('p', { class: 'verdict bad' }, problem)); return; }
    if (!canCheck) { showCheck(); return; }
    const mine = new AbortController();
    checking = mine;
    check.setAttribute('aria-busy', 'true');
    try {
      const res = await api('/launch/check', { method: 'POST', form: body, signal: mine.signal });
      if (ctx.alive && checking === mine) showCheck(...readyView(res));
    } catch (err) {
      if (!ctx.alive || checking !== mine || err.name === 'AbortError' || err.status === 401) return;
      if ([404, 405, 501].includes(err.status)) { canCheck = false; showCheck(); return; }
      showCheck(...problemsView(err, (n) => `Not ready: ${plural(n, 'problem')} to fix.`));
    } finally {
      if (checking === mine) { checking = null; check.removeAttribute('aria-busy'); }
    }
  };
  const checkSoon = () => { clearTimeout(checkTimer); checkTimer = setTimeout(runCheck, 400); };
  tags.addEventListener('input', () => tagsPreview.replaceChildren(tagChips(splitTags(tags.value), false) ?? ''));

  const form = h('form', {
    id: 'launch-form',
    oninput: checkSoon,
    onchange: checkSoon,
    onsubmit: async (e) => {
      e.preventDefault();
      if (submit.disabled) return;
      stopCheck(); // a check answering after the launch would hide the launch's verdict
      const { body, problem } = formBody();
      if (problem) { showErrors(h('p', { class: 'verdict bad' }, problem)); return; }
      errors.replaceChildren();
      submit.disabled = true;
      submit.textContent = 'Launching…';
      try {
        const res = await api('/launch', { method: 'POST', form: body });
        location.hash = runHref(res.run_id);
      } catch (err) {
        if (!ctx.alive) return;
        showErrors(...problemsView(err, (n) => `Nothing was launched: ${plural(n, 'problem')} to fix.`));
      } finally {
        setEnabled(submit, true);
        submit.textContent = relaunchOf ? 'Relaunch' : 'Launch';
      }
    },
  }, fieldset);

  const page = h('div', { id: 'launch-body' }, project, reuse, form);
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
        // Placeholders show what an empty field keeps (the sentence above says so).
        agents.placeholder = prior.agents;
        jobs.placeholder = prior.jobs;
        name.placeholder = prior.name ?? '';
        tags.placeholder = (prior.tags ?? []).join(' ');
      } else {
        agents.value = info.defaults?.agents ?? '';
        jobs.value = info.defaults?.jobs ?? '';
      }
      fieldset.disabled = false;
      runCheck();
    } catch (err) {
      if (!ctx.alive) return;
      // A server that cannot say who it is (no GET /about) tells it here.
      if (err.status === 501) page.replaceChildren(about.serves === 'launch' ? launchOnlyServesItsRun() : monitorCannotLaunch());
      else if (err.status !== 401) showErrors(...problemsView(err, (n) => `The project has ${plural(n, 'problem')}:`));
    }
    ctx.ready('launch');
  })();
  return page;
}

// ---------- compare page ----------

/**
 * Both runs' timelines at one bucket width, so their throughput reads in the same unit:
 * each comes at its own width first, then the narrower is asked again at the wider one.
 * A server that ignores `bucket_ms` answers the same width again, and that is kept.
 */
async function alignedTimelines(ids) {
  // A missing timeline (an older server, say) only leaves its chart out.
  const tls = await Promise.all(ids.map((id) => fetchTimeline(id).catch(() => null)));
  for (let round = 0; round < 2 && tls[0] && tls[1] && tls[0].bucket_ms !== tls[1].bucket_ms; round += 1) {
    const narrow = tls[0].bucket_ms < tls[1].bucket_ms ? 0 : 1;
    const again = await fetchTimeline(ids[narrow], tls[1 - narrow].bucket_ms).catch(() => null);
    if (!again || again.bucket_ms === tls[narrow].bucket_ms) break;
    tls[narrow] = again;
  }
  return tls;
}

/** One x and y axis for both throughput charts when their buckets match; else each its own. */
function sharedThroughputAxes(tls) {
  if (!tls[0] || !tls[1] || tls[0].bucket_ms !== tls[1].bucket_ms) return {};
  const bins = tls.map((tl) => timelineBins(tl));
  return { n: Math.max(...bins.map((b) => b.n)), yMax: Math.max(...bins.map(throughputPeak)) };
}

const runOptionLabel = (r) => (r.name ? `${r.name} · ${r.id}` : r.id);

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

  const side = (key, s, tl, axes) => h('section', { id: `compare-${key}`, class: 'panel', 'aria-labelledby': `compare-${key}-title` },
    h('h2', { id: `compare-${key}-title` }, `${key.toUpperCase()}: `, runLink(s.run), ' ', badge(s.run.status)),
    tagChips(s.run.tags),
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
      ['p50', 'p90', 'p99', 'max'].map((p) => h('td', { class: 'num' }, fmtDur(s.duration_ms?.[p])))))),
    tl ? chartThroughput(tl, { id: `chart-throughput-${key}`, frame: CHART_WIDE, ...axes }) : '');

  const delta = (x, y) => { const d = y - x; return d > 0 ? `+${fmtNum(d)}` : d < 0 ? `−${fmtNum(-d)}` : '0'; };

  const render = ({ a: A, b: B }, [tlA, tlB]) => {
    const axes = sharedThroughputAxes([tlA, tlB]);
    const errs = new Map();
    A.errors.forEach((e) => errs.set(e.error, [e.jobs, 0]));
    B.errors.forEach((e) => errs.set(e.error, [errs.get(e.error)?.[0] ?? 0, e.jobs]));
    const fields = new Map();
    A.output_fields.forEach((f) => fields.set(f.field, [f.filled, 0]));
    B.output_fields.forEach((f) => fields.set(f.field, [fields.get(f.field)?.[0] ?? 0, f.filled]));
    const cover = (n, total) => (total ? `${fmtNum(n)} (${((n / total) * 100).toFixed(1)} %)` : '—');
    body.replaceChildren(
      h('div', { class: 'columns even' }, side('a', A, tlA, axes), side('b', B, tlB, axes)),
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
      const [runs, cmp, tls] = await Promise.all([
        api(`/runs?limit=100`),
        a && b ? api(`/compare?a=${enc(a)}&b=${enc(b)}`) : null,
        a && b ? alignedTimelines([a, b]) : [null, null],
      ]);
      if (!ctx.alive) return;
      const ids = runs.runs.map((r) => r.id);
      for (const [sel, want] of [[pickA, a ?? ids[1]], [pickB, b ?? ids[0]]]) {
        const opts = want && !ids.includes(want) ? [{ id: want }, ...runs.runs] : runs.runs;
        sel.replaceChildren(...opts.map((r) => h('option', { value: r.id, selected: r.id === want }, runOptionLabel(r))));
      }
      if (cmp) render(cmp, tls);
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
  if (about.serves == null) loadAbout();
  route();
});
// The skip link must not change the hash, which is the router's.
$('#skip-link').addEventListener('click', (e) => { e.preventDefault(); $('#main').focus(); });
window.addEventListener('hashchange', route);
// Asked first: the Launch page waits for it.
loadAbout();
route();
