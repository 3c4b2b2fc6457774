// rewind's local UI: plain JavaScript, no build step.
//
// Times from the server are strings of nanoseconds since the epoch (a
// JavaScript number cannot hold them); BigInt does the arithmetic. Paths
// travel as ids (URL-safe base64 of their bytes). Text from the
// repository is only ever set as textContent, never parsed as HTML.
'use strict';

// ---- session --------------------------------------------------------------

// The request key arrives once in the fragment of the login redirect and
// is kept in this origin's storage (another port cannot read it).
(function takeKey() {
  const m = location.hash.match(/^#key=([0-9a-f]{64})$/);
  if (m) {
    localStorage.setItem('rewind-key', m[1]);
    history.replaceState(null, '', '/#/overview');
  }
})();

async function api(path, body) {
  const opts = { headers: { 'X-Rewind-Key': localStorage.getItem('rewind-key') || '' }, credentials: 'same-origin' };
  if (body !== undefined) {
    opts.method = 'POST';
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (r.status === 401) {
    show('out');
    throw new Error('not logged in');
  }
  const ct = r.headers.get('content-type') || '';
  const data = ct.includes('json') ? await r.json() : await r.text();
  if (!r.ok) throw new Error((data && data.error) || data || r.statusText);
  return data;
}

// ---- small helpers --------------------------------------------------------

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}
const $ = (id) => document.getElementById(id);
const MS = 1000000n;
const nsToMs = (t) => Number(BigInt(t) / MS);
// A moment picked at millisecond precision includes that whole millisecond.
const msToNs = (ms) => (BigInt(Math.floor(ms)) * MS + (MS - 1n)).toString();
function pad(n, w = 2) { return String(n).padStart(w, '0'); }
function fmtMs(ms, withMs) {
  const d = new Date(ms);
  let s = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (withMs) s += '.' + pad(d.getMilliseconds(), 3);
  return s;
}
const fmtNs = (t, withMs) => (t === null || t === undefined ? '—' : fmtMs(nsToMs(t), withMs));
function fmtBytes(n) {
  if (n === null || n === undefined) return '';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let x = Number(n);
  while (x >= 1024 && i < u.length - 1) { x /= 1024; i++; }
  return (i === 0 ? x : x.toFixed(1)) + ' ' + u[i];
}
function fmtAgo(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}
function params() {
  const q = location.hash.split('?')[1] || '';
  return Object.fromEntries(new URLSearchParams(q));
}
function go(view, p) {
  const q = new URLSearchParams(Object.entries(p || {}).filter(([, v]) => v !== null && v !== undefined && v !== '')).toString();
  location.hash = `#/${view}` + (q ? '?' + q : '');
}
function fail(where, e) {
  where.replaceChildren(h('p', { class: 'error' }, String(e.message || e)));
}

// ---- views ----------------------------------------------------------------

const views = ['overview', 'browse', 'file', 'search', 'out'];
function show(name) {
  for (const v of views) $('view-' + v).hidden = v !== name;
  for (const v of ['overview', 'browse', 'search']) $('nav-' + v).classList.toggle('on', v === name || (name === 'file' && v === 'browse'));
}

async function route() {
  const view = (location.hash.match(/^#\/(\w+)/) || [])[1] || 'overview';
  const p = params();
  if (!localStorage.getItem('rewind-key')) { show('out'); return; }
  show(view);
  if (view === 'overview') await overview();
  else if (view === 'browse') await browse(p);
  else if (view === 'file') await fileView(p);
  else if (view === 'search') await searchView(p);
}

// ---- overview -------------------------------------------------------------

let statusTimer = null;
function card(title, ...rows) {
  return h('div', { class: 'card' }, h('h2', {}, title), ...rows);
}
function kv(k, v, cls) {
  return h('div', { class: 'kv ' + (cls || '') }, h('span', { class: 'k' }, k), h('span', { class: 'v' }, v));
}

async function refreshStatus() {
  const s = await api('/api/status');
  const a = s.agent || {};
  const j = s.journal || {};
  const u = s.upload || {};
  const repo = s.repository || {};
  const health = a.health || [];
  const badge = $('health-badge');
  badge.textContent = health.length ? `${health.length} problem${health.length > 1 ? 's' : ''}` : 'protected';
  badge.className = 'badge ' + (health.length ? 'bad' : 'good');
  if ($('view-overview').hidden) return;
  const c = a.counters || {};
  const now = nsToMs(s.now);
  const lag = j.oldest_waiting ? fmtAgo(nsToMs(j.oldest_waiting)).replace(' ago', '') : 'none';
  const cards = [
    card('Protection',
      health.length === 0 ? h('p', { class: 'ok', id: 'health-ok' }, 'Healthy: every change is being captured and uploaded.') :
        health.map((p) => h('p', { class: 'problem' }, p.message, h('span', { class: 'since' }, ' since ' + (p.since || '?')))),
      ...(a.roots || []).map((r) => kv('Protecting', r)),
    ),
    card('Agent',
      kv('State', a.running ? `running (pid ${a.pid})` : 'not running'),
      kv('Started', a.started ? fmtMs(Date.parse(a.started)) : '—'),
      kv('First pass', a.first_pass_done ? 'done' : 'in progress'),
      kv('Waiting to capture', a.pending_captures ?? 0),
      kv('Captured', `${c.captured ?? 0} versions (${c.reused ?? 0} without reading content), ${fmtBytes(c.bytes_read ?? 0)} read`),
      kv('Errors', `${c.errors ?? 0} errors, ${c.warnings ?? 0} metadata warnings`),
    ),
    card('Journal and upload',
      kv('Waiting for upload', `${j.versions_waiting ?? 0} versions, ${fmtBytes(j.spool_bytes ?? 0)} spooled`),
      kv('Upload lag', lag, j.oldest_waiting ? 'warn' : ''),
      kv('Last capture', j.last_capture ? fmtNs(String(j.last_capture)) : 'never'),
      kv('Last upload', j.last_upload ? fmtNs(String(j.last_upload)) : 'never'),
      j.last_error ? kv('Last error', j.last_error, 'bad') : null,
      u.last_error ? kv('Upload error', u.last_error + ' (retrying)', 'bad') : null,
    ),
    card('Repository',
      kv(a.repository && a.repository.startsWith('https://') ? 'Server' : 'Where', a.repository || '—'),
      kv('Client', s.client),
      kv('Versions', repo.versions ?? 0),
      kv('Stored', `${fmtBytes(repo.pack_bytes ?? 0)} in ${repo.packs ?? 0} packs, ${repo.chunks ?? 0} chunks`),
      kv('Last commit', repo.last_commit ? `${fmtNs(repo.last_commit)} (${fmtAgo(nsToMs(repo.last_commit))})` : 'never'),
      repo.error ? kv('Unreachable', repo.error, 'bad') : null,
    ),
  ];
  const ret = a.retention || {};
  const kept = s.kept;
  if (ret.policy || kept) {
    const pins = (kept && kept.pins) || [];
    const prune = kept && kept.last_prune;
    cards.push(card('Retention',
      kv('Policy', ret.policy || (kept && kept.server_policy) || 'keep everything'),
      kv('History', kept && kept.thinned_before ? `whole since ${fmtNs(kept.thinned_before)}, ${kept.points} kept points before` : 'whole (nothing forgotten yet)'),
      kv('Pins', pins.length ? pins.map((p) => `#${p.id} ${fmtNs(p.at)}${p.label ? ` (${p.label})` : ''}`).join('; ') : 'none'),
      kept && kept.reclaimable != null ? kv('Reclaimable', fmtBytes(kept.reclaimable)) : null,
      kv('Last prune', prune && prune.at ? `${fmtNs(prune.at)}: ${fmtBytes(prune.bytes_freed ?? 0)} freed` : 'never'),
    ));
  }
  const jobs = a.dumps || [];
  const runs = s.dump_runs || [];
  if (jobs.length || runs.length) {
    cards.push(card('Database dumps',
      ...jobs.map((d) => kv(d.name || d.job || 'job', [d.schedule ? `runs ${d.schedule}` : 'on demand', d.running ? ' — running now' : ''].join(''))),
      ...runs.map((r) => kv(r.path, `last run ${fmtNs(r.time)}: ${r.status}, ${fmtBytes(r.size)}`, r.ok ? '' : 'bad')),
    ));
  }
  const busy = a.busy || [];
  const problems = a.recent_problems || [];
  if (busy.length || problems.length) {
    cards.push(card('Attention',
      ...busy.map((b) => kv('Busy', `${b.path}: changed during every read for ${b.without_version_secs} s (${b.attempts} tries)`, 'warn')),
      ...problems.slice(-10).reverse().map((p) => kv(p.time || 'problem', p.message, 'bad')),
    ));
  }
  $('overview').replaceChildren(...cards);
  void now;
}

async function overview() {
  try { await refreshStatus(); } catch (e) { fail($('overview'), e); }
}

// ---- timeline -------------------------------------------------------------

const DAY = 86400000;
const ZOOMS = [
  { name: 'Year', span: 365 * DAY, buckets: 365, unit: 'day' },
  { name: 'Month', span: 30 * DAY, buckets: 30, unit: 'day' },
  { name: 'Week', span: 7 * DAY, buckets: 168, unit: 'hour' },
  { name: 'Day', span: DAY, buckets: 144, unit: '10 minutes' },
  { name: 'Hour', span: 3600000, buckets: 60, unit: 'minute' },
  { name: '10 min', span: 600000, buckets: 60, unit: '10 seconds' },
  { name: 'Minute', span: 60000, buckets: 60, unit: 'second' },
];
const tl = { zoom: 3, end: null, at: null, data: null, dragging: false };

function momentNs() { return tl.at; } // null: now
function setMoment(ns, reload) {
  tl.at = ns;
  const label = ns === null ? 'now' : fmtNs(ns, true);
  $('moment-label').textContent = ns === null ? 'Showing now' : 'Showing ' + label;
  const input = $('moment-input');
  if (ns === null) input.value = '';
  else { const d = new Date(nsToMs(ns)); input.value = `${fmtMs(d.getTime()).replace(' ', 'T')}`; }
  drawCursor();
  if (reload) {
    const p = params();
    go('browse', { id: p.id, at: ns });
  }
}

function windowOf() {
  const z = ZOOMS[tl.zoom];
  const step = z.span / z.buckets;
  let end = tl.end;
  if (end === null) {
    const centre = tl.at === null ? Date.now() : nsToMs(tl.at);
    end = tl.at === null ? Date.now() : centre + z.span / 2;
  }
  end = Math.ceil(end / step) * step;
  return { from: end - z.span, to: end, z };
}

async function loadTimeline() {
  const w = windowOf();
  const zoom = $('zoom');
  zoom.replaceChildren(...ZOOMS.map((z, i) => h('button', { class: i === tl.zoom ? 'on' : '', 'data-zoom': z.name, onclick: () => { tl.zoom = i; tl.end = null; loadTimeline(); } }, z.name)));
  try {
    const d = await api(`/api/timeline?from=${msToNs(w.from)}&to=${msToNs(w.to)}&buckets=${w.z.buckets}`);
    tl.data = d;
    drawTimeline(d, w);
  } catch (e) { fail($('timeline'), e); }
}

const SVGNS = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
}

function drawTimeline(d, w) {
  const W = 1000, H = 120, top = 14, bottom = 18;
  const counts = d.counts;
  const max = Math.max(1, ...counts);
  const from = nsToMs(d.from), to = nsToMs(d.to);
  const x = (ms) => ((ms - from) / (to - from)) * W;
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', id: 'timeline-svg', 'data-from': d.from, 'data-to': d.to });
  svg.append(s('rect', { x: 0, y: 0, width: W, height: H, class: 'bg' }));
  const bw = W / counts.length;
  counts.forEach((c, i) => {
    if (!c) return;
    const bh = Math.max(2, (Math.log1p(c) / Math.log1p(max)) * (H - top - bottom));
    const r = s('rect', { x: i * bw + 0.5, y: H - bottom - bh, width: Math.max(1, bw - 1), height: bh, class: 'bar' });
    const t0 = from + ((to - from) * i) / counts.length;
    r.append(s('title', {}, document.createTextNode(`${c} change${c > 1 ? 's' : ''} from ${fmtMs(t0)}`)));
    svg.append(r);
  });
  for (const m of d.dumps) {
    const mx = x(nsToMs(m.time));
    const mark = s('path', { d: `M${mx - 5},2 L${mx + 5},2 L${mx},${top - 2} Z`, class: m.ok ? 'dump' : 'dump failed' });
    mark.append(s('title', {}, document.createTextNode(`dump ${m.name} at ${fmtNs(m.time)}: ${m.status}`)));
    svg.append(mark);
  }
  for (const p of d.pins || []) {
    const px = x(nsToMs(p.at));
    const mark = s('circle', { cx: px, cy: 6, r: 5, class: 'pin' });
    mark.append(s('title', {}, document.createTextNode(`pin #${p.id} at ${fmtNs(p.at)}${p.label ? `: ${p.label}` : ''}`)));
    svg.append(mark);
  }
  // Ticks: five labels along the bottom.
  for (let i = 0; i <= 4; i++) {
    const t = from + ((to - from) * i) / 4;
    const anchor = i === 0 ? 'start' : i === 4 ? 'end' : 'middle';
    svg.append(s('text', { x: (i / 4) * W, y: H - 4, 'text-anchor': anchor, class: 'tick' }, document.createTextNode(fmtMs(t).slice(w.z.span >= 30 * DAY ? 0 : 5, w.z.span >= DAY ? 16 : 19))));
  }
  svg.append(s('line', { id: 'tl-cursor', x1: -10, x2: -10, y1: 0, y2: H - bottom, class: 'cursor' }));
  const timeAt = (ev) => {
    const r = svg.getBoundingClientRect();
    const f = Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width));
    return from + f * (to - from);
  };
  svg.addEventListener('mousedown', (ev) => { tl.dragging = true; tl.at = msToNs(timeAt(ev)); drawCursor(); ev.preventDefault(); });
  svg.addEventListener('mousemove', (ev) => { if (tl.dragging) { tl.at = msToNs(timeAt(ev)); drawCursor(); $('moment-label').textContent = 'Showing ' + fmtNs(tl.at, true); } });
  const release = (ev) => {
    if (!tl.dragging) return;
    tl.dragging = false;
    tl.end = windowOf().to;
    const ms = Math.min(timeAt(ev), Date.now());
    setMoment(msToNs(ms), true);
  };
  svg.addEventListener('mouseup', release);
  svg.addEventListener('mouseleave', release);
  $('timeline').replaceChildren(svg);
  $('timeline-legend').textContent = `${d.counts.reduce((a, b) => a + b, 0)} changes shown, one bar per ${w.z.unit}; ${d.total} versions in all` + (d.first ? `, since ${fmtNs(d.first)}` : '');
  drawCursor();
}

function drawCursor() {
  const c = document.getElementById('tl-cursor');
  if (!c || !tl.data) return;
  const from = nsToMs(tl.data.from), to = nsToMs(tl.data.to);
  const ms = tl.at === null ? Date.now() : nsToMs(tl.at);
  const x = ((ms - from) / (to - from)) * 1000;
  c.setAttribute('x1', x);
  c.setAttribute('x2', x);
}

function setupTimelineControls() {
  $('tl-back').onclick = () => { const w = windowOf(); tl.end = w.to - w.z.span / 2; loadTimeline(); };
  $('tl-fwd').onclick = () => { const w = windowOf(); tl.end = Math.min(Date.now() + w.z.span / 2, w.to + w.z.span / 2); loadTimeline(); };
  $('tl-now').onclick = () => { tl.end = null; setMoment(null, true); };
  $('moment-input').onchange = (ev) => {
    const v = ev.target.value;
    if (!v) return;
    const ms = new Date(v).getTime();
    if (Number.isNaN(ms)) return;
    tl.end = null;
    setMoment(msToNs(ms + 999), true);
  };
  $('timeline').addEventListener('wheel', (ev) => {
    ev.preventDefault();
    const next = Math.min(ZOOMS.length - 1, Math.max(0, tl.zoom + (ev.deltaY < 0 ? 1 : -1)));
    if (next !== tl.zoom) { tl.zoom = next; tl.end = null; loadTimeline(); }
  }, { passive: false });
}

// ---- browse ---------------------------------------------------------------

const picked = new Map(); // id -> display path
let treeState = { id: '', at: null, offset: 0, total: 0 };

function crumbs(where, path, id, at, isFile) {
  const parts = [h('a', { href: '#/browse?' + new URLSearchParams(at ? { at } : {}) }, 'Protected folders')];
  if (path) {
    parts.push(h('span', { class: 'sep' }, ' › '), h('span', { class: 'here' }, path));
  }
  where.replaceChildren(...parts);
  void id; void isFile;
}

async function browse(p) {
  const at = p.at || null;
  if (at !== tl.at || !tl.data) {
    tl.at = at;
    if (!tl.dragging) await loadTimeline();
  }
  setMoment(at, false);
  const id = p.id || '';
  if (treeState.id !== id || treeState.at !== at) picked.clear();
  treeState = { id, at, offset: 0, total: 0 };
  $('tree').tBodies[0].replaceChildren();
  $('pick-all').checked = false;
  updatePicked();
  await loadTreePage(true);
}

async function loadTreePage(first) {
  const { id, at, offset } = treeState;
  const more = $('tree-more');
  try {
    const d = await api(`/api/tree?id=${encodeURIComponent(id)}&offset=${offset}` + (at ? `&at=${at}` : ''));
    if (treeState.id !== id || treeState.at !== at) return;
    if (first) {
      crumbs($('crumbs'), d.path, id, at);
      if (d.parent !== null && d.parent !== undefined) {
        $('crumbs').prepend(h('a', { href: '#/browse?' + new URLSearchParams(Object.entries({ id: d.parent, at }).filter(([, v]) => v)), class: 'up', title: 'Up' }, '⬑ up'), ' ');
      }
    }
    const body = $('tree').tBodies[0];
    if (!d.exists) {
      body.replaceChildren(h('tr', {}, h('td', { colspan: 5, class: 'empty' }, 'This folder did not exist at that moment.')));
    }
    for (const e of d.entries) body.append(treeRow(e, id, at));
    if (first && d.exists && d.total === 0) body.append(h('tr', {}, h('td', { colspan: 5, class: 'empty' }, 'Empty at that moment.')));
    treeState.offset = d.offset + d.entries.length;
    treeState.total = d.total;
    more.replaceChildren();
    if (treeState.offset < d.total) {
      const b = h('button', { onclick: () => loadTreePage(false) }, `Show more (${d.total - treeState.offset} left)`);
      more.append(b);
      // Load the next page when the button scrolls into view.
      new IntersectionObserver((es, o) => { if (es.some((x) => x.isIntersecting)) { o.disconnect(); loadTreePage(false); } }).observe(b);
    }
  } catch (e) { fail(more, e); }
}

function treeRow(e, parentId, at) {
  const isDir = e.kind === 'dir';
  const display = parentId ? e.name : e.name;
  const target = isDir ? '#/browse?' + new URLSearchParams(Object.entries({ id: e.id, at }).filter(([, v]) => v)) :
    '#/file?' + new URLSearchParams(Object.entries({ id: e.id, at, seq: e.seq }).filter(([, v]) => v));
  const box = h('input', { type: 'checkbox', class: 'pick', 'data-id': e.id, title: 'Select for restore' });
  box.checked = picked.has(e.id);
  box.onchange = () => { if (box.checked) picked.set(e.id, e.name); else picked.delete(e.id); updatePicked(); };
  const extra = e.kind === 'dump' ? ` (${e.status})` : e.link ? ` → ${e.link}` : '';
  return h('tr', { 'data-name': e.name, 'data-kind': e.kind, class: e.ok === false ? 'failed' : '' },
    h('td', { class: 'pick' }, box),
    h('td', {}, h('a', { href: target, class: 'name ' + e.kind }, display), extra),
    h('td', { class: 'num' }, fmtBytes(e.size) + (isDir && e.entries ? ` · ${e.entries} items` : '')),
    h('td', {}, e.mtime ? fmtNs(e.mtime) : ''),
    h('td', {}, fmtNs(e.time)));
}

function updatePicked() {
  const b = $('restore-selected');
  b.disabled = picked.size === 0;
  b.textContent = picked.size ? `Restore selected (${picked.size})` : 'Restore selected';
}

function setupBrowse() {
  $('pick-all').onchange = (ev) => {
    for (const box of document.querySelectorAll('#tree input.pick')) {
      box.checked = ev.target.checked;
      box.onchange();
    }
  };
  $('restore-selected').onclick = () => openRestore([...picked.keys()], [...picked.values()], tl.at);
}

// ---- a file's versions ----------------------------------------------------

let fileState = { id: null, offset: 0 };

async function fileView(p) {
  const id = p.id;
  const body = $('versions').tBodies[0];
  if (fileState.id !== id) {
    fileState = { id, offset: 0 };
    body.replaceChildren();
    await loadVersions(p);
  }
  for (const tr of body.rows) tr.classList.toggle('on', tr.dataset.seq === p.seq);
  if (p.seq) await showVersion(id, p.seq, p.at);
}

async function loadVersions(p) {
  const id = p.id;
  try {
    const d = await api(`/api/versions?id=${encodeURIComponent(id)}&offset=${fileState.offset}`);
    if (fileState.id !== id) return;
    const up = id => '#/browse?' + new URLSearchParams(Object.entries({ id, at: p.at }).filter(([, v]) => v));
    const parentPath = d.path.replace(/\/[^/]*$/, '') || '/';
    $('file-crumbs').replaceChildren(h('a', { href: up(pathId(parentPath)), class: 'up' }, '⬑ ' + parentPath), h('span', { class: 'sep' }, ' › '), h('span', { class: 'here' }, d.name),
      h('span', { class: 'count' }, ` — ${d.total} version${d.total > 1 ? 's' : ''}${d.deleted ? ', deleted now' : ''}`));
    const body = $('versions').tBodies[0];
    for (const v of d.versions) {
      const href = '#/file?' + new URLSearchParams(Object.entries({ id, seq: v.seq, at: p.at }).filter(([, x]) => x));
      body.append(h('tr', { 'data-seq': String(v.seq), class: (String(v.seq) === p.seq ? 'on ' : '') + v.change },
        h('td', {}, h('a', { href }, fmtNs(v.time, true))),
        h('td', { class: 'num' }, v.change === 'deleted' ? '—' : fmtBytes(v.size)),
        h('td', {}, v.change + (v.status ? ` (${v.status})` : ''))));
    }
    fileState.offset = d.offset + d.versions.length;
    const more = $('versions-more');
    more.replaceChildren();
    if (fileState.offset < d.total) more.append(h('button', { onclick: () => loadVersions(p) }, `Older versions (${d.total - fileState.offset} left)`));
    if (!p.seq && d.versions.length) {
      const pick = d.versions.find((v) => v.change !== 'deleted') || d.versions[0];
      go('file', { id, seq: pick.seq, at: p.at });
    }
  } catch (e) { fail($('version-detail'), e); }
}

// The id of a path typed as text (UTF-8), as the server makes them.
function pathId(path) {
  const bytes = new TextEncoder().encode(path);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

async function showVersion(id, seq, at) {
  const detail = $('version-detail');
  const row = document.querySelector(`#versions tr[data-seq="${seq}"]`);
  const time = row ? row.cells[0].textContent : '';
  const actions = h('div', { class: 'actions' },
    h('button', { id: 'download', onclick: async () => { const t = await api('/api/ticket', { id, seq: Number(seq) }); location.href = t.url; } }, 'Download this version'),
    h('button', { id: 'restore-version', onclick: () => restoreVersion(id, seq) }, 'Restore this version…'));
  detail.replaceChildren(h('h2', {}, `Version of ${time}`), actions, h('div', { id: 'preview' }, 'Loading…'), h('div', { id: 'diff' }));
  const name = ($('file-crumbs').querySelector('.here') || {}).textContent || '';
  try {
    if (/\.(png|jpe?g|gif|webp|bmp|ico|avif)$/i.test(name)) {
      const r = await fetch(`/api/content?id=${encodeURIComponent(id)}&seq=${seq}`, { headers: { 'X-Rewind-Key': localStorage.getItem('rewind-key') || '' } });
      if (!r.ok) throw new Error(await r.text());
      const img = h('img', { class: 'preview-img', alt: name });
      img.src = URL.createObjectURL(await r.blob());
      $('preview').replaceChildren(img);
    } else {
      const t = await api(`/api/text?id=${encodeURIComponent(id)}&seq=${seq}`);
      if (t.text !== null) $('preview').replaceChildren(h('pre', { class: 'text' }, t.text), ...(t.truncated ? [h('p', { class: 'note' }, `The first ${fmtBytes(t.text.length)} of ${fmtBytes(t.size)}; download for the rest.`)] : []));
      else if (t.binary) $('preview').replaceChildren(h('p', { class: 'note' }, `Binary content, ${fmtBytes(t.size)}.`));
      else $('preview').replaceChildren(h('p', { class: 'note' }, 'No content in this version.'));
    }
    const d = await api(`/api/diff?id=${encodeURIComponent(id)}&seq=${seq}`);
    $('diff').replaceChildren(diffView(d));
  } catch (e) { fail($('preview'), e); }
}

function diffView(d) {
  if (!d.previous) return h('p', { class: 'note' }, 'The first version with content: nothing to compare with.');
  const head = h('h3', {}, `Changes since the version of ${fmtNs(d.previous.time, true)}`);
  if (!d.hunks) return h('div', {}, head, h('p', { class: 'note' }, `Not compared: ${d.why}.`));
  if (!d.hunks.length) return h('div', {}, head, h('p', { class: 'note' }, 'Same text (metadata changed only).'));
  const table = h('table', { class: 'diff' });
  d.hunks.forEach((rows, i) => {
    if (i > 0) table.append(h('tr', { class: 'skip' }, h('td', { colspan: 4 }, '⋯')));
    for (const r of rows) {
      table.append(h('tr', { class: r.t },
        h('td', { class: 'ln' }, r.ln ?? ''), h('td', { class: 'l' }, r.l ?? ''),
        h('td', { class: 'ln' }, r.rn ?? ''), h('td', { class: 'r' }, r.r ?? '')));
    }
  });
  return h('div', {}, head, table);
}

async function restoreVersion(id, seq) {
  const row = document.querySelector(`#versions tr[data-seq="${seq}"]`);
  // The moment this version was captured (it is the newest then).
  const v = await api(`/api/versions?id=${encodeURIComponent(id)}&offset=0&limit=5000`);
  const hit = v.versions.find((x) => String(x.seq) === String(seq));
  const at = hit ? hit.time : null;
  openRestore([id], [v.name], at, row ? row.cells[0].textContent : '');
}

// ---- restore --------------------------------------------------------------

let restoreReq = null;

function openRestore(ids, names, at, label) {
  const dlg = $('restore-dialog');
  restoreReq = { ids, at: at || String(BigInt(Date.now()) * MS), names };
  $('restore-what').textContent = `${names.join(', ')} as of ${label || (at ? fmtNs(at, true) : 'now')}`;
  $('restore-plan').replaceChildren();
  $('restore-status').textContent = '';
  $('restore-progress').hidden = true;
  $('restore-confirm').disabled = true;
  $('restore-check').disabled = false;
  dlg.showModal();
}

function restoreBody() {
  const elsewhere = $('restore-elsewhere').checked;
  return { ids: restoreReq.ids, at: restoreReq.at, to: elsewhere ? $('restore-to').value : null };
}

async function checkRestore() {
  const plan = $('restore-plan');
  plan.replaceChildren('Checking…');
  $('restore-confirm').disabled = true;
  try {
    const p = await api('/api/restore/plan', restoreBody());
    const lines = [
      h('p', {}, `${p.files} files (${fmtBytes(p.bytes)}) to restore: ${p.create} created, `, h('strong', { id: 'plan-overwrite' }, `${p.overwrite} overwritten`), `, ${p.unchanged} already as they were. Nothing is deleted.`),
    ];
    for (const it of p.items) {
      lines.push(h('p', { class: 'dest' }, `${it.path} → ${it.dest}`));
      if (it.overwritten.length) {
        lines.push(h('ul', { class: 'overwritten' }, ...it.overwritten.map((o) => h('li', {}, `${o.path} (now ${fmtBytes(o.now_size)}, modified ${fmtNs(o.now_mtime)}; restored: ${fmtBytes(o.size)})`))));
        if (it.overwrite > it.overwritten.length) lines.push(h('p', { class: 'note' }, `and ${it.overwrite - it.overwritten.length} more`));
      }
    }
    plan.replaceChildren(...lines);
    $('restore-confirm').disabled = false;
    $('restore-confirm').textContent = p.overwrite ? `Restore and overwrite ${p.overwrite}` : 'Restore';
  } catch (e) { fail(plan, e); }
}

async function runRestore() {
  $('restore-confirm').disabled = true;
  $('restore-check').disabled = true;
  const status = $('restore-status');
  const bar = $('restore-progress');
  bar.hidden = false;
  try {
    const { job } = await api('/api/restore', restoreBody());
    for (;;) {
      const p = await api(`/api/restore/${job}`);
      const f = p.bytes_total ? Math.min(1, p.bytes_done / p.bytes_total) : (p.state === 'running' ? 0 : 1);
      $('restore-fill').style.width = `${Math.round(f * 100)}%`;
      status.textContent = p.state === 'running' ? `Restoring ${p.current}: ${fmtBytes(p.bytes_done)} of ${fmtBytes(p.bytes_total)}` : '';
      if (p.state !== 'running') {
        const files = p.results.reduce((a, r) => a + r.files, 0);
        const probs = p.results.flatMap((r) => r.problems);
        status.dataset.state = p.state;
        status.textContent = p.state === 'failed' ? `Failed: ${p.error}` :
          `Restore ${p.state}: ${files} files to ${p.results.map((r) => r.dest).join(', ')}` + (probs.length ? `; ${probs.length} problems: ` + probs.map((x) => `${x.path}: ${x.message}`).join('; ') : '');
        break;
      }
      await new Promise((r) => setTimeout(r, 300));
    }
  } catch (e) { status.textContent = 'Failed: ' + e.message; status.dataset.state = 'failed'; }
}

function setupRestore() {
  $('restore-check').onclick = checkRestore;
  $('restore-confirm').onclick = runRestore;
  $('restore-close').onclick = () => $('restore-dialog').close();
  for (const r of ['restore-inplace', 'restore-elsewhere']) {
    $(r).onchange = () => { $('restore-to').disabled = !$('restore-elsewhere').checked; $('restore-confirm').disabled = true; $('restore-plan').replaceChildren(); };
  }
  $('restore-to').oninput = () => { $('restore-confirm').disabled = true; };
}

// ---- search ---------------------------------------------------------------

async function searchView(p) {
  const q = p.q || '';
  $('search-q').value = q;
  const body = $('search-results').tBodies[0];
  body.replaceChildren();
  $('search-summary').textContent = '';
  if (!q) return;
  try {
    const d = await api(`/api/search?q=${encodeURIComponent(q)}`);
    $('search-summary').textContent = `${d.total} path${d.total === 1 ? '' : 's'} in all history` + (d.total > d.results.length ? ` (first ${d.results.length} shown)` : '');
    for (const r of d.results) {
      const folder = r.path.slice(0, r.path.length - r.name.length).replace(/\/$/, '') || '/';
      // The moment just before it was deleted, or now.
      const at = r.deleted_at ? (BigInt(r.deleted_at) - 1n).toString() : null;
      const inFolder = '#/browse?' + new URLSearchParams(Object.entries({ id: pathId(folder), at }).filter(([, v]) => v));
      const versions = '#/file?' + new URLSearchParams(Object.entries({ id: r.id, at }).filter(([, v]) => v));
      body.append(h('tr', { 'data-path': r.path, class: r.exists ? '' : 'gone' },
        h('td', {}, h('a', { href: r.kind === 'dir' ? '#/browse?' + new URLSearchParams(Object.entries({ id: r.id, at }).filter(([, v]) => v)) : versions, class: 'name ' + r.kind }, r.name)),
        h('td', {}, h('a', { href: inFolder, class: 'folder' }, folder)),
        h('td', { class: 'state' }, r.exists ? 'exists' : `deleted ${fmtNs(r.deleted_at)}`),
        h('td', { class: 'last' }, r.exists ? 'now' : fmtNs(r.last_present ?? r.deleted_at, true)),
        h('td', { class: 'num' }, r.versions),
        h('td', {}, h('a', { href: inFolder, class: 'open-at' }, r.exists ? 'Open folder' : 'Browse before deletion'))));
    }
  } catch (e) { fail($('search-summary'), e); }
}

// ---- start ----------------------------------------------------------------

window.addEventListener('DOMContentLoaded', () => {
  setupTimelineControls();
  setupBrowse();
  setupRestore();
  $('search-form').onsubmit = (ev) => { ev.preventDefault(); go('search', { q: $('search-q').value }); };
  window.addEventListener('hashchange', route);
  route();
  // Live: the overview and the badge follow the agent every 2 s.
  statusTimer = setInterval(() => { if (!document.hidden && localStorage.getItem('rewind-key')) refreshStatus().catch(() => {}); }, 2000);
  void statusTimer;
});
