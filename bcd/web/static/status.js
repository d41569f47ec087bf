// bcd status page: follows /api/v1/events/stream and re-renders what each event touches from the JSON API;
// carries the operator's actions with the bearer token typed into the form (kept in sessionStorage only).
// Markup built here mirrors bcd/web/status_page.py. Data only ever reaches the DOM as text, never as HTML.
'use strict';

(() => {
  const TOKEN_KEY = 'bcd.token';
  const EVENTS_SHOWN = 50;
  const RUNS_SHOWN = 10;
  const IDLE_LIMIT = 45000; // the server sends a heartbeat every 15 s: three missed means the stream is dead
  const IN_PROGRESS = new Set(['running', 'waiting_approval']);
  const RUN_EVENTS = new Set([
    'run_started', 'step_started', 'step_finished', 'approval_waiting', 'run_finished', 'acknowledged',
  ]);

  const state = {
    token: null,
    sites: [],
    order: [],
    runbookSteps: {},
    services: new Map(),
    eventIds: new Set(),
    lastEventId: 0,
    stream: null, // AbortController of the stream being read
    tokenWaiters: [],
    who: null, // GET /api/v1/whoami for the token: the actions it may take, on which services
  };

  // -- small helpers ------------------------------------------------------------------------------------
  const $ = (selector, root = document) => root.querySelector(selector);
  const words = (value) => String(value ?? '').replaceAll('_', ' ');
  const enc = encodeURIComponent;
  const delay = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'onclick') node.addEventListener('click', value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === '') continue;
      node.append(child); // strings become text nodes
    }
    return node;
  }

  const hidden = (text) => el('span', { class: 'visually-hidden' }, text);

  function formatTime(date) {
    const time = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
    if (date.toDateString() === new Date().toDateString()) return time;
    return `${date.toLocaleDateString([], { year: 'numeric', month: '2-digit', day: '2-digit' })} ${time}`;
  }

  function timeEl(at) {
    if (at === null || at === undefined) return null;
    const date = new Date(at * 1000);
    return el('time', { datetime: date.toISOString() }, formatTime(date));
  }

  function localiseTimes(root = document) {
    for (const node of root.querySelectorAll('time[datetime]')) {
      const date = new Date(node.getAttribute('datetime'));
      if (!Number.isNaN(date.getTime())) node.textContent = formatTime(date);
    }
  }

  // -- the API ------------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, title, detail) {
      super(detail || title || `HTTP ${status}`);
      this.status = status;
      this.title = title || '';
    }
  }

  function authHeaders(extra = {}) {
    const headers = { ...extra };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    return headers;
  }

  async function api(method, path, body) {
    const init = { method, headers: authHeaders({ Accept: 'application/json' }), cache: 'no-store' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, 'No answer', `bcd did not answer (${err.message})`);
    }
    const type = response.headers.get('Content-Type') || '';
    const data = type.includes('json') ? await response.json().catch(() => null) : null;
    if (!response.ok) {
      throw new ApiError(response.status, (data && data.title) || response.statusText, data && data.detail);
    }
    return data;
  }

  // -- token ---------------------------------------------------------------------------------------------
  function readStoredToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null;
    }
  }

  function setToken(token) {
    state.token = token || null;
    try {
      if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // storage refused (private mode): the token lives only as long as this page
    }
    showTokenState(state.token ? 'A token is set for this tab.' : 'No token: read only.');
    if (state.stream) {
      state.stream.abort(); // follow() reconnects at once with the new token
      state.stream = null;
    }
    for (const wake of state.tokenWaiters.splice(0)) wake();
    loadAll();
  }

  function showTokenState(message) {
    $('#token-state').textContent = message;
    $('#forget-token').hidden = !state.token;
    document.documentElement.classList.toggle('operator', Boolean(state.token));
  }

  function needToken(message) {
    showTokenState(message);
    setConnection('waiting for a token');
    $('#token').focus();
  }

  const tokenChanged = () => new Promise((resolve) => { state.tokenWaiters.push(resolve); });

  // -- announcements and problems -------------------------------------------------------------------------
  function announce(text) {
    const region = $('#updates');
    region.replaceChildren(el('span', { class: 'label' }, 'Latest: '), text);
  }

  function showProblem(what, err) {
    const status = err.status ? `${err.status} ${err.title}: ` : '';
    const dismiss = el('button', { type: 'button', class: 'dismiss', onclick: () => $('#problems').replaceChildren() },
      'Dismiss');
    $('#problems').replaceChildren(el('p', {}, el('strong', {}, `Refused: ${what}.`), ` ${status}${err.message}`, ' ',
      dismiss));
  }

  function readFailed(err) {
    if (err.status === 401) {
      needToken(state.token
        ? `The token was not accepted (${err.message}): enter another.`
        : 'This daemon needs a token to read: enter a viewer or operator token.');
    } else if (err.status === 403) {
      showTokenState(`This token may not read: ${err.message}`);
    } else {
      setConnection(`cannot read the estate: ${err.message}`);
    }
  }

  function setConnection(text, live = false) {
    const node = $('#connection');
    node.textContent = live ? '● live' : `○ ${text}`;
    node.classList.toggle('live', live);
  }

  // -- the estate -----------------------------------------------------------------------------------------
  // A button's action as the daemon's authorisation names it (GET /api/v1/whoami lists those it allows).
  const ACTION_OF = {
    failover: 'transfer', failback: 'transfer', ack: 'acknowledge', 'maintenance-start': 'maintenance',
    'maintenance-end': 'maintenance', approve: 'approve', abort: 'abort',
  };

  // Whether the token may use this button on `service`: the daemon decides (and still refuses what it must);
  // while that is not known (no answer yet, an older daemon) every button is shown.
  function may(action, service) {
    const who = state.who;
    return !who || (who.actions.includes(ACTION_OF[action]) && who.services.includes(service));
  }

  async function loadWho() {
    state.who = state.token ? await api('GET', '/api/v1/whoami').catch(() => null) : null;
  }

  // A button for an action on `service`; none when the token may not use it.
  function button(action, visible, hiddenPart, handler, attrs = {}, service = null) {
    if (service !== null && !may(action, service)) return null;
    return el('button', { type: 'button', class: 'op', 'data-action': action, onclick: handler, ...attrs },
      visible[0], hiddenPart ? hidden(hiddenPart) : null, visible[1] ?? '');
  }

  function reasonText() {
    return $('#reason').value.trim() || 'via the status page';
  }

  function siteCell(service, site) {
    const health = service.sites[site];
    if (!health) return el('td', { class: 'site site-none', 'data-site': site }, '—', hidden(`not in ${site}`));
    const active = service.active === site;
    const inMaintenance = Boolean(health.maintenance_until);
    return el('td', {
      class: `site state-${health.state}${active ? ' is-active' : ''}`, 'data-site': site, title: health.reason,
    },
    active ? [el('span', { class: 'marker' }, el('span', { 'aria-hidden': 'true' }, '★'), hidden('active')), ' '] : null,
    el('span', { class: 'state' }, health.state),
    hidden(`: ${health.reason}`),
    inMaintenance ? el('span', { class: 'until' }, 'until ', timeEl(health.maintenance_until)) : null,
    health.impacted_by ? el('span', { class: 'impacted' }, `impacted by ${health.impacted_by}`
      + (health.impacted_maintenance ? ` (in maintenance: ${health.impacted_maintenance})` : '')) : null,
    viewsList(service, site),
    el('span', { class: 'operator-only cell-action' }, inMaintenance
      ? button('maintenance-end', ['End maintenance', ''], ` of ${service.name} in ${site}`,
        () => endMaintenance(service, site), { 'data-site': site }, service.name)
      : button('maintenance-start', ['Maintenance', ''], ` of ${service.name} in ${site}`,
        () => startMaintenance(service, site), { 'data-site': site }, service.name)));
  }

  // In a cluster (the API adds `views`): every vantage's view of the site, side by side, a stale one saying
  // so; their ages and reasons in the list's title (as _views renders it).
  function viewsList(service, site) {
    if (!service.views) return null;
    const views = Object.entries(service.views);
    return el('ul', { class: 'views', 'aria-label': 'as each vantage sees it', title: viewsTitle(views, site) },
      views.map(([vantage, view]) => {
        const seen = ((view.sites || {})[site] || {}).state || 'unknown';
        return el('li', { class: `view-${seen}${view.stale ? ' view-stale' : ''}`, 'data-vantage': vantage },
          `${vantage}: ${seen}${staleWords(view)}`);
      }));
  }

  // As _stale_words.
  function staleWords(view) {
    return view.stale ? ` — stale: not received for ${view.age.toFixed(1)}s (lease ${view.lease_ttl}s)` : '';
  }

  // As _views_title.
  function viewsTitle(views, site) {
    return views.map(([vantage, view]) => {
      const seen = (view.sites || {})[site] || {};
      return `${vantage}: ${seen.state || 'unknown'}, received ${view.age.toFixed(1)}s ago`
        + `${view.stale ? ' (stale)' : ''}: ${seen.reason || 'no view of this site'}`;
    }).join('\n');
  }

  // In a cluster: who holds the service's lock, and whether etcd can be reached (as _cluster_status renders it).
  function clusterStatus(service) {
    if (!service.views) return null;
    const lock = service.lock;
    const holder = lock ? `${lock.holder}${lock.held_here ? ' (this instance)' : ''}` : 'nobody';
    return [el('span', { class: 'lock' }, `lock: ${holder}`),
      service.coordination === 'down' ? el('span', { class: 'coordination' }, 'coordination unavailable') : null];
  }

  function serviceActions(service) {
    const buttons = [];
    for (const site of Object.keys(service.sites)) {
      if (site === service.active) continue;
      buttons.push(button('failover', ['Fail over', ` to ${site}`], ` ${service.name}`,
        () => transfer(service, 'failover', site), { 'data-to': site }, service.name));
    }
    if (service.active !== service.home) {
      buttons.push(button('failback', ['Fail back', ` to ${service.home}`], ` ${service.name}`,
        () => transfer(service, 'failback', service.home), { 'data-to': service.home }, service.name));
    }
    if (service.status === 'blocked' && ['run_failed', 'run_interrupted'].includes(service.guard)) {
      buttons.push(button('ack', ['Acknowledge', ''], ` the failed run of ${service.name}`,
        () => acknowledge(service), {}, service.name));
    }
    return buttons;
  }

  // The RTO and RPO under the service's name, as status_page._objectives renders them.
  function durationText(seconds) {
    for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]]) {
      if (seconds >= size && seconds % size === 0) return `${seconds / size}${unit}`;
    }
    return `${Math.round(seconds * 1000)}ms`;
  }

  function objectivesText(objectives) {
    const parts = Object.entries(objectives || {}).filter(([, value]) => value !== null && value !== undefined)
      .map(([name, value]) => `${name.toUpperCase()} ${durationText(value)}`);
    return parts.length ? el('span', { class: 'objectives' }, parts.join(', ')) : null;
  }

  function renderRow(service) {
    const labels = Object.entries(service.labels || {});
    return el('tr', {
      'data-service': service.name,
      'data-labels': labels.map(([key, value]) => `${key}=${value}`).join(' '),
      'data-status': service.status,
    },
    el('th', { scope: 'row' }, el('span', { class: 'service-name' }, service.name),
      service.description ? el('span', { class: 'description' }, service.description) : null,
      objectivesText(service.objectives)),
    el('td', { class: `status status-${service.status}` },
      el('span', { class: 'status-text' }, words(service.status)),
      service.guard ? el('span', { class: 'guard' }, `guard: ${words(service.guard)}`) : null,
      clusterStatus(service),
      el('span', { class: 'reason' }, service.reason)),
    state.sites.map((site) => siteCell(service, site)),
    el('td', { class: 'labels' }, el('ul', {}, labels.map(([key, value]) => el('li', {}, `${key}: ${value}`)))),
    el('td', { class: 'actions operator-only' }, serviceActions(service)));
  }

  const rowOf = (name) => [...$('#estate tbody').rows].find((row) => row.dataset.service === name);

  // Rows keep the order the server rendered them in (the config's); services it did not show go last.
  function ordered(services) {
    const rank = (name) => (state.order.includes(name) ? state.order.indexOf(name) : state.order.length);
    return [...services].sort((a, b) => rank(a.name) - rank(b.name) || a.name.localeCompare(b.name));
  }

  function renderEstate(unordered) {
    const services = ordered(unordered);
    state.services = new Map(services.map((service) => [service.name, service]));
    $('#estate tbody').replaceChildren(...services.map(renderRow));
    renderLabelOptions();
    applyFilter();
  }

  // A re-rendered row or run keeps the keyboard focus on the same button.
  function replaceKeepingFocus(old, fresh) {
    const focused = document.activeElement;
    const key = (node) => ['action', 'to', 'site', 'run'].map((name) => node.dataset[name] ?? '').join('|');
    const wanted = old.contains(focused) && focused.dataset && focused.dataset.action ? key(focused) : null;
    old.replaceWith(fresh);
    if (wanted === null) return;
    const match = [...fresh.querySelectorAll('button[data-action]')].find((node) => key(node) === wanted);
    if (match) match.focus();
  }

  function updateService(service) {
    const known = state.services.has(service.name);
    state.services.set(service.name, service);
    const row = renderRow(service);
    const old = rowOf(service.name);
    if (old) replaceKeepingFocus(old, row);
    else $('#estate tbody').append(row);
    if (!known) renderLabelOptions();
    applyFilter();
  }

  function removeService(name) {
    state.services.delete(name);
    const old = rowOf(name);
    if (old) old.remove();
    renderLabelOptions();
    applyFilter();
  }

  function labelPairs(service) {
    return Object.entries(service.labels || {}).map(([key, value]) => `${key}=${value}`);
  }

  function renderLabelOptions() {
    const select = $('#label-filter');
    const chosen = select.value;
    const byKey = new Map();
    for (const service of state.services.values()) {
      for (const [key, value] of Object.entries(service.labels || {})) {
        if (!byKey.has(key)) byKey.set(key, new Set());
        byKey.get(key).add(value);
      }
    }
    const groups = [...byKey.keys()].sort().map((key) => el('optgroup', { label: key },
      [...byKey.get(key)].sort().map((value) => el('option', { value: `${key}=${value}` }, `${key}: ${value}`))));
    select.replaceChildren(el('option', { value: '' }, 'every label'), ...groups);
    select.value = [...select.options].some((option) => option.value === chosen) ? chosen : '';
  }

  function applyFilter() {
    const label = $('#label-filter').value;
    const query = $('#search').value.trim().toLowerCase();
    let shown = 0;
    let total = 0;
    for (const row of $('#estate tbody').rows) {
      const service = state.services.get(row.dataset.service);
      if (!service) continue;
      total += 1;
      const pairs = labelPairs(service);
      const haystack = [service.name, service.description, ...pairs, ...pairs.map((pair) => pair.replace('=', ': '))];
      const visible = (!label || pairs.includes(label))
        && (!query || haystack.some((text) => String(text).toLowerCase().includes(query)));
      row.hidden = !visible;
      if (visible) shown += 1;
    }
    $('#filter-count').textContent = `${shown} of ${total} services shown`;
  }

  // -- runs -----------------------------------------------------------------------------------------------
  function renderActiveRun(run) {
    const steps = run.steps || [];
    const main = steps.filter((step) => step.phase === 'main');
    const done = main.filter((step) => step.ended !== null).length;
    const total = state.runbookSteps[run.runbook];
    const current = steps.length ? steps[steps.length - 1].name : '';
    const waiting = run.result === 'waiting_approval' || run.waiting_approval === true;
    const subject = `run ${run.id} of ${run.service} (${run.kind} from ${run.from} to ${run.to})`;
    const actions = [];
    if (waiting) {
      actions.push(button('approve', ['Approve', ''], ` ${subject}`, () => act(`Approve ${subject}`, 'POST',
        `/api/v1/runs/${run.id}/approve`, { reason: reasonText() }, () => `Run ${run.id} approved.`),
      { 'data-run': run.id }, run.service));
    }
    actions.push(button('abort', ['Abort', ''], ` ${subject}`, () => act(
      `Abort ${subject}; the current step is cancelled and the rollback runs`, 'POST',
      `/api/v1/runs/${run.id}/abort`, { reason: reasonText() }, () => `Run ${run.id}: abort requested.`),
    { 'data-run': run.id }, run.service));
    return el('article', { class: `run${waiting ? ' waiting' : ''}`, 'data-run': run.id },
      el('h4', {}, `Run ${run.id}: ${run.service} ${run.kind} ${run.from} → ${run.to}`),
      el('p', { class: 'run-state' }, el('strong', {}, waiting ? 'waiting for approval' : 'running'),
        `, ${total ? `step ${main.length} of ${total}` : `step ${main.length}`}${current ? `: ${current}` : ''} `,
        total ? el('progress', { max: total, value: done, 'aria-hidden': 'true' }) : null),
      el('ol', { class: 'steps' }, steps.map((step) => el('li', { class: `outcome-${step.outcome}` },
        `${step.name} — ${words(step.outcome)}`))),
      el('p', { class: 'run-actions operator-only' }, actions));
  }

  function renderRecentRun(run) {
    return el('tr', { 'data-run': run.id },
      el('td', {}, String(run.id)), el('td', {}, run.service),
      el('td', {}, `${run.kind}${run.dry_run ? ' (dry run)' : ''}`), el('td', {}, `${run.from} → ${run.to}`),
      el('td', {}, run.trigger), el('td', {}, timeEl(run.started)),
      el('td', { class: `result result-${run.result}` }, words(run.result)));
  }

  async function refreshRuns() {
    const { runs } = await api('GET', `/api/v1/runs?limit=${RUNS_SHOWN}`);
    const active = await Promise.all(runs.filter((run) => IN_PROGRESS.has(run.result))
      .map((run) => api('GET', `/api/v1/runs/${run.id}`).catch(() => run)));
    const box = $('#active-runs');
    const fresh = el('div', { id: 'active-runs' }, active.length ? active.map(renderActiveRun)
      : el('p', { class: 'empty' }, 'No runbook is running.'));
    replaceKeepingFocus(box, fresh);
    $('#recent-runs tbody').replaceChildren(...runs.map(renderRecentRun));
  }

  // -- events ---------------------------------------------------------------------------------------------
  function renderEvent(kind, event) {
    const where = [event.service, event.site].filter(Boolean).join(' in ');
    return el('li', { 'data-id': event.id }, timeEl(event.at), ' ', el('span', { class: 'kind' }, words(kind)), ' ',
      el('span', { class: 'subject' }, where), ' ', el('span', { class: 'reason' }, event.reason));
  }

  function addEvent(kind, event) {
    if (event.id) {
      if (state.eventIds.has(event.id)) return false;
      state.eventIds.add(event.id);
      state.lastEventId = Math.max(state.lastEventId, event.id);
    }
    const list = $('#events');
    list.prepend(renderEvent(kind, event));
    while (list.children.length > EVENTS_SHOWN) {
      const last = list.lastElementChild;
      state.eventIds.delete(Number(last.dataset.id));
      last.remove();
    }
    return true;
  }

  function describe(kind, event) {
    switch (kind) {
      case 'site_transition':
        return `${event.service} in ${event.site} is now ${event.to} (was ${event.from}): ${event.reason}`;
      case 'service_status':
        return `${event.service} is now ${words(event.to)}: ${event.reason}`;
      case 'active_changed':
        return `${event.site} is now the active site of ${event.service} (${event.reason})`;
      case 'run_started':
        return `Run ${event.run_id} of ${event.service} started, ${event.from} → ${event.to}: ${event.reason}`;
      case 'approval_waiting':
      case 'run_finished':
      case 'maintenance_started':
      case 'maintenance_ended':
      case 'acknowledged':
        return `${event.service}: ${event.reason}`;
      case 'site_lost':
      case 'site_recovered':
        return event.reason;
      default:
        return null;
    }
  }

  // -- keeping current ------------------------------------------------------------------------------------
  // One refresh per key at a time; a request during a refresh repeats it once afterwards.
  function coalesce(refresh) {
    const running = new Set();
    const again = new Set();
    return async (key = '') => {
      if (running.has(key)) {
        again.add(key);
        return;
      }
      running.add(key);
      try {
        do {
          again.delete(key);
          await refresh(key);
        } while (again.has(key));
      } catch (err) {
        readFailed(err);
      } finally {
        running.delete(key);
      }
    };
  }

  const refreshService = coalesce(async (name) => {
    try {
      updateService(await api('GET', `/api/v1/services/${enc(name)}`));
    } catch (err) {
      if (err.status !== 404) throw err;
      removeService(name); // gone in a reload
    }
  });
  const refreshRunsSoon = coalesce(refreshRuns);

  // Recovery plans: the server renders the section (bcd/web/plan_page.py); a plan event fetches it again.
  const refreshPlans = coalesce(async () => {
    const response = await fetch('/', { headers: authHeaders({ Accept: 'text/html' }), cache: 'no-store' });
    if (!response.ok) throw new ApiError(response.status, response.statusText, 'the status page did not load');
    const page = new DOMParser().parseFromString(await response.text(), 'text/html');
    const fresh = page.querySelector('#plans');
    const old = $('#plans');
    if (fresh && old) old.replaceWith(document.importNode(fresh, true));
  });

  // In a cluster, another vantage's view can change with no event here: re-read those services now and then.
  const CLUSTER_REFRESH_MS = 2000;
  function refreshClusterViews() {
    if (document.hidden) return;
    for (const service of state.services.values()) {
      if (service.views) refreshService(service.name);
    }
  }
  const refreshEstate = coalesce(async () => renderEstate((await api('GET', '/api/v1/services')).services));

  // A site of a service going down or up changes what its dependents show as "impacted by".
  function dependentsOf(name) {
    const found = new Set([name]);
    for (let grew = true; grew;) {
      grew = false;
      for (const service of state.services.values()) {
        if (!found.has(service.name) && (service.depends_on || []).some((need) => found.has(need))) {
          found.add(service.name);
          grew = true;
        }
      }
    }
    found.delete(name);
    return found;
  }

  function onEvent(kind, event) {
    if (!addEvent(kind, event)) return;
    if (event.service) refreshService(event.service);
    if (kind === 'site_transition' && event.service) dependentsOf(event.service).forEach(refreshService);
    if (RUN_EVENTS.has(kind)) refreshRunsSoon();
    if (kind.startsWith('plan_')) refreshPlans();
    const text = describe(kind, event);
    if (text) announce(text);
  }

  async function loadAll() {
    try {
      const [services, events] = await Promise.all([
        api('GET', '/api/v1/services'), api('GET', `/api/v1/events?tail=${EVENTS_SHOWN}`), loadWho(),
      ]);
      renderEstate(services.services);
      state.eventIds.clear();
      $('#events').replaceChildren();
      for (const event of events.events) addEvent(event.kind, event);
      await refreshRuns();
      refreshPlans();
      return true;
    } catch (err) {
      readFailed(err);
      return false;
    }
  }

  function parseBlock(block) {
    const message = { id: null, event: 'message', data: [], comment: null };
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) {
        message.comment = line.slice(1).trim();
        continue;
      }
      const colon = line.indexOf(':');
      const field = colon === -1 ? line : line.slice(0, colon);
      const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'data') message.data.push(value);
      else if (field === 'event') message.event = value;
      else if (field === 'id') message.id = value;
    }
    return message;
  }

  async function readStream(response, controller) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let idle = setTimeout(() => controller.abort(), IDLE_LIMIT);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        clearTimeout(idle);
        idle = setTimeout(() => controller.abort(), IDLE_LIMIT);
        buffer += value.replaceAll('\r\n', '\n');
        let end = buffer.indexOf('\n\n');
        while (end !== -1) {
          const message = parseBlock(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (message.comment === 'connected') {
            setConnection('', true);
            refreshEstate();
            refreshRunsSoon();
          }
          if (message.data.length) {
            try {
              onEvent(message.event, JSON.parse(message.data.join('\n')));
            } catch (err) {
              console.warn('bcd: an event could not be shown', err);
            }
          }
          end = buffer.indexOf('\n\n');
        }
      }
    } finally {
      clearTimeout(idle);
    }
  }

  async function follow() {
    let backoff = 1000;
    for (;;) {
      const controller = new AbortController();
      state.stream = controller;
      try {
        const headers = authHeaders({ Accept: 'text/event-stream' });
        if (state.lastEventId) headers['Last-Event-ID'] = String(state.lastEventId);
        // fetch, not EventSource: EventSource cannot send the Authorization header
        const response = await fetch('/api/v1/events/stream', { headers, cache: 'no-store', signal: controller.signal });
        if (response.status === 401 || response.status === 403) {
          readFailed(new ApiError(response.status, 'Unauthorized', 'a token is needed to follow events'));
          await tokenChanged();
          continue;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        backoff = 1000;
        await readStream(response, controller);
      } catch (err) {
        if (!controller.signal.aborted) console.warn('bcd: event stream lost', err);
      }
      if (controller.signal.aborted && state.stream !== controller) continue; // replaced: reconnect at once
      setConnection('reconnecting…');
      await delay(backoff);
      backoff = Math.min(backoff * 2, 15000);
    }
  }

  // -- operator actions -----------------------------------------------------------------------------------
  async function act(what, method, path, body, success) {
    $('#problems').replaceChildren();
    if (!state.token) {
      needToken(`Enter an operator token first (to ${what.charAt(0).toLowerCase()}${what.slice(1)}).`);
      return;
    }
    const reason = body && body.reason ? `\n\nReason: ${body.reason}` : '';
    if (!window.confirm(`${what}?${reason}`)) {
      announce(`Cancelled: ${what}.`);
      return;
    }
    try {
      const data = await api(method, path, body);
      announce(success(data));
    } catch (err) {
      showProblem(what, err);
      if (err.status === 401) needToken(`The token was not accepted (${err.message}).`);
    }
    refreshRunsSoon();
  }

  function transfer(service, kind, to) {
    const force = $('#force').checked;
    const verb = kind === 'failover' ? 'Fail over' : 'Fail back';
    act(`${verb} ${service.name} from ${service.active} to ${to}${force ? ', forced' : ''}`, 'POST',
      `/api/v1/services/${enc(service.name)}/${kind}`, { to, reason: reasonText(), force },
      (run) => `Run ${run.id} started: ${kind} of ${service.name} from ${run.from} to ${run.to}.`)
      .then(() => refreshService(service.name));
  }

  function acknowledge(service) {
    act(`Acknowledge the failed run of ${service.name} (active site ${service.active})`, 'POST',
      `/api/v1/services/${enc(service.name)}/ack`, { reason: reasonText() },
      (data) => `Acknowledged ${service.name}: run ${data.acknowledged.join(', ') || 'none'}.`)
      .then(() => refreshService(service.name));
  }

  function startMaintenance(service, site) {
    const duration = $('#maintenance-duration').value;
    act(`Put ${service.name} in ${site} into maintenance for ${duration}`, 'POST',
      `/api/v1/services/${enc(service.name)}/maintenance`, { site, duration, reason: reasonText() },
      (data) => `${service.name} in ${site} is in maintenance until ${formatTime(new Date(data.until * 1000))}.`)
      .then(() => refreshService(service.name));
  }

  function endMaintenance(service, site) {
    act(`End the maintenance of ${service.name} in ${site}`, 'DELETE',
      `/api/v1/services/${enc(service.name)}/maintenance?site=${enc(site)}`, undefined,
      () => `The maintenance of ${service.name} in ${site} has ended.`)
      .then(() => refreshService(service.name));
  }

  // -- start ----------------------------------------------------------------------------------------------
  function start() {
    document.documentElement.classList.replace('no-js', 'js');
    state.sites = [...document.querySelectorAll('#estate thead th[data-site]')].map((th) => th.dataset.site);
    state.order = [...document.querySelectorAll('#estate tbody tr[data-service]')].map((tr) => tr.dataset.service);
    try {
      state.runbookSteps = JSON.parse($('#runs').dataset.runbookSteps || '{}');
    } catch {
      state.runbookSteps = {};
    }
    localiseTimes();
    $('#token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const input = $('#token');
      const token = input.value.trim();
      input.value = '';
      if (token) setToken(token);
    });
    $('#forget-token').addEventListener('click', () => setToken(null));
    $('#label-filter').addEventListener('change', applyFilter);
    $('#search').addEventListener('input', applyFilter);
    state.token = readStoredToken();
    showTokenState(state.token ? 'A token is set for this tab.' : 'No token: read only.');
    setConnection('connecting…');
    loadAll().then(follow);
    setInterval(refreshClusterViews, CLUSTER_REFRESH_MS);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
