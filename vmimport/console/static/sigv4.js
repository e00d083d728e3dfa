// AWS Signature Version 4 in the browser (WebCrypto), for every protocol this server speaks:
// EC2 Query (form bodies), S3 REST (paths, queries, hashed bodies), EBS rest-json, and
// presigned S3 GET URLs. The secret never leaves the page: only signatures are sent.
"use strict";

const SigV4 = (() => {
  const encoder = new TextEncoder();
  const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  const hex = (buffer) => Array.from(new Uint8Array(buffer),
    (b) => b.toString(16).padStart(2, "0")).join("");
  // SHA-256 of a string, an ArrayBuffer or a typed array, as hex.
  const sha256 = async (data) => hex(await crypto.subtle.digest(
    "SHA-256", typeof data === "string" ? encoder.encode(data) : data));
  const hmac = async (key, text) => {
    const raw = typeof key === "string" ? encoder.encode(key) : key;
    const cryptoKey = await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" },
                                                    false, ["sign"]);
    return new Uint8Array(await crypto.subtle.sign("HMAC", cryptoKey, encoder.encode(text)));
  };
  // RFC 3986 encoding, as SigV4 wants it (encodeURIComponent leaves !'()* alone).
  const encode = (value) => encodeURIComponent(value).replace(/[!'()*]/g,
    (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
  // A path as sent and signed: each segment encoded, the slashes kept.
  const encodePath = (path) => path.split("/").map(encode).join("/");
  // {name: value} -> the canonical (and sent) query string: encoded, sorted by name.
  const queryString = (query) => Object.keys(query).map((k) => [encode(k), encode(query[k])])
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map(([k, v]) => `${k}=${v}`)
    .join("&");
  const timestamp = (now) => (now || new Date()).toISOString().replace(/[-:]/g, "")
    .replace(/\.\d+/, "");

  async function signature(key, amzDate, scope, canonical) {
    const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, await sha256(canonical)].join("\n");
    let signing = await hmac("AWS4" + key.secretKey, amzDate.slice(0, 8));
    for (const part of scope.split("/").slice(1)) signing = await hmac(signing, part);
    return hex(await hmac(signing, toSign));
  }

  // The headers to send with a request of `method` to `path` (already encoded) with `query`
  // ({name: value}) and `headers` ({name: value}, signed too), whose body hashes to
  // `payloadHash` (S3 sends it as X-Amz-Content-SHA256).
  async function signRequest(key, { service, method, path, query = {}, headers = {},
                                    payloadHash = EMPTY_SHA256, host, now }) {
    const amzDate = timestamp(now);
    // Temporary (STS) credentials: the session token is sent and signed with the request.
    const all = key.sessionToken ? { ...headers, "X-Amz-Security-Token": key.sessionToken } : headers;
    const signed = { host, "x-amz-date": amzDate };
    for (const [name, value] of Object.entries(all)) signed[name.toLowerCase()] = value;
    if (service === "s3") signed["x-amz-content-sha256"] = payloadHash;
    const names = Object.keys(signed).sort();
    const canonical = [method, path, queryString(query),
                       names.map((n) => `${n}:${String(signed[n]).trim()}\n`).join(""),
                       names.join(";"), payloadHash].join("\n");
    const scope = `${amzDate.slice(0, 8)}/${key.region}/${service}/aws4_request`;
    const result = { ...all, "X-Amz-Date": amzDate };
    if (service === "s3") result["X-Amz-Content-SHA256"] = payloadHash;
    result.Authorization = `AWS4-HMAC-SHA256 Credential=${key.accessKey}/${scope}, ` +
      `SignedHeaders=${names.join(";")}, Signature=${await signature(key, amzDate, scope, canonical)}`;
    return result;
  }

  // The headers for a POST of a Query-protocol `body` to host + "/" (EC2), as before.
  async function sign({ accessKey, secretKey, region, service, host, body, contentType, now }) {
    return signRequest({ accessKey, secretKey, region }, {
      service, method: "POST", path: "/", headers: { "Content-Type": contentType },
      payloadHash: await sha256(body), host, now });
  }

  // A presigned S3 GET URL (path encoded), valid for `expires` seconds: a link to hand out.
  async function presign(key, { path, host, expires = 3600, now, origin }) {
    const amzDate = timestamp(now);
    const scope = `${amzDate.slice(0, 8)}/${key.region}/s3/aws4_request`;
    const query = { "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
                    "X-Amz-Credential": `${key.accessKey}/${scope}`, "X-Amz-Date": amzDate,
                    "X-Amz-Expires": String(expires), "X-Amz-SignedHeaders": "host" };
    if (key.sessionToken) query["X-Amz-Security-Token"] = key.sessionToken;
    const canonical = ["GET", path, queryString(query), `host:${host}\n`, "host",
                       "UNSIGNED-PAYLOAD"].join("\n");
    const sig = await signature(key, amzDate, scope, canonical);
    return `${origin}${path}?${queryString(query)}&X-Amz-Signature=${sig}`;
  }

  // A Query-protocol body: {Action, Version, ...flattened parameters}.
  function queryBody(params) {
    return Object.keys(params).sort().map((k) => `${encode(k)}=${encode(params[k])}`).join("&");
  }

  return { sign, signRequest, presign, queryBody, queryString, encodePath, sha256, hex, hmac,
           EMPTY_SHA256 };
})();

if (typeof module !== "undefined") module.exports = SigV4;  // for node
