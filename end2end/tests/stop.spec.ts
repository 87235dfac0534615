import { test, expect } from "@playwright/test";
import { ask, openThread, replyTo, replyText, uniqueQuestion } from "./helpers";

test("Stop pressed in one browser stops the reply in both", async ({ browser }) => {
  const asker = await (await browser.newContext()).newPage();
  const other = await (await browser.newContext()).newPage();
  await openThread(asker);
  await openThread(other);

  const question = uniqueQuestion("stop");
  await ask(asker, "Asker", question);
  const theirs = replyTo(other, question);
  await expect(theirs.locator(".body")).toContainText("You asked");
  await expect(theirs).toHaveAttribute("data-status", "streaming");

  await other.getByRole("textbox", { name: "Name" }).fill("Stopper");
  await theirs.getByRole("button", { name: "Stop" }).click();

  const mine = replyTo(asker, question);
  for (const reply of [mine, theirs]) {
    await expect(reply).toHaveAttribute("data-status", "cancelled");
    await expect(reply.locator(".status")).toHaveText("stopped");
    await expect(reply.locator(".message-error")).toHaveText("Stopped by Stopper.");
    await expect(reply.getByRole("button", { name: "Stop" })).toHaveCount(0);
    await expect(reply.getByRole("button", { name: "Continue" })).toBeVisible();
  }
  const kept = await replyText(mine);
  expect(kept.length).toBeGreaterThan(0);
  expect(kept).not.toContain("thanks for trying the demo!");
  expect(await replyText(theirs)).toBe(kept);
});
