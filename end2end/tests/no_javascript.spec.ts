import { test, expect } from "@playwright/test";
import { uniqueQuestion } from "./helpers";

test.use({ javaScriptEnabled: false });

test("without JavaScript the thread renders and a message can be posted", async ({ page }) => {
  await page.goto("/t/lobby");
  await expect(page.getByRole("heading", { name: "Lobby" })).toBeVisible();
  await expect(page.getByRole("region", { name: "Conversation" })).toBeVisible();

  const text = uniqueQuestion("plain form post");
  await page.getByRole("textbox", { name: "Name" }).fill("NoScript");
  await page.getByRole("textbox", { name: "Message" }).fill(text);
  await page.getByRole("button", { name: "Send" }).click();
  await page.waitForURL((url) => url.pathname === "/t/lobby");
  const posted = page.locator("article.message").filter({ hasText: text });
  await expect(posted).toBeVisible();
  await expect(posted.locator(".author")).toHaveText("NoScript");
  // The name is remembered for the next post.
  await expect(page.getByRole("textbox", { name: "Name" })).toHaveValue("NoScript");

  // A rejected post comes back with a clear message and writes nothing.
  const count = await page.locator("article.message").count();
  await page.getByRole("textbox", { name: "Message" }).fill("   ");
  await page.getByRole("button", { name: "Send" }).click();
  await expect(page.getByRole("alert")).toHaveText("The message is empty.");
  await expect(page.locator("article.message")).toHaveCount(count);
});
