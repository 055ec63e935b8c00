// hookrelay inspector: live list of captures over WebSocket, detail pane, replay.
//
// Security rule for this file: everything that comes from a capture (path, query,
// headers, bodies, addresses, delivery errors and responses) reaches the page only
// through textContent / text nodes / form `value`. Nothing here parses HTML, and no
// href or src is built from capture data. Build elements with `el()` below.
// The bin key is sent only in the `Authorization` header and the WebSocket auth message.

const MAX_ROWS = 1000;          // captures kept in the live list (and in memory)
const MAX_PAUSED = 1000;        // captures buffered while paused
const HEX_LIMIT = 64 * 1024;    // bytes shown in the hex view
const TEXT_LIMIT = 2 * 1024 * 1024; // characters shown in raw / pretty views
const HIGHLIGHT_LIMIT = 256 * 1024; // larger JSON is pretty-printed without colours
const PING_MS = 25000;
const HELLO_TIMEOUT_MS = 10000;

// ---------------------------------------------------------------- DOM helpers

const ATTRS = new Set([
  'id', 'type', 'role', 'tabindex', 'title', 'placeholder', 'name', 'for', 'rows',
  'spellcheck', 'autocomplete', 'aria-label', 'aria-pressed', 'aria-selected',
  'aria-expanded', 'aria-hidden', 'colspan',
]);

/** Create an element. props: class, text, value, testid, dataset, on, hidden,
 *  disabled, readonly, open, and plain attributes from ATTRS. Children may be
 *  nodes or strings (strings become text nodes). */
function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    switch (k) {
      case 'class': node.className = v; break;
      case 'text': node.textContent = String(v); break;
      case 'value': node.value = String(v); break;
      case 'testid': node.dataset.testid = v; break;
      case 'dataset': Object.assign(node.dataset, v); break;
      case 'on': for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn); break;
      case 'hidden': node.hidden = true; break;
      case 'disabled': node.disabled = true; break;
      case 'readonly': node.readOnly = true; break;
      case 'open': node.open = true; break;
      default:
        if (!ATTRS.has(k)) throw new Error(`el(): attribute ${k} not allowed`);
        node.setAttribute(k, String(v));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of [].concat(children)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const $ = (id) => document.getElementById(id);

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

// ---------------------------------------------------------------- formatting

function fmtSize(n) {
  if (n === undefined || n === null) return '';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KiB`;
  return `${(n / 1048576).toFixed(1)} MiB`;
}

function parseTime(s) {
  if (typeof s !== 'string') return null;
  // RFC 3339 with nanoseconds: keep milliseconds for Date.
  const d = new Date(s.replace(/(\.\d{3})\d+/, '$1'));
  return Number.isNaN(d.getTime()) ? null : d;
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

function fmtClock(s) {
  const d = parseTime(s);
  if (!d) return '';
  const t = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return t;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${t}`;
}

function fmtLocal(s) {
  const d = parseTime(s);
  return d ? d.toLocaleString() : '';
}

function fmtMs(ms) {
  if (typeof ms !== 'number') return '';
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

const KNOWN_METHODS = new Set(['get', 'post', 'put', 'patch', 'delete', 'head', 'options']);
function methodClass(m) {
  const l = String(m || '').toLowerCase();
  return KNOWN_METHODS.has(l) ? `m-${l}` : 'm-other';
}

function statusClass(s) {
  if (typeof s !== 'number') return 's-none';
  if (s < 300) return 's-ok';
  if (s < 400) return 's-redirect';
  return 's-err';
}

function headerValue(headers, name) {
  const l = name.toLowerCase();
  for (const [n, v] of headers || []) if (String(n).toLowerCase() === l) return String(v);
  return null;
}

// ---------------------------------------------------------------- state

const binId = document.body.dataset.bin || '';
const inboundUrl = `${location.origin}/${binId}`;
let key = null;

const captures = new Map(); // seq -> capture, everything known (list + pending + paused)
const rows = new Map();     // seq -> row element in the live list, ascending seq order
const rowCapture = new WeakMap(); // row element -> capture
let pending = [];           // received, not yet rendered
let flushTimer = null;
let paused = false;
let pausedBuf = [];
let pausedDropped = 0;
let trimmed = 0;            // captures dropped from the list to respect MAX_ROWS
let selected = null;        // { capture, row }
let filterText = '';
let searchMode = false;
let settings = null;
let selfClearUntil = 0;     // our own Clear: don't announce the `cleared` event too

const conn = {
  ws: null, attempt: 0, timer: null, epoch: null, lastSeq: 0,
  pingTimer: null, helloTimer: null, stopped: false, backlogUntil: 0,
};

// ---------------------------------------------------------------- key handling

function loadBins() {
  try {
    const v = JSON.parse(localStorage.getItem('hookrelay.bins') || '[]');
    return Array.isArray(v) ? v.filter((b) => b && typeof b.id === 'string') : [];
  } catch {
    return [];
  }
}

function saveBins(list) {
  try { localStorage.setItem('hookrelay.bins', JSON.stringify(list)); } catch { /* storage full or disabled */ }
}

function storedKey() {
  const b = loadBins().find((x) => x.id === binId);
  return b && typeof b.key === 'string' && b.key ? b.key : null;
}

function storeKey(k) {
  const list = loadBins();
  const b = list.find((x) => x.id === binId);
  if (b) b.key = k;
  else list.unshift({ id: binId, key: k, created: new Date().toISOString() });
  saveBins(list);
}

function forgetKey() {
  const list = loadBins();
  const b = list.find((x) => x.id === binId);
  if (b) { b.key = ''; saveBins(list); }
}

function keyFromFragment() {
  const h = location.hash.startsWith('#') ? location.hash.slice(1) : '';
  if (!h) return null;
  const p = new URLSearchParams(h);
  const k = p.get('key');
  return k ? k.trim() : null;
}

function showKeyGate(reason) {
  document.body.classList.add('locked');
  $('key-gate').hidden = false;
  if (reason) $('key-reason').textContent = reason;
  $('key-input').value = '';
  $('key-input').focus();
}

$('key-form').addEventListener('submit', (e) => {
  e.preventDefault();
  let v = $('key-input').value.trim();
  const i = v.indexOf('#key=');
  if (i >= 0) v = decodeURIComponent(v.slice(i + 5).split('&')[0]);
  if (!v) return;
  key = v;
  storeKey(v);
  $('key-gate').hidden = true;
  document.body.classList.remove('locked');
  conn.stopped = false;
  conn.attempt = 0;
  connect();
});

// ---------------------------------------------------------------- REST

async function api(path, opts = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${key}` }, opts.headers || {});
  const res = await fetch(`/api/bins/${encodeURIComponent(binId)}${path}`, {
    method: opts.method || 'GET',
    headers,
    body: opts.body,
    cache: 'no-store',
    credentials: 'omit',
    referrerPolicy: 'no-referrer',
  });
  if (!res.ok) {
    let msg = `HTTP ${res.status}`;
    try {
      const j = await res.json();
      if (j && (j.message || j.error)) msg = `${j.message || j.error} (${res.status})`;
    } catch { /* not JSON */ }
    const err = new Error(msg);
    err.status = res.status;
    if (res.status === 401) {
      forgetKey();
      closeSocket();
      conn.stopped = true;
      setStatus('error', 'error: key rejected (401)');
      showKeyGate('The key was rejected. Paste the current key for this bin.');
    }
    throw err;
  }
  return res;
}

// ---------------------------------------------------------------- toasts & status

function toast(msg, kind = 'info') {
  const t = el('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status', text: msg });
  $('toasts').append(t);
  setTimeout(() => t.classList.add('toast-out'), kind === 'error' ? 6000 : 2500);
  setTimeout(() => t.remove(), kind === 'error' ? 6400 : 2900);
}

function setStatus(state, text) {
  const s = $('status');
  s.className = `status state-${state}`;
  s.textContent = text;
}

async function copyText(text, fallbackParent) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Clipboard API needs a secure context and permission: select the text instead.
    if (fallbackParent) {
      const ta = fallbackParent.querySelector('textarea');
      if (ta) { ta.focus(); ta.select(); }
      try { return document.execCommand('copy'); } catch { return false; }
    }
    return false;
  }
}

// ---------------------------------------------------------------- WebSocket

function wsUrl() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}/api/bins/${encodeURIComponent(binId)}/ws?since=${conn.lastSeq}`;
}

function closeSocket() {
  const ws = conn.ws;
  conn.ws = null;
  clearInterval(conn.pingTimer);
  clearTimeout(conn.helloTimer);
  if (ws) { try { ws.close(1000); } catch { /* already closed */ } }
}

function connect() {
  clearTimeout(conn.timer);
  closeSocket();
  if (conn.stopped || !key) return;
  setStatus(conn.attempt ? 'reconnecting' : 'connecting', conn.attempt ? 'reconnecting…' : 'connecting…');
  let ws;
  try {
    ws = new WebSocket(wsUrl());
  } catch (e) {
    scheduleReconnect(`error: ${e.message}`);
    return;
  }
  conn.ws = ws;
  ws.addEventListener('open', () => {
    if (conn.ws !== ws) return;
    ws.send(JSON.stringify({ type: 'auth', key }));
    conn.helloTimer = setTimeout(() => {
      if (conn.ws === ws) { closeSocket(); scheduleReconnect('no answer from server'); }
    }, HELLO_TIMEOUT_MS);
  });
  ws.addEventListener('message', (ev) => {
    if (conn.ws !== ws) return;
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    if (msg && typeof msg === 'object') onMessage(msg, ws);
  });
  ws.addEventListener('close', (ev) => {
    if (conn.ws !== ws) return; // a socket we closed on purpose
    conn.ws = null;
    clearInterval(conn.pingTimer);
    clearTimeout(conn.helloTimer);
    onClose(ev);
  });
}

function onClose(ev) {
  const why = ev.reason ? `: ${ev.reason}` : '';
  switch (ev.code) {
    case 4401:
      conn.stopped = true;
      forgetKey();
      setStatus('error', `error: key rejected (4401${why})`);
      showKeyGate('The key was rejected (close code 4401). Paste the current key for this bin.');
      return;
    case 4404:
      conn.stopped = true;
      setStatus('error', `error: bin deleted (4404${why})`);
      return;
    case 4429:
      scheduleReconnect(`too many viewers (4429${why})`, 10000);
      return;
    case 4408:
      scheduleReconnect(`auth timeout (4408${why})`);
      return;
    case 1001:
      scheduleReconnect(`server going away (1001${why})`);
      return;
    default:
      scheduleReconnect(`connection closed (${ev.code}${why})`);
  }
}

function scheduleReconnect(reason, minDelay = 0) {
  if (conn.stopped) return;
  const base = Math.min(30000, 500 * 2 ** Math.min(conn.attempt, 6));
  const delay = Math.max(minDelay, Math.round(base * (0.75 + Math.random() * 0.5)));
  conn.attempt += 1;
  const until = Date.now() + delay;
  const tick = () => {
    const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
    const state = conn.attempt > 3 || minDelay ? 'error' : 'reconnecting';
    setStatus(state, `${state === 'error' ? 'error' : 'reconnecting'}: ${reason} — retry in ${left}s`);
    if (left > 0) conn.timer = setTimeout(tick, Math.min(1000, until - Date.now()));
    else conn.timer = setTimeout(connect, Math.max(0, until - Date.now()));
  };
  clearTimeout(conn.timer);
  tick();
}

addEventListener('online', () => {
  if (!conn.ws && !conn.stopped && key) { conn.attempt = 0; connect(); }
});

function onMessage(msg, ws) {
  switch (msg.type) {
    case 'hello': onHello(msg, ws); break;
    case 'capture': if (msg.capture) onCapture(msg.capture); break;
    case 'delivery': onDelivery(msg.seq, msg.delivery); break;
    case 'evicted': onEvicted(msg.up_to_seq); break;
    case 'cleared':
      clearLocal();
      if (Date.now() > selfClearUntil) toast('All requests were cleared (by another viewer or client)');
      break;
    case 'settings': setSettings(msg.settings); break;
    case 'error': toast(`Server: ${msg.message || msg.error || 'error'}`, 'error'); break;
    default: break; // pong and future message types
  }
}

function onHello(msg, ws) {
  clearTimeout(conn.helloTimer);
  const epochChanged = conn.epoch !== null && msg.epoch !== conn.epoch;
  conn.epoch = msg.epoch;
  if (epochChanged) {
    // A new incarnation of the bin: old seqs are meaningless. Start again from 0.
    clearLocal();
    const hadSeq = conn.lastSeq > 0;
    conn.lastSeq = 0;
    toast('The server restarted: the list was reset');
    if (hadSeq) { connect(); return; }
  }
  conn.attempt = 0;
  conn.backlogUntil = typeof msg.last_seq === 'number' ? msg.last_seq : 0;
  setStatus('live', paused ? 'live (paused)' : 'live');
  setSettings(msg.settings);
  clearInterval(conn.pingTimer);
  conn.pingTimer = setInterval(() => {
    if (conn.ws === ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'ping' }));
  }, PING_MS);
}

function setSettings(s) {
  if (!s) return;
  settings = s;
  $('settings').textContent = JSON.stringify(s, null, 2);
}

function onCapture(c) {
  if (typeof c.seq !== 'number' || c.seq <= conn.lastSeq) return; // duplicate
  conn.lastSeq = c.seq;
  if (!Array.isArray(c.deliveries)) c.deliveries = [];
  captures.set(c.seq, c);
  if (paused) {
    pausedBuf.push(c);
    if (pausedBuf.length > MAX_PAUSED) {
      const drop = pausedBuf.shift();
      captures.delete(drop.seq);
      pausedDropped += 1;
    }
    updatePausedBanner();
    return;
  }
  pending.push(c);
  if (!flushTimer) flushTimer = setTimeout(flush, 30);
}

function sameDelivery(a, b) {
  return a.at === b.at && a.target === b.target && a.attempt === b.attempt && a.via === b.via;
}

function addDelivery(c, d) {
  if (!d || typeof d !== 'object') return false;
  if (c.deliveries.some((x) => sameDelivery(x, d))) return false;
  c.deliveries.push(d);
  return true;
}

function onDelivery(seq, d) {
  const c = captures.get(seq);
  if (!c || !addDelivery(c, d)) return;
  refreshCapture(c);
}

function onEvicted(upTo) {
  if (typeof upTo !== 'number') return;
  for (const [seq, c] of captures) {
    if (seq > upTo) break;
    if (!c.__evicted) { c.__evicted = true; refreshCapture(c); }
  }
}

// Update the row(s) and the detail pane after a capture changed.
function refreshCapture(c) {
  const row = rows.get(c.seq);
  if (row) updateRowBadges(row, c);
  for (const r of $('search-list').querySelectorAll(`.row[data-seq="${c.seq}"]`)) updateRowBadges(r, c);
  if (selected && selected.capture === c) {
    renderDeliveries(c);
    $('detail').classList.toggle('evicted', !!c.__evicted);
  }
}

// ---------------------------------------------------------------- list

function pathSuffix(c) {
  const p = String(c.path ?? '');
  const prefix = `/${binId}`;
  if (p === prefix) return '/';
  if (p.startsWith(`${prefix}/`)) return p.slice(prefix.length);
  return p;
}

function sigBadge(c) {
  const s = c.signature;
  if (!s || typeof s !== 'object') return null;
  return s.valid
    ? el('span', { class: 'badge sig-ok', text: '✓ sig', title: `signature valid (${s.scheme || 'unknown scheme'})` })
    : el('span', { class: 'badge sig-bad', text: '✗ sig', title: `signature invalid (${s.scheme || 'unknown scheme'})` });
}

function deliveryBadge(c) {
  const ds = c.deliveries || [];
  if (!ds.length) return null;
  const last = ds[ds.length - 1];
  const ok = typeof last.status === 'number' && last.status < 400 && !last.error;
  const text = `→ ${typeof last.status === 'number' ? last.status : 'err'}${ds.length > 1 ? ` ×${ds.length}` : ''}`;
  return el('span', { class: `badge ${ok ? 'dl-ok' : 'dl-bad'}`, text, title: `${ds.length} deliver${ds.length > 1 ? 'ies' : 'y'}` });
}

function buildRow(c) {
  const status = c.response && typeof c.response.status === 'number' ? c.response.status : null;
  const row = el('div', {
    class: `row${c.__evicted ? ' evicted' : ''}`, role: 'option', 'aria-selected': 'false',
    testid: 'capture-row', dataset: { seq: String(c.seq) },
  }, [
    el('span', { class: `c-method ${methodClass(c.method)}`, text: c.method }),
    el('span', { class: 'c-path' }, [
      el('span', { class: 'c-path-text' }, [
        pathSuffix(c),
        c.query ? el('span', { class: 'c-query', text: `?${c.query}` }) : null,
      ]),
      el('span', { class: 'c-badges' }, [sigBadge(c), deliveryBadge(c)]),
    ]),
    el('span', { class: `c-status ${statusClass(status)}`, text: status ?? '' }),
    el('span', { class: 'c-size', text: `${fmtSize(c.body_size)}${c.truncated ? '+' : ''}` }),
    el('span', { class: 'c-time', text: fmtClock(c.received_at) }),
  ]);
  rowCapture.set(row, c);
  if (filterText) row.hidden = !matches(c, filterText);
  return row;
}

function updateRowBadges(row, c) {
  row.classList.toggle('evicted', !!c.__evicted);
  const b = row.querySelector('.c-badges');
  clear(b);
  append(b, [sigBadge(c), deliveryBadge(c)]);
}

function flush() {
  flushTimer = null;
  let batch = pending;
  pending = [];
  if (!batch.length) return;
  if (batch.length > MAX_ROWS) {
    for (const c of batch.slice(0, batch.length - MAX_ROWS)) captures.delete(c.seq);
    trimmed += batch.length - MAX_ROWS;
    batch = batch.slice(-MAX_ROWS);
  }
  const list = $('capture-list');
  const frag = document.createDocumentFragment();
  const built = batch.map(buildRow);
  if (batch.length <= 50) {
    for (let i = 0; i < built.length; i += 1) {
      if (batch[i].seq <= conn.backlogUntil) continue; // backlog, not news
      const r = built[i];
      r.classList.add('fresh');
      r.addEventListener('animationend', () => r.classList.remove('fresh'), { once: true });
    }
  }
  for (let i = 0; i < batch.length; i += 1) rows.set(batch[i].seq, built[i]);
  for (let i = built.length - 1; i >= 0; i -= 1) frag.append(built[i]);
  list.prepend(frag);
  trimRows();
  updateCounts();
  if (!selected && !searchMode) {
    const first = list.querySelector('.row:not([hidden])');
    if (first) select(first);
  }
}

function trimRows() {
  while (rows.size > MAX_ROWS) {
    const [seq, row] = rows.entries().next().value;
    rows.delete(seq);
    row.remove();
    if (!selected || selected.capture.seq !== seq) captures.delete(seq);
    trimmed += 1;
  }
}

function clearLocal() {
  clearTimeout(flushTimer);
  flushTimer = null;
  pending = [];
  pausedBuf = [];
  pausedDropped = 0;
  trimmed = 0;
  captures.clear();
  rows.clear();
  clear($('capture-list'));
  clear($('search-list'));
  if (searchMode) leaveSearch();
  selected = null;
  renderPlaceholder();
  updateCounts();
  updatePausedBanner();
}

function updateCounts() {
  const total = rows.size;
  let shown = total;
  if (filterText) {
    shown = 0;
    for (const r of rows.values()) if (!r.hidden) shown += 1;
  }
  const parts = [];
  parts.push(filterText ? `${shown} of ${total} requests` : `${total} request${total === 1 ? '' : 's'}`);
  $('counts').textContent = parts.join(' · ');
  $('empty').hidden = total > 0 || searchMode;
  const note = $('trim-note');
  note.hidden = trimmed === 0 || searchMode;
  note.textContent = `${trimmed} older request${trimmed === 1 ? '' : 's'} not kept in this view (the list holds ${MAX_ROWS}); use “Search server” to find them.`;
}

function updatePausedBanner() {
  const b = $('paused-banner');
  b.hidden = !paused;
  if (!paused) return;
  let t = `Paused: ${pausedBuf.length} new request${pausedBuf.length === 1 ? '' : 's'} buffered`;
  if (pausedDropped) t += `, ${pausedDropped} older dropped (buffer holds ${MAX_PAUSED}; use “Search server”)`;
  b.textContent = `${t}.`;
}

function setPaused(p) {
  paused = p;
  const btn = $('pause');
  btn.textContent = p ? 'Resume' : 'Pause';
  btn.setAttribute('aria-pressed', String(p));
  btn.classList.toggle('active', p);
  if (!p) {
    for (const c of pausedBuf) pending.push(c);
    pausedBuf = [];
    if (pausedDropped) trimmed += pausedDropped;
    pausedDropped = 0;
    flush();
  }
  updatePausedBanner();
  if ($('status').classList.contains('state-live')) setStatus('live', p ? 'live (paused)' : 'live');
}

$('pause').addEventListener('click', () => setPaused(!paused));

// ---------------------------------------------------------------- filter & search

function haystack(c) {
  if (c.__hay === undefined) {
    const parts = [c.method, pathSuffix(c), c.query ? `?${c.query}` : ''];
    for (const [n, v] of c.headers || []) parts.push(`${n}: ${v}`);
    const b = bodyOf(c);
    if (b.text) parts.push(b.text.length > 262144 ? b.text.slice(0, 262144) : b.text);
    Object.defineProperty(c, '__hay', { value: parts.join('\n').toLowerCase(), enumerable: false });
  }
  return c.__hay;
}

function matches(c, q) {
  return haystack(c).includes(q);
}

function applyFilter() {
  filterText = $('filter').value.trim().toLowerCase();
  for (const list of [$('capture-list'), $('search-list')]) {
    for (const row of list.children) {
      const c = rowCapture.get(row);
      if (c) row.hidden = !!filterText && !matches(c, filterText);
    }
  }
  updateCounts();
}

let filterTimer = null;
$('filter').addEventListener('input', () => {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(applyFilter, 80);
});
$('filter').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && e.ctrlKey) searchServer();
  if (e.key === 'Escape') { $('filter').value = ''; applyFilter(); }
});

async function searchServer() {
  const q = $('filter').value.trim();
  if (!q) { toast('Type something in the filter box first'); $('filter').focus(); return; }
  const btn = $('search-older');
  btn.disabled = true;
  try {
    const res = await api(`/requests?since=0&limit=1000&q=${encodeURIComponent(q)}`);
    const j = await res.json();
    const found = Array.isArray(j) ? j : (j.requests || j.captures || j.items || []);
    const list = $('search-list');
    clear(list);
    const frag = document.createDocumentFragment();
    for (let i = found.length - 1; i >= 0; i -= 1) {
      let c = found[i];
      if (!c || typeof c.seq !== 'number') continue;
      const known = captures.get(c.seq);
      if (known) c = known;
      else if (!Array.isArray(c.deliveries)) c.deliveries = [];
      frag.append(buildRow(c));
    }
    list.append(frag);
    searchMode = true;
    $('capture-list').hidden = true;
    list.hidden = false;
    $('search-banner').hidden = false;
    $('search-summary').textContent = `Server search “${q}”: ${found.length}${found.length >= 1000 ? '+' : ''} match${found.length === 1 ? '' : 'es'}`;
    updateCounts();
  } catch (e) {
    toast(`Search failed: ${e.message}`, 'error');
  } finally {
    btn.disabled = false;
  }
}

function leaveSearch() {
  searchMode = false;
  clear($('search-list'));
  $('search-list').hidden = true;
  $('capture-list').hidden = false;
  $('search-banner').hidden = true;
  updateCounts();
}

$('search-older').addEventListener('click', searchServer);
$('search-back').addEventListener('click', leaveSearch);

// ---------------------------------------------------------------- selection & keyboard

function select(row) {
  const c = rowCapture.get(row);
  if (!c) return;
  if (selected && selected.row) {
    selected.row.classList.remove('selected');
    selected.row.setAttribute('aria-selected', 'false');
  }
  row.classList.add('selected');
  row.setAttribute('aria-selected', 'true');
  selected = { capture: c, row };
  renderDetail(c);
}

for (const id of ['capture-list', 'search-list']) {
  const list = $(id);
  list.addEventListener('click', (e) => {
    const row = e.target.closest('.row');
    if (row) {
      select(row);
      if (matchMedia('(max-width: 800px)').matches) $('detail').scrollIntoView({ block: 'start', behavior: 'smooth' });
    }
  });
  list.addEventListener('keydown', (e) => {
    if (e.key !== 'ArrowDown' && e.key !== 'ArrowUp') return;
    e.preventDefault();
    let r = selected && selected.row && selected.row.parentNode === list ? selected.row : null;
    const step = (x) => (e.key === 'ArrowDown' ? x.nextElementSibling : x.previousElementSibling);
    r = r ? step(r) : list.firstElementChild;
    while (r && r.hidden) r = step(r);
    if (r) { select(r); r.scrollIntoView({ block: 'nearest' }); }
  });
}

document.addEventListener('keydown', (e) => {
  if (e.key === '/' && !e.ctrlKey && !e.metaKey && !['INPUT', 'TEXTAREA'].includes(document.activeElement?.tagName)) {
    e.preventDefault();
    $('filter').focus();
  }
});

// ---------------------------------------------------------------- body decoding

function b64ToBytes(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i += 1) out[i] = bin.charCodeAt(i);
  return out;
}

/** What we know about a capture's body: { kind: 'none'|'omitted'|'text'|'binary', text?, bytes? } */
function bodyOf(c) {
  if (c.__body) return c.__body;
  let b;
  if (c.__loadedBytes) {
    const bytes = c.__loadedBytes;
    try {
      b = { kind: 'text', text: new TextDecoder('utf-8', { fatal: true }).decode(bytes), bytes };
    } catch {
      b = { kind: 'binary', bytes, text: new TextDecoder('utf-8').decode(bytes.subarray(0, 262144)) };
    }
  } else if (c.body === null || c.body === undefined) {
    b = c.body_omitted ? { kind: 'omitted' } : { kind: 'none' };
  } else if (c.body_encoding === 'base64') {
    let bytes;
    try { bytes = b64ToBytes(c.body); } catch { bytes = new Uint8Array(0); }
    b = { kind: 'binary', bytes, text: new TextDecoder('utf-8').decode(bytes.subarray(0, 262144)) };
  } else {
    const text = String(c.body);
    b = text.length ? { kind: 'text', text } : { kind: 'none' };
  }
  Object.defineProperty(c, '__body', { value: b, enumerable: false, configurable: true });
  return b;
}

function bytesOf(b) {
  if (!b.bytes) b.bytes = new TextEncoder().encode(b.text || '');
  return b.bytes;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

function hexDump(bytes) {
  const n = Math.min(bytes.length, HEX_LIMIT);
  const lines = [];
  for (let off = 0; off < n; off += 16) {
    let hex = '';
    let asc = '';
    for (let i = 0; i < 16; i += 1) {
      if (off + i < n) {
        const v = bytes[off + i];
        hex += `${HEX[v]} `;
        asc += v >= 0x20 && v < 0x7f ? String.fromCharCode(v) : '.';
      } else {
        hex += '   ';
      }
      if (i === 7) hex += ' ';
    }
    lines.push(`${off.toString(16).padStart(8, '0')}  ${hex} ${asc}`);
  }
  return lines.join('\n');
}

// JSON pretty printer that re-indents the original tokens, so big integers, key order
// and duplicate keys are shown exactly as sent (JSON.parse would change them).
const JSON_TOKEN = /\s+|"(?:[^"\\]|\\.)*"|[{}[\],:]|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null/gy;

function jsonTokens(text) {
  const toks = [];
  JSON_TOKEN.lastIndex = 0;
  let m;
  while (JSON_TOKEN.lastIndex < text.length && (m = JSON_TOKEN.exec(text))) {
    if (!/^\s/.test(m[0])) toks.push(m[0]);
  }
  return JSON_TOKEN.lastIndex >= text.length ? toks : null;
}

function prettyJson(text) {
  const t = text.trim();
  if (!t || (t[0] !== '{' && t[0] !== '[')) return null;
  try { JSON.parse(t); } catch { return null; }
  const toks = jsonTokens(t);
  if (!toks) return null;
  const colour = t.length <= HIGHLIGHT_LIMIT;
  const frag = document.createDocumentFragment();
  let plain = '';
  let depth = 0;
  const nl = () => `\n${'  '.repeat(depth)}`;
  const put = (s, cls) => {
    if (!cls || !colour) { plain += s; return; }
    if (plain) { frag.append(document.createTextNode(plain)); plain = ''; }
    frag.append(el('span', { class: cls, text: s }));
  };
  for (let i = 0; i < toks.length; i += 1) {
    const k = toks[i];
    const c = k[0];
    if (c === '{' || c === '[') {
      const close = c === '{' ? '}' : ']';
      if (toks[i + 1] === close) { put(k + close, 'j-punct'); i += 1; continue; }
      depth += 1;
      put(k, 'j-punct');
      plain += nl();
    } else if (c === '}' || c === ']') {
      depth -= 1;
      plain += nl();
      put(k, 'j-punct');
    } else if (c === ',') {
      put(',', 'j-punct');
      plain += nl();
    } else if (c === ':') {
      put(':', 'j-punct');
      plain += ' ';
    } else if (c === '"') {
      put(k, toks[i + 1] === ':' ? 'j-key' : 'j-str');
    } else if (k === 'true' || k === 'false') {
      put(k, 'j-bool');
    } else if (k === 'null') {
      put(k, 'j-null');
    } else {
      put(k, 'j-num');
    }
  }
  if (plain) frag.append(document.createTextNode(plain));
  return frag;
}

// ---------------------------------------------------------------- detail pane

function renderPlaceholder() {
  const d = $('detail');
  clear(d);
  d.classList.remove('evicted');
  d.append(el('div', { class: 'placeholder muted', text: 'Select a request to inspect it.' }));
}

function kvTable(pairs, opts = {}) {
  const seen = new Map();
  for (const [n] of pairs) {
    const l = String(n).toLowerCase();
    seen.set(l, (seen.get(l) || 0) + 1);
  }
  const body = el('tbody');
  for (const [n, v] of pairs) {
    const dup = opts.markDuplicates && seen.get(String(n).toLowerCase()) > 1;
    body.append(el('tr', { class: dup ? 'dup' : null }, [
      el('th', { scope: undefined, text: n }),
      el('td', { text: v }),
    ]));
  }
  return el('table', { class: 'kv', testid: opts.testid }, [body]);
}

function section(title, content, opts = {}) {
  return el('details', { class: 'sec', open: opts.open !== false, id: opts.id, testid: opts.testid }, [
    el('summary', {}, [el('span', { class: 'sec-title', text: title }), opts.extra || null]),
    el('div', { class: 'sec-body' }, content),
  ]);
}

function overviewSection(c) {
  // [label, value, class, wide]
  const items = [
    ['URL', `${c.path ?? ''}${c.query ? `?${c.query}` : ''}`, '', true],
    ['Received', `${c.received_at ?? ''}${fmtLocal(c.received_at) ? `  (${fmtLocal(c.received_at)})` : ''}`, '', true],
    ['Method', c.method],
    ['Response', c.response && c.response.status !== undefined ? String(c.response.status) : '—'],
    ['Remote address', c.remote_addr ?? ''],
    ['HTTP', `${c.http_version ?? ''}${c.scheme ? ` · ${c.scheme}` : ''}`],
    ['Body size', `${c.body_size ?? 0} B${c.declared_length !== undefined && c.declared_length !== null ? ` (declared ${c.declared_length})` : ''}`],
    ['Truncated', c.truncated ? 'yes — only the first bytes were stored' : 'no', c.truncated ? 'warn' : ''],
    ['Headers exact', c.headers_exact ? 'yes — arrival order and case' : 'no — normalised', c.headers_exact ? '' : 'warn'],
    ['Seq', String(c.seq)],
  ];
  if (c.signature && typeof c.signature === 'object') {
    const s = c.signature;
    items.push(['Signature', `${s.valid ? 'valid' : 'INVALID'} · ${s.scheme ?? ''}${s.detail ? ` · ${s.detail}` : ''}`, s.valid ? 'good' : 'bad', true]);
  }
  const grid = el('div', { class: 'ov-grid', testid: 'detail-overview' }, items.map(([k, v, cls, wide]) => el('div', {
    class: `ov-item${wide ? ' wide' : ''}${cls ? ` ${cls}` : ''}`,
  }, [el('span', { class: 'ov-k', text: k }), el('span', { class: 'ov-v', text: v })])));
  return section('Overview', [grid]);
}

function queryPairs(q) {
  try {
    return [...new URLSearchParams(q)];
  } catch {
    return [];
  }
}

function querySection(c) {
  if (!c.query) return null;
  const pairs = queryPairs(c.query);
  return section(`Query parameters (${pairs.length})`, [
    kvTable(pairs, { testid: 'detail-query' }),
    el('div', { class: 'raw-line mono muted', text: `?${c.query}` }),
  ]);
}

function headersSection(c) {
  const h = Array.isArray(c.headers) ? c.headers : [];
  const extra = c.headers_exact ? null : el('span', { class: 'badge warn-badge', text: 'normalised' });
  return section(`Headers (${h.length})`, [kvTable(h, { testid: 'detail-headers', markDuplicates: true })], { extra });
}

function bodyViews(c, b) {
  if (b.kind === 'text') {
    const views = [];
    if (prettyJsonCheck(b.text)) views.push('pretty');
    const ct = (headerValue(c.headers, 'content-type') || '').toLowerCase();
    if (ct.includes('application/x-www-form-urlencoded')) views.push('form');
    views.push('raw', 'hex');
    return views;
  }
  if (b.kind === 'binary') return ['hex', 'raw'];
  return [];
}

function prettyJsonCheck(text) {
  const t = text.trim();
  if (!t || (t[0] !== '{' && t[0] !== '[')) return false;
  try { JSON.parse(t); return true; } catch { return false; }
}

const VIEW_LABEL = { pretty: 'JSON', form: 'Form', raw: 'Raw', hex: 'Hex' };

function bodySection(c) {
  const b = bodyOf(c);
  const holder = el('div', { class: 'body-view', testid: 'detail-body' });
  const views = bodyViews(c, b);
  let seg = null;
  if (views.length) {
    const pref = c.__view && views.includes(c.__view) ? c.__view : views[0];
    seg = el('span', { class: 'seg', role: 'group', 'aria-label': 'Body view' });
    for (const v of views) {
      const btn = el('button', {
        type: 'button', class: `seg-btn${v === pref ? ' active' : ''}`, text: VIEW_LABEL[v],
        dataset: { view: v }, testid: `body-view-${v}`, 'aria-pressed': String(v === pref),
      });
      btn.addEventListener('click', (e) => {
        e.preventDefault();
        e.stopPropagation();
        Object.defineProperty(c, '__view', { value: v, writable: true, configurable: true, enumerable: false });
        for (const x of seg.children) {
          x.classList.toggle('active', x === btn);
          x.setAttribute('aria-pressed', String(x === btn));
        }
        fillBody(holder, c, b, v);
      });
      seg.append(btn);
    }
    fillBody(holder, c, b, pref);
  } else if (b.kind === 'omitted') {
    holder.append(el('div', { class: 'note' }, [
      `The body (${fmtSize(c.body_size)}) is too large for the live stream. `,
      el('button', {
        type: 'button', class: 'btn small', text: 'Load body',
        on: { click: () => loadBody(c) },
      }),
    ]));
  } else {
    holder.append(el('div', { class: 'muted note', text: 'No body.' }));
  }
  const notes = [];
  if (c.truncated) {
    notes.push(el('div', {
      class: 'note warn',
      text: `Truncated: only the first ${c.body_size ?? 0} bytes were stored${c.declared_length ? ` of ${c.declared_length} declared` : ''}.`,
    }));
  }
  const ct = headerValue(c.headers, 'content-type');
  const title = `Body${ct ? ` · ${ct}` : ''} · ${fmtSize(c.body_size ?? 0)}${b.kind === 'binary' ? ' · binary' : ''}`;
  return section(title, [...notes, holder], { extra: seg });
}

function fillBody(holder, c, b, view) {
  clear(holder);
  const limitNote = (shown, total, unit) => (shown < total
    ? el('div', { class: 'note muted', text: `Showing the first ${shown} of ${total} ${unit}. Use “Download body” for all of it.` })
    : null);
  if (view === 'pretty') {
    const src = b.text.length > TEXT_LIMIT ? null : prettyJson(b.text);
    if (src) {
      holder.append(el('pre', { class: 'code body-pre json' }, [src]));
      return;
    }
    view = 'raw';
  }
  if (view === 'form') {
    const pairs = queryPairs(b.text);
    holder.append(kvTable(pairs, { testid: 'detail-form' }));
    return;
  }
  if (view === 'raw') {
    const t = b.text || '';
    holder.append(el('pre', { class: 'code body-pre wrap', text: t.length > TEXT_LIMIT ? t.slice(0, TEXT_LIMIT) : t }));
    if (b.kind === 'binary') holder.prepend(el('div', { class: 'note muted', text: 'Not valid UTF-8: shown with replacement characters.' }));
    append(holder, limitNote(Math.min(t.length, TEXT_LIMIT), t.length, 'characters'));
    return;
  }
  const bytes = bytesOf(b);
  holder.append(el('pre', { class: 'code body-pre hex', text: hexDump(bytes) }));
  append(holder, limitNote(Math.min(bytes.length, HEX_LIMIT), bytes.length, 'bytes'));
}

async function loadBody(c) {
  try {
    const res = await api(`/requests/${c.seq}/body`);
    const buf = new Uint8Array(await res.arrayBuffer());
    Object.defineProperty(c, '__loadedBytes', { value: buf, enumerable: false, configurable: true });
    delete c.__body;
    if (selected && selected.capture === c) renderDetail(c);
  } catch (e) {
    toast(`Could not load the body: ${e.message}`, 'error');
  }
}

function responseSection(c) {
  const r = c.response;
  if (!r || typeof r !== 'object') return null;
  const parts = [];
  const pairs = [['Status', r.status !== undefined ? String(r.status) : '']];
  if (r.delay_ms) pairs.push(['Delay', `${r.delay_ms} ms`]);
  for (const [k, v] of Object.entries(r)) {
    if (['status', 'headers', 'body', 'delay_ms'].includes(k)) continue;
    pairs.push([k, typeof v === 'string' ? v : JSON.stringify(v)]);
  }
  parts.push(kvTable(pairs, { testid: 'detail-response' }));
  if (Array.isArray(r.headers) && r.headers.length) {
    parts.push(el('div', { class: 'sub-title', text: 'Headers' }), kvTable(r.headers));
  }
  if (typeof r.body === 'string' && r.body.length) {
    parts.push(el('div', { class: 'sub-title', text: 'Body' }), el('pre', { class: 'code body-pre wrap', text: r.body }));
  }
  return section(`Response sent${r.status !== undefined ? ` · ${r.status}` : ''}`, parts, { open: false });
}

function deliveryItem(d, opts = {}) {
  const ok = typeof d.status === 'number' && d.status < 400 && !d.error;
  const summary = el('summary', { class: 'dl-sum' }, [
    el('span', { class: `badge ${ok ? 'dl-ok' : 'dl-bad'}`, text: typeof d.status === 'number' ? String(d.status) : 'failed' }),
    el('span', { class: 'dl-via', text: d.via || '' }),
    el('span', { class: 'dl-attempt', text: d.attempt !== undefined ? `#${d.attempt}` : '' }),
    el('span', { class: 'dl-target mono', text: d.target || '' }),
    el('span', { class: 'dl-dur', text: fmtMs(d.duration_ms) }),
    el('span', { class: 'dl-at muted', text: fmtClock(d.at) }),
  ]);
  const body = [];
  if (d.error) body.push(el('div', { class: 'note bad', text: `Error: ${d.error}` }));
  const pairs = [
    ['Target', d.target || ''], ['Via', d.via || ''], ['Attempt', d.attempt ?? ''],
    ['At', d.at || ''], ['Status', d.status ?? ''], ['Duration', fmtMs(d.duration_ms)],
  ];
  body.push(kvTable(pairs));
  if (Array.isArray(d.response_headers) && d.response_headers.length) {
    body.push(el('div', { class: 'sub-title', text: 'Response headers' }), kvTable(d.response_headers));
  }
  if (typeof d.response_body === 'string' && d.response_body.length) {
    body.push(el('div', { class: 'sub-title', text: 'Response body' }));
    const pretty = d.response_body.length <= TEXT_LIMIT ? prettyJson(d.response_body) : null;
    body.push(pretty
      ? el('pre', { class: 'code body-pre json' }, [pretty])
      : el('pre', { class: 'code body-pre wrap', text: d.response_body.slice(0, TEXT_LIMIT) }));
  }
  return el('details', { class: `delivery${ok ? '' : ' failed'}`, open: opts.open, testid: 'delivery' }, [summary, el('div', { class: 'dl-body' }, body)]);
}

function renderDeliveries(c) {
  const holder = $('deliveries');
  if (!holder) return;
  const ds = c.deliveries || [];
  const sec = holder.closest('details');
  sec.querySelector('.sec-title').textContent = `Deliveries (${ds.length})`;
  clear(holder);
  if (!ds.length) {
    holder.append(el('div', { class: 'muted note', text: 'No deliveries yet. Replay this request, configure forwarding, or run hookrelay listen.' }));
    return;
  }
  for (let i = ds.length - 1; i >= 0; i -= 1) holder.append(deliveryItem(ds[i]));
}

function replayTargetKey() {
  return `hookrelay.replay.${binId}`;
}

function replaySection(c) {
  let remembered = '';
  try { remembered = localStorage.getItem(replayTargetKey()) || ''; } catch { /* disabled */ }
  const target = el('input', {
    class: 'input mono', type: 'url', placeholder: 'http://localhost:3000/webhooks', value: remembered,
    spellcheck: 'false', 'aria-label': 'Replay target URL', testid: 'replay-target',
  });
  const editBox = el('div', { class: 'replay-edit', hidden: true });
  const method = el('input', { class: 'input mono method-input', value: c.method, 'aria-label': 'Method', testid: 'replay-method', spellcheck: 'false' });
  const headerLines = (c.headers || []).map(([n, v]) => `${n}: ${v}`).join('\n');
  const headers = el('textarea', { class: 'input mono', rows: 6, spellcheck: 'false', 'aria-label': 'Headers, one per line', testid: 'replay-headers', value: headerLines });
  const b = bodyOf(c);
  const bodyIsText = b.kind === 'text' || b.kind === 'none';
  const body = el('textarea', {
    class: 'input mono', rows: 8, spellcheck: 'false', 'aria-label': 'Body', testid: 'replay-body',
    value: bodyIsText ? (b.text || '') : '',
    placeholder: bodyIsText ? '' : `${b.kind === 'binary' ? 'Binary' : 'Large'} body (${fmtSize(c.body_size)}): leave empty and untouched to send the original bytes`,
  });
  let headersDirty = false;
  let bodyDirty = false;
  headers.addEventListener('input', () => { headersDirty = true; });
  body.addEventListener('input', () => { bodyDirty = true; });
  append(editBox, [
    el('label', { class: 'field' }, [el('span', { text: 'Method' }), method]),
    el('label', { class: 'field' }, [el('span', { text: 'Headers (Name: value per line)' }), headers]),
    el('label', { class: 'field' }, [el('span', { text: 'Body' }), body]),
  ]);
  const result = el('div', { class: 'replay-result', testid: 'replay-result' });
  const sendBtn = el('button', { type: 'button', class: 'btn primary', text: 'Replay', testid: 'replay' });
  const editBtn = el('button', { type: 'button', class: 'btn', text: 'Edit and replay…', testid: 'replay-edit-toggle', 'aria-expanded': 'false' });
  editBtn.addEventListener('click', () => {
    editBox.hidden = !editBox.hidden;
    editBtn.setAttribute('aria-expanded', String(!editBox.hidden));
    editBtn.classList.toggle('active', !editBox.hidden);
    sendBtn.textContent = editBox.hidden ? 'Replay' : 'Send edited';
  });
  const send = async () => {
    const t = target.value.trim();
    if (!t) { target.focus(); toast('Enter a target URL'); return; }
    try { localStorage.setItem(replayTargetKey(), t); } catch { /* disabled */ }
    const payload = { target: t };
    if (!editBox.hidden) {
      const m = method.value.trim();
      if (m && m !== c.method) payload.method = m;
      if (headersDirty) {
        const parsed = [];
        for (const [i, line] of headers.value.split(/\r?\n/).entries()) {
          if (!line.trim()) continue;
          const idx = line.indexOf(':');
          if (idx <= 0) { toast(`Header line ${i + 1} has no “Name: value”`, 'error'); return; }
          parsed.push([line.slice(0, idx).trim(), line.slice(idx + 1).trim()]);
        }
        payload.headers = parsed;
      }
      if (bodyDirty) payload.body = body.value;
    }
    sendBtn.disabled = true;
    clear(result);
    result.append(el('div', { class: 'muted note', text: `Sending to ${t}…` }));
    try {
      const res = await api(`/requests/${c.seq}/replay`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(payload),
      });
      const d = await res.json();
      clear(result);
      result.append(deliveryItem(d, { open: true }));
      if (addDelivery(c, d)) refreshCapture(c);
    } catch (e) {
      clear(result);
      result.append(el('div', { class: 'note bad', text: `Replay failed: ${e.message}` }));
    } finally {
      sendBtn.disabled = false;
    }
  };
  sendBtn.addEventListener('click', send);
  target.addEventListener('keydown', (e) => { if (e.key === 'Enter') send(); });
  return section('Replay', [
    el('div', { class: 'replay-row' }, [target, sendBtn, editBtn]),
    editBox,
    result,
  ], { open: true, testid: 'replay-section' });
}

function actionsBar(c) {
  const curlBox = el('div', { class: 'curl-box', hidden: true, testid: 'curl-box' });
  const curlBtn = el('button', { type: 'button', class: 'btn', text: 'Copy as cURL', testid: 'copy-curl' });
  curlBtn.addEventListener('click', async () => {
    try {
      const res = await api(`/requests/${c.seq}/curl`);
      const text = await res.text();
      clear(curlBox);
      curlBox.append(el('textarea', { class: 'input mono curl-text', readonly: true, rows: 4, value: text, spellcheck: 'false', 'aria-label': 'cURL command' }));
      curlBox.hidden = false;
      const ok = await copyText(text, curlBox);
      toast(ok ? 'cURL command copied' : 'Select the command and copy it (clipboard not available)');
    } catch (e) {
      toast(`Copy as cURL failed: ${e.message}`, 'error');
    }
  });
  const dlBtn = el('button', { type: 'button', class: 'btn', text: 'Download body', testid: 'download-body', disabled: !c.body_size });
  dlBtn.addEventListener('click', async () => {
    try {
      const res = await api(`/requests/${c.seq}/body`);
      const blob = await res.blob();
      const url = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = url;
      a.download = `hookrelay-${binId}-${c.seq}${bodyExt(c)}`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      toast(`Download failed: ${e.message}`, 'error');
    }
  });
  return [el('div', { class: 'actions' }, [curlBtn, dlBtn]), curlBox];
}

function bodyExt(c) {
  const ct = (headerValue(c.headers, 'content-type') || '').toLowerCase();
  if (ct.includes('json')) return '.json';
  if (ct.includes('xml')) return '.xml';
  if (ct.includes('x-www-form-urlencoded')) return '.txt';
  if (ct.startsWith('text/')) return '.txt';
  return '.bin';
}

function renderDetail(c) {
  const d = $('detail');
  const scroll = d.scrollTop;
  const same = d.dataset.seq === String(c.seq);
  clear(d);
  d.dataset.seq = String(c.seq);
  d.classList.toggle('evicted', !!c.__evicted);
  const [actions, curlBox] = actionsBar(c);
  const head = el('div', { class: 'detail-head' }, [
    el('div', { class: 'detail-title' }, [
      el('span', { class: `c-method ${methodClass(c.method)}`, text: c.method }),
      el('span', { class: 'detail-path mono' }, [
        pathSuffix(c), c.query ? el('span', { class: 'c-query', text: `?${c.query}` }) : null,
      ]),
      el('span', { class: 'muted seq', text: `#${c.seq}` }),
    ]),
    actions,
  ]);
  const dels = section('Deliveries (0)', [el('div', { id: 'deliveries', class: 'deliveries' })], { testid: 'detail-deliveries' });
  append(d, [
    head,
    el('div', { class: 'evicted-note note warn', text: 'This request was evicted from the server buffer: actions that need the server will fail.' }),
    curlBox,
    overviewSection(c),
    querySection(c),
    headersSection(c),
    bodySection(c),
    responseSection(c),
    replaySection(c),
    dels,
  ]);
  renderDeliveries(c);
  if (same) d.scrollTop = scroll;
}

// ---------------------------------------------------------------- toolbar actions

$('clear').addEventListener('click', () => {
  $('clear').hidden = true;
  $('clear-confirm').hidden = false;
  $('clear-no').focus();
});
$('clear-no').addEventListener('click', () => {
  $('clear-confirm').hidden = true;
  $('clear').hidden = false;
});
$('clear-yes').addEventListener('click', async () => {
  $('clear-confirm').hidden = true;
  $('clear').hidden = false;
  try {
    selfClearUntil = Date.now() + 5000;
    await api('/requests', { method: 'DELETE' });
    clearLocal();
    toast('Bin cleared');
  } catch (e) {
    toast(`Clear failed: ${e.message}`, 'error');
  }
});

$('copy-inbound').addEventListener('click', async () => {
  const ok = await copyText(inboundUrl);
  if (!ok) {
    const r = document.createRange();
    r.selectNodeContents($('inbound-url'));
    getSelection().removeAllRanges();
    getSelection().addRange(r);
  }
  toast(ok ? 'Inbound URL copied' : 'Press Ctrl+C to copy the selected URL');
});

// ---------------------------------------------------------------- start

function start() {
  $('inbound-url').textContent = inboundUrl;
  $('empty-example').textContent = `curl -X POST ${inboundUrl}/test \\\n  -H 'Content-Type: application/json' \\\n  -d '{"hello":"world"}'`;
  document.title = `${binId} · hookrelay`;
  updateCounts();
  const fromFragment = keyFromFragment();
  if (fromFragment) {
    storeKey(fromFragment);
    history.replaceState(null, '', location.pathname + location.search);
  }
  key = fromFragment || storedKey();
  if (!key) {
    setStatus('error', 'no key');
    showKeyGate();
    return;
  }
  connect();
}

start();
