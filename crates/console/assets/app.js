// The console's shell: sign-in and sign-out, navigation, the page in view.

import { api, ApiError, token, setToken, clearToken, setUnauthorizedHandler } from './api.js';
import { h, clear, notice } from './dom.js';
import * as live from './live.js';
import { dashboardPage } from './dashboard.js';
import {
  formPage, networkProfilesPage, applicationProfilesPage, healthMonitorsPage, poolsPage,
  serviceEngineGroupsPage, virtualServicesPage, serviceEnginesPage, eventsPage,
} from './objects.js';

const PAGES = [
  ['dashboard', 'Dashboard', dashboardPage],
  ['virtual-services', 'Virtual services', virtualServicesPage],
  ['pools', 'Pools', poolsPage],
  ['health-monitors', 'Health monitors', healthMonitorsPage],
  ['network-profiles', 'Network profiles', networkProfilesPage],
  ['application-profiles', 'Application profiles', applicationProfilesPage],
  ['service-engine-groups', 'SE groups', serviceEngineGroupsPage],
  ['service-engines', 'Service engines', serviceEnginesPage],
  ['events', 'Events', eventsPage],
];
const EDITABLE = new Set(['virtual-services', 'pools', 'service-engine-groups', 'health-monitors', 'network-profiles', 'application-profiles']);

const $ = (id) => document.getElementById(id);
let cleanups = [];
let flashText = null;
let generation = 0;

function showSignIn(message) {
  live.stop();
  runCleanups();
  clear($('main'));
  $('app').hidden = true;
  $('signin').hidden = false;
  const err = $('signin-error');
  err.textContent = message || '';
  err.hidden = !message;
  $('token').value = '';
  $('token').focus();
}

// The controller refused what this tab holds: forget it.
function signOut(message) {
  clearToken();
  showSignIn(message);
}

// The operator signs out: the controller ends the session, then the tab forgets it. If
// the controller cannot be told, the tab forgets it all the same and says so.
async function signOutAtController() {
  const held = token();
  let message = 'Signed out.';
  if (held) {
    try {
      await api('DELETE', '/api/v1/sessions/current', { token: held });
    } catch (err) {
      if (err.error === 'not_a_session' || err.error === 'auth_disabled' || err.status === 401) {
        // A token kept from before sessions, authentication off, or already ended.
      } else {
        message = `Signed out in this browser, but the controller could not end the session (${err.message}): it ends by itself within eight hours.`;
      }
    }
  }
  signOut(message);
}

async function signIn(candidate) {
  // The token is exchanged for a session before anything is kept: a refused one is never
  // stored, and the token itself never is.
  let held;
  try {
    held = (await api('POST', '/api/v1/sessions', { token: candidate })).session;
  } catch (err) {
    if (err.error !== 'auth_disabled') throw err;
    // Authentication is off: nothing checks what is sent.
    held = candidate;
  }
  setToken(held);
  enter();
}

function enter() {
  $('signin').hidden = true;
  $('app').hidden = false;
  live.start((message) => signOut(`Signed out: the controller refused the token (${message}).`));
  if (!location.hash || location.hash === '#' || location.hash === '#/') location.hash = '#/dashboard';
  else route();
}

function runCleanups() {
  for (const fn of cleanups) {
    try {
      fn();
    } catch (e) {
      console.error(e);
    }
  }
  cleanups = [];
}

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  return { page: parts[0] || 'dashboard', action: parts[1], name: parts.slice(2).join('/') };
}

async function route() {
  if (!token()) return showSignIn();
  runCleanups();
  const mine = ++generation;
  const main = $('main');
  clear(main);
  const { page, action, name } = parseRoute();
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.page === page) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const entry = PAGES.find(([p]) => p === page);
  if (flashText) {
    main.append(notice('ok', flashText));
    flashText = null;
  }
  const ctx = {
    onCleanup: (fn) => cleanups.push(fn),
    flash: (text) => { flashText = text; },
    rerender: () => route(),
  };
  const title = entry ? entry[1] : 'Not found';
  document.title = `${title} — Ricochet`;
  try {
    if (!entry) {
      main.append(h('h1', {}, 'No such page'), h('p', {}, h('a', { href: '#/dashboard' }, 'Go to the dashboard')));
    } else if ((action === 'new' || action === 'edit') && EDITABLE.has(page)) {
      await formPage(main, ctx, page, action === 'edit' ? name : null);
    } else {
      await entry[2](main, ctx);
      // When the page was complete and painted (the browser test's figure for 1,000
      // services): the frame after the one that laid it out.
      requestAnimationFrame(() => requestAnimationFrame(() => {
        main.dataset.shownAt = String(performance.now());
      }));
      const heading = main.querySelector('h1');
      if (heading && mine === generation) heading.focus({ preventScroll: true });
    }
  } catch (err) {
    if (mine !== generation) return;
    if (err instanceof ApiError && err.status === 401) return;
    console.error(err);
    main.append(notice('error', h('strong', {}, 'This page could not be shown. '), err.message || String(err)));
  }
}

function init() {
  const nav = $('nav');
  for (const [page, label] of PAGES) nav.append(h('a', { href: `#/${page}`, dataset: { page } }, label));
  setUnauthorizedHandler((err) => signOut(`Signed out: the controller refused the token (${err.message}).`));
  $('signin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const candidate = $('token').value.trim();
    const button = $('signin-button');
    if (!candidate) {
      $('signin-error').hidden = false;
      $('signin-error').textContent = 'Enter a token.';
      $('token').focus();
      return;
    }
    button.disabled = true;
    try {
      await signIn(candidate);
    } catch (err) {
      $('signin-error').hidden = false;
      $('signin-error').textContent = err.status === 401
        ? `The controller refused this token: ${err.message}.`
        : `Cannot sign in: ${err.message}`;
      $('token').select();
    } finally {
      button.disabled = false;
    }
  });
  $('signout').addEventListener('click', () => signOutAtController());
  $('skip').addEventListener('click', () => $('main').focus());
  window.addEventListener('hashchange', route);
  const status = $('live-state');
  live.subscribe((kind) => {
    if (kind === 'connection') {
      status.textContent = live.live.connected ? 'live' : 'reconnecting…';
      status.className = live.live.connected ? 'live on' : 'live off';
    }
  });
  if (token()) enter();
  else showSignIn();
}

init();
