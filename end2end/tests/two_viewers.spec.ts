import { test, expect } from "@playwright/test";
import { ask, openThread, replyTo, replyText, uniqueQuestion } from "./helpers";

test("two browsers in one thread see the same reply grow and end identical", async ({ browser }) => {
  const alice = await (await browser.newContext()).newPage();
  const bob = await (await browser.newContext()).newPage();
  await openThread(alice);
  await openThread(bob);

  const question = uniqueQuestion("two viewers");
  await ask(alice, "Alice", question);

  // Bob, who did not ask, sees the reply appear and grow: record distinct
  // partial texts while it is still being written.
  const bobsReply = replyTo(bob, question);
  await expect(bobsReply).toHaveAttribute("data-status", "streaming");
  const partials = new Set<string>();
  while ((await bobsReply.getAttribute("data-status")) === "streaming") {
    const text = await replyText(bobsReply);
    if (text.length > 0) partials.add(text);
    await bob.waitForTimeout(50);
  }
  expect(partials.size).toBeGreaterThanOrEqual(2);
  // Each partial state is a prefix of the next: text only grows.
  const ordered = [...partials].sort((a, b) => a.length - b.length);
  for (let i = 1; i < ordered.length; i++) expect(ordered[i].startsWith(ordered[i - 1])).toBe(true);

  const alicesReply = replyTo(alice, question);
  await expect(alicesReply).toHaveAttribute("data-status", "done");
  await expect(bobsReply).toHaveAttribute("data-status", "done");
  const finalText = await replyText(alicesReply);
  expect(finalText).toContain("thanks for trying the demo!");
  expect(await replyText(bobsReply)).toBe(finalText);
  await expect(bobsReply.getByText("demo model", { exact: true })).toBeVisible();
});
