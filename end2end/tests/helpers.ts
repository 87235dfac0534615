import { expect, Page, Locator } from "@playwright/test";

/** A question no other spec asks, so its reply can be found by text. */
export function uniqueQuestion(label: string): string {
  return `${label} ${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`;
}

/** Opens the default thread and waits until it is hydrated. */
export async function openThread(page: Page): Promise<void> {
  await page.goto("/");
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

export async function replyText(reply: Locator): Promise<string> {
  return (await reply.locator(".body").textContent()) ?? "";
}
