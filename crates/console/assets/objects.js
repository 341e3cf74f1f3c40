// The configuration's pages: a list and a form for each of Avi's object kinds, and the
// service engines and events.

import { api, ApiError, KINDS, objectPath } from './api.js';
import { h, clear, badge, notice, fmtTime, fmtNumber } from './dom.js';
import {
  textField, numberField, selectField, checkField, checkList, rowsEditor, showErrors, clearErrors,
} from './forms.js';
import { live, subscribe, serverHealth } from './live.js';

const SYSTEM_L4 = 'System-L4-Application';

// ---------------------------------------------------------------------------------------
// Forms, one per kind: fields for the object (or the defaults for a new one) and read(),
// which builds the request body from them.
// ---------------------------------------------------------------------------------------

function networkProfileForm(o, _refs, editing) {
  const dsr = (o && o.dsr) || { enabled: false, type: 'l3', encapsulation: 'ipinip' };
  const name = textField({ path: 'name', label: 'Name', value: o?.name, readonly: editing, placeholder: 'dsr-l3-tcp' });
  const type = selectField({
    path: 'type', label: 'Type', value: o?.type || 'tcp_fast_path',
    choices: [['tcp_fast_path', 'TCP fast path'], ['udp_fast_path', 'UDP fast path'],
      ['tcp_proxy', 'TCP proxy'], ['udp_proxy', 'UDP proxy']],
    help: 'Ricochet forwards only; the proxy types are refused with the reason.',
  });
  const enabled = checkField({ path: 'dsr.enabled', label: 'Enable DSR', value: dsr.enabled });
  const dsrType = selectField({ path: 'dsr.type', label: 'DSR type', value: dsr.type, choices: [['l3', 'L3'], ['l2', 'L2']] });
  const encap = selectField({
    path: 'dsr.encapsulation', label: 'DSR encapsulation', value: dsr.encapsulation,
    choices: [['ipinip', 'IP-in-IP'], ['gre', 'GRE'], ['gue', 'GUE (UDP)']],
  });
  const guePort = numberField({
    path: 'dsr.gue_port', label: 'GUE UDP port', value: dsr.gue_port, placeholder: '6080',
    help: 'GUE only: the port the servers decapsulate on (ricochet server setup --gue-port). Empty: 6080.',
  });
  const idle = numberField({
    path: 'session_idle_timeout', label: 'Session idle timeout (s)', value: o?.session_idle_timeout,
    help: 'Empty: 300 s for TCP, 10 s for UDP.',
  });
  return {
    fields: [name.el, type.el, h('fieldset', { class: 'group', dataset: { path: 'dsr' } }, h('legend', {}, 'Direct Server Return'), enabled.el, dsrType.el, encap.el, guePort.el), idle.el],
    read: () => ({
      name: name.read(),
      type: type.read(),
      dsr: {
        enabled: enabled.read(), type: dsrType.read(), encapsulation: encap.read(), gue_port: guePort.read(),
      },
      session_idle_timeout: idle.read(),
    }),
  };
}

function applicationProfileForm(o, _refs, editing) {
  const name = textField({ path: 'name', label: 'Name', value: o?.name, readonly: editing });
  const type = selectField({ path: 'type', label: 'Type', value: o?.type || 'l4', choices: [['l4', 'L4']] });
  return { fields: [name.el, type.el], read: () => ({ name: name.read(), type: type.read() }) };
}

const HTTP_CODES = ['http_any', 'http_1xx', 'http_2xx', 'http_3xx', 'http_4xx', 'http_5xx'];

function healthMonitorForm(o, _refs, editing) {
  const name = textField({ path: 'name', label: 'Name', value: o?.name, readonly: editing, placeholder: 'web-tcp' });
  const sections = {};
  const type = selectField({
    path: 'type', label: 'Type', value: o?.type || 'tcp',
    choices: [['tcp', 'TCP'], ['http', 'HTTP'], ['udp', 'UDP'], ['icmp', 'ICMP']],
    onchange: () => show(),
  });
  const interval = numberField({ path: 'send_interval', label: 'Send interval (s)', value: o?.send_interval, help: 'Empty: 10.' });
  const timeout = numberField({ path: 'receive_timeout', label: 'Receive timeout (s)', value: o?.receive_timeout, help: 'Empty: 4; less than the interval.' });
  const rise = numberField({ path: 'successful_checks', label: 'Successful checks to mark up', value: o?.successful_checks, help: 'Empty: 2.' });
  const fall = numberField({ path: 'failed_checks', label: 'Failed checks to mark down', value: o?.failed_checks, help: 'Empty: 2.' });
  const port = numberField({ path: 'monitor_port', label: 'Monitor port', value: o?.monitor_port, help: "Empty: the server's port, else the virtual service's." });
  const dsrPath = checkField({ path: 'dsr_path', label: 'Check through the VIP path (encapsulated like client traffic)', value: o?.dsr_path });
  const tcp = o?.tcp_monitor || {};
  const tcpReq = textField({ path: 'tcp_monitor.tcp_request', label: 'TCP request', value: tcp.tcp_request });
  const tcpResp = textField({ path: 'tcp_monitor.tcp_response', label: 'TCP response must contain', value: tcp.tcp_response });
  const halfOpen = checkField({ path: 'tcp_monitor.tcp_half_open', label: 'Half open', value: tcp.tcp_half_open });
  const http = o?.http_monitor || {};
  const httpReq = textField({ path: 'http_monitor.http_request', label: 'HTTP request', value: http.http_request, placeholder: 'HEAD / HTTP/1.0' });
  const httpCodes = checkList({
    path: 'http_monitor.http_response_code', label: 'Response codes',
    value: http.http_response_code || ['http_2xx', 'http_3xx'], choices: HTTP_CODES.map((c) => [c, c.replace('http_', '')]),
  });
  const httpResp = textField({ path: 'http_monitor.http_response', label: 'Body must contain', value: http.http_response });
  const udp = o?.udp_monitor || {};
  const udpReq = textField({ path: 'udp_monitor.udp_request', label: 'UDP request', value: udp.udp_request });
  const udpResp = textField({ path: 'udp_monitor.udp_response', label: 'UDP response must contain', value: udp.udp_response });
  sections.tcp = h('fieldset', { class: 'group', dataset: { path: 'tcp_monitor' } }, h('legend', {}, 'TCP'), tcpReq.el, tcpResp.el, halfOpen.el);
  sections.http = h('fieldset', { class: 'group', dataset: { path: 'http_monitor' } }, h('legend', {}, 'HTTP'), httpReq.el, httpCodes.el, httpResp.el);
  sections.udp = h('fieldset', { class: 'group', dataset: { path: 'udp_monitor' } }, h('legend', {}, 'UDP'), udpReq.el, udpResp.el);
  function show() {
    for (const [k, el] of Object.entries(sections)) el.hidden = k !== type.read();
  }
  show();
  const opt = (v) => (v === '' ? undefined : v);
  return {
    fields: [name.el, type.el, h('div', { class: 'cols' }, interval.el, timeout.el, rise.el, fall.el), port.el, dsrPath.el, sections.tcp, sections.http, sections.udp],
    read: () => {
      const body = {
        name: name.read(), type: type.read(), send_interval: interval.read(), receive_timeout: timeout.read(),
        successful_checks: rise.read(), failed_checks: fall.read(), monitor_port: port.read(), dsr_path: dsrPath.read(),
      };
      if (body.type === 'tcp') {
        const t = { tcp_request: opt(tcpReq.read()), tcp_response: opt(tcpResp.read()), tcp_half_open: halfOpen.read() };
        if (t.tcp_request !== undefined || t.tcp_response !== undefined || t.tcp_half_open) body.tcp_monitor = t;
      } else if (body.type === 'http') {
        body.http_monitor = { http_request: opt(httpReq.read()), http_response_code: httpCodes.read(), http_response: opt(httpResp.read()) };
      } else if (body.type === 'udp') {
        const u = { udp_request: opt(udpReq.read()), udp_response: opt(udpResp.read()) };
        if (u.udp_request !== undefined || u.udp_response !== undefined) body.udp_monitor = u;
      }
      return body;
    },
  };
}

function poolForm(o, refs, editing) {
  const name = textField({ path: 'name', label: 'Name', value: o?.name, readonly: editing, placeholder: 'web-pool' });
  const hash = selectField({
    path: 'consistent_hash', label: 'Consistent hash on', value: o?.consistent_hash || 'source_ip',
    choices: [['source_ip', 'Source IP'], ['source_ip_and_port', 'Source IP and port']],
  });
  const servers = rowsEditor({
    path: 'servers', label: 'Servers (by their own IP, never the VIP)', addLabel: 'Add server',
    columns: [
      { key: 'ip', label: 'IP address', placeholder: '192.168.33.10', width: 18 },
      { key: 'port', label: 'Port', kind: 'number', placeholder: 'any', width: 6 },
      { key: 'ratio', label: 'Ratio (1-20)', kind: 'number', placeholder: '1', width: 5 },
      { key: 'enabled', label: 'Enabled', kind: 'check' },
    ],
    rows: (o?.servers || []).map((s) => ({ ...s })),
    blank: () => ({ ip: '', enabled: true }),
  });
  const monitors = checkList({
    path: 'health_monitors', label: 'Health monitors', value: o?.health_monitors,
    choices: refs['health-monitors'].map((m) => [m.object.name, `${m.object.name} (${m.object.type})`]),
    empty: 'No health monitor exists yet: servers are then taken as up.',
  });
  const tableSize = numberField({ path: 'table_size', label: 'Maglev table size', value: o?.table_size, help: 'Empty: chosen from the number of servers (a prime).' });
  return {
    fields: [name.el, hash.el, servers.el, monitors.el, tableSize.el],
    read: () => ({
      name: name.read(),
      lb_algorithm: 'consistent_hash',
      consistent_hash: hash.read(),
      servers: servers.read(),
      health_monitors: monitors.read(),
      table_size: tableSize.read(),
    }),
  };
}

function virtualServiceForm(o, refs, editing) {
  const choose = (segment, label) => [['', `— choose a ${label} —`],
    ...refs[segment].map((x) => [x.object.name, x.object.name])];
  const name = textField({ path: 'name', label: 'Name', value: o?.name, readonly: editing, placeholder: 'web-vs' });
  const vip = textField({ path: 'vip', label: 'VIP', value: o?.vip, placeholder: '192.168.35.241' });
  const services = rowsEditor({
    path: 'services', label: 'Services (ports)', addLabel: 'Add port',
    columns: [
      { key: 'port', label: 'Port', kind: 'number', placeholder: '80', width: 6 },
      { key: 'port_range_end', label: 'Range end (optional)', kind: 'number', width: 6 },
    ],
    rows: o?.services || [{ port: '' }],
    blank: () => ({ port: '' }),
  });
  const app = selectField({ path: 'application_profile', label: 'Application profile', value: o?.application_profile || SYSTEM_L4, choices: choose('application-profiles', 'profile') });
  const net = selectField({ path: 'network_profile', label: 'Network profile (TCP/UDP)', value: o?.network_profile || '', choices: choose('network-profiles', 'profile') });
  const pool = selectField({ path: 'pool', label: 'Pool', value: o?.pool || '', choices: choose('pools', 'pool') });
  const group = selectField({
    path: 'se_group', label: 'Service engine group', value: o?.se_group || '',
    choices: [['', '— none: the engines of no group —'], ...refs['service-engine-groups'].map((x) => [x.object.name, x.object.name])],
    help: 'The engines that carry it. Every virtual service of a VIP is in the same group.',
  });
  const enabled = checkField({ path: 'enabled', label: 'Enabled', value: o ? o.enabled : true });
  return {
    fields: [name.el, vip.el, services.el, app.el, net.el, pool.el, group.el, enabled.el],
    read: () => ({
      name: name.read(), vip: vip.read(), services: services.read(), application_profile: app.read(),
      network_profile: net.read(), pool: pool.read(), se_group: group.read() || undefined, enabled: enabled.read(),
    }),
  };
}

function serviceEngineGroupForm(o, _refs, editing) {
  const name = textField({ path: 'name', label: 'Name', value: o?.name, readonly: editing, placeholder: 'seg-a' });
  const seed = numberField({ path: 'hash_seed', label: 'Hash seed', value: o?.hash_seed, help: 'Every member hashes clients with it, so any of them picks the same server. Empty: 0.' });
  const v4 = (e) => (e.addresses || []).find((a) => !a.includes(':')) || '';
  const v6 = (e) => (e.addresses || []).find((a) => a.includes(':')) || '';
  const engines = rowsEditor({
    path: 'engines', label: 'Engines (by the name they register with)', addLabel: 'Add engine',
    columns: [
      { key: 'name', label: 'Engine name', placeholder: 'se1', width: 16 },
      { key: 'v4', label: 'IPv4 address', placeholder: '192.168.33.7', width: 16 },
      { key: 'v6', label: 'IPv6 address', placeholder: 'fc00::7', width: 20 },
    ],
    rows: (o?.engines || []).map((e) => ({ name: e.name, v4: v4(e), v6: v6(e) })),
    blank: () => ({ name: '', v4: '', v6: '' }),
  });
  const bgp = o?.bgp;
  const announce = checkField({ path: 'announce_bgp', label: 'Announce the VIPs over BGP', value: !!bgp, onchange: () => show() });
  const localAs = numberField({ path: 'bgp.local_as', label: 'Local AS', value: bgp?.local_as, placeholder: '65001' });
  const hold = numberField({ path: 'bgp.hold_time', label: 'Hold time (s)', value: bgp?.hold_time, help: 'Empty: 9.' });
  const bfd = checkField({ path: 'bgp.bfd', label: 'BFD', value: bgp?.bfd });
  const bfdInterval = numberField({ path: 'bgp.bfd_interval_ms', label: 'BFD interval (ms)', value: bgp?.bfd_interval_ms, help: 'Empty: 100.' });
  const peers = rowsEditor({
    path: 'bgp.peers', label: 'Peers (routers)', addLabel: 'Add peer',
    columns: [
      { key: 'ip', label: 'Router address', placeholder: '192.168.33.1', width: 20 },
      { key: 'remote_as', label: 'Remote AS', kind: 'number', placeholder: '65000', width: 10 },
    ],
    rows: (bgp?.peers || [{ ip: '', remote_as: '' }]).map((p) => ({ ...p })),
    blank: () => ({ ip: '', remote_as: '' }),
  });
  const section = h('fieldset', { class: 'group', dataset: { path: 'bgp' } }, h('legend', {}, 'BGP'),
    h('div', { class: 'cols' }, localAs.el, hold.el, bfdInterval.el), bfd.el, peers.el);
  function show() { section.hidden = !announce.read(); }
  show();
  return {
    fields: [name.el, seed.el, engines.el, announce.el, section],
    read: () => ({
      name: name.read(),
      hash_seed: seed.read(),
      engines: engines.read().map((e) => ({ name: e.name, addresses: [e.v4, e.v6].filter((a) => a !== '') })),
      bgp: announce.read() ? {
        local_as: localAs.read(), peers: peers.read(), hold_time: hold.read(), bfd: bfd.read(), bfd_interval_ms: bfdInterval.read(),
      } : undefined,
    }),
  };
}

const FORMS = {
  'network-profiles': { form: networkProfileForm, refs: [] },
  'application-profiles': { form: applicationProfileForm, refs: [] },
  'health-monitors': { form: healthMonitorForm, refs: [] },
  'pools': { form: poolForm, refs: ['health-monitors'] },
  'service-engine-groups': { form: serviceEngineGroupForm, refs: [] },
  'virtual-services': { form: virtualServiceForm, refs: ['application-profiles', 'network-profiles', 'pools', 'service-engine-groups'] },
};

// ---------------------------------------------------------------------------------------
// The form page: new or edit.
// ---------------------------------------------------------------------------------------

export async function formPage(main, ctx, segment, name) {
  const kind = KINDS[segment];
  const spec = FORMS[segment];
  const refs = {};
  const [loaded] = await Promise.all([
    name ? api('GET', objectPath(segment, name)) : null,
    ...spec.refs.map(async (r) => { refs[r] = (await api('GET', `/api/v1/${r}`)).items; }),
  ]);
  const title = name ? `Edit ${kind.noun} ${name}` : `New ${kind.noun}`;
  const built = spec.form(loaded && loaded.object, refs, !!name);
  const summary = h('div', { class: 'summary', 'aria-live': 'polite' });
  const save = h('button', { type: 'submit' }, name ? 'Save' : 'Create');
  const form = h('form', { class: 'object-form', novalidate: true, 'aria-labelledby': 'form-title' },
    summary, built.fields,
    h('div', { class: 'actions' }, save, ' ', h('a', { href: `#/${segment}`, class: 'button secondary' }, 'Cancel')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = built.read();
    save.disabled = true;
    clearErrors(form);
    clear(summary);
    try {
      if (name) {
        await api('PUT', objectPath(segment, name), { body, ifMatch: loaded.revision });
      } else {
        await api('POST', `/api/v1/${segment}`, { body });
      }
      ctx.flash(`${name ? 'Saved' : 'Created'} ${kind.noun} ${body.name}.`);
      location.hash = `#/${segment}`;
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      showErrors(form, summary, err, kind.list, body.name);
      if (err.status === 412) {
        summary.querySelector('.notice').append(' ', h('button', {
          type: 'button', class: 'secondary', on: { click: () => ctx.rerender() },
        }, `Load the current ${kind.noun} (discards these edits)`));
      }
    } finally {
      save.disabled = false;
    }
  });
  main.append(
    h('p', { class: 'crumbs' }, h('a', { href: `#/${segment}` }, kind.title), ' / ', name || 'new'),
    h('h1', { id: 'form-title', tabindex: '-1' }, title),
    h('p', { class: 'meta' }, loaded
      ? `Revision ${loaded.revision}. A save is refused if someone else changes it meanwhile.`
      : 'Empty fields take the defaults. The controller checks everything when you save.'),
    form);
  const first = form.querySelector('input:not([readonly]), select');
  if (first) first.focus();
}

// ---------------------------------------------------------------------------------------
// Lists
// ---------------------------------------------------------------------------------------

async function deleteObject(ctx, segment, name, where) {
  const kind = KINDS[segment];
  if (!window.confirm(`Delete ${kind.noun} ${name}?`)) return;
  try {
    await api('DELETE', objectPath(segment, name));
    ctx.flash(`Deleted ${kind.noun} ${name}.`);
    ctx.rerender();
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    clear(where).append(notice('error', h('strong', {}, 'Not deleted. '), err.message));
  }
}

function listHeader(main, segment, extra) {
  const kind = KINDS[segment];
  main.append(h('div', { class: 'page-head' },
    h('h1', { tabindex: '-1' }, kind.title),
    extra,
    h('a', { class: 'button', href: `#/${segment}/new` }, `New ${kind.noun}`)));
}

function actions(ctx, segment, name, where, options) {
  return h('td', { class: 'actions' }, actionLinks(ctx, segment, name, where, options));
}

function actionLinks(ctx, segment, name, where, { canDelete = true } = {}) {
  const kind = KINDS[segment];
  return [
    h('a', { href: `#/${segment}/edit/${encodeURIComponent(name)}`, 'aria-label': `Edit ${kind.noun} ${name}` }, 'Edit'),
    canDelete ? [' ', h('button', {
      type: 'button', class: 'link danger', 'aria-label': `Delete ${kind.noun} ${name}`,
      on: { click: () => deleteObject(ctx, segment, name, where) },
    }, 'Delete')] : null];
}

function table(headers, rows, empty) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h('table', { class: 'list' },
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows));
}

export async function networkProfilesPage(main, ctx) {
  const [list, vss] = await Promise.all([api('GET', '/api/v1/network-profiles'), api('GET', '/api/v1/virtual-services')]);
  const where = h('div');
  listHeader(main, 'network-profiles');
  main.append(where, table(['Name', 'Type', 'DSR', 'Session idle timeout', 'Used by', ''],
    list.items.map(({ object: p }) => {
      const users = vss.items.filter((v) => v.object.network_profile === p.name).length;
      return h('tr', {},
        h('th', { scope: 'row' }, p.name), h('td', {}, p.type),
        h('td', {}, p.dsr && p.dsr.enabled ? `${p.dsr.type.toUpperCase()}, ${p.dsr.encapsulation}${p.dsr.gue_port ? ` :${p.dsr.gue_port}` : ''}` : 'off'),
        h('td', {}, p.session_idle_timeout ? `${p.session_idle_timeout} s` : 'default'),
        h('td', {}, `${users} virtual service${users === 1 ? '' : 's'}`),
        actions(ctx, 'network-profiles', p.name, where));
    }), 'No network profile yet. A virtual service needs one: TCP fast path with DSR for the seed.'));
}

export async function applicationProfilesPage(main, ctx) {
  const list = await api('GET', '/api/v1/application-profiles');
  const where = h('div');
  listHeader(main, 'application-profiles');
  main.append(where, table(['Name', 'Type', ''], list.items.map(({ object: p }) => h('tr', {},
    h('th', { scope: 'row' }, p.name, p.name === SYSTEM_L4 ? h('span', { class: 'tag' }, 'built in') : null),
    h('td', {}, p.type),
    actions(ctx, 'application-profiles', p.name, where, { canDelete: p.name !== SYSTEM_L4 }))), 'None.'));
}

export async function healthMonitorsPage(main, ctx) {
  const list = await api('GET', '/api/v1/health-monitors');
  const where = h('div');
  listHeader(main, 'health-monitors');
  main.append(where, table(['Name', 'Type', 'Interval / timeout', 'Up after / down after', 'Port', 'Path', ''],
    list.items.map(({ object: m }) => h('tr', {},
      h('th', { scope: 'row' }, m.name), h('td', {}, m.type),
      h('td', {}, `${m.send_interval} s / ${m.receive_timeout} s`),
      h('td', {}, `${m.successful_checks} / ${m.failed_checks} checks`),
      h('td', {}, m.monitor_port ?? 'service port'),
      h('td', {}, m.dsr_path ? 'through the VIP' : 'direct'),
      actions(ctx, 'health-monitors', m.name, where))), 'No health monitor yet.'));
}

// One server's health cell: state, reason, since.
function healthCell(status) {
  if (!status) return [h('td', {}, badge('unknown', 'not checked')), h('td', { class: 'reason' }, 'no enabled virtual service uses this pool, or no engine reports it'), h('td', {}, '—')];
  return [
    h('td', {}, badge(status.enabled ? status.state : 'disabled', status.enabled ? status.state : 'disabled')),
    h('td', { class: 'reason' }, status.reason || ''),
    h('td', { class: 'since' }, status.since ? fmtTime(status.since) : '—'),
  ];
}

export async function poolsPage(main, ctx) {
  const list = await api('GET', '/api/v1/pools');
  listHeader(main, 'pools');
  const cards = h('div', { class: 'cards' });
  main.append(cards);
  if (!list.items.length) cards.append(h('p', { class: 'empty' }, 'No pool yet.'));
  const healthCells = []; // [pool, ip, tr] to refresh with the live status
  for (const item of list.items) {
    const p = item.object;
    const where = h('div');
    const rows = p.servers.map((s, i) => {
      const toggle = h('button', {
        type: 'button', class: s.enabled ? 'secondary' : '',
        'aria-label': `${s.enabled ? 'Disable' : 'Enable'} server ${s.ip} in pool ${p.name}`,
        on: { click: () => setEnabled(ctx, item, i, !s.enabled, where, toggle) },
      }, s.enabled ? 'Disable' : 'Enable');
      const tr = h('tr', { dataset: { server: s.ip } },
        h('th', { scope: 'row' }, s.ip), h('td', {}, s.port ?? '—'), h('td', {}, s.ratio),
        h('td', {}, s.enabled ? 'enabled' : h('strong', {}, 'disabled (draining)')),
        ...healthCell(null), h('td', {}, toggle));
      healthCells.push([p.name, s.ip, tr]);
      return tr;
    });
    cards.append(h('section', { class: 'card', 'aria-labelledby': `pool-${p.name}`, dataset: { pool: p.name } },
      h('div', { class: 'card-head' },
        h('h2', { id: `pool-${p.name}` }, p.name),
        h('span', { class: 'meta' }, `hash on ${p.consistent_hash.replaceAll('_', ' ')}; monitors: ${p.health_monitors.join(', ') || 'none'}; revision ${item.revision}`),
        h('span', { class: 'actions' }, actionLinks(ctx, 'pools', p.name, where))),
      where,
      table(['Server', 'Port', 'Ratio', 'Enabled', 'Health', 'Reason', 'Since', ''], rows, 'No server.')));
  }
  const refresh = () => {
    const health = serverHealth();
    for (const [pool, ip, tr] of healthCells) {
      const s = health.get(pool)?.get(ip);
      const cells = healthCell(s);
      const tds = tr.children;
      for (let i = 0; i < 3; i++) tds[4 + i].replaceWith(cells[i]);
    }
  };
  refresh();
  ctx.onCleanup(subscribe((k) => k === 'status' && refresh()));
}

async function setEnabled(ctx, item, index, enabled, where, button) {
  const pool = structuredClone(item.object);
  pool.servers[index].enabled = enabled;
  button.disabled = true;
  try {
    await api('PUT', objectPath('pools', pool.name), { body: pool, ifMatch: item.revision });
    ctx.flash(`${enabled ? 'Enabled' : 'Disabled'} server ${pool.servers[index].ip} in pool ${pool.name}${enabled ? '' : ': it gets no new connections, established ones continue'}.`);
    ctx.rerender();
  } catch (err) {
    button.disabled = false;
    if (!(err instanceof ApiError)) throw err;
    clear(where).append(notice('error', h('strong', {}, 'Not changed. '), err.message,
      err.status === 412 ? [' ', h('button', { type: 'button', class: 'secondary', on: { click: () => ctx.rerender() } }, 'Reload the pools')] : null));
  }
}

export async function virtualServicesPage(main, ctx) {
  const list = await api('GET', '/api/v1/virtual-services');
  const where = h('div');
  const filter = h('input', { type: 'search', id: 'vs-filter', placeholder: 'name, VIP or pool', autocomplete: 'off' });
  listHeader(main, 'virtual-services', h('span', { class: 'filter' }, h('label', { for: 'vs-filter' }, 'Filter '), filter));
  const count = h('p', { class: 'meta', 'aria-live': 'polite' });
  const started = performance.now();
  const stateCells = new Map();
  const rows = list.items.map(({ object: v }) => {
    const state = h('td', {}, badge('unknown'));
    stateCells.set(v.name, state);
    const tr = h('tr', { dataset: { vs: v.name } },
      h('th', { scope: 'row' }, v.name), state, h('td', {}, v.vip),
      h('td', {}, v.services.map((s) => (s.port_range_end ? `${s.port}-${s.port_range_end}` : s.port)).join(', ')),
      h('td', {}, v.network_profile), h('td', {}, v.application_profile), h('td', {}, v.pool),
      h('td', {}, v.se_group || '—'),
      h('td', {}, v.enabled ? 'yes' : 'no'),
      actions(ctx, 'virtual-services', v.name, where));
    tr.dataset.search = `${v.name} ${v.vip} ${v.pool} ${v.se_group || ''}`.toLowerCase();
    return tr;
  });
  main.append(where, count, table(['Name', 'Status', 'VIP', 'Ports', 'Network profile', 'Application profile', 'Pool', 'SE group', 'Enabled', ''], rows,
    'No virtual service yet. It needs a network profile and a pool.'));
  // For the browser test's figure: building and inserting the rows.
  main.dataset.renderMs = String(Math.round(performance.now() - started));
  const showCount = (n) => { count.textContent = `${n} of ${rows.length} virtual services`; };
  showCount(rows.length);
  filter.addEventListener('input', () => {
    const q = filter.value.trim().toLowerCase();
    let n = 0;
    for (const tr of rows) {
      tr.hidden = q !== '' && !tr.dataset.search.includes(q);
      if (!tr.hidden) n++;
    }
    showCount(n);
  });
  const refresh = () => {
    for (const vs of (live.status && live.status.virtual_services) || []) {
      const cell = stateCells.get(vs.name);
      if (cell && cell.dataset.state !== vs.state) {
        cell.dataset.state = vs.state;
        cell.replaceChildren(badge(vs.state));
        cell.title = vs.reason;
      }
    }
  };
  refresh();
  ctx.onCleanup(subscribe((k) => k === 'status' && refresh()));
}

export async function serviceEngineGroupsPage(main, ctx) {
  const [list, vss] = await Promise.all([api('GET', '/api/v1/service-engine-groups'), api('GET', '/api/v1/virtual-services')]);
  const where = h('div');
  listHeader(main, 'service-engine-groups');
  main.append(where, table(['Name', 'Engines', 'BGP', 'Hold', 'BFD', 'Carries', ''],
    list.items.map(({ object: g }) => {
      const users = vss.items.filter((v) => v.object.se_group === g.name).length;
      const b = g.bgp;
      return h('tr', { dataset: { group: g.name } },
        h('th', { scope: 'row' }, g.name),
        h('td', {}, g.engines.length
          ? h('ul', { class: 'plain' }, g.engines.map((e) => h('li', {}, h('strong', {}, e.name), ` ${e.addresses.join(', ')}`)))
          : '—'),
        h('td', {}, b ? `AS ${b.local_as} → ${b.peers.map((p) => `${p.ip} AS ${p.remote_as}`).join(', ')}` : 'no announcement'),
        h('td', {}, b ? `${b.hold_time} s` : '—'),
        h('td', {}, b ? (b.bfd ? `${b.bfd_interval_ms} ms` : 'off') : '—'),
        h('td', {}, `${users} virtual service${users === 1 ? '' : 's'}`),
        actions(ctx, 'service-engine-groups', g.name, where));
    }), 'No service engine group yet: every engine carries the virtual services of no group.'));
}

// ---------------------------------------------------------------------------------------
// Service engines and events
// ---------------------------------------------------------------------------------------

export async function serviceEnginesPage(main, ctx) {
  main.append(h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, 'Service engines')));
  const box = h('div');
  main.append(box);
  const load = async () => {
    const list = await api('GET', '/api/v1/service-engines');
    const rows = list.items.map((e) => {
      const r = e.report && e.report.report;
      const forwarded = r && r.counters.reasons ? r.counters.reasons.forwarded : undefined;
      return h('tr', { dataset: { engine: e.name } },
        h('th', { scope: 'row' }, e.name),
        h('td', {}, badge(e.connection)),
        h('td', {}, r ? badge(r.state) : '—', r && r.message ? h('div', { class: 'reason' }, r.message) : null,
          r && r.warnings && r.warnings.length ? h('ul', { class: 'warnings' }, r.warnings.map((w) => h('li', {}, h('strong', {}, `${w.kind} on ${w.interface}: `), w.what, ' ', w.fix))) : null),
        h('td', {}, r && r.revision !== undefined && r.revision !== null ? r.revision : '—'),
        h('td', {}, e.addresses.join(', ')),
        h('td', {}, e.version),
        h('td', {}, fmtTime(e.last_seen)),
        h('td', { class: 'num' }, r ? `${r.counters.services.length} / ${r.servers.length}` : '—'),
        h('td', { class: 'num' }, forwarded !== undefined ? fmtNumber(forwarded) : '—'));
    });
    clear(box).append(table(['Name', 'Connection', 'State', 'Runs revision', 'Addresses', 'Version', 'Last seen', 'Services / servers', 'Packets forwarded'], rows,
      'No engine registered. Start one with ricochet engine --controller URL, or run ricochet all-in-one.'));
  };
  await load();
  const timer = setInterval(() => load().catch(() => {}), 3000);
  ctx.onCleanup(() => clearInterval(timer));
}

export async function eventsPage(main, ctx) {
  const filter = h('input', { type: 'search', id: 'ev-filter', placeholder: 'subject, state or reason', autocomplete: 'off' });
  main.append(h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, 'Events'),
    h('span', { class: 'filter' }, h('label', { for: 'ev-filter' }, 'Filter '), filter)));
  const body = h('tbody');
  main.append(h('p', { class: 'meta' }, 'Newest first; new events appear as they happen.'),
    h('table', { class: 'list events' },
      h('thead', {}, h('tr', {}, ['Time', 'Subject', 'State', 'Reason', 'Revision'].map((x) => h('th', { scope: 'col' }, x)))),
      body));
  const health = await api('GET', '/healthz');
  // The events of the last 500 revisions to start with, then the new ones.
  let since = Math.max(0, health.revision - 500);
  const apply = () => {
    const q = filter.value.trim().toLowerCase();
    for (const tr of body.children) tr.hidden = q !== '' && !tr.dataset.search.includes(q);
  };
  filter.addEventListener('input', apply);
  const load = async () => {
    const list = await api('GET', `/api/v1/events?since=${since}&limit=1000`);
    for (const e of list.events) {
      const tr = h('tr', {},
        h('td', { class: 'since' }, fmtTime(e.time, false)),
        h('td', {}, h('code', {}, e.subject)),
        h('td', {}, e.previous ? [badge(e.previous), ' → '] : null, badge(e.state)),
        h('td', { class: 'reason' }, e.reason),
        h('td', { class: 'num' }, e.revision));
      tr.dataset.search = `${e.subject} ${e.state} ${e.reason}`.toLowerCase();
      body.prepend(tr);
      since = Math.max(since, e.revision);
    }
    while (body.children.length > 2000) body.lastChild.remove();
    apply();
  };
  await load();
  const timer = setInterval(() => load().catch(() => {}), 2000);
  ctx.onCleanup(() => clearInterval(timer));
}
