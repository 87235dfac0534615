import { test, expect, Page, Browser } from "@playwright/test";

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

/** Fills a setup or invite link's form and sends it. */
async function makeAccount(page: Page, name: string, password: string): Promise<void> {
  await page.getByRole("textbox", { name: "Name" }).fill(name);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Make my account" }).click();
}

async function signIn(browser: Browser, name: string, password: string): Promise<Page> {
  const page = await (await browser.newContext()).newPage();
  await page.goto("/signin");
  await page.getByRole("textbox", { name: "Name" }).fill(name);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page).toHaveURL(/\/$/);
  return page;
}

test("the setup link makes the admin, who invites Bob; both watch a reply; signing out everywhere closes Ann's other stream", async ({
  browser,
}) => {
  const setupLink = process.env.SETUP_LINK ?? "";
  expect(setupLink).toContain("/setup?token=");

  // The setup link makes the first admin, once.
  const ann = await (await browser.newContext()).newPage();
  await ann.goto(pathOf(setupLink));
  await expect(ann.getByRole("heading", { name: "Set up streamchat" })).toBeVisible();
  await makeAccount(ann, "Ann", "correct horse");
  await expect(ann).toHaveURL(/\/$/);
  const stranger = await (await browser.newContext()).newPage();
  await stranger.goto(pathOf(setupLink));
  await makeAccount(stranger, "Mallory", "12345678");
  await expect(stranger.getByRole("alert")).toContainText("This link does not work");

  // Ann invites Bob, who joins with a password.
  await ann.getByRole("link", { name: "Your account" }).click();
  await expect(ann.getByText("Signed in as Ann (admin).")).toBeVisible();
  await ann.getByRole("button", { name: "Make an invite link" }).click();
  const invite = await ann.locator("code.invite-link").innerText();
  const bob = await (await browser.newContext()).newPage();
  await bob.goto(pathOf(invite));
  await expect(bob.getByRole("heading", { name: "Join streamchat" })).toBeVisible();
  await makeAccount(bob, "Bob", "bobs password");
  await expect(bob).toHaveURL(/\/$/);

  // Both in the lobby; Bob asks (his name is the account's, not typed).
  await openLobby(ann, "Ann");
  await openLobby(bob, "Bob");
  await expect(bob.getByRole("textbox", { name: "Name" })).toHaveValue("Bob");
  const question = `accounts ${Date.now().toString(36)}`;
  await bob.getByRole("textbox", { name: "Message" }).fill(`@gpt ${question}`);
  await bob.getByRole("textbox", { name: "Message" }).press("Enter");
  const seenByAnn = ann.locator("article.message.assistant").filter({ hasText: question });
  await expect(seenByAnn).toHaveAttribute("data-status", "streaming");
  await expect(seenByAnn).toHaveAttribute("data-status", "done");
  const asked = ann.locator("article.message:not(.assistant)").filter({ hasText: question });
  await expect(asked.locator(".author")).toHaveText("Bob");

  // Ann signed in on a second browser, watching the lobby; "Sign out
  // everywhere" on the first closes the second's live stream within 2 s.
  const annElsewhere = await signIn(browser, "Ann", "correct horse");
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
