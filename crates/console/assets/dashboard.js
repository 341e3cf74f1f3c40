// The dashboard: every virtual service's status with its reason and rates, the selected
// one's servers (health, reason, since when, rates) and live charts, and the verdicts.
// Everything moves with the live stream; nothing reloads.

import { api } from './api.js';
import { h, clear, badge, fmtNumber, fmtBytes, fmtTime } from './dom.js';
import { live, subscribe, latest, serviceRate, serverRate } from './live.js';

const SEVERITY = { down: 0, degraded: 1, unknown: 2, up: 3, disabled: 4 };
const COLOURS = ['#1f5fbf', '#d9480f', '#2b8a3e', '#7048e8', '#c2255c', '#0b7285', '#5c940d', '#e67700'];
const METRICS = [
  { key: 0, title: 'Packets per second', fmt: fmtNumber, id: 'packets' },
  { key: 1, title: 'Bytes per second', fmt: fmtBytes, id: 'bytes' },
  { key: 2, title: 'New flows per second', fmt: fmtNumber, id: 'flows' },
];

let selected = null; // the virtual service whose servers and charts are shown

export async function dashboardPage(main, ctx) {
  const vsList = await api('GET', '/api/v1/virtual-services');
  const ports = new Map(vsList.items.map(({ object: v }) => [v.name,
    v.services.map((s) => (s.port_range_end ? `${s.port}-${s.port_range_end}` : s.port)).join(',')]));

  const summary = h('p', { class: 'summary-line', 'aria-live': 'polite' });
  const filter = h('input', { type: 'search', id: 'dash-filter', placeholder: 'name, VIP, pool or state', autocomplete: 'off' });
  const vsBody = h('tbody');
  // Fixed column widths: the browser lays out a thousand rows without measuring each cell.
  const vsTable = h('table', { class: 'list dash-vs' },
    h('colgroup', {}, ['5.4rem', '18%', '17%', '11%', 'auto', '4.8rem', '5rem', '5rem'].map((w) => {
      const col = h('col');
      col.style.width = w; // CSSOM, which the policy allows (unlike a style attribute)
      return col;
    })),
    h('thead', {}, h('tr', {}, ['Status', 'Virtual service', 'VIP:ports', 'Pool', 'Reason', 'Packets/s', 'Bytes/s', 'New flows/s']
      .map((x) => h('th', { scope: 'col' }, x)))),
    vsBody);
  const scroller = h('div', { class: 'scroll' }, vsTable);
  const detail = h('section', { class: 'panel detail', 'aria-labelledby': 'detail-title' });
  const verdicts = h('section', { class: 'panel verdicts', 'aria-labelledby': 'verdicts-title' });
  main.append(
    h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, 'Dashboard'), summary),
    h('div', { class: 'dash' },
      h('div', { class: 'side' },
        h('section', { class: 'panel services', 'aria-labelledby': 'services-title' },
          h('div', { class: 'panel-head' }, h('h2', { id: 'services-title' }, 'Virtual services'),
            h('span', { class: 'filter' }, h('label', { for: 'dash-filter' }, 'Filter '), filter)),
          scroller),
        verdicts),
      detail));

  const rows = new Map(); // name -> {tr, cells, key}
  let charts = [];
  let chartFor = null;

  function renderServices() {
    const status = live.status;
    if (!status) {
      clear(vsBody).append(h('tr', {}, h('td', { colspan: 8, class: 'empty' }, 'Waiting for the controller…')));
      return;
    }
    const list = [...status.virtual_services].sort((a, b) =>
      (SEVERITY[a.state] - SEVERITY[b.state]) || a.name.localeCompare(b.name));
    const counts = {};
    for (const vs of list) counts[vs.state] = (counts[vs.state] || 0) + 1;
    summary.textContent = `${list.length} virtual service${list.length === 1 ? '' : 's'}: ` +
      ['up', 'degraded', 'down', 'unknown', 'disabled'].filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`).join(', ') +
      (live.connected ? '' : ' — reconnecting to the controller…');
    if (!list.length) {
      rows.clear();
      clear(vsBody).append(h('tr', {}, h('td', { colspan: 8, class: 'empty' }, 'No virtual service yet: create one under Virtual services.')));
      return;
    }
    if (!selected || !list.some((v) => v.name === selected)) selected = list[0].name;
    const started = performance.now();
    const fragment = document.createDocumentFragment();
    const seen = new Set();
    for (const vs of list) {
      seen.add(vs.name);
      const key = `${vs.state}|${vs.reason}|${vs.vip}|${vs.pool}`;
      let row = rows.get(vs.name);
      if (!row || row.key !== key) {
        const select = h('button', {
          type: 'button', class: 'link', 'aria-pressed': String(vs.name === selected),
          on: { click: () => { selected = vs.name; markSelected(); renderDetail(); } },
        }, vs.name);
        const cells = [h('td', { class: 'num' }), h('td', { class: 'num' }), h('td', { class: 'num' })];
        const tr = h('tr', { dataset: { vs: vs.name, state: vs.state } },
          h('td', {}, badge(vs.state)), h('th', { scope: 'row' }, select),
          h('td', {}, `${vs.vip}:${ports.get(vs.name) ?? '?'}`), h('td', {}, vs.pool),
          h('td', { class: 'reason' }, h('span', { class: 'clamp', title: vs.reason }, vs.reason)), ...cells);
        tr.dataset.search = `${vs.name} ${vs.vip} ${vs.pool} ${vs.state}`.toLowerCase();
        row = { tr, cells, key, select, rates: [] };
        rows.set(vs.name, row);
      }
      fragment.append(row.tr);
    }
    for (const name of [...rows.keys()]) if (!seen.has(name)) rows.delete(name);
    vsBody.replaceChildren(fragment);
    // Many rows: the list scrolls in a box of fixed height whose content the rest of the
    // page never waits for (size containment), so redrawing a chart does not lay out a
    // thousand rows again.
    scroller.classList.toggle('many', list.length > 30);
    applyFilter();
    markSelected();
    renderRates();
    // For the browser test's figure: one full render of the table.
    main.dataset.renderMs = String(Math.round(performance.now() - started));
  }

  function markSelected() {
    for (const [name, row] of rows) {
      const on = name === selected;
      row.tr.classList.toggle('selected', on);
      row.select.setAttribute('aria-pressed', String(on));
    }
  }

  function applyFilter() {
    const q = filter.value.trim().toLowerCase();
    for (const row of rows.values()) row.tr.hidden = q !== '' && !row.tr.dataset.search.includes(q);
  }
  filter.addEventListener('input', applyFilter);
  filter.addEventListener('change', applyFilter);

  function renderRates() {
    const s = latest();
    for (const [name, row] of rows) {
      const r = serviceRate(s, name);
      for (let i = 0; i < 3; i++) {
        if (row.rates[i] !== r[i]) {
          row.cells[i].textContent = METRICS[i].fmt(r[i]);
          row.rates[i] = r[i];
        }
      }
    }
  }

  function selectedStatus() {
    return live.status && live.status.virtual_services.find((v) => v.name === selected);
  }

  let serverCells = [];
  function renderDetail() {
    const vs = selectedStatus();
    clear(detail);
    serverCells = [];
    if (!vs) {
      detail.append(h('h2', { id: 'detail-title' }, 'No virtual service selected'));
      destroyCharts();
      return;
    }
    // Each server: a row of figures, and its reason on the row below.
    const servers = vs.servers.map((s) => {
      const cells = [h('td', { class: 'num' }), h('td', { class: 'num' }), h('td', { class: 'num' })];
      serverCells.push([s.ip, cells]);
      const state = s.enabled ? s.state : 'disabled';
      return h('tbody', { class: 'server', dataset: { server: s.ip, state } },
        h('tr', {},
          h('th', { scope: 'row', rowspan: 2 }, s.ip),
          h('td', { class: 'health' }, badge(state)),
          h('td', { class: 'since' }, fmtTime(s.since)),
          ...cells),
        h('tr', { class: 'sub' }, h('td', { class: 'reason', colspan: 5 }, serverReason(s))));
    });
    detail.append(
      h('div', { class: 'panel-head' },
        h('h2', { id: 'detail-title' }, vs.name, ' ', badge(vs.state)),
        h('a', { href: `#/virtual-services/edit/${encodeURIComponent(vs.name)}` }, 'Edit'), ' ',
        h('a', { href: '#/pools' }, `Pool ${vs.pool}`)),
      h('p', { class: 'reason', id: 'detail-reason' }, vs.reason),
      h('table', { class: 'list servers' },
        h('thead', {}, h('tr', {}, ['Server', 'Health', 'Since', 'Packets/s', 'Bytes/s', 'New flows/s'].map((x) => h('th', { scope: 'col' }, x)))),
        servers));
    const chartsBox = h('div', { class: 'charts' });
    detail.append(chartsBox);
    buildCharts(chartsBox, vs);
    renderServerRates();
  }

  function renderServerRates() {
    const vs = selectedStatus();
    if (!vs) return;
    const s = latest();
    for (const [ip, cells] of serverCells) {
      const r = serverRate(s, vs.pool, ip);
      cells.forEach((c, i) => { c.textContent = METRICS[i].fmt(r[i]); });
    }
  }

  function destroyCharts() {
    for (const c of charts) c.plot.destroy();
    charts = [];
    chartFor = null;
  }

  function buildCharts(box, vs) {
    destroyCharts();
    chartFor = `${vs.name}|${vs.pool}|${vs.servers.map((s) => s.ip).join(',')}`;
    const width = Math.max(280, box.clientWidth || detail.clientWidth - 24);
    for (const m of METRICS) {
      const holder = h('figure', { class: 'chart', id: `chart-${m.id}`, dataset: { points: '0' } },
        h('figcaption', {}, `${m.title}: ${vs.name} and each server`));
      box.append(holder);
      const series = [{}, { label: vs.name, stroke: COLOURS[0], width: 2 },
        ...vs.servers.map((s, i) => ({ label: s.ip, stroke: COLOURS[(i + 1) % COLOURS.length], width: 1.5 }))];
      const plot = new window.uPlot({
        width,
        height: 150,
        series,
        scales: { x: { time: true } },
        axes: [{}, { size: 70, values: (_u, vals) => vals.map((v) => m.fmt(v)) }],
        legend: { live: false },
        cursor: { drag: { x: false, y: false } },
      }, chartData(vs, m.key), holder);
      charts.push({ plot, metric: m, holder });
    }
    updateCharts();
  }

  function chartData(vs, key) {
    const t = [];
    const total = [];
    const per = vs.servers.map(() => []);
    for (const s of live.samples) {
      t.push(s.t / 1000);
      total.push(serviceRate(s, vs.name)[key]);
      vs.servers.forEach((srv, i) => per[i].push(serverRate(s, vs.pool, srv.ip)[key]));
    }
    return [t, total, ...per];
  }

  function updateCharts() {
    const vs = selectedStatus();
    if (!vs || !charts.length) return;
    for (const c of charts) {
      const data = chartData(vs, c.metric.key);
      c.plot.setData(data);
      // For people with a screen reader, and for the browser test: the newest values.
      const last = data.map((col) => col[col.length - 1]);
      c.holder.dataset.points = String(data[0].length);
      c.holder.dataset.last = JSON.stringify(last.slice(1));
      c.holder.setAttribute('aria-label', `${c.metric.title}, newest: ` +
        [vs.name, ...vs.servers.map((s) => s.ip)].map((n, i) => `${n} ${c.metric.fmt(last[i + 1] ?? 0)}`).join(', '));
    }
  }

  function renderVerdicts() {
    const s = latest();
    clear(verdicts).append(h('h2', { id: 'verdicts-title' }, 'Verdicts'));
    const reasons = s ? Object.entries(s.reasons) : [];
    if (!reasons.length) {
      verdicts.append(h('p', { class: 'empty' }, 'No counters reported yet.'));
      return;
    }
    reasons.sort((a, b) => (a[0] === 'forwarded' ? -1 : b[0] === 'forwarded' ? 1 : b[1][1] - a[1][1]));
    // Reasons that never counted a packet are one line, not a row each.
    const never = reasons.filter(([r, [rate, total]]) => r !== 'forwarded' && rate === 0 && total === 0).map(([r]) => r);
    const shown = reasons.filter(([r]) => !never.includes(r));
    verdicts.append(h('table', { class: 'list verdict-table' },
      h('thead', {}, h('tr', {}, ['Reason', 'Packets/s', 'Total'].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, shown.map(([reason, [rate, total]]) => h('tr', {
        class: reason.startsWith('drop') && rate > 0 ? 'dropping' : '', dataset: { reason },
      }, h('th', { scope: 'row' }, reason), h('td', { class: 'num' }, fmtNumber(rate)), h('td', { class: 'num' }, fmtNumber(total)))))),
      never.length ? h('p', { class: 'meta' }, `No packet so far: ${never.join(', ')}.`) : null);
  }

  renderServices();
  renderDetail();
  renderVerdicts();
  ctx.onCleanup(subscribe((kind) => {
    if (kind === 'status' || kind === 'connection') {
      renderServices();
      const vs = selectedStatus();
      const key = vs && `${vs.name}|${vs.pool}|${vs.servers.map((s) => s.ip).join(',')}`;
      // The panel is rebuilt when its servers change; otherwise its texts are.
      if (key !== chartFor) renderDetail();
      else refreshDetailTexts(vs);
    } else if (kind === 'sample') {
      renderRates();
      renderServerRates();
      updateCharts();
      renderVerdicts();
    }
  }));
  const resize = new ResizeObserver(() => {
    const w = detail.clientWidth - 24;
    for (const c of charts) if (w > 200 && Math.abs(c.plot.width - w) > 4) c.plot.setSize({ width: w, height: 150 });
  });
  resize.observe(detail);
  ctx.onCleanup(() => { resize.disconnect(); destroyCharts(); });

  function refreshDetailTexts(vs) {
    const title = detail.querySelector('#detail-title');
    if (title) title.replaceChildren(vs.name, ' ', badge(vs.state));
    const reason = detail.querySelector('#detail-reason');
    if (reason) reason.textContent = vs.reason;
    for (const s of vs.servers) {
      const body = detail.querySelector(`tbody[data-server="${CSS.escape(s.ip)}"]`);
      if (!body) continue;
      const state = s.enabled ? s.state : 'disabled';
      body.dataset.state = state;
      body.querySelector('td.health').replaceChildren(badge(state));
      body.querySelector('td.since').textContent = fmtTime(s.since);
      body.querySelector('td.reason').textContent = serverReason(s);
    }
  }
}

function serverReason(s) {
  return s.enabled ? (s.reason || '') : 'disabled in the pool: no new connections (established ones continue)';
}
