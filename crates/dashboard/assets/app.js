// Hypertensor dashboard: network coverage, chain state and a chat playground.
// Plain ES2020, no dependencies. Served at /app.js next to /index.html.
'use strict';

const POLL_MS = 2000;
const VIEWS = ['network', 'chain', 'playground'];
const SVG_NS = 'http://www.w3.org/2000/svg';
// Colours for node ids; the same id keeps the same colour in every chart.
const PALETTE = ['#4e79a7', '#f28e2b', '#e15759', '#59a14f', '#b07aa1',
  '#76b7b2', '#edc948', '#ff9da7', '#9c755f', '#7f7f7f'];

const $ = (selector) => document.querySelector(selector);

const state = {
  view: 'network',
  status: null,        // last /v1/status answer
  nodeColors: new Map(),
};

// ---------------------------------------------------------------- helpers

/** The server answered with a non-2xx status. */
class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** The request never got an answer (server down, network error). */
class Unreachable extends Error {}

/** Builds an ApiError from a failed response, preferring OpenAI's error shape. */
async function apiError(response) {
  const text = await response.text().catch((err) => `(unreadable body: ${err.message})`);
  let message = text.trim() || response.statusText || 'no error message';
  try {
    const body = JSON.parse(text);
    if (body?.error?.message) message = body.error.message;
  } catch {
    // Not JSON: the raw text is the best message we have.
  }
  return new ApiError(message, response.status);
}

/** fetch() wrapper: resolves to parsed JSON, throws ApiError / Unreachable. */
async function request(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { headers: { Accept: 'application/json' }, ...options });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    if (err.name === 'TimeoutError') {
      throw new Unreachable(`no answer in ${POLL_TIMEOUT_MS / 1000} s`);
    }
    throw new Unreachable(err.message);
  }
  if (!response.ok) throw await apiError(response);
  return response;
}

/** Longest a poll waits for its answer: a hung read must not stop the page. */
const POLL_TIMEOUT_MS = 10000;

const getJson = async (path) =>
  (await request(path, { signal: AbortSignal.timeout(POLL_TIMEOUT_MS) })).json();

/** Creates an HTML element; attributes with null/undefined values are skipped. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  appendChildren(node, children);
  return node;
}

/** Creates an SVG element (children may be nodes or text). */
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  appendChildren(node, children);
  return node;
}

function appendChildren(node, children) {
  for (const child of children) {
    if (child != null) node.append(child instanceof Node ? child : String(child));
  }
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value != null) node.setAttribute(key, value);
  }
}

/** Numbers with at most `digits` decimals, no thousands separator; null → "—". */
function fmt(value, digits = 4) {
  if (value == null || !Number.isFinite(Number(value))) return '—';
  return Number(value).toLocaleString('en-US', { maximumFractionDigits: digits, useGrouping: false });
}

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
const shortPeer = (id) => (id && id.length > 16 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id ?? '—');
const clock = (date) => [date.getHours(), date.getMinutes(), date.getSeconds()]
  .map((n) => String(n).padStart(2, '0')).join(':');

/**
 * Shows `message` in an error box, or hides the box when message is null.
 * `notice` styles an expected answer (e.g. "no chain") less alarmingly.
 */
function showError(selector, message, notice = false) {
  const box = $(selector);
  box.textContent = message ?? '';
  box.hidden = message == null;
  box.classList.toggle('notice', notice);
}

/** Replaces a table's rows; shows its "empty" note when there are none. */
function fillTable(selector, rows, emptySelector) {
  $(`${selector} tbody`).replaceChildren(...rows);
  $(emptySelector).hidden = rows.length > 0;
}

function colorFor(id) {
  const key = String(id);
  if (!state.nodeColors.has(key)) {
    state.nodeColors.set(key, PALETTE[state.nodeColors.size % PALETTE.length]);
  }
  return state.nodeColors.get(key);
}

// ---------------------------------------------------------------- header

/** Header: model and update time, or `problem` (a message) when there is one. */
function renderStatus(problem) {
  const box = $('#status');
  if (problem) {
    box.replaceChildren(el('span', { class: 'error', role: 'alert' }, problem));
    return;
  }
  const s = state.status;
  box.replaceChildren(
    el('strong', {}, s.model),
    ` · ${s.backend} · ${plural(s.blocks, 'block')} · v${s.version}`,
    el('span', { class: 'updated' }, ` · updated ${clock(new Date())}`),
  );
}

// ---------------------------------------------------------------- network view

/** Draws one bar per block; `label(n)` describes who serves a block. */
function renderCoverage(counts, label) {
  const box = $('#coverage');
  const max = Math.max(1, ...counts);
  const covered = counts.filter((n) => n > 0).length;
  box.dataset.blocks = counts.length;
  box.dataset.covered = covered;
  box.replaceChildren(...counts.map((n, i) => {
    const fill = el('span', { class: 'fill' });
    fill.style.height = `${(100 * n) / max}%`;
    return el('div', {
      class: n > 0 ? 'block covered' : 'block',
      'data-block': i,
      'data-servers': n,
      title: `block ${i}: ${label(n)}`,
    }, fill, el('span', { class: 'count' }, n));
  }));
  return covered;
}

function renderSwarm(swarm) {
  $('#local-note').hidden = true;
  const covered = renderCoverage(swarm.coverage, (n) => plural(n, 'server'));
  $('#coverage-summary').textContent = `${covered} of ${swarm.blocks} blocks covered `
    + (swarm.complete ? '— a route exists' : '— no complete route');
  $('#coverage-summary').className = swarm.complete ? 'ok' : 'bad';

  const servers = [...swarm.servers].sort((a, b) => a.start - b.start || a.end - b.end);
  fillTable('#servers', servers.map((s) => el('tr', { 'data-peer': s.peer_id, class: s.state },
    el('td', {}, el('code', { title: s.peer_id }, shortPeer(s.peer_id))),
    el('td', {}, `${s.start}–${s.end}`),
    el('td', {}, el('span', { class: `badge ${s.state}` }, s.state)),
    el('td', { class: 'num' }, Number(s.throughput).toFixed(1)),
    el('td', { class: 'num' }, s.latency_ms == null ? '—' : fmt(s.latency_ms, 2)),
    el('td', { class: 'num' }, fmt(s.free_cache_tokens, 0)),
    el('td', { class: 'num' }, fmt(s.sessions, 0)),
    el('td', {}, s.version),
    el('td', {}, s.relayed ? 'relayed' : 'direct'),
  )), '#servers-empty');
}

/** A local-model server has no swarm: this process holds every block. */
function renderLocal(blocks) {
  const note = $('#local-note');
  note.textContent = `This server runs the whole model locally (${plural(blocks, 'block')}).`;
  note.hidden = false;
  renderCoverage(Array(blocks).fill(1), () => 'this process');
  $('#coverage-summary').textContent = `${blocks} of ${blocks} blocks covered — served by this process`;
  $('#coverage-summary').className = 'ok';
  fillTable('#servers', [el('tr', { 'data-peer': 'local', class: 'local' },
    el('td', {}, 'this process'), el('td', {}, `0–${blocks}`),
    el('td', {}, el('span', { class: 'badge local' }, 'local')),
    ...Array(4).fill().map(() => el('td', { class: 'num' }, '—')),
    el('td', {}, state.status?.version ?? '—'), el('td', {}, '—'),
  )], '#servers-empty');
}

async function refreshNetwork() {
  if (state.status?.backend === 'local') {
    showError('#network-error', null);
    renderLocal(state.status.blocks);
    return;
  }
  try {
    renderSwarm(await getJson('/v1/swarm'));
    showError('#network-error', null);
  } catch (err) {
    if (err instanceof Unreachable) throw err; // reported in the header
    if (err instanceof ApiError && (err.status === 404 || err.status === 400)) {
      // Status not loaded yet: a local model's server has no swarm.
      showError('#network-error', null);
      renderLocal(state.status?.blocks ?? 0);
      return;
    }
    showError('#network-error', `cannot load /v1/swarm: ${err.message}`);
  }
}

// ---------------------------------------------------------------- chain view

function renderChain(c) {
  const stat = (label, value) => el('div', { class: 'stat' },
    el('span', { class: 'label' }, label), ' ', el('strong', {}, value));
  $('#chain-head').replaceChildren(
    stat('finalized', c.finalized), ' ',
    stat('best', c.best), ' ',
    stat('finality', `lag ${plural(c.finality_lag, 'block')}`),
  );
  $('#subnet').textContent = c.subnet
    ? `subnet ${c.subnet.id} “${c.subnet.name}” · ${c.subnet.state}` : 'no subnet';

  const { number, length, block_in_epoch: block } = c.epoch;
  const text = `epoch ${number}: block ${block} of ${length}`;
  const bar = $('#epoch-progress');
  bar.setAttribute('max', length);
  bar.setAttribute('value', block);
  bar.textContent = text;
  $('#epoch-label').textContent = text;
  $('#elected').textContent = c.elected ?? 'none';

  // Seed colours in node-id order so they do not depend on chart data order.
  [...c.nodes].sort((a, b) => a.id - b.id).forEach((n) => colorFor(n.id));

  const epochs = c.epochs ?? [];
  fillTable('#epochs', epochs.map((e) => el('tr', { 'data-epoch': e.epoch },
    el('td', {}, e.epoch),
    el('td', {}, e.elected ?? 'none'),
    el('td', {}, `${e.attesters} / ${e.snapshot} (${Math.round(100 * (e.ratio ?? 0))}%)`),
    el('td', {}, el('span', { class: `badge ${e.outcome ?? 'none'}` }, e.outcome ?? '—')),
  )), '#epochs-empty');

  fillTable('#nodes', c.nodes.map((n) => {
    const swatch = el('span', { class: 'swatch', 'aria-hidden': 'true' });
    swatch.style.background = colorFor(n.id);
    return el('tr', {
      'data-node': n.id,
      class: n.id === c.elected ? 'elected' : null,
      title: n.id === c.elected ? 'elected for this epoch' : null,
    },
    el('td', {}, swatch, n.id),
    el('td', {}, el('code', { title: n.peer_id }, shortPeer(n.peer_id))),
    el('td', {}, n.class),
    el('td', { class: 'num' }, fmt(n.stake)),
    el('td', { class: 'num' }, fmt(n.balance)),
    el('td', { class: 'num' }, fmt(n.penalties)));
  }), '#nodes-empty');

  // Nodes that appear in any settled epoch's scores or rewards.
  const ids = [...new Set(epochs.flatMap((e) => [
    ...Object.keys(e.scores ?? {}), ...Object.keys(e.rewards ?? {})]))]
    .sort((a, b) => Number(a) - Number(b));
  drawChart($('#score-chart'), epochs, ids, (e) => e.scores, 'line');
  drawChart($('#reward-chart'), epochs, ids, (e) => e.rewards, 'bar');
  for (const legend of ['#score-legend', '#reward-legend']) {
    $(legend).replaceChildren(...ids.map((id) => {
      const swatch = el('span', { class: 'swatch', 'aria-hidden': 'true' });
      swatch.style.background = colorFor(id);
      return el('li', { 'data-node': id }, swatch, `node ${id}`);
    }));
  }
}

async function refreshChain() {
  try {
    renderChain(await getJson('/v1/chain'));
    showError('#chain-error', null);
    $('#chain-body').hidden = false;
  } catch (err) {
    if (err instanceof Unreachable) throw err;
    // 404: no chain at all, nothing to show; other errors keep the last data.
    if (err instanceof ApiError && err.status === 404) {
      $('#chain-body').hidden = true;
      showError('#chain-error', err.message, true);
    } else {
      showError('#chain-error', `cannot load /v1/chain: ${err.message}`);
    }
  }
}

// ---------------------------------------------------------------- charts

const CHART = { width: 480, height: 240, left: 46, right: 10, top: 12, bottom: 30 };

/** A round axis maximum and tick step (about 4 ticks) for values up to `max`. */
function niceScale(max) {
  if (!(max > 0)) return { top: 1, step: 0.25 };
  const rough = max / 4;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= rough);
  return { top: Math.ceil(max / step - 1e-9) * step, step };
}

/**
 * Draws one value per (epoch, node) into `chart`: as lines ('line') or
 * grouped bars ('bar'). `pick(epoch)` returns an object keyed by node id.
 */
function drawChart(chart, epochs, ids, pick, kind) {
  const { width, height, left, right, top, bottom } = CHART;
  chart.dataset.epochs = epochs.map((e) => e.epoch).join(',');
  if (epochs.length === 0) {
    chart.replaceChildren(svg('text', {
      x: width / 2, y: height / 2, class: 'empty', 'text-anchor': 'middle',
    }, 'no settled epoch yet'));
    return;
  }
  const value = (e, id) => {
    const v = pick(e)?.[id];
    return typeof v === 'number' && Number.isFinite(v) ? v : null;
  };
  const all = epochs.flatMap((e) => ids.map((id) => value(e, id))).filter((v) => v != null);
  const scale = niceScale(Math.max(0, ...all));
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const band = plotW / epochs.length;
  const x = (i) => left + band * (i + 0.5);
  const y = (v) => top + plotH * (1 - v / scale.top);
  const r = (n) => n.toFixed(1);

  // Axes: horizontal grid lines with value labels, epoch labels below.
  const axes = svg('g', { class: 'axes' });
  for (let k = 0; k * scale.step <= scale.top + 1e-9; k += 1) {
    const v = k * scale.step;
    axes.append(
      svg('line', { x1: left, x2: width - right, y1: r(y(v)), y2: r(y(v)), class: k ? 'grid' : 'axis' }),
      svg('text', { x: left - 6, y: r(y(v)), 'text-anchor': 'end', 'dominant-baseline': 'middle' }, fmt(v, 3)),
    );
  }
  const labelY = height - bottom + 18;
  // Label every epoch if they fit (about 9 units per digit), else every k-th.
  const digits = Math.max(...epochs.map((e) => String(e.epoch).length));
  const every = Math.ceil((digits * 9 + 4) / band);
  epochs.forEach((e, i) => {
    if ((epochs.length - 1 - i) % every === 0) { // always label the newest
      axes.append(svg('text', { x: r(x(i)), y: labelY, 'text-anchor': 'middle' }, e.epoch));
    }
  });
  axes.append(svg('text', { x: left - 6, y: labelY, 'text-anchor': 'end', class: 'axis-title' }, 'epoch'));
  chart.replaceChildren(axes);

  const tip = (id, e, v) => svg('title', {}, `node ${id}, epoch ${e.epoch}: ${fmt(v)}`);
  if (kind === 'line') {
    for (const id of ids) {
      const color = colorFor(id);
      let path = '';
      let penDown = false; // a missing value breaks the line
      const dots = [];
      epochs.forEach((e, i) => {
        const v = value(e, id);
        if (v == null) { penDown = false; return; }
        path += `${penDown ? 'L' : 'M'}${r(x(i))},${r(y(v))}`;
        penDown = true;
        dots.push(svg('circle', {
          cx: r(x(i)), cy: r(y(v)), r: 4, fill: color, 'data-epoch': e.epoch, 'data-node': id,
        }, tip(id, e, v)));
      });
      chart.append(svg('path', { d: path, stroke: color, class: 'line', 'data-node': id }), ...dots);
    }
  } else {
    const group = band * 0.8;
    const barW = group / Math.max(1, ids.length);
    epochs.forEach((e, i) => ids.forEach((id, j) => {
      const v = value(e, id);
      if (v == null) return;
      const h = Math.max(1, y(0) - y(v)); // zero still shows as a thin mark
      chart.append(svg('rect', {
        x: r(x(i) - group / 2 + j * barW), y: r(y(0) - h), width: r(Math.max(1, barW - 1)), height: r(h),
        fill: colorFor(id), 'data-epoch': e.epoch, 'data-node': id,
      }, tip(id, e, v)));
    }));
  }
}

// ---------------------------------------------------------------- polling

let pollTimer = 0;
let polling = false;
let pollAgain = false;

/** One poll round: status (until known) plus the visible view's endpoint. */
async function refresh() {
  let problem = null;
  let unreachable = false;
  const fail = (err, what) => {
    unreachable = err instanceof Unreachable;
    problem = unreachable ? `cannot reach the server: ${err.message}`
      : `cannot load ${what}: ${err.message}${err.status ? ` (HTTP ${err.status})` : ''}`;
  };
  if (!state.status) {
    try {
      state.status = await getJson('/v1/status');
    } catch (err) {
      fail(err, 'the server status');
    }
  }
  const load = { network: refreshNetwork, chain: refreshChain }[state.view];
  if (load && !unreachable) {
    try {
      await load();
    } catch (err) {
      fail(err, `the ${state.view} view`); // only Unreachable gets here
    }
  }
  // Grey out data that could not be refreshed.
  document.body.classList.toggle('stale', unreachable);
  renderStatus(problem);
}

/** Runs a poll round now, then every POLL_MS; rounds never overlap. */
async function poll() {
  clearTimeout(pollTimer);
  if (polling) {
    pollAgain = true; // e.g. the view changed mid-round: go again right after
    return;
  }
  polling = true;
  try {
    await refresh();
  } catch (err) {
    // A bug in rendering: say it rather than stop polling silently.
    console.error(err);
    renderStatus(`dashboard error: ${err.message}`);
  } finally {
    polling = false;
    pollTimer = setTimeout(poll, pollAgain ? 0 : POLL_MS);
    pollAgain = false;
  }
}

// ---------------------------------------------------------------- tabs

function viewFromHash() {
  const name = location.hash.slice(1);
  return VIEWS.includes(name) ? name : 'network';
}

function showView(name) {
  state.view = name;
  for (const view of VIEWS) $(`#view-${view}`).hidden = view !== name;
  for (const tab of document.querySelectorAll('nav [data-view]')) {
    const active = tab.dataset.view === name;
    tab.classList.toggle('active', active);
    tab.setAttribute('aria-current', active ? 'page' : 'false');
  }
}

// ---------------------------------------------------------------- playground

const chat = {
  messages: [],      // completed user/assistant turns sent as context
  controller: null,  // AbortController of the running request
};

function addMessage(kind, text, attrs = {}) {
  const box = $('#transcript');
  // Keep following the output only if the reader is already at the bottom.
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const node = el('div', { class: `message ${kind}`, ...attrs }, text);
  box.append(node);
  if (atBottom) box.scrollTop = box.scrollHeight;
  return node;
}

function addError(err) {
  let text = err.message;
  if (err instanceof ApiError) text += ` (HTTP ${err.status})`;
  if (err instanceof Unreachable) text = `cannot reach the server: ${err.message}`;
  addMessage('error', text, { role: 'alert' });
}

function setBusy(busy) {
  $('#send').disabled = busy;
  $('#send').textContent = busy ? 'Generating…' : 'Send';
}

/** Sampling fields as numbers; seed and stop only when set. */
function readParams() {
  const number = (selector) => {
    const input = $(selector);
    if (!Number.isFinite(input.valueAsNumber)) {
      throw new Error(`${input.labels[0]?.textContent.trim() ?? selector} must be a number`);
    }
    return input.valueAsNumber;
  };
  const params = {
    temperature: number('#temperature'),
    top_p: number('#top-p'),
    max_tokens: number('#max-tokens'),
  };
  if ($('#seed').value.trim() !== '') params.seed = number('#seed');
  const stop = $('#stop').value;
  // "\n" and "\t" typed literally mean newline and tab.
  if (stop.trim() !== '') params.stop = [stop.replace(/\\n/g, '\n').replace(/\\t/g, '\t')];
  return params;
}

async function modelId() {
  if (!state.status) state.status = await getJson('/v1/status').catch(() => null);
  if (state.status?.model) return state.status.model;
  const models = await getJson('/v1/models');
  const id = models?.data?.[0]?.id;
  if (!id) throw new Error('the server lists no model');
  return id;
}

/**
 * Reads an SSE body, appending each delta to `target`. Resolves at
 * `data: [DONE]`; throws on an `error` object or a truncated stream.
 */
async function readStream(response, target) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let chunks = 0;

  // Handles one event (lines up to a blank line); true when the stream is done.
  const handle = (block) => {
    const data = block.split(/\r?\n/)
      .filter((line) => line.startsWith('data:'))
      .map((line) => line.slice(5).replace(/^ /, ''))
      .join('\n');
    if (data === '') return false; // comment or keep-alive
    if (data.trim() === '[DONE]') return true;
    const event = JSON.parse(data);
    if (event.error) throw new Error(event.error.message ?? JSON.stringify(event.error));
    const choice = event.choices?.[0];
    const content = choice?.delta?.content;
    if (typeof content === 'string' && content !== '') {
      target.append(content);
      chunks += 1;
      target.dataset.chunks = chunks;
      const box = $('#transcript');
      if (box.scrollHeight - box.scrollTop - box.clientHeight < 80) box.scrollTop = box.scrollHeight;
    }
    if (choice?.finish_reason) target.dataset.finishReason = choice.finish_reason;
    return false;
  };

  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value, { stream: !done });
    let match;
    while ((match = /\r?\n\r?\n/.exec(buffer))) {
      const block = buffer.slice(0, match.index);
      buffer = buffer.slice(match.index + match[0].length);
      if (handle(block)) return;
    }
    if (done) break;
  }
  if (buffer.trim() !== '' && handle(buffer)) return;
  throw new Error('the response stream ended before [DONE]');
}

async function send(event) {
  event.preventDefault();
  if (chat.controller) return; // one request at a time
  const prompt = $('#prompt');
  const text = prompt.value.trim();
  if (!text) {
    prompt.focus();
    return;
  }
  let params;
  try {
    params = readParams();
  } catch (err) {
    addError(err);
    return;
  }

  const userTurn = { role: 'user', content: text };
  const system = $('#system').value.trim();
  const messages = [
    ...(system ? [{ role: 'system', content: system }] : []),
    ...chat.messages,
    userTurn,
  ];
  const userEl = addMessage('user', text);
  const reply = addMessage('assistant', '', { 'data-streaming': 'true', 'data-chunks': '0' });
  prompt.value = '';
  const controller = new AbortController();
  chat.controller = controller;
  setBusy(true);

  try {
    const model = await modelId();
    const response = await request('/v1/chat/completions', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream' },
      body: JSON.stringify({ model, messages, stream: true, ...params }),
      signal: controller.signal,
    });
    await readStream(response, reply);
    chat.messages.push(userTurn, { role: 'assistant', content: reply.textContent });
  } catch (err) {
    if (controller.signal.aborted) return; // reset by the user; transcript is gone
    // The failed turn is not part of the conversation; offer it back for a retry.
    userEl.classList.add('failed');
    if (reply.textContent === '') reply.remove(); else reply.classList.add('failed');
    addError(err);
    if (prompt.value === '') prompt.value = text;
  } finally {
    reply.dataset.streaming = 'false';
    if (chat.controller === controller) {
      chat.controller = null;
      setBusy(false);
    }
  }
}

function resetChat() {
  chat.controller?.abort();
  chat.controller = null;
  chat.messages = [];
  $('#transcript').replaceChildren();
  setBusy(false);
  $('#prompt').focus();
}

// ---------------------------------------------------------------- start

function start() {
  for (const tab of document.querySelectorAll('nav [data-view]')) {
    tab.addEventListener('click', () => {
      location.hash = tab.dataset.view; // the hashchange handler switches the view
    });
  }
  window.addEventListener('hashchange', () => {
    showView(viewFromHash());
    poll();
  });

  $('#chat-form').addEventListener('submit', send);
  $('#reset').addEventListener('click', resetChat);
  $('#prompt').addEventListener('keydown', (event) => {
    // Enter sends, Shift+Enter inserts a newline (IME composition untouched).
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!$('#send').disabled) $('#chat-form').requestSubmit($('#send'));
    }
  });

  showView(viewFromHash());
  poll();
}

start();
