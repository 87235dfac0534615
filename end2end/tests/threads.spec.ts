import { test, expect } from "@playwright/test";
import { ask, createThread, hydrated, replyTo, uniqueQuestion } from "./helpers";

test("a new thread is listed with a live marker while its reply streams", async ({ browser }) => {
  const author = await (await browser.newContext()).newPage();
  const title = uniqueQuestion("Thread");
  await createThread(author, title);
  const question = uniqueQuestion("live marker");
  await ask(author, "Lister", question);
  await expect(replyTo(author, question)).toHaveAttribute("data-status", "streaming");

  // Someone on the home page sees the thread at the top, marked live...
  const home = await (await browser.newContext()).newPage();
  await home.goto("/");
  await hydrated(home);
  const threads = home.getByRole("navigation", { name: "Threads" });
  const entry = threads.getByRole("link").filter({ hasText: title });
  await expect(entry).toBeVisible();
  await expect(threads.getByRole("link").first()).toContainText(title);
  await expect(entry.getByText("live", { exact: true })).toBeVisible();
  // ...and the marker leaves by itself when the reply ends.
  await expect(replyTo(author, question)).toHaveAttribute("data-status", "done", { timeout: 60_000 });
  await expect(entry.getByText("live", { exact: true })).toHaveCount(0);
});

test("a thread can be renamed and everyone watching sees the new title", async ({ browser }) => {
  const page = await (await browser.newContext()).newPage();
  const path = await createThread(page, uniqueQuestion("Old name"));
  const other = await (await browser.newContext()).newPage();
  await other.goto(path);
  await hydrated(other);
  const renamed = uniqueQuestion("New name");
  await page.getByRole("button", { name: "Rename" }).click();
  await page.getByRole("textbox", { name: "Thread title" }).fill(renamed);
  await page.getByRole("button", { name: "Save" }).click();
  await expect(page.getByRole("heading", { name: renamed })).toBeVisible();
  await expect(other.getByRole("heading", { name: renamed })).toBeVisible();
});

test("moving to another thread leaves the first thread's events behind", async ({ page, request }) => {
  const second = uniqueQuestion("Second");
  const secondPath = await createThread(page, second);
  const firstPath = await createThread(page, uniqueQuestion("First"));
  const question = uniqueQuestion("stays home");
  await ask(page, "Mover", question);
  const reply = replyTo(page, question);
  await expect(reply).toHaveAttribute("data-status", "streaming");
  const replyId = await reply.getAttribute("data-id");

  // Through the links, while the first thread's reply still streams.
  await page.getByRole("link", { name: "← All threads" }).click();
  await page.waitForURL((url) => url.pathname === "/");
  await hydrated(page);
  await page.getByRole("navigation", { name: "Threads" }).getByRole("link").filter({ hasText: second }).click();
  await page.waitForURL((url) => url.pathname === secondPath);
  await expect(page.getByRole("heading", { name: second })).toBeVisible();
  await hydrated(page);
  await expect(page.getByText("No messages yet.")).toBeVisible();

  // Once the server has finished that reply (every event of it sent),
  // nothing of it has shown up here.
  await expect
    .poll(async () => {
      const html = await (await request.get(firstPath)).text();
      return new RegExp(`data-id="${replyId}"[^>]*data-status="done"`).test(html);
    }, { timeout: 60_000 })
    .toBe(true);
  await expect(page.locator("article.message")).toHaveCount(0);
  await expect(page.getByText(question)).toHaveCount(0);

  const own = uniqueQuestion("own message");
  await page.getByRole("textbox", { name: "Message" }).fill(own);
  await page.getByRole("textbox", { name: "Message" }).press("Enter");
  await expect(page.locator("article.message")).toHaveCount(1);
  await expect(page.locator("article.message")).toContainText(own);
});
