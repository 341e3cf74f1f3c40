// Form fields and the API's errors next to them.
//
// The console does not validate: it sends what was typed (a number field that does not
// hold a number is sent as the text, so the API names the type it expects) and shows the
// API's refusal. Each error detail has a path: within the body for a malformed one
// (`servers[0].ratio`), within the configuration for a validation one
// (`pools["web-pool"].servers[0].ip`). Every input carries the body path of what it
// edits (data-path); a detail goes next to the input with its path, or the nearest
// enclosing one (`servers[0]` -> the row), else to the form's own message.

import { h, clear } from './dom.js';

let ids = 0;
function nextId(prefix) {
  ids += 1;
  return `${prefix}-${ids}`;
}

// Wraps `control` with its label, help text and error slot.
function wrap(control, { label, help, path }) {
  const errId = nextId('err');
  control.setAttribute('aria-describedby', errId);
  if (path !== undefined) control.dataset.path = path;
  const box = h('div', { class: 'field' },
    h('label', { for: control.id }, label),
    control,
    help ? h('div', { class: 'help' }, help) : null,
    h('div', { class: 'field-error', id: errId, dataset: { errorFor: path ?? '' } }));
  return box;
}

// A text input. opts: {path, label, value, help, placeholder, required, readonly}
export function textField(opts) {
  const input = h('input', {
    id: nextId('f'),
    type: 'text',
    name: opts.path,
    value: opts.value ?? '',
    placeholder: opts.placeholder,
    readOnly: opts.readonly || false,
    autocomplete: 'off',
    spellcheck: false,
  });
  return { el: wrap(input, opts), input, read: () => input.value.trim() };
}

// A number input whose empty value means "the default" (undefined: left out of the body).
export function numberField(opts) {
  const input = h('input', {
    id: nextId('f'),
    type: 'text',
    inputMode: 'numeric',
    name: opts.path,
    value: opts.value ?? '',
    placeholder: opts.placeholder,
    autocomplete: 'off',
  });
  return { el: wrap(input, opts), input, read: () => toNumber(input.value) };
}

export function toNumber(text) {
  const t = text.trim();
  if (t === '') return undefined;
  return /^-?\d+$/.test(t) ? Number(t) : t;
}

// A select. choices: [[value, label], ...]
export function selectField(opts) {
  const select = h('select', { id: nextId('f'), name: opts.path },
    opts.choices.map(([v, label]) => h('option', { value: v, selected: v === opts.value }, label)));
  if (opts.onchange) select.addEventListener('change', opts.onchange);
  return { el: wrap(select, opts), input: select, read: () => select.value };
}

export function checkField(opts) {
  const input = h('input', { id: nextId('f'), type: 'checkbox', name: opts.path, checked: !!opts.value });
  if (opts.onchange) input.addEventListener('change', opts.onchange);
  const errId = nextId('err');
  input.setAttribute('aria-describedby', errId);
  input.dataset.path = opts.path;
  const el = h('div', { class: 'field field-check' },
    input, h('label', { for: input.id }, opts.label),
    opts.help ? h('div', { class: 'help' }, opts.help) : null,
    h('div', { class: 'field-error', id: errId, dataset: { errorFor: opts.path } }));
  return { el, input, read: () => input.checked };
}

// Checkboxes for a list of names (a pool's health monitors, an HTTP monitor's codes).
export function checkList(opts) {
  const group = h('fieldset', { class: 'field checklist', dataset: { path: opts.path } },
    h('legend', {}, opts.label));
  const boxes = opts.choices.map(([v, label]) => {
    const input = h('input', { id: nextId('f'), type: 'checkbox', value: v, checked: (opts.value || []).includes(v) });
    group.append(h('span', { class: 'check' }, input, h('label', { for: input.id }, label)));
    return input;
  });
  if (!opts.choices.length) group.append(h('p', { class: 'help' }, opts.empty || 'none defined yet'));
  const errId = nextId('err');
  group.setAttribute('aria-describedby', errId);
  group.append(h('div', { class: 'field-error', id: errId, dataset: { errorFor: opts.path } }));
  return { el: group, read: () => boxes.filter((b) => b.checked).map((b) => b.value) };
}

// Parses a configuration path's head: `pools["web-pool"].servers[0].ip` ->
// {list: 'pools', name: 'web-pool', index: null, rest: 'servers[0].ip'}.
export function splitConfigPath(path) {
  const m = /^([a-z_]+)\[("(?:[^"\\]|\\.)*"|\d+)\](?:\.(.*))?$/.exec(path);
  if (!m) return null;
  let name = null;
  let index = null;
  if (m[2].startsWith('"')) {
    try {
      name = JSON.parse(m[2]);
    } catch {
      name = m[2].slice(1, -1);
    }
  } else {
    index = Number(m[2]);
  }
  return { list: m[1], name, index, rest: m[3] ?? '' };
}

// The body path a detail is about, or null if it is about another object.
export function bodyPath(detailPath, list, name) {
  const head = splitConfigPath(detailPath);
  if (head && head.list === list) {
    // Objects without a name are named by their index; the one being saved is the only
    // one that can lack one.
    if (head.name === name || (head.name === null && !name)) return head.rest;
    return null;
  }
  // Not a configuration path: a path within the body (or empty: the whole body).
  if (/^[a-z_]+\[/.test(detailPath) && !/^[a-z_]+\[\d+\]/.test(detailPath)) return null;
  return detailPath;
}

// Clears the errors shown in `form`.
export function clearErrors(form) {
  for (const e of form.querySelectorAll('.field-error')) clear(e);
  for (const e of form.querySelectorAll('[aria-invalid]')) e.removeAttribute('aria-invalid');
  for (const e of form.querySelectorAll('.invalid')) e.classList.remove('invalid');
}

// Shows an ApiError in `form`: each detail next to its field, the rest and the message in
// `summary`. Returns whether any detail found its field; focuses the first one.
export function showErrors(form, summary, err, list, name) {
  clearErrors(form);
  clear(summary);
  const targets = [...form.querySelectorAll('[data-path]')];
  const unplaced = [];
  let first = null;
  for (const d of err.details) {
    const path = bodyPath(d.path, list, name);
    let target = null;
    if (path !== null) {
      // The field itself, else the nearest enclosing path (a row, a list).
      let p = path;
      for (;;) {
        target = targets.find((t) => t.dataset.path === p);
        if (target || p === '') break;
        const cut = Math.max(p.lastIndexOf('.'), p.lastIndexOf('['));
        p = cut > 0 ? p.slice(0, cut) : '';
      }
    }
    if (!target) {
      unplaced.push(d);
      continue;
    }
    const slot = errorSlot(target);
    if (slot) {
      if (slot.childNodes.length) slot.append(h('br'));
      slot.append(d.message);
    }
    target.setAttribute('aria-invalid', 'true');
    target.classList.add('invalid');
    first = first || target;
  }
  // When every detail is next to its field, the summary only says so; otherwise it gives
  // the API's message and the details that have no field here.
  const placedAll = first !== null && unplaced.length === 0;
  summary.append(h('div', { class: 'notice notice-error', role: 'alert' },
    h('strong', {}, refusal(err)), ' ',
    placedAll
      ? `${err.details.length === 1 ? 'the field marked below needs' : 'the fields marked below need'} a change.`
      : err.message,
    unplaced.length && err.status !== 412
      ? h('ul', {}, unplaced.map((d) => h('li', {}, h('code', {}, d.path || '(body)'), ': ', d.message)))
      : null));
  if (first) {
    const focusable = first.matches('input, select, textarea, button')
      ? first : first.querySelector('input, select, textarea, button');
    if (focusable) focusable.focus();
  }
  return first !== null;
}

function errorSlot(target) {
  const id = target.getAttribute('aria-describedby');
  const byId = id && document.getElementById(id);
  if (byId) return byId;
  // A row: its own error cell.
  return target.querySelector(':scope > .row-error, :scope .row-error');
}

function refusal(err) {
  switch (err.status) {
    case 412:
      return 'Not saved, someone else changed it:';
    case 0:
      return 'Not saved, no answer:';
    case 401:
    case 403:
      return 'Not allowed:';
    default:
      return 'Not saved:';
  }
}

// A repeatable group of rows (a pool's servers, a virtual service's ports). columns:
// [{key, label, kind: 'text'|'number'|'check', placeholder, width}], path: 'servers'.
export function rowsEditor({ path, label, columns, rows, blank, addLabel }) {
  const body = h('tbody');
  const table = h('table', { class: 'rows' },
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c.label)), h('th', {}, h('span', { class: 'sr-only' }, 'Remove')))),
    body);
  const error = h('div', { class: 'field-error', id: nextId('err'), dataset: { errorFor: path } });
  const group = h('fieldset', { class: 'field rows-field', dataset: { path }, 'aria-describedby': error.id },
    h('legend', {}, label), table, error);
  const addButton = h('button', { type: 'button', class: 'secondary', on: { click: () => { addRow(blank()); renumber(); body.lastChild.querySelector('input').focus(); } } }, addLabel);
  group.insertBefore(addButton, error);

  function addRow(values) {
    const tr = h('tr', { class: 'row' });
    for (const c of columns) {
      const id = nextId('f');
      const input = c.kind === 'check'
        ? h('input', { id, type: 'checkbox', checked: values[c.key] !== false })
        : h('input', { id, type: 'text', value: values[c.key] ?? '', placeholder: c.placeholder, autocomplete: 'off', inputMode: c.kind === 'number' ? 'numeric' : undefined, size: c.width || 8 });
      input.dataset.key = c.key;
      const errId = nextId('err');
      input.setAttribute('aria-describedby', errId);
      tr.append(h('td', {}, input, h('div', { class: 'field-error', id: errId })));
    }
    const rowError = h('div', { class: 'row-error field-error', id: nextId('err') });
    tr.setAttribute('aria-describedby', rowError.id);
    tr.append(h('td', {}, h('button', {
      type: 'button', class: 'link', on: { click: () => { tr.remove(); renumber(); addButton.focus(); } },
    }, 'Remove'), rowError));
    body.append(tr);
  }

  // Paths and accessible names follow the row's position.
  function renumber() {
    [...body.children].forEach((tr, i) => {
      tr.dataset.path = `${path}[${i}]`;
      for (const input of tr.querySelectorAll('input')) {
        const c = columns.find((x) => x.key === input.dataset.key);
        input.dataset.path = `${path}[${i}].${c.key}`;
        input.setAttribute('aria-label', `${c.label} of row ${i + 1}`);
      }
      tr.querySelector('button.link').setAttribute('aria-label', `Remove row ${i + 1}`);
    });
  }

  rows.forEach(addRow);
  renumber();

  function read() {
    return [...body.children].map((tr) => {
      const out = {};
      for (const c of columns) {
        const input = tr.querySelector(`input[data-key="${c.key}"]`);
        if (c.kind === 'check') out[c.key] = input.checked;
        else if (c.kind === 'number') {
          const v = toNumber(input.value);
          if (v !== undefined) out[c.key] = v;
        } else out[c.key] = input.value.trim();
      }
      return out;
    });
  }
  return { el: group, read };
}
