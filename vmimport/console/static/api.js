// The console's one way to the server: this tab's session, and signed calls to EC2 (Query),
// S3 (REST), EBS (rest-json) and vmimport's own calls (JSON), each failure an Error worded
// as the API worded it.
//
// Signing in trades the access key for temporary credentials (STS GetSessionToken, one
// hour): only those are kept, in this tab's session storage; the secret key is used for that
// one request and forgotten. When they expire, the page asks to sign in again.
"use strict";

const Api = (() => {
  const EC2_VERSION = "2016-11-15";
  const STORE = "vmimport-console-key";
  const SESSION_SECONDS = 3600;
  let onSessionEnd = () => {};

  function stored() {
    try { return JSON.parse(sessionStorage.getItem(STORE)); } catch { return null; }
  }
  const forget = () => sessionStorage.removeItem(STORE);

  // Signing out ends the session on the server too (vmimport's EndSession), so the
  // credentials stop working at once, not an hour later; the page forgets them either way.
  async function signOut() {
    try {
      if (key()) await vmimport("EndSession");
    } catch { /* ended or expired already: nothing left to end */ }
    forget();
  }

  function ended(why) {
    forget();
    onSessionEnd(why);
    return new Error(why);
  }

  // The session's credentials; an expired one is forgotten (and the page told).
  function key() {
    const value = stored();
    if (value && Date.now() >= Date.parse(value.expiration)) {
      throw ended("Your session has ended; sign in again.");
    }
    return value;
  }
  const signedIn = () => { try { return key(); } catch { return null; } };

  // A Query-protocol call (EC2, STS) signed with `credentials`.
  async function query(service, version, action, params, credentials) {
    const body = SigV4.queryBody({ Action: action, Version: version, ...params });
    const headers = await SigV4.signRequest(credentials, {
      service, method: "POST", path: "/", host: location.host,
      headers: { "Content-Type": "application/x-www-form-urlencoded; charset=utf-8" },
      payloadHash: await SigV4.sha256(body) });
    const reply = await fetch("/", { method: "POST", headers, body, credentials: "omit" });
    const text = await reply.text();
    if (!reply.ok) throw failure(action, reply.status, text);
    return parseXml(text);
  }

  // The access key and secret -> an hour's temporary credentials, kept for this tab.
  async function signIn(accessKey, secretKey, region) {
    const xml = await query("sts", "2011-06-15", "GetSessionToken",
                            { DurationSeconds: String(SESSION_SECONDS) },
                            { accessKey, secretKey, region });
    const text = (name) => xml.getElementsByTagName(name)[0].textContent;
    sessionStorage.setItem(STORE, JSON.stringify({
      accessKey: text("AccessKeyId"), secretKey: text("SecretAccessKey"),
      sessionToken: text("SessionToken"), expiration: text("Expiration"), region,
      user: accessKey }));
  }

  const parseXml = (text) => new DOMParser().parseFromString(text, "application/xml");
  // An error reply (EC2's Response/Errors/Error, S3's Error) as "what: Code: Message"; a
  // refused session token (expired, or gone from the server) ends the session.
  function failure(what, status, text) {
    const xml = parseXml(text);
    const code = xml.querySelector("Code")?.textContent || status;
    const message = xml.querySelector("Message")?.textContent || text.slice(0, 200);
    if (stored() && /security token|ExpiredToken/i.test(`${code} ${message}`)) {
      return ended(`Your session has ended (${message}); sign in again.`);
    }
    return new Error(`${what}: ${code}: ${message}`);
  }

  const ec2 = (action, params = {}) => query("ec2", EC2_VERSION, action, params, key());

  // vmimport's own calls (JSON protocol): what EC2's shapes have no room for.
  async function vmimport(action, params = {}) {
    const body = JSON.stringify(params);
    const headers = await SigV4.signRequest(key(), {
      service: "vmimport", method: "POST", path: "/", host: location.host,
      headers: { "Content-Type": "application/x-amz-json-1.1",
                 "X-Amz-Target": `VmImport.${action}` },
      payloadHash: await SigV4.sha256(body) });
    const reply = await fetch("/", { method: "POST", headers, body, credentials: "omit" });
    const document = await reply.json().catch(() => ({}));
    if (!reply.ok) throw new Error(`${action}: ${document.__type || reply.status}: ${document.message || ""}`);
    return document;
  }

  // An S3 request: `path` unencoded ("/bucket/key"), `body` a string, ArrayBuffer or null.
  async function s3(method, path, { query = {}, body = null, what = `S3 ${method}` } = {}) {
    const encoded = SigV4.encodePath(path);
    const payloadHash = body === null ? SigV4.EMPTY_SHA256 : await SigV4.sha256(body);
    const headers = await SigV4.signRequest(key(), {
      service: "s3", method, path: encoded, query, payloadHash, host: location.host });
    const search = Object.keys(query).length ? `?${SigV4.queryString(query)}` : "";
    const reply = await fetch(encoded + search, { method, headers, body, credentials: "omit" });
    const text = await reply.text();
    if (!reply.ok) throw failure(what, reply.status, text);
    return { xml: text ? parseXml(text) : null, headers: reply.headers };
  }

  // One upload part sent with XMLHttpRequest, whose upload progress fetch() cannot report:
  // `onProgress(bytesSentOfThisPart)`; resolves to the part's ETag.
  async function s3Part(path, query, data, onProgress) {
    const encoded = SigV4.encodePath(path);
    const headers = await SigV4.signRequest(key(), {
      service: "s3", method: "PUT", path: encoded, query, host: location.host,
      payloadHash: await SigV4.sha256(data) });
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", `${encoded}?${SigV4.queryString(query)}`);
      for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
      xhr.upload.onprogress = (event) => onProgress(event.loaded);
      xhr.onload = () => (xhr.status < 300 ? resolve(xhr.getResponseHeader("ETag"))
        : reject(failure(`UploadPart ${query.partNumber}`, xhr.status, xhr.responseText)));
      xhr.onerror = () => reject(new Error(`UploadPart ${query.partNumber}: the connection failed`));
      xhr.send(data);
    });
  }

  async function ebs(path, query = {}) {
    const headers = await SigV4.signRequest(key(), {
      service: "ebs", method: "GET", path, query, host: location.host });
    const search = Object.keys(query).length ? `?${SigV4.queryString(query)}` : "";
    const reply = await fetch(path + search, { headers, credentials: "omit" });
    const document = await reply.json().catch(() => ({}));
    if (!reply.ok) {
      throw new Error(`EBS ${path}: ${reply.headers.get("x-amzn-ErrorType") || reply.status}: ` +
                      `${document.message || document.Message || reply.statusText}`);
    }
    return document;
  }

  // A link to an object of a bucket that works for an hour without the key.
  const presign = (path, expires = 3600) => SigV4.presign(key(), {
    path: SigV4.encodePath(path), host: location.host, expires, origin: location.origin });

  // Create `bucket` unless the caller owns it already.
  async function ensureBucket(bucket) {
    const region = key().region;
    const body = region === "us-east-1" ? null : "<CreateBucketConfiguration><LocationConstraint>" +
      `${region}</LocationConstraint></CreateBucketConfiguration>`;
    try {
      await s3("PUT", `/${bucket}`, { body, what: `CreateBucket ${bucket}` });
    } catch (err) {
      if (!String(err.message).includes("BucketAlreadyOwnedByYou")) throw err;
    }
  }

  // The <item>s directly under the first element named `setName` below `node`.
  function items(node, setName) {
    const set = node.getElementsByTagName(setName)[0];
    return set ? Array.from(set.children).filter((e) => e.tagName === "item") : [];
  }
  // The text of `item`'s child `name` ("" when absent); "a/b" walks down.
  function field(item, name) {
    let node = item;
    for (const part of name.split("/")) {
      node = node && Array.from(node.children).find((e) => e.tagName === part);
    }
    return node ? node.textContent : "";
  }

  const whenSessionEnds = (callback) => { onSessionEnd = callback; };

  return { key, signedIn, signIn, signOut, forget, whenSessionEnds, ec2, vmimport, s3, s3Part, ebs, presign, ensureBucket, items, field };
})();
