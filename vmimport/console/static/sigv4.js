// AWS Signature Version 4 in the browser (WebCrypto), for the EC2 Query API of this server.
// The secret never leaves the page: only the signature is sent.
"use strict";

const SigV4 = (() => {
  const encoder = new TextEncoder();
  const hex = (buffer) => Array.from(new Uint8Array(buffer),
    (b) => b.toString(16).padStart(2, "0")).join("");
  const sha256 = async (text) => hex(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
  const hmac = async (key, text) => {
    const raw = typeof key === "string" ? encoder.encode(key) : key;
    const cryptoKey = await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" },
                                                    false, ["sign"]);
    return new Uint8Array(await crypto.subtle.sign("HMAC", cryptoKey, encoder.encode(text)));
  };
  // RFC 3986 encoding, as SigV4 wants it (encodeURIComponent leaves !'()* alone).
  const encode = (value) => encodeURIComponent(value).replace(/[!'()*]/g,
    (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());

  // The headers for a request to `host` + `path` (default: a POST of `body` to "/"), signed for
  // `service` in `region`. `query` is the query string as built by queryBody (already encoded).
  async function sign({ accessKey, secretKey, region, service, host, body = "", contentType,
                        now, method = "POST", path = "/", query = "" }) {
    const amzDate = (now || new Date()).toISOString().replace(/[-:]/g, "").replace(/\.\d+/, "");
    const day = amzDate.slice(0, 8);
    const headers = { host, "x-amz-date": amzDate };
    if (contentType) headers["content-type"] = contentType;
    const names = Object.keys(headers).sort();
    const canonical = [method, path, query, names.map((n) => `${n}:${headers[n]}\n`).join(""),
                       names.join(";"), await sha256(body)].join("\n");
    const scope = `${day}/${region}/${service}/aws4_request`;
    const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, await sha256(canonical)].join("\n");
    let key = await hmac("AWS4" + secretKey, day);
    for (const part of [region, service, "aws4_request"]) key = await hmac(key, part);
    const signature = hex(await hmac(key, toSign));
    return {
      ...(contentType ? { "Content-Type": contentType } : {}), "X-Amz-Date": amzDate,
      Authorization: `AWS4-HMAC-SHA256 Credential=${accessKey}/${scope}, ` +
                     `SignedHeaders=${names.join(";")}, Signature=${signature}`,
    };
  }

  // A Query-protocol body: {Action, Version, ...flattened parameters}.
  function queryBody(params) {
    return Object.keys(params).sort().map((k) => `${encode(k)}=${encode(params[k])}`).join("&");
  }

  return { sign, queryBody, sha256, hex, hmac };
})();

if (typeof module !== "undefined") module.exports = SigV4;  // for node
