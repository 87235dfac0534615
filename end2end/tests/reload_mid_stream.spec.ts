import { test, expect } from "@playwright/test";
import { ask, openThread, replyTo, replyText, uniqueQuestion } from "./helpers";

test("a reload mid-stream shows the text so far at once and continues to the same end", async ({ browser }) => {
  const asker = await (await browser.newContext()).newPage();
  const watcher = await (await browser.newContext()).newPage();
  await openThread(asker);
  await openThread(watcher);

  const question = uniqueQuestion("reload");
  await ask(asker, "Asker", question);
  const reply = replyTo(watcher, question);
  await expect(reply.locator(".body")).toContainText("You asked");
  await expect(reply).toHaveAttribute("data-status", "streaming");
  const before = await replyText(reply);

  // Reload with scripts blocked from running first: what shows is the
  // server-rendered text, already at least as long as before the reload.
  const response = await watcher.reload({ waitUntil: "commit" });
  const html = await response!.text();
  expect(html).toContain(before.slice(0, 40));
  await expect(reply).toBeVisible();
  const right_after = await replyText(reply);
  expect(right_after.startsWith(before)).toBe(true);

  await expect(reply).toHaveAttribute("data-status", "done");
  const asked = replyTo(asker, question);
  await expect(asked).toHaveAttribute("data-status", "done");
  expect(await replyText(reply)).toBe(await replyText(asked));
});
