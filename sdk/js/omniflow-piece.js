// omniflow-piece.js: write OmniFlow pieces in JavaScript (built with ComponentizeJS).
//
// A piece is a WebAssembly component offering one or more *actions*. Here an
// action is a function `(ctx, input) => value` (or an async one); input and
// output cross the boundary as JSON text, and the JSON Schemas you declare are
// published to the host (which validates every input against its schema
// before the call).
//
//   import { Piece, InvalidInput, log } from './omniflow-piece.js';
//
//   const piece = new Piece('adder', '0.1.0', 'Adds two numbers')
//     .action('add', 'Add a and b', {
//       input: { type: 'object', required: ['a', 'b'],
//                properties: { a: { type: 'integer' }, b: { type: 'integer' } } },
//       output: { type: 'object', properties: { sum: { type: 'integer' } } },
//     }, (ctx, { a, b }) => {
//       log.info(`adding on attempt ${ctx.attempt}`);
//       return { sum: a + b };
//     });
//
//   export const handler = piece.handler();   // the `omniflow:piece/handler` export
//
// Build with `scripts/build-lang-piece.sh js DIR out.wasm` (DIR holds
// `piece.js`; this file is copied next to it as `./omniflow-piece.js`).
//
// Errors decide whether the host retries:
//   throw new InvalidInput('...')                       never retried
//   throw new Retryable('...', { retryAfterMs: 5000 })  retried per the step's policy
//   throw new Fatal('...')                              never retried
// Any other thrown value (a bug: TypeError...) becomes a *fatal* step error
// `"<name>: <message>"`, its stack goes to the step log at error level; it
// never traps the component.
//
// Logging: `log.trace/debug/info/warn/error(message)` append a line to the
// step log (`console.log` also reaches it, without a level).
//
// HTTP: the global `fetch()` goes through `wasi:http/outgoing-handler`; the
// host checks every request against the step's `grants.http` and places
// `${secret:NAME}` values in URLs and headers. The action must be `async`
// (or return a promise): ComponentizeJS runs the event loop until it settles.
// A refused request and a transport failure look the same to JavaScript
// (`TypeError: NetworkError when attempting to fetch resource`); the step log
// says when it was a missing grant. `http.fetch` below wraps `fetch` and turns
// that into `Retryable`, and `http.check(response)` maps HTTP statuses the way
// the built-in `http-request` piece does.

import { log as witLog } from 'omniflow:piece/log@0.1.0';

/** Base of the errors an action throws on purpose. */
export class StepError extends Error {
  constructor(message) {
    super(String(message));
    this.name = this.constructor.name;
  }
}

/** The input does not fit the action: fix the workflow. Never retried. */
export class InvalidInput extends StepError {}

/** A permanent failure. Never retried. */
export class Fatal extends StepError {}

/** A transient failure, retried per the step's policy. */
export class Retryable extends StepError {
  /** `retryAfterMs`: wait at least this long before the next attempt. */
  constructor(message, { retryAfterMs } = {}) {
    super(message);
    this.retryAfterMs = retryAfterMs == null ? undefined : Math.max(0, Math.floor(Number(retryAfterMs)));
  }
}

function emit(level, message) {
  witLog(level, typeof message === 'string' ? message : String(message));
}

/** Lines logged here end up in the step's log (size-capped by the host). */
export const log = {
  trace: (m) => emit('trace', m),
  debug: (m) => emit('debug', m),
  info: (m) => emit('info', m),
  warn: (m) => emit('warn', m),
  error: (m) => emit('error', m),
};

function schemaText(schema, what, action) {
  if (typeof schema === 'string') {
    JSON.parse(schema);
    return schema;
  }
  const text = JSON.stringify(schema);
  if (text === undefined) throw new TypeError(`action ${action}: ${what} schema is not JSON`);
  return text;
}

/** What the WIT `step-error` variant looks like to ComponentizeJS. */
function toWitError(err) {
  if (err instanceof InvalidInput) return { tag: 'invalid-input', val: err.message };
  if (err instanceof Retryable) {
    return {
      tag: 'retryable',
      val: {
        message: err.message,
        retryAfterMs: err.retryAfterMs === undefined ? undefined : BigInt(err.retryAfterMs),
      },
    };
  }
  if (err instanceof StepError) return { tag: 'fatal', val: err.message };
  // Anything else is a bug in the action: fatal, with the stack in the log.
  const name = (err && err.name) || 'Error';
  const message = err && err.message !== undefined ? err.message : String(err);
  if (err && err.stack) emit('error', `${name}: ${message}\n${String(err.stack).trimEnd()}`);
  return { tag: 'fatal', val: `${name}: ${message}` };
}

function outputText(value) {
  let text;
  try {
    text = JSON.stringify(value === undefined ? null : value);
  } catch (e) {
    throw new Fatal(`output is not JSON: ${e.message}`);
  }
  if (text === undefined) throw new Fatal('output is not JSON (a function or a symbol)');
  return text;
}

/** A piece: name, version, description, its actions and what it asks for. */
export class Piece {
  constructor(name, version, description, { httpDestinations = [], secrets = [] } = {}) {
    this.name = name;
    this.version = version;
    this.description = description;
    this.httpDestinations = [...httpDestinations];
    this.secrets = [...secrets];
    this.actions = new Map();
  }

  /**
   * Add an action. `schemas` is `{ input, output }` (objects or JSON text;
   * input defaults to `{ type: 'object' }`, output to `{}`); `run(ctx, input)`
   * returns a JSON-able value or a promise of one.
   */
  action(name, description, schemas, run) {
    if (typeof schemas === 'function') [schemas, run] = [{}, schemas];
    if (!name || this.actions.has(name)) throw new Error(`action name ${JSON.stringify(name)} is empty or repeated`);
    this.actions.set(name, {
      name,
      description: description || '',
      inputSchema: schemaText(schemas.input ?? { type: 'object' }, 'input', name),
      outputSchema: schemaText(schemas.output ?? {}, 'output', name),
      run,
    });
    return this;
  }

  /** Declare a destination this piece expects to be granted (informational). */
  httpDestination(destination) {
    this.httpDestinations.push(destination);
    return this;
  }

  /** Declare a secret this piece expects the host to place into requests. */
  secret(name) {
    this.secrets.push(name);
    return this;
  }

  /** The `piece-info` record. */
  info() {
    return {
      name: this.name,
      version: this.version,
      description: this.description,
      actions: [...this.actions.values()].map(({ name, description, inputSchema, outputSchema }) => ({
        name, description, inputSchema, outputSchema,
      })),
      httpDestinations: [...this.httpDestinations],
      secrets: [...this.secrets],
    };
  }

  /**
   * Run an action on JSON text: JSON text, or a promise of it, or a thrown
   * StepError (any other error is turned into `Fatal` by `handler().run`).
   */
  call(ctx, actionName, inputText) {
    const action = this.actions.get(actionName);
    if (!action) {
      throw new InvalidInput(
        `piece ${this.name} has no action ${JSON.stringify(actionName)} (actions: ${[...this.actions.keys()].join(', ')})`,
      );
    }
    let input;
    try {
      input = JSON.parse(inputText);
    } catch (e) {
      throw new InvalidInput(`input: ${e.message}`);
    }
    const context = Object.freeze({
      runId: ctx.runId,
      stepId: ctx.stepId,
      attempt: ctx.attempt,
      idempotencyKey: ctx.idempotencyKey,
    });
    const out = action.run(context, input);
    if (out && typeof out.then === 'function') return Promise.resolve(out).then(outputText);
    return outputText(out);
  }

  /** The object to export as `handler`: `{ info, run }`. */
  handler() {
    return {
      info: () => this.info(),
      run: (ctx, action, input) => {
        let out;
        try {
          out = this.call(ctx, action, input);
        } catch (e) {
          throw toWitError(e);
        }
        if (typeof out === 'string') return out;
        return out.catch((e) => {
          throw toWitError(e);
        });
      },
    };
  }
}

function retryAfterMs(response) {
  const value = response.headers.get('retry-after');
  if (!value) return undefined;
  const seconds = Number(value.trim());
  if (Number.isFinite(seconds) && seconds >= 0) return Math.round(seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/** Helpers over the global `fetch()` (grants apply). */
export const http = {
  /** `fetch(url, init)`, with a failed request thrown as `Retryable`. */
  async fetch(url, init) {
    if (!/^https?:\/\//i.test(String(url))) {
      throw new InvalidInput(`invalid URL ${JSON.stringify(String(url))}: it must start with http:// or https://`);
    }
    try {
      return await fetch(url, init);
    } catch (e) {
      throw new Retryable(
        `HTTP request to ${url} failed: ${e.message} (if the step log says it was denied, add a grant to the step's grants.http)`,
      );
    }
  },

  /**
   * Throw unless `response` is 2xx: 408, 429 and 5xx are `Retryable`
   * (honouring `Retry-After`), any other status is `Fatal`.
   */
  async check(response) {
    if (response.ok) return response;
    let body = '';
    try {
      body = (await response.text()).slice(0, 300);
    } catch (_) { /* the status says enough */ }
    const message = `HTTP ${response.status}${response.url ? ` from ${response.url}` : ''}${body ? `: ${body}` : ''}`;
    if (response.status === 408 || response.status === 429 || response.status >= 500) {
      throw new Retryable(message, { retryAfterMs: retryAfterMs(response) });
    }
    throw new Fatal(message);
  },

  /** GET (or `init`) `url`, check the status, return the body as text. */
  async text(url, init) {
    return (await http.check(await http.fetch(url, init))).text();
  },

  /** GET (or `init`) `url`, check the status, return the body parsed as JSON (else `Fatal`). */
  async json(url, init) {
    const text = await http.text(url, init);
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new Fatal(`the response of ${url} is not JSON: ${e.message}`);
    }
  },
};
