import { expect, Page, Locator } from "@playwright/test";

/** A question no other spec asks, so its reply can be found by text. */
export function uniqueQuestion(label: string): string {
  return `${label} ${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`;
}

/** Opens the default thread and waits until it is hydrated. */
export async function openThread(page: Page): Promise<void> {
  await page.goto("/t/lobby");
  await expect(page.getByRole("heading", { name: "Lobby" })).toBeVisible();
  // Hydration is done once the module script has run and wired the form.
  await page.waitForFunction(() => (window as any).__streamchatHydrated === true);
}

export async function ask(page: Page, author: string, question: string): Promise<void> {
  await page.getByRole("textbox", { name: "Name" }).fill(author);
  await page.getByRole("textbox", { name: "Message" }).fill(`@gpt ${question}`);
  await page.getByRole("textbox", { name: "Message" }).press("Enter");
}

/** The bot's reply to `question` (the demo model quotes the question). */
export function replyTo(page: Page, question: string): Locator {
  return page.locator("article.message.assistant").filter({ hasText: question });
}

/** The reply's text as rendered (Markdown turned into paragraphs). */
export async function replyText(reply: Locator): Promise<string> {
  return (await reply.locator(".body").innerText()).trim();
}

/** Waits until the page's module script has hydrated it. */
export async function hydrated(page: Page): Promise<void> {
  await page.waitForFunction(() => (window as any).__streamchatHydrated === true);
}

/** Creates a thread from the home page and returns its path (`/t/<id>`). */
export async function createThread(page: Page, title: string): Promise<string> {
  await page.goto("/");
  await hydrated(page);
  await page.getByRole("textbox", { name: "New thread" }).fill(title);
  await page.getByRole("button", { name: "Create" }).click();
  await page.waitForURL(/\/t\/[0-9a-f]{16}$/);
  await expect(page.getByRole("heading", { name: title })).toBeVisible();
  await hydrated(page);
  return new URL(page.url()).pathname;
}

/** Posts through the server function, as a script would (no browser). */
export async function postDirect(
  request: import("@playwright/test").APIRequestContext,
  thread: string,
  author: string,
  body: string,
): Promise<void> {
  const response = await request.post("/api/send_message", {
    form: { thread, author, body },
    headers: { accept: "application/json" },
  });
  expect(response.ok()).toBe(true);
}
