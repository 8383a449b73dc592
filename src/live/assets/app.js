// aotel live view. Talks to /ws (schema v1, see the README) and /api/spans/{trace}/{span}.
// Everything that came from an agent is put on the page as text (textContent / text nodes); no API that
// parses HTML strings is used anywhere in this file (a unit test checks).
'use strict';
(function () {
  const SCHEMA = 1;
  const LIST_LIMIT = 500;
  const LONG_LINES = 24;
  const LONG_CHARS = 3000;

  const $ = (id) => document.getElementById(id);

  // Builds an element. Strings among the children become text nodes, so agent data stays text.
  function h(tag, props, ...kids) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = String(v);
        else if (k === 'data') for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = String(dv);
        else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of kids.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  // ---------- formatting ----------
  function nsToMs(ns) {
    if (!ns || ns === '0') return 0;
    try { return Number(BigInt(ns) / 1000000n); } catch (_) { return Number(ns) / 1e6 || 0; }
  }
  function cmpNs(a, b) {
    a = a || '0'; b = b || '0';
    if (a.length !== b.length) return a.length - b.length;
    return a < b ? -1 : a > b ? 1 : 0;
  }
  function fmtDuration(ms) {
    if (!(ms >= 0)) return '–';
    if (ms < 1) return ms === 0 ? '0 ms' : '<1 ms';
    if (ms < 1000) return Math.round(ms) + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
    const s = Math.round(ms / 1000);
    if (s < 3600) return Math.floor(s / 60) + 'm ' + String(s % 60).padStart(2, '0') + 's';
    return Math.floor(s / 3600) + 'h ' + String(Math.floor((s % 3600) / 60)).padStart(2, '0') + 'm';
  }
  function fmtCount(n) {
    n = Number(n) || 0;
    if (n < 1000) return String(n);
    if (n < 1e6) return (n / 1000).toFixed(n < 10000 ? 1 : 0) + 'k';
    return (n / 1e6).toFixed(2) + 'M';
  }
  function fmtCost(c) {
    c = Number(c) || 0;
    if (c === 0) return '–';
    return '$' + (c < 0.01 ? c.toFixed(4) : c < 100 ? c.toFixed(3) : c.toFixed(0));
  }
  function fmtTime(ms) {
    if (!ms) return '–';
    const d = new Date(ms);
    const now = new Date();
    if (d.toDateString() === now.toDateString()) {
      return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
    }
    return d.toLocaleString([], { year: d.getFullYear() === now.getFullYear() ? undefined : 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  }
  function fmtAgo(ms) {
    if (!ms) return '';
    const s = Math.round((Date.now() - ms) / 1000);
    if (s < 0) return 'in the future';
    if (s < 10) return 'just now';
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' d ago';
  }
  function tokens(u) {
    if (!u) return 0;
    return (u.input_tokens || 0) + (u.output_tokens || 0) + (u.cache_read_tokens || 0) + (u.cache_creation_tokens || 0);
  }
  function tokenTitle(u) {
    if (!u) return '';
    return `input ${u.input_tokens || 0} · output ${u.output_tokens || 0} · cache read ${u.cache_read_tokens || 0} · cache write ${u.cache_creation_tokens || 0}`;
  }
  // Pretty JSON when the value is JSON (or a string holding JSON), else the text itself.
  function pretty(v) {
    if (v === null || v === undefined) return '';
    if (typeof v === 'string') {
      const t = v.trim();
      if ((t.startsWith('{') && t.endsWith('}')) || (t.startsWith('[') && t.endsWith(']'))) {
        try { return JSON.stringify(JSON.parse(t), null, 2); } catch (_) { /* not JSON: show as is */ }
      }
      return v;
    }
    return JSON.stringify(v, null, 2);
  }
  const opKind = (op) => (op === 'invoke_agent' || op === 'execute_tool' || op === 'chat') ? op : 'other';
  const opLabel = { invoke_agent: 'run', execute_tool: 'tool', chat: 'model', other: 'span' };
  const spanKey = (s) => s.trace_id + ':' + s.span_id;

  async function copyText(text, button) {
    let ok = false;
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch (_) {
      const ta = h('textarea', { class: 'offscreen', 'aria-hidden': 'true' });
      ta.value = text;
      document.body.append(ta);
      ta.select();
      try { ok = document.execCommand('copy'); } catch (_) { ok = false; }
      ta.remove();
    }
    const was = button.textContent;
    button.textContent = ok ? 'Copied' : 'Copy failed';
    setTimeout(() => { button.textContent = was; }, 1200);
  }

  // A titled block of text with copy and, when long, "show all".
  function block(title, value, kind, extraClass) {
    const text = pretty(value);
    const lines = text.split('\n');
    const long = lines.length > LONG_LINES || text.length > LONG_CHARS;
    const short = long ? lines.slice(0, LONG_LINES).join('\n').slice(0, LONG_CHARS) : text;
    const pre = h('pre', { class: 'code', tabindex: '0' });
    pre.textContent = short;
    const head = h('div', { class: 'block-head' }, h('h3', { text: title }));
    const copy = h('button', { type: 'button', class: 'btn small', text: 'Copy', title: 'Copy ' + title.toLowerCase() });
    copy.addEventListener('click', (e) => { e.stopPropagation(); copyText(text, copy); });
    head.append(copy);
    if (long) {
      const more = h('button', { type: 'button', class: 'btn small', 'aria-expanded': 'false' });
      const label = () => `Show all (${lines.length} lines, ${fmtCount(text.length)} chars)`;
      more.textContent = label();
      more.addEventListener('click', (e) => {
        e.stopPropagation();
        const all = more.getAttribute('aria-expanded') !== 'true';
        pre.textContent = all ? text : short;
        more.setAttribute('aria-expanded', String(all));
        more.textContent = all ? 'Show less' : label();
      });
      head.append(more);
    }
    const el = h('div', { class: 'block' + (extraClass ? ' ' + extraClass : ''), data: { kind } }, head, pre);
    if (long) el.append(h('div', { class: 'muted', text: '… cut for display; "Show all" shows everything stored' }));
    return el;
  }

  function kvTable(map) {
    const body = h('tbody');
    for (const k of Object.keys(map || {}).sort()) {
      const v = map[k];
      const pre = h('pre');
      pre.textContent = typeof v === 'string' ? v : JSON.stringify(v, null, 2);
      body.append(h('tr', null, h('td', { class: 'mono', text: k }), h('td', null, pre)));
    }
    return h('table', { class: 'kv' }, body);
  }

  // ---------- theme ----------
  const themes = ['auto', 'light', 'dark'];
  function applyTheme(t) {
    if (t === 'light' || t === 'dark') document.documentElement.dataset.theme = t;
    else delete document.documentElement.dataset.theme;
    $('theme').textContent = 'Theme: ' + t;
  }
  function cycleTheme() {
    let cur = 'auto';
    try { cur = localStorage.getItem('aotel.theme') || 'auto'; } catch (_) { /* storage off */ }
    const next = themes[(themes.indexOf(cur) + 1) % themes.length];
    try { localStorage.setItem('aotel.theme', next); } catch (_) { /* storage off */ }
    applyTheme(next);
  }

  // ---------- state ----------
  const st = {
    ws: null,
    backoff: 500,
    retryTimer: null,
    links: { jaeger: null, grafana: null },
    route: { view: 'list' },
    want: null,          // the subscribe message last sent
    awaiting: true,      // deltas are ignored until the snapshot for `want` arrives
    list: { rows: new Map(), els: new Map(), total: 0, services: [], agents: [], ready: false },
    cur: null,           // the open session
    renderQueued: false,
  };

  function newSession(key) {
    return { key, row: null, spans: new Map(), logs: new Map(), traces: [], els: new Map(), open: new Set(), details: new Map(), ready: false };
  }

  // ---------- routing ----------
  function parseRoute() {
    const hash = location.hash.replace(/^#/, '') || '/';
    const q = hash.indexOf('?');
    const path = q >= 0 ? hash.slice(0, q) : hash;
    const params = new URLSearchParams(q >= 0 ? hash.slice(q + 1) : '');
    if (path.startsWith('/s/')) {
      let key = path.slice(3);
      try { key = decodeURIComponent(key); } catch (_) { /* keep raw */ }
      return { view: 'session', key };
    }
    return {
      view: 'list',
      q: params.get('q') || '',
      status: params.get('status') || '',
      agent: params.get('agent') || '',
      service: params.get('service') || '',
    };
  }
  function listHash(r) {
    const p = new URLSearchParams();
    for (const k of ['q', 'status', 'agent', 'service']) if (r[k]) p.set(k, r[k]);
    const s = p.toString();
    return '#/' + (s ? '?' + s : '');
  }
  const sessionHash = (key) => '#/s/' + encodeURIComponent(key);

  function subscription(route) {
    if (route.view === 'session') return { v: SCHEMA, type: 'subscribe', scope: 'session', session: route.key };
    const filtered = route.q || route.status || route.agent || route.service;
    return {
      v: SCHEMA, type: 'subscribe', scope: filtered ? 'filter' : 'all', limit: LIST_LIMIT,
      q: route.q || null, status: route.status || null, agent: route.agent || null, service: route.service || null,
    };
  }
  function matchesWant(sub) {
    const w = st.want;
    if (!w || !sub) return false;
    if (w.scope === 'session') return sub.scope === 'session' && sub.session === w.session;
    if (sub.scope !== 'all' && sub.scope !== 'filter') return false;
    return ['q', 'status', 'agent', 'service'].every((k) => (sub[k] || null) === (w[k] || null));
  }

  function subscribe() {
    st.want = subscription(st.route);
    st.awaiting = true;
    if (st.ws && st.ws.readyState === WebSocket.OPEN) st.ws.send(JSON.stringify(st.want));
  }

  function onRoute() {
    const prev = st.route;
    st.route = parseRoute();
    if (st.route.view === 'session') {
      if (!st.cur || st.cur.key !== st.route.key) st.cur = newSession(st.route.key);
    } else {
      st.cur = null;
      syncFilterControls();
    }
    const same = prev && JSON.stringify(subscription(prev)) === JSON.stringify(subscription(st.route));
    if (!same || !st.want) subscribe();
    showView();
    render();
    if (st.route.view === 'session' && prev.view !== 'session') $('main').focus({ preventScroll: true });
  }

  function showView() {
    const list = st.route.view === 'list';
    $('list-view').hidden = !list;
    $('session-view').hidden = list;
    const crumbs = $('crumbs');
    crumbs.replaceChildren();
    if (!list) {
      crumbs.append(h('span', { text: '›' }), h('a', { href: listHashFromMemory(), text: 'Sessions' }), h('span', { text: '›' }),
        h('span', { text: (st.cur && st.cur.row && (st.cur.row.title || st.cur.row.agent)) || st.route.key }));
      document.title = 'aotel · ' + ((st.cur && st.cur.row && st.cur.row.title) || st.route.key);
    } else {
      document.title = 'aotel · sessions';
    }
  }

  let lastListRoute = { view: 'list' };
  function listHashFromMemory() { return listHash(lastListRoute); }

  // ---------- connection ----------
  function setConn(state, text) {
    const c = $('conn');
    c.dataset.state = state;
    c.textContent = text;
  }
  let noticeTimer = null;
  function notice(text) {
    const n = $('notice');
    n.textContent = text;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { n.textContent = ''; }, 6000);
  }

  function connect() {
    clearTimeout(st.retryTimer);
    // The first subscription rides on the URL, so the first snapshot is already the right one.
    st.want = subscription(st.route);
    st.awaiting = true;
    const asked = JSON.stringify(st.want);
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(st.want)) {
      if (k !== 'v' && k !== 'type' && v !== null && v !== undefined) q.set(k, String(v));
    }
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try { ws = new WebSocket(proto + '//' + location.host + '/ws?' + q.toString()); } catch (_) { retry(); return; }
    st.ws = ws;
    setConn('connecting', st.list.ready || st.cur ? 'reconnecting…' : 'connecting…');
    ws.addEventListener('open', () => {
      if (JSON.stringify(st.want) !== asked) ws.send(JSON.stringify(st.want));
    });
    ws.addEventListener('message', (ev) => {
      if (st.ws !== ws) return;
      let m;
      try { m = JSON.parse(ev.data); } catch (_) { return; }
      if (!m || m.v !== SCHEMA) return;
      handle(m);
    });
    ws.addEventListener('close', () => {
      if (st.ws !== ws) return;
      st.ws = null;
      retry();
    });
    ws.addEventListener('error', () => { /* close follows */ });
  }
  function retry() {
    const wait = st.backoff;
    st.backoff = Math.min(st.backoff * 2, 5000);
    setConn('reconnecting', `offline · retrying in ${Math.ceil(wait / 1000)} s`);
    st.retryTimer = setTimeout(connect, wait);
  }

  function handle(m) {
    switch (m.type) {
      case 'hello':
        st.links = m.links || {};
        break;
      case 'snapshot':
        if (!matchesWant(m.subscription)) return;
        st.awaiting = false;
        st.backoff = 500;
        setConn('live', 'live');
        if (m.subscription.scope === 'session') sessionSnapshot(m);
        else listSnapshot(m);
        break;
      case 'delta':
        if (st.awaiting) return;
        if (st.route.view === 'session') sessionDelta(m);
        else listDelta(m);
        break;
      case 'missed':
        notice(`missed ${m.missed} update${m.missed === 1 ? '' : 's'} · resyncing`);
        st.awaiting = true;
        break;
      case 'error':
        notice('server: ' + m.message);
        break;
      default:
        break;
    }
  }

  // ---------- session list ----------
  function listSnapshot(m) {
    const L = st.list;
    const fresh = new Map();
    for (const r of m.sessions || []) fresh.set(r.key, r);
    L.rows = fresh;
    L.total = m.total || 0;
    L.services = m.services || [];
    L.agents = m.agents || [];
    L.ready = true;
    fillFacets();
    queueRender();
  }
  function listDelta(m) {
    const L = st.list;
    for (const r of m.sessions || []) {
      const old = L.rows.get(r.key);
      if (old && old.updated_seq > r.updated_seq) continue;
      if (!old) {
        L.total += 1;
        r._fresh = true;
        if (r.agent && !L.agents.includes(r.agent)) { L.agents.push(r.agent); L.agents.sort(); fillFacets(); }
        if (r.service && !L.services.includes(r.service)) { L.services.push(r.service); L.services.sort(); fillFacets(); }
      }
      L.rows.set(r.key, r);
    }
    for (const k of m.removed || []) {
      if (L.rows.delete(k)) L.total = Math.max(0, L.total - 1);
    }
    queueRender();
  }

  function fillFacets() {
    const fill = (sel, values, label) => {
      const keep = sel.value;
      const want = st.route[sel === $('f-agent') ? 'agent' : 'service'] || keep;
      sel.replaceChildren(h('option', { value: '', text: label }));
      const all = values.slice();
      if (want && !all.includes(want)) all.push(want);
      for (const v of all) sel.append(h('option', { value: v, text: v }));
      sel.value = want || '';
    };
    fill($('f-agent'), st.list.agents, 'All agents');
    fill($('f-service'), st.list.services, 'All services');
  }
  function syncFilterControls() {
    const r = st.route;
    lastListRoute = r;
    if (document.activeElement !== $('search')) $('search').value = r.q || '';
    $('f-status').value = r.status || '';
    fillFacets();
    $('clear').hidden = !(r.q || r.status || r.agent || r.service);
  }
  function filtersChanged() {
    const r = {
      view: 'list',
      q: $('search').value.trim(),
      status: $('f-status').value,
      agent: $('f-agent').value,
      service: $('f-service').value,
    };
    const h2 = listHash(r);
    if (location.hash !== h2) history.replaceState(null, '', h2);
    onRoute();
  }

  function sortedRows() {
    return Array.from(st.list.rows.values()).sort((a, b) => cmpNs(b.first_unix_nano, a.first_unix_nano) || (a.key < b.key ? -1 : 1));
  }

  function sessionCells(r) {
    const first = nsToMs(r.first_unix_nano);
    const tok = tokens(r.usage);
    return [
      h('td', null, h('span', { class: 'badge st-' + r.status, text: r.status })),
      h('td', { text: r.agent || '–' }),
      h('td', { class: 'title', title: r.key },
        h('span', { text: r.title || r.agent || r.key }),
        (r.title || r.agent) ? h('span', { class: 'key mono', text: r.key }) : null),
      h('td', { title: first ? new Date(first).toString() + ' · ' + fmtAgo(first) : '', text: fmtTime(first) }),
      h('td', { class: 'num', text: fmtDuration(r.duration_ms) }),
      h('td', { class: 'num', text: String(r.runs) }),
      h('td', { class: 'num', text: String(r.tool_calls) }),
      h('td', { class: 'num' + (r.tool_errors ? ' err-count' : ''), text: r.tool_errors ? String(r.tool_errors) : '–' }),
      h('td', { class: 'num', title: tokenTitle(r.usage), text: tok ? fmtCount(tok) : '–' }),
      h('td', { class: 'num', text: fmtCost(r.usage && r.usage.cost_usd) }),
    ];
  }

  function renderList() {
    const L = st.list;
    const body = $('session-rows');
    const rows = sortedRows().slice(0, LIST_LIMIT);
    const seen = new Set();
    let i = 0;
    for (const r of rows) {
      seen.add(r.key);
      let ent = L.els.get(r.key);
      if (!ent) {
        const tr = h('tr', { tabindex: '0', data: { key: r.key }, 'aria-label': 'Session ' + (r.title || r.key) });
        tr.addEventListener('click', () => { location.hash = sessionHash(r.key); });
        ent = { tr, row: null };
        L.els.set(r.key, ent);
      }
      if (ent.row !== r) {
        ent.tr.replaceChildren(...sessionCells(r));
        ent.tr.dataset.status = r.status;
        ent.row = r;
        if (r._fresh) {
          delete r._fresh;
          ent.tr.classList.remove('fresh');
          void ent.tr.offsetWidth;
          ent.tr.classList.add('fresh');
        }
      }
      if (body.children[i] !== ent.tr) body.insertBefore(ent.tr, body.children[i] || null);
      i++;
    }
    for (const [k, ent] of L.els) {
      if (!seen.has(k)) { ent.tr.remove(); L.els.delete(k); }
    }
    const shown = rows.length;
    $('count').textContent = L.ready ? (L.total > shown ? `${shown} of ${L.total} sessions` : `${L.total} session${L.total === 1 ? '' : 's'}`) : '';
    const empty = $('empty');
    const r = st.route;
    empty.hidden = !L.ready || shown > 0;
    empty.textContent = (r.q || r.status || r.agent || r.service)
      ? 'No sessions match these filters.'
      : 'No sessions yet. Send OTLP traces to aotel (gRPC :4317, HTTP :4318 by default) and they appear here as they are stored.';
  }

  // ---------- session view ----------
  function flatten(nodes, out) {
    for (const n of nodes || []) {
      const kids = n.children;
      const s = Object.assign({}, n);
      delete s.children;
      out.push(s);
      flatten(kids, out);
    }
    return out;
  }
  function sessionSnapshot(m) {
    const cur = st.cur;
    if (!cur || cur.key !== m.subscription.session) return;
    cur.row = m.session;
    cur.traces = m.traces || [];
    const spans = new Map();
    for (const s of flatten(m.spans, [])) spans.set(spanKey(s), s);
    // A span that changed while we were away loses its cached details.
    for (const [k, s] of spans) {
      const old = cur.spans.get(k);
      if (old && old.seq !== s.seq) cur.details.delete(k);
    }
    cur.spans = spans;
    cur.logs = new Map((m.logs || []).map((l) => [l.seq, l]));
    cur.ready = true;
    for (const k of cur.open) if (!cur.details.has(k) && spans.has(k)) loadDetail(k);
    queueRender();
    showView();
  }
  function sessionDelta(m) {
    const cur = st.cur;
    if (!cur) return;
    for (const r of m.sessions || []) {
      if (r.key === cur.key && (!cur.row || cur.row.updated_seq <= r.updated_seq)) cur.row = r;
    }
    for (const s of m.spans || []) {
      if (s.session !== cur.key) continue;
      const k = spanKey(s);
      const old = cur.spans.get(k);
      if (old && old.seq >= s.seq) continue;
      cur.spans.set(k, s);
      if (!cur.traces.includes(s.trace_id)) cur.traces.push(s.trace_id);
      if (old) {
        cur.details.delete(k);
        if (cur.open.has(k)) loadDetail(k);
      }
    }
    for (const l of m.logs || []) if (l.session === cur.key) cur.logs.set(l.seq, l);
    queueRender();
  }

  function traceLinks(id) {
    const out = [];
    const fill = (tpl, fallback) => tpl.includes('{trace_id}') ? tpl.split('{trace_id}').join(id) : fallback;
    const j = st.links && st.links.jaeger;
    const g = st.links && st.links.grafana;
    if (j) out.push(['Jaeger', fill(j, j + '/trace/' + id)]);
    if (g) {
      const left = JSON.stringify({ datasource: 'tempo', queries: [{ refId: 'A', queryType: 'traceql', query: id }], range: { from: 'now-7d', to: 'now' } });
      out.push(['Grafana', fill(g, g + '/explore?left=' + encodeURIComponent(left))]);
    }
    return out;
  }

  function renderHead() {
    const cur = st.cur;
    const r = cur.row;
    $('s-title').textContent = r ? (r.title || r.agent || r.key) : cur.key;
    const status = $('s-status');
    status.replaceChildren(r ? h('span', { class: 'badge st-' + r.status, text: r.status }) : h('span', { class: 'muted', text: cur.ready ? 'no such session yet: waiting for it' : 'loading…' }));
    const meta = $('s-meta');
    meta.replaceChildren();
    const keyCopy = h('button', { type: 'button', class: 'btn small', text: 'Copy key' });
    keyCopy.addEventListener('click', () => copyText(cur.key, keyCopy));
    meta.append(h('span', { class: 'mono', text: cur.key }), keyCopy);
    if (r) {
      if (r.agent) meta.append(h('span', null, 'agent ', h('strong', { text: r.agent })));
      meta.append(h('span', null, 'service ', h('strong', { text: r.service })));
      const first = nsToMs(r.first_unix_nano);
      if (first) meta.append(h('span', { title: new Date(first).toString(), text: 'started ' + fmtTime(first) + ' (' + fmtAgo(first) + ')' }));
    }
    const stats = $('s-stats');
    stats.replaceChildren();
    if (r) {
      const stat = (label, value, cls, title) => h('div', { title }, h('dt', { text: label }), h('dd', { class: cls, text: value }));
      stats.append(
        stat('Duration', fmtDuration(r.duration_ms)),
        stat('Runs', String(r.runs)),
        stat('Tool calls', String(r.tool_calls)),
        stat('Errors', String(r.tool_errors), r.tool_errors ? 'bad' : null),
        stat('Tokens', fmtCount(tokens(r.usage)), null, tokenTitle(r.usage)),
        stat('Cost', fmtCost(r.usage && r.usage.cost_usd)),
        stat('Spans', String(r.spans)),
      );
      if (r.logs) stats.append(stat('Log events', String(r.logs)));
    }
    const links = $('s-links');
    links.replaceChildren();
    for (const t of cur.traces) {
      const ls = traceLinks(t);
      if (!ls.length) continue;
      const line = h('span', null, cur.traces.length > 1 ? h('span', { class: 'mono muted', text: 'trace ' + t.slice(0, 12) + '… ' }) : null);
      for (const [name, url] of ls) {
        const a = h('a', { target: '_blank', rel: 'noopener noreferrer', text: 'Open in ' + name + ' ↗' });
        a.href = url;
        line.append(a, ' ');
      }
      links.append(line);
    }
  }

  // Orders spans as a tree (children under parents, by start time); spans whose parent is unknown are roots.
  function ordered(cur) {
    const kids = new Map();
    const roots = [];
    for (const [k, s] of cur.spans) {
      const p = s.parent_span_id ? s.trace_id + ':' + s.parent_span_id : null;
      if (p && p !== k && cur.spans.has(p)) {
        if (!kids.has(p)) kids.set(p, []);
        kids.get(p).push(s);
      } else roots.push(s);
    }
    const byStart = (a, b) => cmpNs(a.start_unix_nano, b.start_unix_nano) || a.seq - b.seq;
    roots.sort(byStart);
    const out = [];
    const seen = new Set();
    const walk = (s, depth) => {
      const k = spanKey(s);
      if (seen.has(k)) return;
      seen.add(k);
      out.push({ s, depth });
      const c = kids.get(k);
      if (c) { c.sort(byStart); for (const x of c) walk(x, depth + 1); }
    };
    for (const r of roots) walk(r, 0);
    // Spans caught in a parent loop are never reached from a root: show them rather than lose them.
    for (const [k, s] of cur.spans) if (!seen.has(k)) walk(s, 0);
    return out;
  }

  function spanRowContent(s, depth) {
    const kind = opKind(s.operation);
    const failed = s.status === 'error';
    const running = s.in_progress || !s.end_unix_nano || s.end_unix_nano === '0';
    let name = s.name;
    if (kind === 'execute_tool') name = s.tool || s.name;
    else if (kind === 'invoke_agent') name = s.agent ? 'Run · ' + s.agent : s.name;
    else if (kind === 'chat') name = s.model || s.name;
    const label = h('span', { class: 'label' },
      h('span', { class: 'caret', 'aria-hidden': 'true', text: '▸' }),
      h('span', { class: 'kind k-' + kind, text: opLabel[kind] }),
      h('span', { class: 'name', text: name }),
      s.preview ? h('span', { class: 'preview', text: s.preview }) : null,
      failed ? h('span', { class: 'fail', text: '✕ failed' }) : null,
      running ? h('span', { class: 'live-tag', text: 'running…' }) : null);
    label.style.paddingLeft = (depth * 18) + 'px';
    const bar = h('span', { class: 'bar k-' + kind + (running ? ' open-ended' : '') });
    return { nodes: [label, h('span', { class: 'dur', text: running ? '…' : fmtDuration(s.duration_ms) }), h('span', { class: 'track' }, bar)], bar };
  }

  function renderWaterfall() {
    const cur = st.cur;
    const wf = $('waterfall');
    const rows = ordered(cur);
    let t0 = Infinity;
    let t1 = -Infinity;
    const now = Date.now();
    for (const { s } of rows) {
      const a = nsToMs(s.start_unix_nano);
      let b = nsToMs(s.end_unix_nano);
      if (s.in_progress || !b) b = Math.max(a, now);
      if (a) t0 = Math.min(t0, a);
      t1 = Math.max(t1, b);
    }
    const span = Math.max(1, t1 - t0);
    const seen = new Set();
    let i = 0;
    for (const { s, depth } of rows) {
      const k = spanKey(s);
      seen.add(k);
      let ent = cur.els.get(k);
      if (!ent) {
        const row = h('div', { class: 'row', role: 'treeitem', tabindex: '0', 'aria-expanded': 'false' });
        const detail = h('div', { class: 'detail', hidden: true });
        const wrap = h('div', { class: 'span', data: { spanId: s.span_id, traceId: s.trace_id } }, row, detail);
        row.addEventListener('click', () => toggle(k));
        ent = { wrap, row, detail, s: null, depth: -1, bar: null };
        cur.els.set(k, ent);
      }
      if (ent.s !== s || ent.depth !== depth || s.in_progress) {
        const { nodes, bar } = spanRowContent(s, depth);
        ent.row.replaceChildren(...nodes);
        ent.row.setAttribute('aria-level', String(depth + 1));
        ent.row.setAttribute('aria-label', `${opLabel[opKind(s.operation)]} ${s.tool || s.agent || s.model || s.name}${s.status === 'error' ? ', failed' : ''}`);
        ent.wrap.dataset.op = s.operation || 'other';
        ent.wrap.dataset.status = s.status;
        ent.wrap.classList.toggle('failed', s.status === 'error');
        ent.s = s;
        ent.depth = depth;
        ent.bar = bar;
      }
      const a = nsToMs(s.start_unix_nano);
      let b = nsToMs(s.end_unix_nano);
      if (s.in_progress || !b) b = Math.max(a, now);
      ent.bar.style.left = (((a || t0) - t0) / span * 100).toFixed(3) + '%';
      ent.bar.style.width = Math.max(0.15, (b - (a || t0)) / span * 100).toFixed(3) + '%';
      ent.bar.title = fmtDuration(b - a) + ' · starts at +' + fmtDuration((a || t0) - t0);
      if (wf.children[i] !== ent.wrap) wf.insertBefore(ent.wrap, wf.children[i] || null);
      i++;
    }
    for (const [k, ent] of cur.els) {
      if (!seen.has(k)) { ent.wrap.remove(); cur.els.delete(k); }
    }
    $('wf-empty').hidden = !cur.ready || rows.length > 0;
    const failed = rows.some(({ s }) => s.status === 'error');
    $('expand-failed').hidden = !failed;
  }

  function renderLogs() {
    const cur = st.cur;
    const box = $('logs-box');
    const logs = Array.from(cur.logs.values()).sort((a, b) => cmpNs(a.time_unix_nano, b.time_unix_nano) || a.seq - b.seq);
    box.hidden = logs.length === 0;
    $('logs-summary').textContent = `Log events (${logs.length})`;
    if (!box.open) return;
    const list = $('logs');
    list.replaceChildren(...logs.slice(-1000).map((l) => {
      const t = nsToMs(l.time_unix_nano);
      const body = h('pre');
      body.textContent = pretty(l.body);
      return h('div', { class: 'log' },
        h('span', { class: 'muted', title: t ? new Date(t).toString() : '', text: fmtTime(t) }),
        h('span', { class: l.severity_number >= 17 ? 'sev-error' : '', text: l.event_name || l.severity_text || 'log' }),
        body);
    }));
  }

  function toggle(k, force) {
    const cur = st.cur;
    const ent = cur && cur.els.get(k);
    if (!ent) return;
    const open = force === undefined ? !cur.open.has(k) : force;
    if (open) cur.open.add(k); else cur.open.delete(k);
    ent.wrap.classList.toggle('open', open);
    ent.row.setAttribute('aria-expanded', String(open));
    ent.detail.hidden = !open;
    if (open) {
      if (cur.details.has(k)) fillDetail(k);
      else loadDetail(k);
    }
  }

  async function loadDetail(k) {
    const cur = st.cur;
    const s = cur.spans.get(k);
    const ent = cur.els.get(k);
    if (!s) return;
    if (ent && !cur.details.has(k)) ent.detail.replaceChildren(h('div', { class: 'muted', text: 'Loading…' }));
    const seq = s.seq;
    try {
      const resp = await fetch(`/api/spans/${encodeURIComponent(s.trace_id)}/${encodeURIComponent(s.span_id)}`);
      const body = await resp.json();
      if (!resp.ok) throw new Error(body && body.error ? body.error : 'HTTP ' + resp.status);
      if (st.cur !== cur) return;
      const now = cur.spans.get(k);
      if (now && now.seq !== seq && body.seq < now.seq) return; // a newer copy is on its way
      cur.details.set(k, body);
    } catch (e) {
      if (st.cur !== cur) return;
      const e2 = cur.els.get(k);
      if (e2) e2.detail.replaceChildren(h('div', { class: 'error-box', text: 'Could not load this span: ' + e.message }));
      return;
    }
    if (cur.open.has(k)) fillDetail(k);
  }

  function fillDetail(k) {
    const cur = st.cur;
    const v = cur.details.get(k);
    const ent = cur.els.get(k);
    if (!v || !ent) return;
    const a = v.attributes || {};
    const pick = (...keys) => { for (const x of keys) if (a[x] !== undefined && a[x] !== null && a[x] !== '') return a[x]; return undefined; };
    const kind = opKind(v.operation);
    const out = [];
    const facts = h('div', { class: 'facts' });
    const start = nsToMs(v.start_unix_nano);
    facts.append(h('span', { text: v.name }));
    if (start) {
      const d = new Date(start);
      const p2 = (n) => String(n).padStart(2, '0');
      const clock = `${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`;
      facts.append(h('span', { title: d.toString(), text: 'started ' + clock }));
    }
    facts.append(h('span', { text: 'duration ' + fmtDuration(v.duration_ms) }));
    const callId = pick('gen_ai.tool.call.id');
    if (callId) facts.append(h('span', { class: 'mono', text: 'call ' + callId }));
    const u = {
      input_tokens: Number(pick('gen_ai.usage.input_tokens', 'llm.token_count.prompt') || 0),
      output_tokens: Number(pick('gen_ai.usage.output_tokens', 'llm.token_count.completion') || 0),
      cache_read_tokens: Number(pick('gen_ai.usage.cache_read.input_tokens') || 0),
      cache_creation_tokens: Number(pick('gen_ai.usage.cache_creation.input_tokens') || 0),
    };
    if (tokens(u)) facts.append(h('span', { title: tokenTitle(u), text: fmtCount(tokens(u)) + ' tokens' }));
    const cost = pick('ao.cost.usd', 'gen_ai.usage.cost');
    if (cost) facts.append(h('span', { text: 'cost ' + fmtCost(cost) }));
    if (a['ao.timing.estimated'] === true || a['ao.timing.estimated'] === 'true') facts.append(h('span', { text: 'times estimated' }));
    facts.append(h('span', { class: 'mono', text: 'span ' + v.span_id }));
    out.push(facts);
    if (v.status === 'error') {
      const why = [v.status_message, pick('error.type'), pick('error.message')].filter((x) => x !== undefined && x !== '').map(String);
      out.push(h('div', { class: 'error-box', text: '✕ Failed' + (why.length ? ': ' + Array.from(new Set(why)).join(' · ') : '') }));
    }
    if (a['ao.truncated'] === true || a['ao.truncated'] === 'true') {
      const cut = Object.keys(a).filter((x) => x.startsWith('ao.original_length.')).map((x) => `${x.slice(19)} (${fmtCount(a[x])} bytes originally)`);
      out.push(h('div', { class: 'warn', text: 'aotel stored shortened values: ' + (cut.join(', ') || 'some attributes') }));
    }
    if (kind === 'execute_tool') {
      const args = pick('gen_ai.tool.call.arguments', 'input.value', 'tool.arguments');
      const res = pick('gen_ai.tool.call.result', 'output.value', 'tool.result');
      if (args !== undefined) out.push(block('Arguments', args, 'arguments'));
      if (res !== undefined) out.push(block('Result', res, 'result', v.status === 'error' ? 'error' : null));
      if (args === undefined && res === undefined) out.push(h('div', { class: 'muted', text: 'No arguments or result recorded on this span.' }));
    } else if (kind === 'invoke_agent' || kind === 'chat') {
      const input = pick('gen_ai.input.messages', 'gen_ai.prompt', 'input.value');
      const output = pick('gen_ai.output.messages', 'gen_ai.completion', 'output.value');
      const sys = pick('gen_ai.system_instructions');
      if (sys !== undefined) out.push(block('System instructions', sys, 'system'));
      if (input !== undefined) out.push(block(kind === 'chat' ? 'Input' : 'Prompt', input, 'input'));
      if (output !== undefined) out.push(block(kind === 'chat' ? 'Output' : 'Result', output, 'output'));
    }
    if (v.events && v.events.length) {
      const ev = h('details', { class: 'attrs' }, h('summary', { text: `Events (${v.events.length})` }));
      for (const e of v.events) {
        const t = nsToMs(e.time_unix_nano);
        ev.append(h('div', { class: 'muted', text: (t ? fmtTime(t) + ' · ' : '') + e.name }), kvTable(e.attributes));
      }
      out.push(ev);
    }
    out.push(h('details', { class: 'attrs' }, h('summary', { text: `All attributes (${Object.keys(a).length})` }), kvTable(a)));
    out.push(h('details', { class: 'attrs' }, h('summary', { text: 'Resource' }), kvTable(v.resource)));
    if (v.links && v.links.length) {
      out.push(h('details', { class: 'attrs' }, h('summary', { text: `Links (${v.links.length})` }),
        ...v.links.map((l) => h('div', { class: 'mono', text: `trace ${l.trace_id} span ${l.span_id}` }))));
    }
    ent.detail.replaceChildren(...out);
  }

  // ---------- rendering ----------
  function queueRender() {
    if (st.renderQueued) return;
    st.renderQueued = true;
    requestAnimationFrame(() => { st.renderQueued = false; render(); });
  }
  function render() {
    if (st.route.view === 'list') renderList();
    else if (st.cur) {
      renderHead();
      renderWaterfall();
      renderLogs();
      showView();
    }
  }

  // ---------- keyboard ----------
  function moveFocus(items, dir) {
    const list = Array.from(items);
    if (!list.length) return;
    let i = list.indexOf(document.activeElement);
    i = i < 0 ? (dir > 0 ? 0 : list.length - 1) : Math.max(0, Math.min(list.length - 1, i + dir));
    list[i].focus();
    list[i].scrollIntoView({ block: 'nearest' });
  }
  function typing(e) {
    const t = e.target;
    return t && (t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.tagName === 'TEXTAREA' || t.isContentEditable);
  }
  function onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const list = st.route.view === 'list';
    if (e.key === 'Escape') {
      if ($('help').open) return;
      if (typing(e)) { e.target.blur(); return; }
      if (!list) { location.hash = listHashFromMemory(); e.preventDefault(); }
      return;
    }
    if (typing(e)) return;
    const rowsSel = list ? '#session-rows tr' : '#waterfall .row';
    const inRow = e.target && e.target.matches && e.target.matches(rowsSel);
    switch (e.key) {
      case '/':
        if (list) { e.preventDefault(); $('search').focus(); $('search').select(); }
        break;
      case '?':
        e.preventDefault();
        $('help').showModal();
        break;
      case 't':
        cycleTheme();
        break;
      case 'g':
        if (!list) location.hash = listHashFromMemory();
        break;
      case 'ArrowDown': case 'j':
        e.preventDefault();
        moveFocus(document.querySelectorAll(rowsSel), 1);
        break;
      case 'ArrowUp': case 'k':
        e.preventDefault();
        moveFocus(document.querySelectorAll(rowsSel), -1);
        break;
      case 'Enter': case ' ':
        if (!inRow) return;
        e.preventDefault();
        e.target.click();
        break;
      case 'ArrowRight': case 'ArrowLeft':
        if (!inRow || list) return;
        e.preventDefault();
        for (const [k, ent] of st.cur.els) if (ent.row === e.target) toggle(k, e.key === 'ArrowRight');
        break;
      default:
        break;
    }
  }

  // ---------- start ----------
  function start() {
    let theme = 'auto';
    try { theme = localStorage.getItem('aotel.theme') || 'auto'; } catch (_) { /* storage off */ }
    applyTheme(theme);
    $('theme').addEventListener('click', cycleTheme);
    $('help-btn').addEventListener('click', () => $('help').showModal());
    $('help-close').addEventListener('click', () => $('help').close());
    let searchTimer = null;
    $('search').addEventListener('input', () => { clearTimeout(searchTimer); searchTimer = setTimeout(filtersChanged, 250); });
    $('search').addEventListener('keydown', (e) => {
      if (e.key === 'Enter') { clearTimeout(searchTimer); filtersChanged(); }
      if (e.key === 'ArrowDown') { e.preventDefault(); moveFocus(document.querySelectorAll('#session-rows tr'), 1); }
    });
    for (const id of ['f-status', 'f-agent', 'f-service']) $(id).addEventListener('change', filtersChanged);
    $('clear').addEventListener('click', () => { location.hash = '#/'; });
    $('collapse-all').addEventListener('click', () => { if (st.cur) for (const k of Array.from(st.cur.open)) toggle(k, false); });
    $('expand-failed').addEventListener('click', () => {
      if (!st.cur) return;
      for (const [k, s] of st.cur.spans) if (s.status === 'error') toggle(k, true);
    });
    $('logs-box').addEventListener('toggle', () => { if (st.cur) renderLogs(); });
    document.addEventListener('keydown', onKey);
    window.addEventListener('hashchange', onRoute);
    // Relative times and running bars move on their own.
    setInterval(() => {
      if (st.route.view === 'list') { for (const ent of st.list.els.values()) ent.row = null; }
      queueRender();
    }, 15000);
    st.route = parseRoute();
    if (st.route.view === 'session') st.cur = newSession(st.route.key);
    else syncFilterControls();
    showView();
    connect();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
