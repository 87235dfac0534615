import { test, expect } from "@playwright/test";
import { ask, openThread, replyTo, replyText, uniqueQuestion } from "./helpers";

test("closing the only page mid-stream does not stop the reply", async ({ browser, request }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await openThread(page);
  const question = uniqueQuestion("close");
  await ask(page, "Closer", question);
  const reply = replyTo(page, question);
  await expect(reply.locator(".body")).toContainText("You asked");
  await expect(reply).toHaveAttribute("data-status", "streaming");
  const idAttr = await reply.getAttribute("data-id");
  await context.close();

  // No browser is watching now. Wait, through the server only, until the
  // reply would have finished.
  await expect
    .poll(async () => {
      const html = await (await request.get("/t/lobby")).text();
      return new RegExp(`data-id="${idAttr}"[^>]*data-status="done"`).test(html);
    }, { timeout: 60_000 })
    .toBe(true);

  const again = await (await browser.newContext()).newPage();
  await openThread(again);
  const finished = replyTo(again, question);
  await expect(finished).toHaveAttribute("data-status", "done");
  const text = await replyText(finished);
  expect(text).toContain(question);
  expect(text.trim().endsWith("thanks for trying the demo!")).toBe(true);
  await expect(finished.locator(".usage")).toContainText("completion tokens");
});
