import { test, expect } from "@playwright/test";
import { ask, createThread, replyTo, uniqueQuestion } from "./helpers";

// A long reply streams about 2,000 deltas. Finished blocks are drawn once:
// the first paragraph stays the same element, and a reader's selection in
// it survives, however long the reply grows.
test("a long streaming reply keeps its first paragraph and a selection in it", async ({ page }) => {
  await createThread(page, uniqueQuestion("Long"));
  const question = uniqueQuestion("[long] tell me everything");
  await ask(page, "Reader", question);
  const reply = replyTo(page, question);
  await expect(reply).toHaveAttribute("data-status", "streaming");

  // Once the first paragraph is finished, select its text.
  const first = reply.locator(".body .block:not(.tail) p").first();
  await expect(first).toBeVisible();
  const selected = await first.evaluate((p) => {
    (window as any).__firstParagraph = p;
    const range = document.createRange();
    range.selectNodeContents(p);
    const selection = window.getSelection()!;
    selection.removeAllRanges();
    selection.addRange(range);
    return selection.toString();
  });
  expect(selected).toContain("You asked");
  await expect(reply).toHaveAttribute("data-status", "streaming");

  await expect(reply).toHaveAttribute("data-status", "done", { timeout: 80_000 });
  // Each demo token is one delta: over 2,000 of them.
  const usage = await reply.locator(".usage").innerText();
  const completion = Number(/(\d+) completion tokens/.exec(usage)?.[1] ?? 0);
  expect(completion).toBeGreaterThanOrEqual(2_000);
  // The same element, still in the page, still selected.
  expect(await reply.locator(".body p").first().evaluate((p) => p === (window as any).__firstParagraph)).toBe(true);
  expect(await page.evaluate(() => (window as any).__firstParagraph.isConnected)).toBe(true);
  expect(await page.evaluate(() => window.getSelection()!.toString())).toBe(selected);
});
