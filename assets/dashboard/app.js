// sluicegate dashboard: polls the admin API and draws every route's split,
// endpoint health, per-backend graphs and the revision history. Plain DOM, no
// framework; the page runs under a strict CSP (no inline code or style, no
// eval), so every element is built here and every size is an SVG attribute.
'use strict';

(() => {
  const API = '/api/v1';
  const POLL_MS = 2000;
  const HISTORY_LIMIT = 25;
  const TOKEN_KEY = 'sluicegate.admin-token';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  // Graph geometry in SVG user units; the SVG stretches to its box.
  const GRAPH_W = 300;
  const GRAPH_H = 80;
  const NEUTRAL_COLOURS = 4;

  const METRICS = [
    {
      key: 'rps',
      title: 'Requests/s',
      floor: 1,
      value: (p, interval) => (num(p.requests) === null ? null : num(p.requests) / interval),
      format: (v) => fmtNumber(v) + '/s',
    },
    {
      key: 'errors',
      title: 'Error rate',
      floor: 1,
      value: (p) => {
        const requests = num(p.requests);
        const errors = num(p.errors);
        return requests && errors !== null ? (100 * errors) / requests : null;
      },
      format: (v) => fmtNumber(v) + ' %',
    },
    {
      key: 'p99',
      title: 'p99 latency',
      floor: 1,
      value: (p) => num(p.p99_ms),
      format: (v) => fmtNumber(v) + ' ms',
    },
  ];

  // How many time labels each graph's x axis has (start, middle, end).
  const AXIS_LABELS = 3;
  // A graph shows at least 12 intervals of the stats, also before there is data.
  const MIN_WINDOW_INTERVALS = 12;

  const ui = {};
  const cards = new Map(); // route name -> card
  // The route of the page's `#route=NAME` fragment, and whether the page
  // has scrolled to it yet.
  const focus = { route: null, scrolled: false };
  let revision = null; // of the last GET /routes, sent as if_revision
  let pollTimer = null;
  let polling = false;

  // ---------------------------------------------------------------------------
  // Small helpers.

  function num(v) {
    return typeof v === 'number' && Number.isFinite(v) ? v : null;
  }

  function fmtNumber(v) {
    if (v === null) return '—';
    const abs = Math.abs(v);
    if (abs >= 100) return String(Math.round(v));
    if (abs >= 10) return String(Math.round(v * 10) / 10);
    return String(Math.round(v * 100) / 100);
  }

  function fmtPercent(v) {
    return v === null ? '—' : fmtNumber(v) + ' %';
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svgEl(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }

  function button(text, className, onClick) {
    const b = el('button', className, text);
    b.type = 'button';
    b.addEventListener('click', onClick);
    return b;
  }

  /** `bk-blue` / `bk-green` for backends named so, a neutral colour otherwise. */
  function colourClass(name, index) {
    const words = String(name).toLowerCase().split(/[^a-z]+/);
    if (words.includes('blue')) return 'bk-blue';
    if (words.includes('green')) return 'bk-green';
    return 'bk-n' + (index % NEUTRAL_COLOURS);
  }

  /** Basis points, so 100 - 33.33 is 66.67 and not 66.670000001. */
  function toBasisPoints(percent) {
    return Math.round(percent * 100);
  }

  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const magnitude = Math.pow(10, Math.floor(Math.log10(v)));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (v <= step * magnitude) return step * magnitude;
    }
    return 10 * magnitude;
  }

  /** Local date and time, e.g. `2 Dec 2026, 14:03:11`; the text as it is if not a time. */
  function fmtDateTime(value) {
    const date = value instanceof Date ? value : new Date(value);
    if (value === null || value === undefined || Number.isNaN(date.getTime())) return String(value ?? '');
    return date.toLocaleString(undefined, {
      year: 'numeric',
      month: 'short',
      day: 'numeric',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    });
  }

  /** Local hours and minutes (seconds for short windows): a graph's time label. */
  function fmtClock(unixSeconds, withSeconds) {
    const options = { hour: '2-digit', minute: '2-digit' };
    if (withSeconds) options.second = '2-digit';
    return new Date(unixSeconds * 1000).toLocaleTimeString(undefined, options);
  }

  /** An RFC 3339 time as the API sends them (`2026-11-23T10:00:00.000Z`). */
  function isTimestamp(value) {
    return typeof value === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(value);
  }

  // ---------------------------------------------------------------------------
  // Token and API.

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch {
      return '';
    }
  }

  function setToken(value) {
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      showMessage('error', 'This browser refuses sessionStorage: the token cannot be kept.');
    }
    showTokenState();
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** Calls the admin API; resolves to the JSON body, rejects with its `error`.
   *  `withToken` replaces the kept token (to check one before keeping it). */
  async function api(method, path, body, withToken) {
    const headers = { Accept: 'application/json' };
    const secret = withToken ?? token();
    if (secret) headers.Authorization = 'Bearer ' + secret;
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(API + path, init);
    } catch (e) {
      throw new ApiError(0, 'cannot reach the admin API (' + e.message + ')');
    }
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!resp.ok) {
      let message =
        data && typeof data.error === 'string' ? data.error : text.trim() || resp.statusText;
      if (data && Array.isArray(data.errors) && data.errors.length) {
        message += ': ' + data.errors.join('; ');
      }
      throw new ApiError(resp.status, message || 'HTTP ' + resp.status);
    }
    return data;
  }

  function routePath(route, ...rest) {
    return ['/routes', encodeURIComponent(route), ...rest.map(encodeURIComponent)].join('/');
  }

  // ---------------------------------------------------------------------------
  // Messages.

  let messageTimer = null;

  function showMessage(kind, text) {
    clearTimeout(messageTimer);
    ui.message.textContent = text;
    ui.message.className = 'message ' + kind;
    ui.message.hidden = false;
    if (kind === 'ok') messageTimer = setTimeout(() => (ui.message.hidden = true), 4000);
  }

  function hideMessage() {
    ui.message.hidden = true;
  }

  function setNote(card, kind, text) {
    card.note.textContent = text;
    card.note.className = 'note ' + kind;
    card.note.hidden = !text;
  }

  /** Runs an admin action from `trigger`: busy while it runs, its result or error shown. */
  async function act(card, trigger, describe, method, path, body) {
    if (trigger) trigger.disabled = true;
    try {
      const before = revision;
      const data = await api(method, path, body);
      // Only changes of weights make a revision; a drain does not.
      const changed = data && num(data.revision) !== null && data.revision !== before;
      const rev = changed ? ' (revision ' + data.revision + ')' : '';
      if (card) setNote(card, 'ok', describe + rev);
      else showMessage('ok', describe + rev);
      if (data && data.route && card) {
        if (num(data.revision) !== null) revision = data.revision;
        updateCard(card, data.route);
      }
      pollSoon();
      return data;
    } catch (e) {
      const text = describe + ' refused: ' + e.message;
      if (card) setNote(card, 'error', text);
      else showMessage('error', text);
      // 401 is a wrong or missing token (a role that does not allow a call is 403).
      if (e.status === 401 && token()) showTokenRejected();
      else if (e.status === 401) askForToken();
      return null;
    } finally {
      if (trigger) trigger.disabled = false;
    }
  }

  function askForToken() {
    ui.tokenForm.classList.add('needed');
    if (!token()) ui.tokenInput.focus();
  }

  function showTokenState() {
    const has = Boolean(token());
    ui.tokenState.textContent = 'token set';
    ui.tokenState.className = 'token-state';
    ui.tokenState.hidden = !has;
    ui.tokenForget.hidden = !has;
    ui.tokenInput.placeholder = has ? 'replace the token' : 'paste the admin token';
    if (has) ui.tokenForm.classList.remove('needed');
  }

  /** The admin API refused a token: say so where the token is, and do not keep it. */
  function showTokenRejected() {
    setToken('');
    ui.tokenState.textContent = 'token rejected';
    ui.tokenState.className = 'token-state rejected';
    ui.tokenState.hidden = false;
    askForToken();
  }

  /** Checks `value` with a read (a wrong token is 401 on every endpoint,
   *  SPEC §3) before keeping it. */
  async function useToken(value) {
    ui.tokenSave.disabled = true;
    try {
      await api('GET', '/routes', undefined, value);
      setToken(value);
      hideMessage();
    } catch (e) {
      if (e.status === 401) {
        showTokenRejected();
        return;
      }
      // Not a verdict on the token (the API is down): keep it, say why.
      setToken(value);
      showMessage('error', 'The token could not be checked: ' + e.message);
    } finally {
      ui.tokenSave.disabled = false;
    }
    pollSoon();
  }

  // ---------------------------------------------------------------------------
  // Polling.

  function pollSoon() {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(poll, 150);
  }

  async function poll() {
    clearTimeout(pollTimer);
    if (polling) return;
    polling = true;
    try {
      if (!document.hidden) await refresh();
    } finally {
      polling = false;
      pollTimer = setTimeout(poll, POLL_MS);
    }
  }

  async function refresh() {
    const [routes, history, stats] = await Promise.allSettled([
      api('GET', '/routes'),
      api('GET', '/history?limit=' + HISTORY_LIMIT),
      api('GET', '/stats'),
    ]);
    const statsData = stats.status === 'fulfilled' ? stats.value : null;
    if (routes.status === 'fulfilled') {
      const data = routes.value || {};
      revision = num(data.revision);
      renderRoutes(Array.isArray(data.routes) ? data.routes : [], statsData);
      ui.status.textContent =
        'updated ' + fmtDateTime(new Date()) + (revision !== null ? ' · revision ' + revision : '');
      ui.status.className = 'status live';
    } else {
      const e = routes.reason;
      ui.status.textContent = e.status === 401 ? 'admin token needed' : 'not updating: ' + e.message;
      ui.status.className = 'status stale';
      if (e.status === 401) {
        // A token that was kept and is now refused (rotated, say) is wrong.
        if (token()) showTokenRejected();
        else askForToken();
        if (!cards.size) ui.routes.replaceChildren(el('p', 'empty', 'Enter the admin token to see the routes.'));
      }
    }
    const link = routes.status === 'fulfilled' && routes.value ? routes.value.fleet : null;
    if (link && typeof link === 'object') {
      try {
        renderFleet(link, await api('GET', '/fleet'));
      } catch (e) {
        renderFleet(link, null);
      }
    } else {
      ui.fleet.hidden = true;
    }
    if (history.status === 'fulfilled') {
      renderHistory(history.value && Array.isArray(history.value.revisions) ? history.value.revisions : []);
    }
  }

  // ---------------------------------------------------------------------------
  // Routes.

  function renderRoutes(routes, stats) {
    const seen = new Set();
    if (!routes.length) {
      ui.routes.replaceChildren(el('p', 'empty', 'No routes configured.'));
      cards.clear();
      return;
    }
    ui.routes.querySelector(':scope > .empty')?.remove();
    for (const route of routes) {
      const name = String(route.name);
      seen.add(name);
      let card = cards.get(name);
      const shape = routeShape(route);
      if (!card || card.shape !== shape) {
        const fresh = buildCard(route, shape);
        if (card) card.root.replaceWith(fresh.root);
        else ui.routes.append(fresh.root);
        cards.set(name, fresh);
        card = fresh;
      }
      updateCard(card, route);
      updateGraphs(card, stats);
    }
    for (const [name, card] of cards) {
      if (!seen.has(name)) {
        card.root.remove();
        cards.delete(name);
      }
    }
    showFocus();
  }

  // ---------------------------------------------------------------------------
  // The route fragment: `#route=web` highlights that route's card and
  // scrolls to its canary panel (the URL `ctl canary start --wait` prints).

  function readFocus() {
    const match = /(?:^#|&)route=([^&]*)/.exec(location.hash);
    let route = null;
    if (match) {
      try {
        route = decodeURIComponent(match[1]);
      } catch {
        route = match[1];
      }
    }
    focus.route = route || null;
    focus.scrolled = false;
    showFocus();
  }

  function showFocus() {
    for (const [name, card] of cards) card.root.classList.toggle('focused', name === focus.route);
    const card = focus.route !== null ? cards.get(focus.route) : null;
    if (card && !focus.scrolled) {
      focus.scrolled = true;
      card.canaryBox.scrollIntoView({ block: 'center' });
    }
  }

  /** What the card's structure depends on: rebuilt when this changes. */
  function routeShape(route) {
    return JSON.stringify(
      (route.backends || []).map((b) => [b.name, (b.endpoints || []).map((e) => e.address)]),
    );
  }

  function backendsOf(route) {
    return Array.isArray(route.backends) ? route.backends : [];
  }

  function buildCard(route, shape) {
    const name = String(route.name);
    const backends = backendsOf(route);
    const card = { name, shape, dirty: false, backends: [], graphs: new Map() };
    const root = el('article', 'card route');
    root.dataset.route = name;
    card.root = root;

    const head = el('div', 'card-head');
    head.append(el('h2', null, name));
    card.match = el('span', 'match');
    card.override = el('span', 'badge', 'admin override');
    card.override.title = 'weights set through the admin API, kept over file reloads that leave them alone';
    head.append(card.match, card.override);
    root.append(head);

    // The split, desired over effective, as two stacked bars.
    const split = el('div', 'split');
    card.splitBars = {};
    for (const kind of ['desired', 'effective']) {
      const row = el('div', 'split-row');
      row.append(el('span', 'split-label', kind));
      const svg = svgEl('svg', { viewBox: '0 0 100 10', preserveAspectRatio: 'none', class: 'split-bar ' + kind });
      svg.setAttribute('role', 'img');
      row.append(svg);
      split.append(row);
      card.splitBars[kind] = svg;
    }
    root.append(split);

    // One column per backend: weights, endpoints, promote.
    const columns = el('div', 'backends cols-' + Math.min(backends.length, 4));
    backends.forEach((b, index) => {
      const backend = buildBackend(card, b, index);
      card.backends.push(backend);
      columns.append(backend.root);
    });
    root.append(columns);

    root.append(buildGraphs(card));
    root.append(buildCanary(card));
    root.append(buildEditor(card));

    card.note = el('p', 'note');
    card.note.setAttribute('role', 'alert');
    card.note.hidden = true;
    root.append(card.note);
    return card;
  }

  function buildBackend(card, b, index) {
    const name = String(b.name);
    const colour = colourClass(name, index);
    const backend = { name, colour, endpoints: new Map() };
    const root = el('section', 'backend ' + colour);
    root.dataset.backend = name;
    backend.root = root;

    const head = el('div', 'backend-head');
    head.append(el('span', 'swatch'), el('h3', null, name));
    backend.promote = button('Promote', 'promote secondary', () => {
      if (!confirm('Send all of ' + card.name + "'s traffic to " + name + '?')) return;
      act(card, backend.promote, 'promote ' + name, 'POST', routePath(card.name, 'promote'), {
        backend: name,
      });
    });
    backend.promote.title = 'send 100 % of this route to ' + name;
    head.append(backend.promote);
    root.append(head);

    const bars = el('div', 'weight-bars');
    for (const kind of ['desired', 'effective']) {
      const row = el('div', 'weight-row ' + kind);
      row.append(el('span', 'weight-label', kind));
      const svg = svgEl('svg', { viewBox: '0 0 100 4', preserveAspectRatio: 'none', class: 'weight-bar' });
      svg.append(svgEl('rect', { class: 'track', x: 0, y: 0, width: 100, height: 4 }));
      const fill = svgEl('rect', { class: 'fill', x: 0, y: 0, width: 0, height: 4 });
      svg.append(fill);
      const value = el('span', 'weight-value ' + kind);
      row.append(svg, value);
      bars.append(row);
      backend[kind] = { fill, value };
    }
    root.append(bars);

    const list = el('ul', 'endpoints');
    for (const e of b.endpoints || []) {
      const address = String(e.address);
      const item = el('li', 'endpoint');
      item.append(el('code', 'address', address));
      const pill = el('span', 'pill');
      const drain = button('Drain', 'drain secondary', () => {
        const draining = drain.dataset.draining === 'true';
        const action = draining ? 'undrain' : 'drain';
        if (action === 'drain' && !confirm('Drain ' + address + ' (no new requests to it)?')) return;
        act(card, drain, action + ' ' + address, 'POST', routePath(card.name, 'backends', name, 'endpoints', address, action), {});
      });
      item.append(pill, drain);
      list.append(item);
      backend.endpoints.set(address, { pill, drain });
    }
    root.append(list);
    return backend;
  }

  /** up, ejected, draining or down: the API's `state` when it gives one. */
  function endpointState(e) {
    if (typeof e.state === 'string' && e.state) return e.state;
    if (e.draining) return 'draining';
    if (e.ejected) return 'ejected';
    return e.healthy === false ? 'down' : 'up';
  }

  function updateCard(card, route) {
    const parts = [];
    if (route.host) parts.push('host ' + route.host);
    if (route.path_prefix) parts.push('path ' + route.path_prefix);
    card.match.textContent = parts.length ? parts.join(' · ') : 'all requests';
    card.override.hidden = !route.override;

    const backends = backendsOf(route);
    for (const kind of ['desired', 'effective']) {
      const svg = card.splitBars[kind];
      svg.replaceChildren();
      let x = 0;
      const label = [];
      backends.forEach((b, index) => {
        const w = num(b[kind + '_weight']) || 0;
        label.push(b.name + ' ' + fmtPercent(w));
        if (w > 0) {
          svg.append(
            svgEl('rect', { class: 'seg ' + colourClass(b.name, index), x, y: 0, width: w, height: 10 }),
          );
        }
        x += w;
      });
      svg.setAttribute('aria-label', kind + ': ' + label.join(', '));
    }

    backends.forEach((b, index) => {
      const backend = card.backends[index];
      if (!backend) return;
      for (const kind of ['desired', 'effective']) {
        const w = num(b[kind + '_weight']);
        backend[kind].fill.setAttribute('width', String(Math.max(0, Math.min(100, w || 0))));
        backend[kind].value.textContent = fmtPercent(w);
      }
      const differs = num(b.desired_weight) !== num(b.effective_weight);
      backend.root.classList.toggle('failover', differs);
      backend.effective.value.title = differs ? 'effective differs from desired: endpoints are unavailable' : '';
      for (const e of b.endpoints || []) {
        const view = backend.endpoints.get(String(e.address));
        if (!view) continue;
        const state = endpointState(e);
        view.pill.textContent = state;
        view.pill.className = 'pill ' + state;
        const draining = Boolean(e.draining) || state === 'draining';
        view.drain.dataset.draining = String(draining);
        view.drain.textContent = draining ? 'Undrain' : 'Drain';
      }
    });

    updateCanary(card, route.canary);
    if (!card.dirty) setEditor(card, backends);
  }

  // ---------------------------------------------------------------------------
  // Weight editor: a slider for two backends, number inputs always.

  function buildEditor(card) {
    const form = el('form', 'editor');
    form.noValidate = true;
    card.inputs = [];
    const backends = card.backends;
    form.append(el('h3', null, 'Set weights'));

    if (backends.length === 2) {
      // The slider is the divider of the split bar: left of it goes to the
      // first backend, right of it to the second.
      const [left, right] = backends;
      const row = el('div', 'slider-row');
      const track = el('div', 'slider-track');
      const bar = svgEl('svg', { viewBox: '0 0 100 10', preserveAspectRatio: 'none', class: 'slider-bar' });
      const leftRect = svgEl('rect', { class: 'seg ' + left.colour, x: 0, y: 0, width: 50, height: 10 });
      const rightRect = svgEl('rect', { class: 'seg ' + right.colour, x: 50, y: 0, width: 50, height: 10 });
      bar.append(leftRect, rightRect);
      const range = el('input', 'split-slider');
      range.type = 'range';
      range.min = '0';
      range.max = '100';
      range.step = '1';
      range.setAttribute('aria-label', 'share of ' + left.name + ' (the rest goes to ' + right.name + ')');
      range.addEventListener('input', () => {
        const bp = toBasisPoints(Number(range.value));
        card.inputs[0].value = String(bp / 100);
        card.inputs[1].value = String((10000 - bp) / 100);
        markDirty(card);
      });
      track.append(bar, range);
      row.append(el('span', 'slider-end ' + left.colour, left.name), track, el('span', 'slider-end ' + right.colour, right.name));
      form.append(row);
      card.slider = { range, leftRect, rightRect };
    }

    const inputs = el('div', 'weight-inputs');
    backends.forEach((backend, index) => {
      const label = el('label', 'weight-input ' + backend.colour);
      label.append(el('span', 'swatch'), el('span', 'input-name', backend.name));
      const input = el('input');
      input.type = 'number';
      input.min = '0';
      input.max = '100';
      input.step = '0.01';
      input.inputMode = 'decimal';
      input.dataset.backend = backend.name;
      input.addEventListener('input', () => {
        if (backends.length === 2 && input.value !== '') {
          const bp = toBasisPoints(Number(input.value));
          if (Number.isFinite(bp)) {
            const other = card.inputs[1 - index];
            other.value = String((10000 - Math.max(0, Math.min(10000, bp))) / 100);
          }
        }
        markDirty(card);
      });
      label.append(input, el('span', 'unit', '%'));
      inputs.append(label);
      card.inputs.push(input);
    });
    card.sum = el('span', 'sum');
    inputs.append(card.sum);
    form.append(inputs);

    const actions = el('div', 'actions');
    card.reason = el('input', 'reason');
    card.reason.type = 'text';
    card.reason.placeholder = 'reason (optional)';
    card.reason.setAttribute('aria-label', 'reason for the change');
    card.apply = el('button', 'apply', 'Apply');
    card.apply.type = 'submit';
    const reset = button('Reset', 'reset secondary', () => {
      card.dirty = false;
      card.root.classList.remove('dirty');
      pollSoon();
    });
    reset.title = 'discard the edits and show the current weights';
    const rollback = button('Rollback', 'rollback secondary', () => {
      if (!confirm('Roll ' + card.name + ' back to its previous weights?')) return;
      act(card, rollback, 'rollback', 'POST', routePath(card.name, 'rollback'), {});
    });
    rollback.title = 'back to the weights of the previous revision of this route';
    actions.append(card.reason, card.apply, reset, rollback);
    form.append(actions);

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const weights = {};
      for (const input of card.inputs) {
        const value = Number(input.value);
        if (input.value === '' || !Number.isFinite(value)) {
          setNote(card, 'error', 'the weight of ' + input.dataset.backend + ' is not a number');
          return;
        }
        weights[input.dataset.backend] = value;
      }
      const body = { weights };
      if (revision !== null) body.if_revision = revision;
      const reason = card.reason.value.trim();
      if (reason) body.reason = reason;
      const done = await act(card, card.apply, 'set weights', 'PUT', routePath(card.name, 'weights'), body);
      if (done) {
        card.dirty = false;
        card.root.classList.remove('dirty');
        card.reason.value = '';
        if (done.route) setEditor(card, backendsOf(done.route));
      }
    });
    return form;
  }

  function markDirty(card) {
    card.dirty = true;
    card.root.classList.add('dirty');
    showSum(card);
  }

  function setEditor(card, backends) {
    backends.forEach((b, index) => {
      const input = card.inputs[index];
      if (input && document.activeElement !== input) input.value = String(num(b.desired_weight) ?? 0);
    });
    showSum(card);
  }

  function showSum(card) {
    const total = card.inputs.reduce((sum, input) => sum + toBasisPoints(Number(input.value) || 0), 0);
    if (card.slider) {
      const first = Math.max(0, Math.min(100, Number(card.inputs[0].value) || 0));
      card.slider.range.value = String(first);
      card.slider.leftRect.setAttribute('width', String(first));
      card.slider.rightRect.setAttribute('x', String(first));
      card.slider.rightRect.setAttribute('width', String(100 - first));
    }
    const ok = total === 10000;
    card.sum.textContent = ok ? 'sum 100 %' : 'sum ' + total / 100 + ' % (must be 100)';
    card.sum.classList.toggle('bad', !ok);
  }

  // ---------------------------------------------------------------------------
  // Canary.

  function buildCanary(card) {
    const box = el('div', 'canary');
    card.canaryBox = box;
    const head = el('div', 'canary-head');
    head.append(el('h3', null, 'Canary'));
    card.canaryPill = el('span', 'pill canary-pill');
    card.canaryPill.hidden = true;
    card.canaryState = el('span', 'canary-state', 'no canary running');
    head.append(card.canaryPill, card.canaryState);
    box.append(head);

    card.canaryProgress = svgEl('svg', { viewBox: '0 0 100 4', preserveAspectRatio: 'none', class: 'canary-progress' });
    card.canaryDetails = el('dl', 'canary-details');
    card.canaryGates = el('ul', 'canary-gates');
    card.canaryGates.setAttribute('aria-label', 'gate results');
    box.append(card.canaryProgress, card.canaryDetails, card.canaryGates);

    const controls = el('div', 'canary-controls');
    // Approve stands first and is shown only while the canary waits for it.
    for (const action of ['approve', 'start', 'pause', 'resume', 'abort']) {
      const primary = action === 'approve';
      const b = button(action[0].toUpperCase() + action.slice(1), (primary ? '' : 'secondary ') + 'canary-' + action, () => {
        if (action === 'abort' && !confirm('Abort the canary of ' + card.name + ' (back to the baseline)?')) return;
        act(card, b, 'canary ' + action, 'POST', routePath(card.name, 'canary', action), {});
      });
      if (primary) {
        b.hidden = true;
        b.title = 'let the canary go on to its next step';
        card.canaryApprove = b;
      }
      controls.append(b);
    }
    box.append(controls);
    return box;
  }

  /** `awaiting_approval` → `awaiting approval`. */
  function stateText(state) {
    return String(state).replace(/_/g, ' ');
  }

  /** A canary detail's value as shown: times local with date, percents with %. */
  function detailText(key, value) {
    if (isTimestamp(value)) return fmtDateTime(value);
    if ((key === 'steps' || key === 'approve_at') && Array.isArray(value)) {
      return value.map((w) => fmtPercent(num(w))).join(', ');
    }
    return value !== null && typeof value === 'object' ? JSON.stringify(value) : String(value);
  }

  /** One line per gate call: passed or not, at which step, what it said, when. */
  function renderGates(card, gates) {
    const items = (Array.isArray(gates) ? gates : []).filter((g) => g && typeof g === 'object').map((gate) => {
      const item = el('li', 'gate ' + (gate.passed ? 'passed' : 'refused'));
      item.append(el('span', 'pill gate-result ' + (gate.passed ? 'up' : 'down'), gate.passed ? 'gate passed' : 'gate refused'));
      const where = [];
      if (num(gate.step) !== null) where.push('step ' + gate.step);
      if (num(gate.weight) !== null) where.push(fmtPercent(gate.weight));
      if (where.length) item.append(el('span', 'gate-step', where.join(' · ')));
      if (gate.detail) item.append(el('span', 'gate-detail', gate.detail));
      if (gate.url) item.append(el('code', 'gate-url', gate.url));
      if (gate.time) {
        const time = el('time', 'gate-time', fmtDateTime(gate.time));
        time.dateTime = String(gate.time);
        item.append(time);
      }
      return item;
    });
    card.canaryGates.replaceChildren(...items);
    card.canaryGates.hidden = !items.length;
  }

  function updateCanary(card, canary) {
    const running = canary && typeof canary === 'object';
    card.root.classList.toggle('has-canary', Boolean(running));
    card.canaryDetails.replaceChildren();
    card.canaryProgress.replaceChildren();
    if (!running) {
      card.canaryState.textContent = 'no canary running';
      card.canaryPill.hidden = true;
      card.canaryApprove.hidden = true;
      card.canaryProgress.classList.add('hidden');
      renderGates(card, null);
      return;
    }
    const state = String(canary.state ?? canary.status ?? canary.phase ?? 'running');
    const step = num(canary.step);
    const steps = num(canary.steps) ?? (Array.isArray(canary.steps) ? canary.steps.length : null);
    card.canaryPill.hidden = false;
    card.canaryPill.textContent = stateText(state);
    card.canaryPill.className = 'pill canary-pill state-' + state.replace(/[^a-z_]/g, '');
    const awaiting = state === 'awaiting_approval';
    card.canaryApprove.hidden = !awaiting;
    card.canaryBox.classList.toggle('awaiting', awaiting);
    card.canaryState.textContent = step !== null ? 'step ' + step + (steps !== null ? ' of ' + steps : '') : '';
    renderGates(card, canary.gates);
    if (step !== null && steps) {
      card.canaryProgress.classList.remove('hidden');
      card.canaryProgress.append(
        svgEl('rect', { class: 'track', x: 0, y: 0, width: 100, height: 4 }),
        svgEl('rect', { class: 'fill', x: 0, y: 0, width: Math.min(100, (100 * step) / steps), height: 4 }),
      );
    } else {
      card.canaryProgress.classList.add('hidden');
    }
    for (const [key, value] of Object.entries(canary)) {
      if (['state', 'status', 'phase', 'step', 'gates'].includes(key)) continue;
      if (key === 'steps' && !Array.isArray(value)) continue;
      const item = el('div');
      item.dataset.key = key;
      item.append(el('dt', null, key.replace(/_/g, ' ')), el('dd', null, detailText(key, value)));
      card.canaryDetails.append(item);
    }
  }

  // ---------------------------------------------------------------------------
  // Graphs: one row per metric, backends side by side on a shared scale.

  function buildGraphs(card) {
    const box = el('div', 'graphs');
    for (const metric of METRICS) {
      const row = el('div', 'metric');
      const head = el('div', 'metric-head');
      const scale = el('span', 'scale');
      head.append(el('h4', null, metric.title), scale);
      row.append(head);
      const cells = el('div', 'metric-cells cols-' + Math.min(card.backends.length, 4));
      const views = [];
      for (const backend of card.backends) {
        const cell = el('div', 'graph ' + backend.colour);
        const top = el('div', 'graph-head');
        const value = el('span', 'graph-value', '—');
        top.append(el('span', 'graph-name', backend.name), value);
        const svg = svgEl('svg', {
          viewBox: '0 0 ' + GRAPH_W + ' ' + GRAPH_H,
          preserveAspectRatio: 'none',
          class: 'graph-svg',
        });
        svg.setAttribute('role', 'img');
        const empty = el('span', 'nodata', 'no data yet');
        const plot = el('div', 'plot');
        plot.append(svg, empty);
        // Time labels in HTML, not SVG text: the SVG stretches to its box.
        const axis = el('div', 'time-axis');
        axis.setAttribute('aria-hidden', 'true');
        const labels = [];
        for (let i = 0; i < AXIS_LABELS; i++) {
          const label = el('time', 'tick');
          labels.push(label);
          axis.append(label);
        }
        cell.append(top, plot, axis);
        cells.append(cell);
        views.push({ backend: backend.name, svg, value, empty, labels });
      }
      row.append(cells);
      box.append(row);
      card.graphs.set(metric.key, { scale, views });
    }
    return box;
  }

  function updateGraphs(card, stats) {
    const interval = stats && num(stats.interval_seconds) > 0 ? stats.interval_seconds : null;
    const routeStats = stats && stats.routes && typeof stats.routes === 'object' ? stats.routes[card.name] : null;
    const pointsOf = (name) => {
      const b = routeStats && routeStats.backends ? routeStats.backends[name] : null;
      return b && Array.isArray(b.points) ? b.points.filter((p) => p && num(p.t) !== null) : [];
    };
    const series = new Map(card.backends.map((b) => [b.name, interval ? pointsOf(b.name) : []]));

    // One time window for the whole route, so the columns line up.
    let tMin = Infinity;
    let tMax = -Infinity;
    for (const points of series.values()) {
      if (points.length) {
        tMin = Math.min(tMin, points[0].t);
        tMax = Math.max(tMax, points[points.length - 1].t);
      }
    }
    const hasData = Number.isFinite(tMax);
    if (hasData && tMax - tMin < MIN_WINDOW_INTERVALS * interval) tMin = tMax - MIN_WINDOW_INTERVALS * interval;
    const span = hasData ? tMax - tMin : 0;
    // Without data yet, the axis shows the window the graph will fill.
    const axisEnd = hasData ? tMax : Date.now() / 1000;
    const axisSpan = hasData ? span : MIN_WINDOW_INTERVALS * (interval || 10);

    for (const metric of METRICS) {
      const graph = card.graphs.get(metric.key);
      const values = new Map();
      let max = 0;
      for (const [name, points] of series) {
        const v = points.map((p) => ({ t: p.t, v: metric.value(p, interval) }));
        values.set(name, v);
        for (const p of v) if (p.v !== null) max = Math.max(max, p.v);
      }
      const top = niceCeil(Math.max(max, metric.floor));
      graph.scale.textContent = hasData ? '0–' + metric.format(top) + ' · last ' + fmtSpan(span) : '';
      for (const view of graph.views) {
        const points = values.get(view.backend) || [];
        drawGraph(view, points, tMin, span, top, metric, interval);
        drawTimeAxis(view, axisEnd - axisSpan, axisSpan);
      }
    }
  }

  /** Labels at the start, middle and end of the graph's window, local time. */
  function drawTimeAxis(view, start, span) {
    const withSeconds = span < 300;
    view.labels.forEach((label, i) => {
      const t = start + (span * i) / (view.labels.length - 1);
      label.textContent = fmtClock(t, withSeconds);
      label.dateTime = new Date(t * 1000).toISOString();
      label.title = fmtDateTime(new Date(t * 1000));
    });
  }

  function fmtSpan(seconds) {
    if (seconds >= 120) return Math.round(seconds / 60) + ' min';
    return Math.round(seconds) + ' s';
  }

  function drawGraph(view, points, tMin, span, top, metric, interval) {
    const svg = view.svg;
    svg.replaceChildren();
    svg.append(
      svgEl('line', { class: 'grid', x1: 0, y1: GRAPH_H / 2, x2: GRAPH_W, y2: GRAPH_H / 2, 'vector-effect': 'non-scaling-stroke' }),
      svgEl('line', { class: 'axis', x1: 0, y1: GRAPH_H - 0.5, x2: GRAPH_W, y2: GRAPH_H - 0.5, 'vector-effect': 'non-scaling-stroke' }),
    );
    const known = points.filter((p) => p.v !== null);
    view.empty.hidden = known.length > 0;
    const last = points.length ? points[points.length - 1].v : null;
    view.value.textContent = known.length ? metric.format(last) : '—';
    svg.setAttribute('aria-label', metric.title + ' of ' + view.backend + ': ' + view.value.textContent);
    if (!known.length || !(span > 0)) return;

    const x = (t) => ((t - tMin) / span) * GRAPH_W;
    const y = (v) => GRAPH_H - (Math.min(v, top) / top) * (GRAPH_H - 2);
    // Buckets without a value (no requests) break the line.
    const segments = [];
    let current = [];
    for (const p of points) {
      if (p.v === null) {
        if (current.length) segments.push(current);
        current = [];
      } else {
        current.push([x(p.t), y(p.v)]);
      }
    }
    if (current.length) segments.push(current);

    let line = '';
    let area = '';
    for (const seg of segments) {
      const coords = seg.map(([px, py]) => px.toFixed(1) + ' ' + py.toFixed(1));
      if (seg.length === 1) {
        // A lone bucket is drawn as wide as the interval it covers, so it shows.
        const width = Math.max(4, (interval / span) * GRAPH_W);
        line += 'M' + (seg[0][0] - width).toFixed(1) + ' ' + seg[0][1].toFixed(1) + ' L' + coords[0] + ' ';
        continue;
      }
      line += 'M' + coords.join(' L') + ' ';
      if (seg.length > 1) {
        area += 'M' + seg[0][0].toFixed(1) + ' ' + GRAPH_H + ' L' + coords.join(' L') + ' L' + seg[seg.length - 1][0].toFixed(1) + ' ' + GRAPH_H + ' Z ';
      }
    }
    if (area) svg.append(svgEl('path', { class: 'area', d: area.trim() }));
    svg.append(svgEl('path', { class: 'line', d: line.trim(), 'vector-effect': 'non-scaling-stroke' }));
  }

  // ---------------------------------------------------------------------------
  // History.

  let historyShown = null;

  // ---------------------------------------------------------------------------
  // Fleet: every instance × route, shown only in fleet mode.

  function weightsText(weights) {
    return weights && typeof weights === 'object'
      ? Object.entries(weights).map(([name, w]) => name + ' ' + fmtNumber(num(w))).join(' · ')
      : '—';
  }

  function renderFleet(link, answer) {
    ui.fleet.hidden = false;
    ui.fleetLink.textContent =
      'this instance: ' + String(link.instance || '?') + (link.zone ? ' (' + link.zone + ')' : '') +
      (link.connected ? ' · following etcd' : ' · etcd unreachable: serving the last applied weights');
    ui.fleetLink.className = 'fleet-link ' + (link.connected ? 'live' : 'stale');
    const rows = [];
    const instances = answer && Array.isArray(answer.instances) ? answer.instances : [];
    for (const instance of instances) {
      const controls = Array.isArray(instance.canary_controller) ? instance.canary_controller : [];
      for (const [route, w] of Object.entries(instance.routes || {})) {
        const tr = el('tr');
        tr.dataset.instance = String(instance.instance);
        tr.append(el('td', null, instance.instance));
        tr.append(el('td', null, instance.zone || '—'));
        tr.append(el('td', instance.connected ? 'ok' : 'bad', instance.connected ? 'connected' : 'cut off'));
        tr.append(el('td', 'time', instance.last_seen ? fmtDateTime(instance.last_seen) : '—'));
        tr.append(el('td', 'num', instance.applied_revision));
        tr.append(el('td', null, route));
        tr.append(el('td', 'weights', weightsText(w.desired)));
        tr.append(el('td', 'weights', weightsText(w.effective)));
        tr.append(el('td', null, w.weights_from || ''));
        const healthy = w.healthy && typeof w.healthy === 'object' ? w.healthy : {};
        tr.append(el('td', 'weights', Object.entries(healthy).map(([b, up]) => b + ' ' + up).join(' · ')));
        tr.append(el('td', null, controls.includes(route) ? 'controller' : ''));
        rows.push(tr);
      }
    }
    if (!rows.length) {
      const tr = el('tr');
      const td = el('td', 'empty', answer ? 'No instance registered yet.' : 'The fleet view is not available.');
      td.colSpan = 11;
      tr.append(td);
      rows.push(tr);
    }
    ui.fleetRows.replaceChildren(...rows);
    const problems = answer && Array.isArray(answer.problems) ? answer.problems : [];
    ui.fleetProblems.replaceChildren(...problems.map((p) => el('li', null, p)));
  }

  function renderHistory(revisions) {
    // Unchanged rows stay, so a Restore button is not replaced under the pointer.
    const signature = JSON.stringify(revisions);
    if (signature === historyShown) return;
    historyShown = signature;
    const rows = [];
    for (const r of revisions) {
      const tr = el('tr');
      tr.append(el('td', 'num', r.revision));
      const time = el('td', 'time', fmtDateTime(r.time));
      time.title = String(r.time || '');
      tr.append(time);
      tr.append(el('td', null, r.route ?? 'all routes'));
      const source = el('td');
      source.append(el('span', 'pill source source-' + String(r.source || 'none'), r.source || '—'));
      tr.append(source);
      const actor = el('td', 'actor', r.actor || r.source || '—');
      if (r.client) actor.title = 'from ' + String(r.client);
      tr.append(actor);
      const weights =
        r.weights && typeof r.weights === 'object'
          ? Object.entries(r.weights).map(([name, w]) => name + ' ' + fmtNumber(num(w))).join(' · ')
          : '—';
      tr.append(el('td', 'weights', weights));
      tr.append(el('td', 'reason', r.reason || ''));
      const actions = el('td', 'row-actions');
      if (r.route && r.weights) {
        const restore = button('Restore', 'secondary small', () => {
          if (!confirm('Set ' + r.route + ' back to the weights of revision ' + r.revision + '?')) return;
          const card = cards.get(String(r.route));
          act(card || null, restore, 'restore revision ' + r.revision, 'POST', routePath(r.route, 'rollback'), {
            to_revision: r.revision,
          });
        });
        restore.title = 'roll ' + r.route + ' back to these weights';
        actions.append(restore);
      }
      tr.append(actions);
      rows.push(tr);
    }
    if (!rows.length) {
      const tr = el('tr');
      const td = el('td', 'empty', 'No revisions yet.');
      td.colSpan = 8;
      tr.append(td);
      rows.push(tr);
    }
    ui.historyRows.replaceChildren(...rows);
  }

  // ---------------------------------------------------------------------------
  // Start.

  function start() {
    ui.status = document.getElementById('status');
    ui.message = document.getElementById('message');
    ui.routes = document.getElementById('routes');
    ui.historyRows = document.getElementById('history-rows');
    ui.fleet = document.getElementById('fleet');
    ui.fleetRows = document.getElementById('fleet-rows');
    ui.fleetLink = document.getElementById('fleet-link');
    ui.fleetProblems = document.getElementById('fleet-problems');
    ui.tokenForm = document.getElementById('token-form');
    ui.tokenInput = document.getElementById('token-input');
    ui.tokenState = document.getElementById('token-state');
    ui.tokenSave = document.getElementById('token-save');
    ui.tokenForget = document.getElementById('token-forget');

    ui.tokenForm.addEventListener('submit', (event) => {
      event.preventDefault();
      const value = ui.tokenInput.value.trim();
      if (!value) {
        showMessage('error', 'Paste the admin token first.');
        return;
      }
      ui.tokenInput.value = '';
      useToken(value);
    });
    ui.tokenForget.addEventListener('click', () => {
      setToken('');
      pollSoon();
    });
    ui.message.addEventListener('click', hideMessage);
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) pollSoon();
    });
    window.addEventListener('hashchange', readFocus);
    showTokenState();
    readFocus();
    poll();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
