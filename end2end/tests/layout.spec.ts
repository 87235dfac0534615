import { test, expect, Page } from "@playwright/test";
import { ask, createThread, replyTo, uniqueQuestion } from "./helpers";

async function noHorizontalScroll(page: Page) {
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  expect(overflow).toBeLessThanOrEqual(0);
}

test("a 390 px wide phone gets the whole page without horizontal scrolling", async ({ browser }) => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const page = await context.newPage();
  await createThread(page, uniqueQuestion("A thread with a rather long title for a small screen"));
  const question = uniqueQuestion("wide") + " " + "averyveryveryverylongwordwithoutanyspacesatall".repeat(3);
  await ask(page, "Phone", question);
  await expect(replyTo(page, question)).toHaveAttribute("data-status", "done", { timeout: 60_000 });
  await noHorizontalScroll(page);
  await page.goto("/");
  await noHorizontalScroll(page);
});

// Screenshots of the thread page for people to look at (not compared).
test("screenshots of the thread page: desktop and mobile, light and dark", async ({ browser }) => {
  const setup = await (await browser.newContext()).newPage();
  const path = await createThread(setup, "Release planning");
  await setup.getByRole("textbox", { name: "Name" }).fill("Ada");
  await setup.getByRole("textbox", { name: "Message" }).fill("Morning! Freeze is **Thursday**; the list is in the wiki.");
  await setup.getByRole("textbox", { name: "Message" }).press("Enter");
  await expect(setup.getByText("the list is in the wiki.")).toBeVisible();
  const question = uniqueQuestion("What should we check before the release?");
  await ask(setup, "Grace", question);
  await expect(replyTo(setup, question)).toHaveAttribute("data-status", "done", { timeout: 60_000 });

  for (const colorScheme of ["light", "dark"] as const) {
    for (const [device, viewport] of [["desktop", { width: 1280, height: 800 }], ["mobile", { width: 390, height: 844 }]] as const) {
      const context = await browser.newContext({ viewport, colorScheme });
      const page = await context.newPage();
      await page.goto(path);
      await expect(replyTo(page, question)).toHaveAttribute("data-status", "done");
      await page.screenshot({ path: `screenshots/thread-${device}-${colorScheme}.png` });
      await context.close();
    }
  }
});
