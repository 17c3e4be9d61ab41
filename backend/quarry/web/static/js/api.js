// The only module that talks to the server: the public REST API under /api/v1, with the bearer
// token kept in sessionStorage (gone when the tab closes). Every failure becomes an ApiError
// carrying the human sentence the API answered.

const API = "/api/v1";
const SESSION_KEY = "quarry.session";

export class ApiError extends Error {
  constructor(status, code, message, problems = []) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.problems = problems;
  }
}

export const session = {
  read() {
    try {
      const data = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
      return data && data.token ? data : null;
    } catch {
      return null;
    }
  },
  get token() {
    const data = this.read();
    return data ? data.token : null;
  },
  get email() {
    const data = this.read();
    return data ? data.email : null;
  },
  /** Whether the signed-in user is an administrator (shows the Users page; the server checks). */
  get isAdmin() {
    const data = this.read();
    return Boolean(data && data.isAdmin);
  },
  save(token, expiresAt, email, isAdmin = false) {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify({ token, expiresAt, email, isAdmin }));
  },
  /** Keep what GET /users/me says about the signed-in user. */
  setUser(me) {
    const data = this.read();
    if (data) this.save(data.token, data.expiresAt, me.email, Boolean(me.is_admin));
  },
  /** A fresh token for the same user (after changing their password). */
  replaceToken(token, expiresAt) {
    const data = this.read();
    if (data) this.save(token, expiresAt, data.email, data.isAdmin);
  },
  clear() {
    sessionStorage.removeItem(SESSION_KEY);
  },
  /** True when there is no token or it has passed its expiry time. */
  expired() {
    const data = this.read();
    if (!data) return true;
    const expires = Date.parse(data.expiresAt || "");
    return !Number.isNaN(expires) && expires <= Date.now();
  },
};

let unauthorizedHandler = () => {};
/** Called with the ApiError whenever an authenticated request answers 401. */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

// -- errors -------------------------------------------------------------------------------------

/** FastAPI's default validation list [{loc, msg}] as readable lines. */
function describeValidationList(list) {
  return list.map((item) => {
    if (!item || typeof item !== "object") return String(item);
    const loc = (item.loc || []).filter((p) => !["body", "query", "path", "header"].includes(p));
    const msg = item.msg || "is invalid";
    return loc.length ? `${loc.join(" › ")}: ${msg}` : msg;
  });
}

/** Build the ApiError for a failed response from its status and parsed body. */
export function errorFromBody(status, statusText, body) {
  if (body && typeof body === "object") {
    const code = body.error || (status === 422 ? "validation_error" : "http_error");
    const detail = body.detail;
    if (typeof detail === "string" && detail.trim()) {
      // The API's own 422 sentence joins problems with "; "; keep them apart for display.
      // A codebook file that was not imported lists its problems one by one.
      let problems = status === 422 ? detail.split("; ").filter(Boolean) : [];
      if (Array.isArray(body.problems) && body.problems.length) {
        problems = body.problems.map((p) => (p && p.message) || String(p));
      }
      return new ApiError(status, code, detail, problems);
    }
    if (Array.isArray(detail) && detail.length) {
      const problems = describeValidationList(detail);
      return new ApiError(status, code, problems.join("; "), problems);
    }
    if (detail && typeof detail === "object" && detail.msg) {
      return new ApiError(status, code, String(detail.msg));
    }
  }
  const reason = statusText ? ` (${statusText})` : "";
  return new ApiError(status, "http_error", `The server answered with status ${status}${reason}.`);
}

async function errorFromResponse(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return errorFromBody(response.status, response.statusText, body);
}

/** Resolve after `ms`, or reject with AbortError when `signal` aborts first. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) {
      reject(new DOMException("Aborted", "AbortError"));
      return;
    }
    const timer = setTimeout(resolve, ms);
    if (signal) {
      signal.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(new DOMException("Aborted", "AbortError"));
      }, { once: true });
    }
  });
}

function networkError() {
  return new ApiError(0, "network_error",
    "Could not reach the Quarry server. Check that it is running and try again.");
}

// -- requests -----------------------------------------------------------------------------------

export function apiUrl(path, query) {
  const url = new URL(API + path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value === undefined || value === null || value === "") continue;
    // A list is the parameter repeated (?document_id=a&document_id=b).
    if (Array.isArray(value)) value.forEach((item) => url.searchParams.append(key, String(item)));
    else url.searchParams.set(key, String(value));
  }
  return url.pathname + url.search;
}

/**
 * Send a request and return the Response when it succeeded (2xx); otherwise throw an ApiError.
 * Options: json (a body sent as JSON), form (URLSearchParams / FormData), query, signal,
 * headers, auth (default true: send the token, and treat 401 as an expired session).
 */
export async function request(method, path, options = {}) {
  const { json, form, query, signal, auth = true } = options;
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  const token = session.token;
  if (auth && token) headers.Authorization = `Bearer ${token}`;
  let response;
  for (let attempt = 0; ; attempt += 1) {
    try {
      response = await fetch(apiUrl(path, query), { method, headers, body, signal, cache: "no-store" });
    } catch (error) {
      if (error && error.name === "AbortError") throw error;
      throw networkError();
    }
    // Rate limited: a read is safe to repeat, so wait as told (briefly) and try once more.
    const wait = Number(response.headers.get("Retry-After"));
    if (response.status !== 429 || method !== "GET" || attempt > 0 || !(wait > 0) || wait > 30) break;
    await sleep(wait * 1000, signal);
  }
  if (!response.ok) {
    const error = await errorFromResponse(response);
    if (response.status === 401 && auth) unauthorizedHandler(error);
    throw error;
  }
  return response;
}

/** A request whose JSON answer is returned (null for 204). */
export async function api(method, path, options = {}) {
  const response = await request(method, path, options);
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

export const get = (path, query, options = {}) => api("GET", path, { ...options, query });
export const post = (path, json, options = {}) => api("POST", path, { ...options, json });
export const patch = (path, json, options = {}) => api("PATCH", path, { ...options, json });
export const put = (path, json, options = {}) => api("PUT", path, { ...options, json });
export const del = (path, options = {}) => api("DELETE", path, options);

/** Every item of a paginated list, fetched page by page. */
export async function listAll(path, query = {}, options = {}) {
  const limit = 500;
  const items = [];
  for (let offset = 0; ; offset += limit) {
    const page = await get(path, { ...query, limit, offset }, options);
    items.push(...page.items);
    if (!page.items.length || items.length >= page.total) return items;
  }
}

/** Run `worker` over `items`, at most `limit` at a time. */
export async function mapLimit(items, limit, worker) {
  const results = new Array(items.length);
  let next = 0;
  async function lane() {
    while (next < items.length) {
      const index = next;
      next += 1;
      results[index] = await worker(items[index], index);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}

/**
 * Import a codebook file (YAML, JSON, CSV or XLSX) into a project: all or nothing. Its format
 * comes from the file's extension; the answer says what was created, updated and kept.
 */
export async function importCodebook(projectId, file, options = {}) {
  const extension = (file.name.split(".").pop() || "").toLowerCase();
  const format = { yml: "yaml", yaml: "yaml", json: "json", csv: "csv", xlsx: "xlsx" }[extension];
  const response = await request("PUT", `/projects/${projectId}/codebook`, {
    ...options,
    form: file,
    query: { format, ...(options.query || {}) },
    headers: { "Content-Type": file.type || "application/octet-stream" },
  });
  return response.json();
}

// -- sign-in ------------------------------------------------------------------------------------

export async function signIn(email, password) {
  const form = new URLSearchParams({ username: email, password });
  const token = await api("POST", "/auth/token", { form, auth: false });
  session.save(token.access_token, token.expires_at, email.trim().toLowerCase());
  return token;
}

/** Set a password with a one-time link's token; signs in as the link's user. */
export async function setPasswordWithLink(linkToken, password) {
  const token = await api("POST", "/auth/password", {
    json: { token: linkToken, password }, auth: false,
  });
  session.save(token.access_token, token.expires_at, null);
  return token;
}

// -- uploads ------------------------------------------------------------------------------------

/** How often one upload waits out a 429 (its Retry-After, up to 30 s) before it gives up. */
const UPLOAD_RATE_RETRIES = 8;

/**
 * Upload files in one request with XMLHttpRequest, whose upload progress events fetch() lacks.
 * Returns {promise, abort}; the promise resolves to the documents, in the files' order (the
 * API takes a request's files all or none). A 429 (the API's request limit) is waited out
 * and the files sent again.
 */
export function uploadDocuments(projectId, files, onProgress) {
  let xhr = null;
  let aborted = false;
  const once = () => new Promise((resolve, reject) => {
    xhr = new XMLHttpRequest();
    xhr.open("POST", apiUrl(`/projects/${projectId}/documents`));
    xhr.setRequestHeader("Accept", "application/json");
    const token = session.token;
    if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable && onProgress) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300 && body && Array.isArray(body.items)) {
        resolve(body.items);
        return;
      }
      const error = errorFromBody(xhr.status, xhr.statusText, body);
      error.retryAfter = Number(xhr.getResponseHeader("Retry-After"));
      if (xhr.status === 401) unauthorizedHandler(error);
      reject(error);
    });
    xhr.addEventListener("error", () => reject(networkError()));
    xhr.addEventListener("abort", () => reject(new DOMException("Upload cancelled", "AbortError")));
    const data = new FormData();
    for (const file of files) data.append("files", file, file.name);
    xhr.send(data);
  });
  const promise = (async () => {
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await once();
      } catch (error) {
        const wait = error.retryAfter;
        const limited = error.status === 429 && wait > 0 && wait <= 30;
        if (!limited || aborted || attempt >= UPLOAD_RATE_RETRIES) throw error;
        if (onProgress) onProgress(0);
        await sleep(wait * 1000);
      }
    }
  })();
  return { promise, abort: () => { aborted = true; if (xhr) xhr.abort(); } };
}

/** Upload one file: {promise, abort}, the promise resolving to its document. */
export function uploadDocument(projectId, file, onProgress) {
  const upload = uploadDocuments(projectId, [file], onProgress);
  return { promise: upload.promise.then((items) => items[0]), abort: upload.abort };
}

// -- server-sent events -------------------------------------------------------------------------

/** An incremental parser of the text/event-stream format (the subset servers send). */
export class SSEParser {
  constructor() {
    this.buffer = "";
    this.lastEventId = "";
    this.type = "";
    this.data = [];
  }

  /** Feed decoded text; returns the events completed by it. */
  feed(text) {
    this.buffer += text;
    const events = [];
    for (;;) {
      const match = /\r\n|\n|\r/.exec(this.buffer);
      if (!match) break;
      // A lone "\r" at the end may be the first half of "\r\n": wait for more.
      if (match[0] === "\r" && match.index === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      if (line === "") {
        if (this.data.length) {
          events.push({ type: this.type || "message", data: this.data.join("\n"), id: this.lastEventId });
        }
        this.type = "";
        this.data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") this.type = value;
      else if (field === "data") this.data.push(value);
      else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    }
    return events;
  }
}

/**
 * Read a server-sent event stream with fetch(), because EventSource cannot send the
 * Authorization header. Calls onEvent({type, data, id}) per event; resolves when the stream
 * ends. Returns the last event id seen so a caller can resume with Last-Event-ID.
 */
export async function readEventStream(path, { signal, lastEventId, onEvent }) {
  const headers = { Accept: "text/event-stream" };
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  const response = await request("GET", path, { signal, headers });
  const parser = new SSEParser();
  parser.lastEventId = lastEventId || "";
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const event of parser.feed(value)) onEvent(event);
    }
  } finally {
    reader.releaseLock();
  }
  return parser.lastEventId;
}

// -- downloads ----------------------------------------------------------------------------------

function filenameFromDisposition(header) {
  if (!header) return null;
  const star = /filename\*\s*=\s*([^']*)'[^']*'([^;]+)/i.exec(header);
  if (star) {
    try {
      return decodeURIComponent(star[2].trim().replace(/^"|"$/g, ""));
    } catch {
      // fall through to the plain form
    }
  }
  const plain = /filename\s*=\s*("([^"]*)"|[^;]+)/i.exec(header);
  if (plain) return (plain[2] !== undefined ? plain[2] : plain[1]).trim();
  return null;
}

/**
 * Download a file from an authenticated endpoint: fetch it as a blob (a plain link cannot carry
 * the bearer token) and save it under the name the server gives.
 */
export async function downloadFile(path, query, fallbackName) {
  const response = await request("GET", path, { query, headers: { Accept: "*/*" } });
  const blob = await response.blob();
  const name = filenameFromDisposition(response.headers.get("content-disposition")) || fallbackName;
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  return { name, size: blob.size };
}
