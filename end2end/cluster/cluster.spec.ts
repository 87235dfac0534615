import { test, expect, Page } from "@playwright/test";
import { ask, hydrated, replyTo, replyText, uniqueQuestion } from "../tests/helpers";

/** Opens the lobby; returns the instance that served the page. */
async function openOn(page: Page): Promise<string> {
  const response = await page.goto("/t/lobby");
  await expect(page.getByRole("heading", { name: "Lobby" })).toBeVisible();
  await hydrated(page);
  return response!.headers()["x-streamchat-instance"];
}

test("two browsers on different instances see one reply grow and end identical; a reload continues exactly", async ({
  browser,
}) => {
  const alice = await (await browser.newContext()).newPage();
  const bob = await (await browser.newContext()).newPage();
  const aliceOn = await openOn(alice);
  let bobOn = await openOn(bob);
  // nginx spreads requests round-robin, and a page load makes a fixed
  // number of them: one request more shifts where Bob's next load lands.
  for (let i = 0; i < 8 && bobOn === aliceOn; i++) {
    await bob.request.get("/healthz");
    bobOn = await openOn(bob);
  }
  expect(aliceOn).toBeTruthy();
  expect(bobOn).not.toBe(aliceOn);

  const question = uniqueQuestion("cluster [long]");
  await ask(alice, "Alice", question);

  // Bob sees the reply grow, written by whichever instance took the post.
  const bobsReply = replyTo(bob, question);
  await expect(bobsReply).toHaveAttribute("data-status", "streaming");
  const partials = new Set<string>();
  while (partials.size < 3) {
    const text = await replyText(bobsReply);
    if (text.length > 0) partials.add(text);
    await bob.waitForTimeout(50);
  }
  const ordered = [...partials].sort((a, b) => a.length - b.length);
  for (let i = 1; i < ordered.length; i++) expect(ordered[i].startsWith(ordered[i - 1])).toBe(true);

  // A reload mid-stream (landing on any instance) continues exactly.
  const before = await replyText(bobsReply);
  await bob.reload();
  await hydrated(bob);
  expect((await replyText(bobsReply)).startsWith(before)).toBe(true);

  const alicesReply = replyTo(alice, question);
  await expect(alicesReply).toHaveAttribute("data-status", "done", { timeout: 60_000 });
  await expect(bobsReply).toHaveAttribute("data-status", "done", { timeout: 60_000 });
  const finalText = await replyText(alicesReply);
  expect(finalText.length).toBeGreaterThan(before.length);
  expect(await replyText(bobsReply)).toBe(finalText);
});
