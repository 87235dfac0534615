import { test, expect } from "@playwright/test";
import { createThread, hydrated, uniqueQuestion } from "./helpers";

test("a lost connection is shown, and what was said meanwhile arrives once it is back", async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const path = await createThread(page, uniqueQuestion("Offline"));
  const status = page.getByRole("status").filter({ hasText: "Connection lost" });
  await expect(status).toHaveCount(0);

  await context.setOffline(true);
  await expect(status).toBeVisible();

  // Someone else writes while this page is offline.
  const other = await (await browser.newContext()).newPage();
  await other.goto(path);
  await hydrated(other);
  const said = uniqueQuestion("said meanwhile");
  await other.getByRole("textbox", { name: "Message" }).fill(said);
  await other.getByRole("textbox", { name: "Message" }).press("Enter");
  await expect(other.locator("article.message").filter({ hasText: said })).toBeVisible();

  await context.setOffline(false);
  await expect(status).toHaveCount(0);
  await expect(page.locator("article.message").filter({ hasText: said })).toHaveCount(1);
});
