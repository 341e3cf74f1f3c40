// Building the pages: elements from plain values, text always as text (never as markup),
// and the formats numbers and times are shown in.

// h('td', {class: 'num'}, 'text', child, ...): attributes as properties or attributes,
// `on` an object of listeners; strings and numbers become text nodes; null is skipped.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'on') {
      for (const [type, fn] of Object.entries(v)) el.addEventListener(type, fn);
    } else if (k === 'class') {
      el.className = v;
    } else if (k === 'dataset') {
      Object.assign(el.dataset, v);
    } else if (k in el && typeof v !== 'string') {
      el[k] = v;
    } else {
      el.setAttribute(k, v === true ? '' : v);
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

// 1234567 -> "1.23 M"; rates keep one decimal below 10.
export function fmtNumber(n) {
  if (n === undefined || n === null) return '—';
  const abs = Math.abs(n);
  if (abs >= 1e9) return (n / 1e9).toFixed(2) + ' G';
  if (abs >= 1e6) return (n / 1e6).toFixed(2) + ' M';
  if (abs >= 1e4) return (n / 1e3).toFixed(1) + ' k';
  if (abs >= 10 || Number.isInteger(n)) return String(Math.round(n));
  return n.toFixed(1);
}

export function fmtBytes(n) {
  if (n === undefined || n === null) return '—';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (Math.abs(n) >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return (i === 0 ? String(Math.round(n)) : n.toFixed(n >= 100 ? 0 : 1)) + ' ' + units[i];
}

// "2026-12-02 05:01:03 (3 min ago)" from an RFC 3339 time.
export function fmtTime(rfc3339, withAge = true) {
  if (!rfc3339) return '—';
  const d = new Date(rfc3339);
  if (Number.isNaN(d.getTime())) return rfc3339;
  const pad = (x) => String(x).padStart(2, '0');
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  // Today's times without the date: the tables stay narrow.
  const today = new Date().toDateString() === d.toDateString();
  const text = today && withAge ? time
    : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  return withAge ? `${text} (${fmtAge(d)})` : text;
}

export function fmtAge(date) {
  const s = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

// A state as a coloured word: up, degraded, down, unknown, disabled, connected...
export function badge(state, label) {
  return h('span', { class: `badge badge-${state}` }, label || state);
}

// A message region: role=alert for errors (read at once), role=status otherwise.
export function notice(kind, ...children) {
  return h('div', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    ...children);
}
