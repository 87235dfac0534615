import { test, expect, Page, Browser, CDPSession } from "@playwright/test";

// The whole story of built-in accounts, in order: the setup link makes the
// first admin with a passkey; she invites Bob (a password) and Carol; they
// chat and watch a reply; Bob cannot approve Ann's tool call and the card
// says who may; Ann's private thread is invisible to Carol; "sign out
// everywhere" closes Ann's other browser's live stream. The app is reached
// at localhost (a passkey's relying party is a host name, not an address).

/** The printed link's path: the browser reaches the app at BASE_URL. */
function pathOf(link: string): string {
  const url = new URL(link);
  return url.pathname + url.search;
}

async function hydrated(page: Page): Promise<void> {
  await page.waitForFunction(() => (window as any).__streamchatHydrated === true);
}

async function openLobby(page: Page, name: string): Promise<void> {
  await page.goto("/t/lobby");
  await expect(page.getByRole("heading", { name: "Lobby" })).toBeVisible();
  await expect(page.getByRole("link", { name: `Signed in as ${name}` })).toBeVisible();
  await hydrated(page);
}

/** A page in a new browser context (its own cookies). */
async function newPerson(browser: Browser): Promise<Page> {
  return (await browser.newContext()).newPage();
}

/** Chromium's virtual authenticator on this page (CDP): a platform
 *  authenticator that verifies its user and answers at once. */
async function authenticator(page: Page): Promise<{ cdp: CDPSession; id: string }> {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  return { cdp, id: authenticatorId };
}

/** Fills a setup or invite link's form with a password and sends it. */
async function joinWithPassword(page: Page, name: string, password: string): Promise<void> {
  await page.getByRole("textbox", { name: "Name" }).fill(name);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Make my account", exact: true }).click();
  await expect(page).toHaveURL(/\/$/);
}

/** An invite link from the admin's account page. */
async function invite(admin: Page): Promise<string> {
  await admin.goto("/account");
  await admin.getByRole("button", { name: "Make an invite link" }).click();
  return pathOf(await admin.locator("code.invite-link").innerText());
}

test("passkey admin, password member, approvals by account, a private thread, sign out everywhere", async ({
  browser,
}) => {
  const setupLink = process.env.SETUP_LINK ?? "";
  expect(setupLink).toContain("/setup?token=");

  // The setup link makes Ann, the first admin, with a passkey; once.
  const ann = await newPerson(browser);
  const annKey = await authenticator(ann);
  await ann.goto(pathOf(setupLink));
  await expect(ann.getByRole("heading", { name: "Set up streamchat" })).toBeVisible();
  await ann.getByRole("textbox", { name: "Name" }).fill("Ann");
  await ann.getByRole("button", { name: "Make my account with a passkey" }).click();
  await expect(ann).toHaveURL(/\/$/);
  const { credentials } = await annKey.cdp.send("WebAuthn.getCredentials", {
    authenticatorId: annKey.id,
  });
  expect(credentials).toHaveLength(1);
  await ann.goto("/account");
  await expect(ann.getByText("Signed in as Ann (admin).")).toBeVisible();
  await expect(ann.getByText("1 passkey.")).toBeVisible();
  // Her only way to sign in cannot be removed.
  await ann.getByRole("button", { name: "Remove passkey 1" }).click();
  await expect(
    ann.getByRole("alert").filter({ hasText: "That passkey is how this account signs in" }),
  ).toBeVisible();
  await expect(ann.getByText("1 passkey.")).toBeVisible();
  // A second passkey (another authenticator: this one holds the first, which
  // the ceremony excludes) can be added, and then one removed.
  await annKey.cdp.send("WebAuthn.removeVirtualAuthenticator", { authenticatorId: annKey.id });
  await authenticator(ann);
  await ann.getByRole("button", { name: "Add a passkey" }).click();
  await expect(ann.getByText("2 passkeys.")).toBeVisible();
  await ann.getByRole("button", { name: "Remove passkey 2" }).click();
  await expect(ann.getByText("1 passkey.")).toBeVisible();
  const stranger = await newPerson(browser);
  await stranger.goto(pathOf(setupLink));
  await stranger.getByRole("textbox", { name: "Name" }).fill("Mallory");
  await stranger.getByLabel("Password").fill("12345678");
  await stranger.getByRole("button", { name: "Make my account", exact: true }).click();
  await expect(stranger.getByRole("alert").first()).toContainText("This link does not work");

  // Ann invites Bob, who joins with a password in his own browser, and Carol.
  const bob = await newPerson(browser);
  await bob.goto(await invite(ann));
  await expect(bob.getByRole("heading", { name: "Join streamchat" })).toBeVisible();
  await joinWithPassword(bob, "Bob", "bobs password");
  const carol = await newPerson(browser);
  await carol.goto(await invite(ann));
  await joinWithPassword(carol, "Carol", "carols password");

  // Both in the lobby; Bob asks, Ann watches the reply stream.
  await openLobby(ann, "Ann");
  await openLobby(bob, "Bob");
  const question = `accounts ${Date.now().toString(36)}`;
  await bob.getByRole("textbox", { name: "Message" }).fill(`@gpt ${question}`);
  await bob.getByRole("textbox", { name: "Message" }).press("Enter");
  const seenByAnn = ann.locator("article.message.assistant").filter({ hasText: question });
  await expect(seenByAnn).toHaveAttribute("data-status", "streaming");
  await expect(seenByAnn).toHaveAttribute("data-status", "done");
  const asked = ann.locator("article.message:not(.assistant)").filter({ hasText: question });
  await expect(asked.locator(".author")).toHaveText("Bob");

  // Ann asks @helper to search: the call waits for approval. Bob's card
  // says only Ann may decide and offers him no buttons; Ann approves.
  const term = `needle${Date.now().toString(36)}`;
  await ann.getByRole("textbox", { name: "Message" }).fill(`@helper search for ${term}`);
  await ann.getByRole("textbox", { name: "Message" }).press("Enter");
  const helperReply = (page: Page) =>
    page
      .locator("article.message.assistant")
      .filter({ has: page.locator(".author", { hasText: /^helper$/ }) })
      .last();
  const bobsCard = helperReply(bob).getByRole("group", { name: "Tool call search_threads" });
  await expect(bobsCard).toHaveAttribute("data-state", "waiting");
  await expect(bobsCard).toContainText("Only Ann (who asked) may approve or deny this call.");
  await expect(bobsCard.getByRole("button", { name: "Approve" })).toHaveCount(0);
  const annsCard = helperReply(ann).getByRole("group", { name: "Tool call search_threads" });
  await expect(annsCard).toContainText("Only Ann (who asked) may approve or deny this call.");
  await annsCard.getByRole("button", { name: "Approve" }).click();
  await expect(bobsCard).toHaveAttribute("data-state", "done");
  await expect(bobsCard).toContainText("approved by Ann");

  // Ann's private thread: Carol, signed in, gets 404 from its page, its
  // event stream, its search and its export; the thread list and search
  // across threads do not show it.
  await ann.goto("/");
  await hydrated(ann);
  const secret = `secret${Date.now().toString(36)}`;
  await ann.getByRole("textbox", { name: "New thread" }).fill(`Plans ${secret}`);
  await ann.getByRole("checkbox", { name: /Private/ }).check();
  await ann.getByRole("button", { name: "Create" }).click();
  await expect(ann).toHaveURL(/\/t\/[0-9a-f]+$/);
  await expect(ann.getByRole("link", { name: "Private · Members" })).toBeVisible();
  await hydrated(ann);
  await ann.getByRole("textbox", { name: "Message" }).fill(`the word is ${secret}`);
  await ann.getByRole("textbox", { name: "Message" }).press("Enter");
  await expect(ann.locator("article.message").filter({ hasText: secret })).toBeVisible();
  const path = new URL(ann.url()).pathname;
  const id = path.split("/").pop();

  const page = await carol.goto(path);
  expect(page?.status()).toBe(404);
  await expect(carol.getByRole("alert")).toContainText("There is no thread");
  for (const url of [
    `/api/threads/${id}/events`,
    `/api/search?q=${secret}&thread=${id}`,
    `/t/${id}/export.md`,
  ]) {
    const answer = await carol.request.get(url);
    expect(answer.status(), url).toBe(404);
  }
  await carol.goto("/");
  await expect(carol.getByRole("link", { name: `Plans ${secret}` })).toHaveCount(0);
  await carol.goto(`/search?q=${secret}`);
  await expect(carol.locator("body")).not.toContainText(`the word is`);
  // Its owner reads it.
  expect((await ann.request.get(`/t/${id}/export.md`)).status()).toBe(200);

  // Ann signs in on a second browser with the same passkey, watching the
  // lobby; "Sign out everywhere" on the first closes the second's live
  // stream within 2 s.
  const annElsewhere = await newPerson(browser);
  const elsewhereKey = await authenticator(annElsewhere);
  await elsewhereKey.cdp.send("WebAuthn.addCredential", {
    authenticatorId: elsewhereKey.id,
    credential: credentials[0],
  });
  await annElsewhere.goto("/signin");
  await annElsewhere.getByRole("textbox", { name: "Name" }).fill("Ann");
  const finishing = annElsewhere.waitForRequest((r) => r.url().endsWith("/signin/passkey/finish"));
  await annElsewhere.getByRole("button", { name: "Sign in with a passkey" }).click();
  await expect(annElsewhere).toHaveURL(/\/$/);
  // The same signed answer, replayed from elsewhere, signs no one in.
  const replayer = await browser.newContext();
  const replayed = await replayer.request.post("/signin/passkey/finish", {
    data: (await finishing).postData() ?? "",
    headers: { "content-type": "application/json", origin: new URL(annElsewhere.url()).origin },
  });
  expect(replayed.status()).toBe(400);
  expect(await replayed.text()).toContain("used already");
  expect((await replayer.cookies()).map((c) => c.name)).not.toContain("streamchat_session");
  await openLobby(annElsewhere, "Ann");
  const offline = annElsewhere.getByRole("status").filter({ hasText: "Connection lost" });
  await expect(offline).toHaveCount(0);
  await ann.goto("/account");
  await ann.getByRole("button", { name: "Sign out everywhere" }).click();
  await expect(ann).toHaveURL(/\/signin$/);
  await expect(offline).toBeVisible({ timeout: 2_000 });
  // Its next page load asks it to sign in.
  await annElsewhere.goto("/t/lobby");
  await expect(annElsewhere).toHaveURL(/\/signin\?next=/);
});
