// The controller's live stream (GET /console/live, server-sent events): the status of
// every virtual service and server, and samples of per-second rates.
//
// Read with fetch rather than EventSource, because EventSource cannot send the
// Authorization header: the stream is authenticated like every other request.

import { authHeaders } from './api.js';

export const HISTORY = 150;

export const live = {
  status: null, // the API's status view
  samples: [], // oldest first, at most HISTORY
  connected: false,
  listeners: new Set(),
};

let abort = null;
let retry = 1000;

function emit(kind) {
  for (const fn of live.listeners) {
    try {
      fn(kind);
    } catch (e) {
      console.error(e);
    }
  }
}

// fn(kind) is called with 'status', 'sample' or 'connection'; returns the unsubscriber.
export function subscribe(fn) {
  live.listeners.add(fn);
  return () => live.listeners.delete(fn);
}

function addSample(s) {
  const last = live.samples[live.samples.length - 1];
  if (last && s.t <= last.t) return false;
  live.samples.push(s);
  if (live.samples.length > HISTORY) live.samples.shift();
  return true;
}

function handle(event, data) {
  const value = JSON.parse(data);
  if (event === 'history') {
    live.samples = [];
    value.forEach(addSample);
    emit('sample');
  } else if (event === 'sample') {
    if (addSample(value)) emit('sample');
  } else if (event === 'status') {
    live.status = value;
    emit('status');
  }
}

function setConnected(c) {
  if (live.connected !== c) {
    live.connected = c;
    emit('connection');
  }
}

// Starts following the stream until stop(); onUnauthorized(message) when the token is refused.
export function start(onUnauthorized) {
  stop();
  const controller = new AbortController();
  abort = controller;
  (async () => {
    while (!controller.signal.aborted) {
      try {
        const res = await fetch('/console/live', {
          headers: authHeaders(),
          signal: controller.signal,
          cache: 'no-store',
        });
        if (res.status === 401) {
          const body = await res.json().catch(() => ({}));
          onUnauthorized(body.message || 'the token is not valid');
          return;
        }
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        setConnected(true);
        retry = 1000;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const frame = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let event = 'message';
            const data = [];
            for (const line of frame.split('\n')) {
              if (line.startsWith('event:')) event = line.slice(6).trim();
              else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
            }
            if (data.length) handle(event, data.join('\n'));
          }
        }
      } catch (e) {
        if (controller.signal.aborted) return;
        console.warn('live stream:', e);
      }
      setConnected(false);
      await new Promise((r) => setTimeout(r, retry));
      retry = Math.min(retry * 2, 10000);
    }
  })();
}

export function stop() {
  if (abort) abort.abort();
  abort = null;
  live.status = null;
  live.samples = [];
  setConnected(false);
}

// The rates of a virtual service or of a pool's server in a sample: [pkt/s, B/s, flows/s].
export function serviceRate(sample, name) {
  return (sample && sample.services[name]) || [0, 0, 0];
}

export function serverRate(sample, pool, ip) {
  return (sample && sample.servers[pool] && sample.servers[pool][ip]) || [0, 0, 0];
}

export function latest() {
  return live.samples[live.samples.length - 1];
}

// Health of each pool's servers from the status view: pool -> ip -> server status.
export function serverHealth() {
  const out = new Map();
  for (const vs of (live.status && live.status.virtual_services) || []) {
    if (!out.has(vs.pool)) out.set(vs.pool, new Map());
    const pool = out.get(vs.pool);
    for (const s of vs.servers) {
      const known = pool.get(s.ip);
      // A disabled virtual service's view says nothing of health: prefer another's.
      if (!known || (known.state === 'unknown' && s.state !== 'unknown')) pool.set(s.ip, s);
    }
  }
  return out;
}
