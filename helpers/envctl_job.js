// envctl's runtime API for Node jobs (no dependencies).
//
// A job envctl runs gets ENVCTL_RUNTIME_URL, ENVCTL_EXECUTION_ID and ENVCTL_EXECUTION_TOKEN; this module reads
// them. Load it from the directory envctl names in ENVCTL_HELPERS_DIR:
//
//   const job = require(require("path").join(process.env.ENVCTL_HELPERS_DIR, "envctl_job.js"));
//   const { n } = await job.input();
//   await job.output({ double: 2 * n });
//   await job.incr("runs");
//
// Every call returns a promise. Connection errors and 503 (the store not open yet) are retried with backoff; every other failure rejects with an
// ApiError (`status` 400, 401, 403, 404 or 503; NotFound for a missing variable or job).
"use strict";

const http = require("http");

const RETRIES = 5;

class ApiError extends Error {
  constructor(status, message) {
    super(`envctl runtime API: ${status}: ${message}`);
    this.name = "ApiError";
    this.status = status;
  }
}
class BadRequest extends ApiError {}
class Unauthorized extends ApiError {}
class Forbidden extends ApiError {}
class NotFound extends ApiError {}
class Unavailable extends ApiError {}
const ERRORS = { 400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 503: Unavailable };

function env(name) {
  const value = process.env[name];
  if (!value) throw new ApiError(0, `${name} is not set: this runs outside an envctl job`);
  return value;
}

function once(method, path, body) {
  const url = new URL(env("ENVCTL_RUNTIME_URL") + path);
  const data = body === undefined ? null : Buffer.from(JSON.stringify(body));
  const headers = { Authorization: "Bearer " + (process.env.ENVCTL_EXECUTION_TOKEN || env("ENVCTL_SERVICE_TOKEN")) };
  if (data) {
    headers["Content-Type"] = "application/json";
    headers["Content-Length"] = data.length;
  }
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, timeout: 30000 }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString();
        if (res.statusCode >= 400) {
          let message = text;
          try { message = JSON.parse(text).error; } catch (_) { /* not JSON */ }
          const Kind = ERRORS[res.statusCode] || ApiError;
          reject(new Kind(res.statusCode, message));
        } else {
          resolve(text ? JSON.parse(text) : null);
        }
      });
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", (e) => { e.connection = true; reject(e); });
    if (data) req.write(data);
    req.end();
  });
}

async function call(method, path, body) {
  let pause = 50;
  for (let attempt = 0; ; attempt++) {
    try {
      return await once(method, path, body);
    } catch (e) {
      if (!e.connection && !(e instanceof Unavailable)) throw e;
      if (attempt === RETRIES) throw new Unavailable(0, `cannot reach the runtime API: ${e.message}`);
      await new Promise((r) => setTimeout(r, pause));
      pause = Math.min(pause * 2, 2000);
    }
  }
}

const execution = (path) => "/executions/" + encodeURIComponent(env("ENVCTL_EXECUTION_ID")) + path;
const variable = (key, target) =>
  execution("/variables/" + encodeURIComponent(key)) + (target ? "?target=" + encodeURIComponent(target) : "");
const variableOp = (key, op, target) =>
  execution("/variables/" + encodeURIComponent(key) + op) + (target ? "?target=" + encodeURIComponent(target) : "");
const missing = (fallback) => (e) => { if (e instanceof NotFound) return fallback; throw e; };

module.exports = {
  ApiError, BadRequest, Unauthorized, Forbidden, NotFound, Unavailable,
  /** The job's input, or null. */
  input: () => call("GET", execution("/input")),
  /** Records the job's output; the jobs after it read it in their context. */
  output: async (value) => { await call("POST", execution("/output"), value); },
  /** The job, target, attempt, repository, worker and the parents' outputs. */
  context: () => call("GET", execution("/context")),
  /** Whether the jobs after this one may run. */
  condition: async (value) => { await call("POST", execution("/condition"), { condition: Boolean(value) }); },
  /** A variable's value, or `fallback` when it does not exist. */
  getVar: (key, { target, fallback = null } = {}) =>
    call("GET", variable(key, target)).then((v) => v.value, missing(fallback)),
  /** Sets a variable (kept as text). */
  setVar: async (key, value, { target } = {}) => { await call("PUT", variable(key, target), { value: String(value) }); },
  /** Adds `by` atomically; resolves to the new value. */
  incr: (key, by = 1, { target } = {}) =>
    call("POST", variableOp(key, "/incr", target), { by }).then((v) => Number(v.value)),
  /** Whether a variable exists. */
  exists: (key, { target } = {}) => call("GET", variable(key, target)).then(() => true, missing(false)),
  /** Deletes a variable; resolves to whether it existed. */
  deleteVar: (key, { target } = {}) => call("DELETE", variable(key, target)).then(() => true, missing(false)),
  /** Reports progress (`jobs show` shows it while the job runs). */
  progress: async (percent, step, detail) => {
    await call("POST", execution("/progress"), { percent: percent ?? null, step: step ?? null, detail: detail ?? null });
  },
  /** Adds a line to the job's log. */
  log: async (message) => { await call("POST", execution("/logs"), { message: String(message) }); },
  /** Queues a job (from a service: for its own target); resolves to its id. */
  enqueue: (type, { payload, target, input, priority, after = [] } = {}) =>
    call("POST", "/jobs", { type, payload, target, input, priority, after }).then((r) => r.id),
  /** A job's record. */
  job: (id) => call("GET", "/jobs/" + encodeURIComponent(id)),
  /** Cancels a job; resolves to its status now. */
  cancel: (id) => call("POST", "/jobs/" + encodeURIComponent(id) + "/cancel").then((r) => r.status),
};
