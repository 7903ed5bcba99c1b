// Passkeys (WebAuthn) on the login, second-factor and account pages.
// A form with data-passkey-options="URL" gets options from the hub (posting
// the form's fields), asks the browser for a passkey, puts the answer and the
// ceremony's key in its "credential" and "ceremony" fields and submits itself;
// the hub does the rest.
// A login form marked data-passkey-autofill also offers passkeys in the
// username field's autofill (conditional mediation) where the browser can.
(function () {
  "use strict";
  if (!window.PublicKeyCredential) {
    document.querySelectorAll("[data-passkey-options]").forEach(function (f) { f.hidden = true; });
    return;
  }
  function decode(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    return Uint8Array.from(atob(s), function (c) { return c.charCodeAt(0); }).buffer;
  }
  function encode(buf) {
    var s = "";
    new Uint8Array(buf).forEach(function (b) { s += String.fromCharCode(b); });
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function ids(list) {
    (list || []).forEach(function (c) { c.id = decode(c.id); });
  }
  function answer(cred) {
    var r = cred.response;
    var out = { id: cred.id, rawId: encode(cred.rawId), type: cred.type, extensions: cred.getClientExtensionResults(), response: { clientDataJSON: encode(r.clientDataJSON) } };
    if (r.attestationObject) {
      out.response.attestationObject = encode(r.attestationObject);
      if (r.getTransports) out.response.transports = r.getTransports();
    } else {
      out.response.authenticatorData = encode(r.authenticatorData);
      out.response.signature = encode(r.signature);
      out.response.userHandle = r.userHandle ? encode(r.userHandle) : null;
    }
    return JSON.stringify(out);
  }
  function say(form, text) {
    var el = form.querySelector("[data-passkey-status]");
    if (el) { el.textContent = text; el.hidden = !text; }
  }
  // One ceremony: its key stays with it until the answer is submitted.
  async function ceremony(form, mediation, signal) {
    var res = await fetch(form.dataset.passkeyOptions, { method: "POST", body: new URLSearchParams(new FormData(form)), credentials: "same-origin" });
    var body = await res.json().catch(function () { return {}; });
    if (!res.ok) throw new Error(body.error_description || "请求失败，请刷新页面后重试。");
    var pk = body.publicKey;
    pk.challenge = decode(pk.challenge);
    var cred;
    if (pk.user) {
      pk.user.id = decode(pk.user.id);
      ids(pk.excludeCredentials);
      cred = await navigator.credentials.create({ publicKey: pk });
    } else {
      ids(pk.allowCredentials);
      var req = { publicKey: pk, signal: signal };
      if (mediation) req.mediation = mediation;
      cred = await navigator.credentials.get(req);
    }
    form.elements.ceremony.value = body.key;
    form.elements.credential.value = answer(cred);
    form.submit();
  }
  document.querySelectorAll("[data-passkey-options]").forEach(function (form) {
    var button = form.querySelector("button[type=submit]");
    var autofill = null, autofillDone = Promise.resolve();
    function offerInAutofill() {
      autofill = new AbortController();
      autofillDone = ceremony(form, "conditional", autofill.signal).catch(function () {});
    }
    form.hidden = false;
    form.addEventListener("submit", function (e) {
      if (form.elements.credential.value) return;
      e.preventDefault();
      if (button.disabled) return;
      button.disabled = true;
      if (autofill) autofill.abort();
      say(form, "");
      // The browser takes one request at a time: the autofill one ends first.
      autofillDone.then(function () { return ceremony(form, null); }).catch(function (err) {
        button.disabled = false;
        say(form, err.name === "NotAllowedError" ? "已取消，或这台设备上没有可用的通行密钥。" : err.name === "InvalidStateError" ? "这台设备上已有您的通行密钥。" : "通行密钥操作失败：" + err.message);
        if (autofill) offerInAutofill();
      });
    });
    if ("passkeyAutofill" in form.dataset && PublicKeyCredential.isConditionalMediationAvailable) {
      autofill = new AbortController();
      var first = autofill;
      autofillDone = PublicKeyCredential.isConditionalMediationAvailable().then(function (ok) {
        if (ok && !first.signal.aborted) return ceremony(form, "conditional", first.signal);
        if (!ok) autofill = null;
      }).catch(function () {});
    }
  });
})();
