// Passkey buttons on the sign-in pages (plain pages, no WebAssembly): each
// ceremony is a start request (the server's WebAuthn options), the
// browser's credential, and a finish request. A button stays hidden where
// the browser has no WebAuthn.
(() => {
  if (!window.PublicKeyCredential || !navigator.credentials) return;

  const bytes = (b64url) => {
    const b64 = b64url.replace(/-/g, "+").replace(/_/g, "/");
    const raw = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    return Uint8Array.from(raw, (c) => c.charCodeAt(0));
  };
  const text = (buffer) => {
    if (!buffer) return undefined;
    let raw = "";
    for (const b of new Uint8Array(buffer)) raw += String.fromCharCode(b);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };

  const post = async (path, body) => {
    const response = await fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify(body ?? {}),
      credentials: "same-origin",
    });
    if (!response.ok) throw new Error(await response.text());
    return response.json();
  };

  const create = async (options) => {
    const key = options.publicKey;
    key.challenge = bytes(key.challenge);
    key.user.id = bytes(key.user.id);
    for (const c of key.excludeCredentials ?? []) c.id = bytes(c.id);
    const made = await navigator.credentials.create({ publicKey: key });
    return {
      id: made.id,
      rawId: text(made.rawId),
      type: made.type,
      extensions: made.getClientExtensionResults(),
      response: {
        attestationObject: text(made.response.attestationObject),
        clientDataJSON: text(made.response.clientDataJSON),
        transports: made.response.getTransports ? made.response.getTransports() : undefined,
      },
    };
  };

  const get = async (options) => {
    const key = options.publicKey;
    key.challenge = bytes(key.challenge);
    for (const c of key.allowCredentials ?? []) c.id = bytes(c.id);
    const used = await navigator.credentials.get({ publicKey: key });
    return {
      id: used.id,
      rawId: text(used.rawId),
      type: used.type,
      extensions: used.getClientExtensionResults(),
      response: {
        authenticatorData: text(used.response.authenticatorData),
        clientDataJSON: text(used.response.clientDataJSON),
        signature: text(used.response.signature),
        userHandle: text(used.response.userHandle),
      },
    };
  };

  const field = (form, name) => form.querySelector(`[name="${name}"]`)?.value ?? "";

  const ceremonies = {
    "sign-in": async (form) => {
      const started = await post("/signin/passkey/start", { name: field(form, "name") });
      const credential = await get(started.options);
      return post("/signin/passkey/finish", {
        ceremony: started.ceremony,
        credential,
        next: field(form, "next"),
      });
    },
    join: async (form) => {
      const started = await post("/join/passkey/start", {
        token: field(form, "token"),
        name: field(form, "name"),
      });
      const credential = await create(started.options);
      return post("/join/passkey/finish", { ceremony: started.ceremony, credential });
    },
    add: async () => {
      const started = await post("/account/passkeys/start");
      const credential = await create(started.options);
      return post("/account/passkeys/finish", { ceremony: started.ceremony, credential });
    },
  };

  for (const button of document.querySelectorAll("[data-passkey]")) {
    const ceremony = ceremonies[button.dataset.passkey];
    const form = button.closest("[data-passkey-form]");
    if (!ceremony || !form) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      const error =
        form.querySelector("[data-passkey-error]") ?? document.querySelector("[data-passkey-error]");
      if (form.reportValidity && form.tagName === "FORM") {
        const name = form.querySelector('[name="name"]');
        if (name && !name.reportValidity()) return;
      }
      button.disabled = true;
      if (error) error.textContent = "";
      try {
        const done = await ceremony(form);
        window.location.assign(done.next);
      } catch (e) {
        if (error) error.textContent = e.message || "The passkey step did not finish.";
      } finally {
        button.disabled = false;
      }
    });
  }
})();
