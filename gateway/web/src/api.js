// The REST API the page uses, on the same origin as the page (the gateway).

export class ApiError extends Error {
  // status: the HTTP status (0 when no response arrived); reason: the stable reason
  // (error_code of the API's error body) or "" when the body was not ours.
  constructor(status, reason, message, details) {
    super(message);
    this.status = status;
    this.reason = reason;
    this.details = details || {};
  }
}

// Reads the API's error body ({error_code, error_message, details, ...}); tusd's own
// protocol errors are plain text.
export function errorFrom(status, text) {
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error_code === "string") {
      return new ApiError(status, body.error_code, body.error_message || body.error_code, body.details);
    }
  } catch (_) {
    // not JSON: fall through
  }
  const message = (text || "").trim() || (status ? `HTTP ${status}` : "the connection failed");
  return new ApiError(status, "", message, {});
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  headers() {
    return this.token ? { Authorization: `Bearer ${this.token}` } : {};
  }

  async get(path) {
    const response = await fetch(path, { headers: this.headers(), cache: "no-store" });
    const text = await response.text();
    if (!response.ok) throw errorFrom(response.status, text);
    return JSON.parse(text);
  }

  uploadResult(sessionId) {
    return this.get(`/v1/dashboard/upload/${encodeURIComponent(sessionId)}/result`);
  }

  analysis(analysisId) {
    return this.get(`/v1/analyses/${encodeURIComponent(analysisId)}`);
  }

  recentVideos(pageSize = 10) {
    return this.get(`/v1/videos?page_size=${pageSize}`);
  }
}
