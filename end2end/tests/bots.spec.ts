import { test, expect } from "@playwright/test";
import { createThread, uniqueQuestion } from "./helpers";

test("two bots mentioned in one message answer at the same time", async ({ page }) => {
  await createThread(page, uniqueQuestion("Bots"));
  const question = uniqueQuestion("both of you");
  const message = page.getByRole("textbox", { name: "Message" });
  await page.getByRole("textbox", { name: "Name" }).fill("Asker");

  // Typing @ suggests the bots; Tab takes the highlighted one.
  await message.pressSequentially("@cr");
  const suggestions = page.getByRole("listbox", { name: "Bots" });
  await expect(suggestions.getByRole("option", { name: "@critic" })).toBeVisible();
  await message.press("Tab");
  await expect(message).toHaveValue("@critic ");
  await expect(suggestions).toBeHidden();
  await message.pressSequentially(`and @gpt ${question}`);
  await message.press("Enter");

  const replies = page.locator("article.message.assistant").filter({ hasText: question });
  const gpt = replies.filter({ has: page.locator(".author", { hasText: /^gpt$/ }) });
  const critic = replies.filter({ has: page.locator(".author", { hasText: /^critic$/ }) });
  // Both are being written at once...
  await expect(gpt).toHaveAttribute("data-status", "streaming");
  await expect(critic).toHaveAttribute("data-status", "streaming");
  await expect(page.locator(".presence .writing")).toContainText("critic");
  await expect(page.locator(".presence .writing")).toContainText("gpt");
  // ...and both finish.
  await expect(gpt).toHaveAttribute("data-status", "done", { timeout: 60_000 });
  await expect(critic).toHaveAttribute("data-status", "done", { timeout: 60_000 });
});
