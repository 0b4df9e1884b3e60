// Calls to the admin API from the page: the session cookie goes along by itself (same origin);
// every state-changing call carries the session's CSRF token.

let csrfToken = null;

export function setCsrf(token) {
  csrfToken = token;
}

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
  if (!response.ok) {
    const error = data && data.error;
    throw new ApiError(response.status, error ? error.message : `${response.status} ${response.statusText}`,
                       error && error.code);
  }
  return data;
}

// An API this server does not offer (yet) answers 404: its panel stays hidden.
export async function offered(path) {
  try {
    return await api("GET", path);
  } catch (e) {
    if (e.status === 404 || e.status === 405) return undefined;
    throw e;
  }
}

// A model id may contain "/" (Hugging Face repo ids): each segment is escaped, the slashes kept.
export function modelPath(id) {
  return id.split("/").map(encodeURIComponent).join("/");
}
