import { test, expect } from "@playwright/test";
import { ask, openThread, replyText, uniqueQuestion } from "./helpers";

test("a failed reply shows its error and Regenerate produces a new reply", async ({ page }) => {
  await openThread(page);
  // The demo model fails the first answer to a question marked [fail once].
  const question = uniqueQuestion("regenerate [fail once]");
  await ask(page, "Regenerator", question);
  const replies = page.locator("article.message.assistant").filter({ hasText: question });

  const failed = replies.first();
  await expect(failed).toHaveAttribute("data-status", "failed");
  await expect(failed.locator(".message-error")).toContainText("The demo model failed on purpose");
  const partial = await replyText(failed);
  expect(partial.length).toBeGreaterThan(0);

  await failed.getByRole("button", { name: "Regenerate" }).click();
  await expect(replies).toHaveCount(2);
  const fresh = replies.nth(1);
  await expect(fresh).toHaveAttribute("data-status", "done");
  expect((await replyText(fresh)).trim().endsWith("thanks for trying the demo!")).toBe(true);
  // The failed attempt stays in history as it was.
  await expect(failed).toHaveAttribute("data-status", "failed");
  expect(await replyText(failed)).toBe(partial);
});
