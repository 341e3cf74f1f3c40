// The controller's REST API, with the operator's token.
//
// Signing in exchanges the operator's token for a session (POST /api/v1/sessions); the
// session's secret lives in this tab's sessionStorage and goes out in the Authorization
// header, exactly as the CLI sends a token: the controller checks it with the same code
// for the console as for every client (ARCHITECTURE.md, "The web console", says why not a
// cookie). Signing out ends the session at the controller.

const KEY = 'ricochet.token';

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(t) {
  sessionStorage.setItem(KEY, t);
}

export function clearToken() {
  sessionStorage.removeItem(KEY);
}

// Called with the error body when the controller answers 401 to a signed-in request.
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

// A refusal as the API answers it: {error, message, details: [{path, message}]}.
export class ApiError extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.error = body.error || `http_${status}`;
    this.details = Array.isArray(body.details) ? body.details : [];
  }
}

export function authHeaders(t = token()) {
  return { Authorization: `Bearer ${t}` };
}

// api('PUT', '/api/v1/pools/web-pool', {body, ifMatch: 12}): the answer's JSON, or an
// ApiError. `ifMatch` is the revision the edit was prepared against.
export async function api(method, path, { body, ifMatch, signal, token: t } = {}) {
  const headers = authHeaders(t || token());
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (ifMatch !== undefined) headers['If-Match'] = `"${ifMatch}"`;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, {
      error: 'unreachable',
      message: `the controller does not answer (${e.message})`,
    });
  }
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!res.ok) {
    const err = new ApiError(res.status, json || { message: text || res.statusText });
    if (res.status === 401 && !t) onUnauthorized(err);
    throw err;
  }
  return json;
}

// The collections of the configuration's kinds, as the API and the configuration name them.
export const KINDS = {
  'network-profiles': { list: 'network_profiles', noun: 'network profile', title: 'Network profiles' },
  'application-profiles': { list: 'application_profiles', noun: 'application profile', title: 'Application profiles' },
  'health-monitors': { list: 'health_monitors', noun: 'health monitor', title: 'Health monitors' },
  'pools': { list: 'pools', noun: 'pool', title: 'Pools' },
  'service-engine-groups': { list: 'service_engine_groups', noun: 'service engine group', title: 'Service engine groups' },
  'virtual-services': { list: 'virtual_services', noun: 'virtual service', title: 'Virtual services' },
};

export function objectPath(segment, name) {
  return `/api/v1/${segment}/${encodeURIComponent(name)}`;
}
