import { test, expect } from "@playwright/test";
import { createThread, hydrated, uniqueQuestion } from "./helpers";

test("a lost connection is shown, and what was said meanwhile arrives once it is back", async ({ browser }) => {
  const setup = await (await browser.newContext()).newPage();
  const path = await createThread(setup, uniqueQuestion("Offline"));

  // This page's live stream cannot connect at first.
  const page = await (await browser.newContext()).newPage();
  await page.route("**/api/threads/*/events*", (route) => route.abort("connectionrefused"));
  await page.goto(path);
  await hydrated(page);
  const status = page.getByRole("status").filter({ hasText: "Connection lost" });
  await expect(status).toBeVisible();

  // Someone else writes meanwhile.
  const said = uniqueQuestion("said meanwhile");
  await setup.getByRole("textbox", { name: "Name" }).fill("Writer");
  await setup.getByRole("textbox", { name: "Message" }).fill(said);
  await setup.getByRole("textbox", { name: "Message" }).press("Enter");
  await expect(setup.locator("article.message").filter({ hasText: said })).toBeVisible();

  // The stream reconnects by itself and brings what was missed, once.
  await page.unroute("**/api/threads/*/events*");
  await expect(status).toHaveCount(0);
  await expect(page.locator("article.message").filter({ hasText: said })).toHaveCount(1);
});
